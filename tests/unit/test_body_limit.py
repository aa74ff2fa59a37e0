"""The request-body ceiling: refused by declared length or while a chunked body streams, and
a body within it reaches the application whole."""

from __future__ import annotations

from collections.abc import Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from dul.body_limit import BodyLimit


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"length": len(await request.body())})


def client(limit: int) -> TestClient:
    app = Starlette(routes=[Route("/", echo, methods=["POST", "GET"])])
    app.add_middleware(BodyLimit, max_bytes=limit)
    return TestClient(app)


def chunks(count: int, size: int) -> Iterator[bytes]:
    for _ in range(count):
        yield b"x" * size


def test_a_body_within_the_ceiling_reaches_the_app_whole() -> None:
    with client(1000) as c:
        assert c.post("/", content=b"x" * 1000).json() == {"length": 1000}
        assert c.post("/", content=chunks(10, 100)).json() == {"length": 1000}
        assert c.get("/").json() == {"length": 0}


def test_a_declared_or_streamed_body_past_the_ceiling_is_413_problem_json() -> None:
    with client(1000) as c:
        for content in (b"x" * 1001, chunks(11, 100)):
            response = c.post("/", content=content)
            assert response.status_code == 413
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "body_too_large"

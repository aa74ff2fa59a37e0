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


def test_a_body_nested_past_the_depth_is_422_problem_json_before_any_parser() -> None:
    """The JSON parser behind FastAPI recurses in C once per level, under a recursion limit
    py_ecc raises to 100,000: a body of 100,000 `[` overflowed the stack and killed the
    process. It is refused from its bytes; a wide body of the same size is not."""
    from dul.json_depth import MAX_JSON_DEPTH, too_deep

    with client(1_000_000) as c:
        past = MAX_JSON_DEPTH + 1
        for deep in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                     b"[" * 100_000, b"[1," * past + b"]" * past):  # fmt: skip
            response = c.post("/", content=deep)
            assert response.status_code == 422
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "body_too_deep"
        wide = b'{"requests": [' + b",".join([b'{"f": ["a", "[[[[", {"b": [1]}]}'] * 10_000) + b"]}"
        assert c.post("/", content=wide).json() == {"length": len(wide)}
    at_limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert not too_deep(at_limit)
    assert too_deep(b"[" + at_limit + b"]")
    assert not too_deep(b'["' + b"[" * 1000 + b'"]')  # brackets inside a string
    assert not too_deep(b'["\\"' + b"[" * 1000 + b'"]')  # after an escaped quote


def test_dropping_empty_strings_first_changes_no_bracket_shape() -> None:
    """`bracket_shape` drops adjacent quote pairs before it splits the strings out (a batch
    body holds thousands of strings, none with a bracket): on random bodies of quotes, escapes,
    brackets and letters it answers what splitting every string out answers."""
    import random

    from dul.json_depth import _NOT_STRUCTURE, bracket_shape, peeled_shape

    def split_all(body: bytes, max_depth: int) -> str | None:  # the shape before the shortcut
        if body.count(b"[") + body.count(b"{") <= max_depth:
            return None
        kept = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
        return peeled_shape(b"".join(kept.split(b'"')[::2]), max_depth)

    rng = random.Random(14)
    for _ in range(5_000):
        body = bytes(rng.choice(b'""""[]{}[[{{\\ab') for _ in range(rng.randrange(0, 80)))
        depth = rng.randrange(1, 6)
        assert bracket_shape(body, depth) == split_all(body, depth), body

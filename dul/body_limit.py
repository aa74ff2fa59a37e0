"""A ceiling on request bodies for the HTTP services, before any of their code runs.

Starlette and FastAPI read a body whole, before authentication and validation: without a
ceiling, anyone who can reach a port can make a service hold gigabytes. This ASGI middleware
reads the body itself up to `max_bytes` (refusing at once when `Content-Length` already says
more), answers 413 problem JSON `body_too_large` past it, and hands the application the body it
read as one message. A body whose brackets nest deeper than `dul.json_depth.MAX_JSON_DEPTH` is
refused too (422 `body_too_deep`): the JSON parser behind FastAPI would overflow the C stack
on it and take the whole process down.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dul.json_depth import MAX_JSON_DEPTH, too_deep

CODE = "body_too_large"
DEEP_CODE = "body_too_deep"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        chunks: list[bytes] = []
        size = 0
        first: Message
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app hears it
                first = message
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                whole = b"".join(chunks)
                if too_deep(whole):
                    await self._refuse(send, deep=True)
                    return
                first = {"type": "http.request", "body": whole, "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()  # what follows the body (a disconnect)

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, *, deep: bool = False) -> None:
        status, code, title, detail = (
            (422, DEEP_CODE, "Request body nested too deep",
             f"a request body's JSON may nest at most {MAX_JSON_DEPTH} levels deep")
            if deep
            else (413, CODE, "Request body too large",
                  f"a request body may hold at most {self.max_bytes} bytes")
        )  # fmt: skip
        body = json.dumps(
            {
                "type": f"urn:dul:problem:{code}",
                "title": title,
                "status": status,
                "detail": detail,
                "code": code,
            }
        ).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if not deep:
            headers.append((b"connection", b"close"))  # the rest of the body is not read
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

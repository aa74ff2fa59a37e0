"""The proxy's connection to its one JSON-RPC node: the `Upstream` protocol, and a minimal
keep-alive HTTP/1.1 client for a node on a TCP port (`dul.chain.ipc.IpcUpstream` is the other
one, for a node reached over its IPC socket).

Why not httpx: on the development machines an `httpx.AsyncClient` round trip to anvil costs
1-2 ms of client overhead against ~0.1 ms for this pool of asyncio streams, and the proxy sits
on every call of every component. It speaks exactly what a JSON-RPC node needs: POST with a
Content-Length body; responses with Content-Length, chunked, or close-delimited bodies;
http and https.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol
from urllib.parse import urlsplit


class UpstreamError(Exception):
    """The node could not be reached or answered with a broken HTTP response."""


class Upstream(Protocol):
    """What the proxy needs from the node: send a JSON body, get (status, body) back.

    The proxy sends no body without an id (`rpc_proxy._Proxy.forward`): every post is
    answered.
    """

    async def post(self, body: bytes) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class StreamUpstream:
    """A pool of keep-alive connections to one http(s):// URL."""

    def __init__(self, url: str, *, max_connections: int = 256, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port][/path], got {url!r}")
        self.url = url
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
            "Content-Length: "
        ).encode()
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Conn] = []

    async def post(self, body: bytes) -> tuple[int, bytes]:
        request = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
        async with self._slots:
            # A reused connection may have been closed by the node while idle: retry once
            # on a fresh one when it fails before any response byte arrived.
            while self._idle:
                conn = self._idle.pop()
                try:
                    return await self._exchange(conn, request)
                except _StaleConnectionError:
                    continue
            try:
                conn = await asyncio.wait_for(self._connect(), self._timeout)
            except (OSError, TimeoutError) as exc:
                raise UpstreamError(f"cannot connect to {self.url}: {exc}") from exc
            try:
                return await self._exchange(conn, request)
            except _StaleConnectionError as exc:
                raise UpstreamError(f"{self.url} closed the connection") from exc

    async def _connect(self) -> _Conn:
        context = ssl.create_default_context() if self._tls else None
        return await asyncio.open_connection(self._host, self._port, ssl=context, limit=1 << 20)

    async def _exchange(self, conn: _Conn, request: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        keep = False
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    writer.write(request)
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                except (OSError, asyncio.IncompleteReadError) as exc:
                    raise _StaleConnectionError(str(exc)) from exc
                status, length, chunked, keep = _parse_head(head)
                if chunked:
                    body = await _read_chunked(reader)
                elif length is not None:
                    body = await reader.readexactly(length)
                else:
                    body, keep = await reader.read(), False
        except _StaleConnectionError:
            writer.close()
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            writer.close()
            raise UpstreamError(f"broken response from {self.url}: {exc}") from exc
        except TimeoutError as exc:
            writer.close()
            raise UpstreamError(f"{self.url} did not answer within {self._timeout:g}s") from exc
        except BaseException:
            writer.close()  # cancelled mid-exchange: the connection's state is unknown
            raise
        if keep:
            self._idle.append(conn)
        else:
            writer.close()
        return status, body

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


class _StaleConnectionError(Exception):
    pass


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content-length, chunked, keep-alive) from a response head."""
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(status_line[1])
    keep = status_line[0] == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            keep = token == b"keep-alive" or (keep and token != b"close")
    return status, length, chunked, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)

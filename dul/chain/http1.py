"""A lean HTTP/1.1 POST over keep-alive connections, for `AsyncRpcClient` on a plain `http://`
URL (the gateway's node or permission guard).

httpx spent ~1.2 ms of CPU per JSON-RPC call in the gateway (measured on the loaded machine:
request building, its transport and connection-pool layers, anyio): the gateway polls the node
some 30 times a second (chain view, consent view, receipts, sends), all on the event loop that
decides access requests. This client writes the request in one `write`, reads the status line,
the headers and a `Content-Length` or chunked body, and keeps the connection for the next call:
~0.1 ms. What it does not do (TLS, proxies, redirects, HTTP/2) stays with httpx, which
`AsyncRpcClient` still uses for any other URL or an injected client.

Errors: `Http1Error` for anything that is not an HTTP answer (refused or dropped connection,
malformed reply); `TimeoutError` from the caller's deadline, split as `ConnectTimeoutError` (no
connection: the node is away) and `ReadTimeoutError` (connected, no answer in time).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from dul.chain.ipc import MAX_REPLY_BYTES

MAX_HEADER_BYTES = 64 * 1024
"""A status line and headers longer than this are not an answer from a JSON-RPC node."""
MAX_BODY_BYTES = MAX_REPLY_BYTES
"""A body longer than this is refused before it is read, as over the node's IPC socket: a node
or guard answering without end must not fill the gateway's memory."""


class Http1Error(Exception):
    """No HTTP answer: the connection failed or the reply was not HTTP/1.x."""


class ConnectTimeoutError(TimeoutError):
    """No connection within the connect timeout."""


class ReadTimeoutError(TimeoutError):
    """Connected, but no whole answer within the timeout."""


class _StaleError(Exception):
    """A reused keep-alive connection turned out closed before any answer byte: send again on a
    new one (the server closes idle connections, e.g. uvicorn after 5 s)."""


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Http1Pool:
    """POST bodies to one `http://` URL over at most `max_connections` keep-alive connections."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int = 16,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain http:// URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [f"Host: {parts.netloc}", "Content-Type: application/json", "Accept: */*"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in lines)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: list[Stream] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """(status, body) of the answer to POSTing `body` (JSON)."""
        if self._closed:
            raise Http1Error("the client is closed")
        request = (self._head + f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        async with self._slots:
            while self._idle:
                stream = self._idle.pop()
                if stream[0].at_eof() or stream[1].is_closing():
                    _close(stream)
                    continue
                try:
                    return await self._exchange(stream, request, reused=True)
                except _StaleError:
                    continue  # closed under us: the next idle one, or a new connection
            return await self._exchange(await self._connect(), request, reused=False)

    async def _connect(self) -> Stream:
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await asyncio.open_connection(self.host, self.port, limit=2**20)
        except TimeoutError:
            raise ConnectTimeoutError(f"no connection to {self.host}:{self.port}") from None
        except OSError as exc:
            raise Http1Error(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc

    async def _exchange(self, stream: Stream, request: bytes, *, reused: bool) -> tuple[int, bytes]:
        reader, writer = stream
        answered = False
        keep = False
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionResetError("the server closed the connection")
                answered = True
                status, keep_alive, length, chunked = await _head(reader, status_line)
                if chunked:
                    content = await _chunked(reader)
                elif length is not None:
                    if length > MAX_BODY_BYTES:
                        raise ValueError(f"a body of {length} bytes")
                    content = await reader.readexactly(length)
                else:  # neither: the body runs to the end of the connection
                    content = await _to_end(reader)
                    keep_alive = False
            keep = keep_alive
            return status, content
        except TimeoutError:
            raise ReadTimeoutError(f"no answer from {self.host}:{self.port} in time") from None
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            if reused and not answered:
                raise _StaleError from exc
            raise Http1Error(f"the connection to {self.host}:{self.port} failed: {exc!r}") from exc
        except ValueError as exc:  # a malformed status line, header or chunk size
            raise Http1Error(f"not an HTTP answer from {self.host}:{self.port}: {exc}") from exc
        finally:
            if keep and not self._closed:
                self._idle.append(stream)
            else:
                _close(stream)

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            _close(self._idle.pop())


async def _head(
    reader: asyncio.StreamReader, status_line: bytes
) -> tuple[int, bool, int | None, bool]:
    """(status, keep-alive, content length, chunked) from the status line and the headers."""
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"status line {status_line[:100]!r}")
    status = int(parts[1])
    keep_alive = parts[0] != b"HTTP/1.0"
    length: int | None = None
    chunked = False
    size = len(status_line)
    while True:
        line = await reader.readline()
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise ValueError("headers too long")
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            if not value.isdigit():
                raise ValueError(f"Content-Length {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"connection":
            keep_alive = value == b"keep-alive" or (keep_alive and value != b"close")
    if status in (204, 304):  # no body, whatever the headers say
        length, chunked = 0, False
    return status, keep_alive, length, chunked


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (trailer := await reader.readline()) not in (b"\r\n", b"\n", b""):
                del trailer
            return b"".join(chunks)
        total += size
        if total > MAX_BODY_BYTES:
            raise ValueError(f"a chunked body of more than {MAX_BODY_BYTES} bytes")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)  # CRLF after each chunk


async def _to_end(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while part := await reader.read(MAX_BODY_BYTES + 1 - total):
        parts.append(part)
        total += len(part)
        if total > MAX_BODY_BYTES:
            raise ValueError(f"a body of more than {MAX_BODY_BYTES} bytes")
    return b"".join(parts)


def _close(stream: Stream) -> None:
    with contextlib.suppress(Exception):
        stream[1].close()

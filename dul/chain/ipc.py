"""JSON-RPC over the node's IPC unix socket: how the proxy (and test set-up) reach anvil when it
runs in a network namespace of its own and has no reachable TCP port.

anvil's IPC server reads complete JSON values and writes each reply as one compact JSON line.
It answers pipelined requests out of order and never answers a notification (a request without
`id`), so each connection carries one request at a time and a caller that sends only
notifications does not wait for a reply.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from dul.chain.upstream import UpstreamError

#: Longest reply accepted (eth_getLogs pages are bounded by the callers well below this).
MAX_REPLY_BYTES = 64 * 1024 * 1024
#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def is_ipc_target(target: str) -> bool:
    """True for a node endpoint that is an IPC socket path (`/…` or `ipc:///…`), not a URL."""
    return target.startswith(("/", "ipc://"))


def socket_path(target: str) -> str:
    return target.removeprefix("ipc://")


class IpcUpstream:
    """A pool of unix-socket connections to the node (the proxy's `Upstream`)."""

    def __init__(self, target: str, *, max_connections: int = 256, timeout: float = 30.0) -> None:
        self.path = socket_path(target)
        self.url = "ipc://" + self.path
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Conn] = []

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send one JSON-RPC message with at least one id in it; (200, its reply line). A
        message without one (only notifications) would leave a node that answers it anyway a
        reply on the pooled connection for the next caller: the proxy never sends one."""
        message = body.strip() + b"\n"
        async with self._slots:
            # An idle connection may have been closed by a restarted node: retry on a fresh
            # one when it fails before any reply byte arrived.
            while self._idle:
                conn = self._idle.pop()
                try:
                    return await self._exchange(conn, message)
                except _StaleConnectionError:
                    continue
            try:
                conn = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.path, limit=MAX_REPLY_BYTES), self._timeout
                )
            except (OSError, TimeoutError) as exc:
                raise UpstreamError(f"cannot connect to {self.url}: {exc}") from exc
            try:
                return await self._exchange(conn, message)
            except _StaleConnectionError as exc:
                raise UpstreamError(f"{self.url} closed the connection") from exc

    async def _exchange(self, conn: _Conn, message: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    writer.write(message)
                    await writer.drain()
                    line = await reader.readuntil(b"\n")
                except (OSError, asyncio.IncompleteReadError) as exc:
                    raise _StaleConnectionError(str(exc)) from exc
        except _StaleConnectionError:
            writer.close()
            raise
        except (OSError, asyncio.LimitOverrunError) as exc:
            writer.close()
            raise UpstreamError(f"broken reply from {self.url}: {exc}") from exc
        except TimeoutError as exc:
            writer.close()  # a late reply would answer the next request: drop the connection
            raise UpstreamError(f"{self.url} did not answer within {self._timeout:g}s") from exc
        except BaseException:
            writer.close()  # cancelled mid-exchange: the connection's state is unknown
            raise
        self._idle.append(conn)
        return 200, line.rstrip(b"\r\n")

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


class _StaleConnectionError(Exception):
    pass


def ipc_call(target: str, payload: Any, timeout: float = 10.0) -> Any:
    """One blocking JSON-RPC exchange on a fresh connection: the decoded reply.

    For start-up checks and test set-up; the proxy uses `IpcUpstream`.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path(target))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        chunks: list[bytes] = []
        while not chunks or not chunks[-1].endswith(b"\n"):
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"{target} closed the connection before replying")
            chunks.append(chunk)
    return json.loads(b"".join(chunks))

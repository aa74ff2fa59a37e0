"""`AsyncRpcClient` on a plain http:// URL talks HTTP/1.1 itself (`dul.chain.http1`): against a
scripted server on 127.0.0.1 it keeps connections alive, reads Content-Length and chunked
bodies, survives the server closing an idle connection, and maps every failure as the httpx
path does (no answer: NodeUnavailableError; a slow eth_getLogs: RangeRefusedError)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dul.chain import http1
from dul.chain.rpc import AsyncRpcClient, NodeUnavailableError, RangeRefusedError, RpcError

Reply = Callable[[dict[str, Any], bytes], Awaitable[bytes | None]]
"""What the server writes for one request (its JSON body and head); None: close at once."""


class Server:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/rpc"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = json.loads(await reader.readexactly(length))
                out = await self.reply(body, head)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(body: dict[str, Any], result: Any, *, extra: bytes = b"", status: int = 200) -> bytes:
    payload = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n".encode()
        + extra
        + b"\r\n"
        + payload
    )


def test_keep_alive_chunked_and_closed_connections() -> None:
    async def main() -> None:
        calls = 0

        async def reply(body: dict[str, Any], head: bytes) -> bytes | None:
            nonlocal calls
            calls += 1
            if calls == 3:  # chunked, in two chunks
                payload = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": "0x3"})
                raw = payload.encode()
                return (
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + f"{5:x}\r\n".encode() + raw[:5] + b"\r\n"
                    + f"{len(raw) - 5:x}\r\n".encode() + raw[5:] + b"\r\n0\r\n\r\n"
                )  # fmt: skip
            if calls == 4:  # the server closes this connection after answering
                return answer(body, "0x4", extra=b"Connection: close\r\n")
            return answer(body, hex(calls))

        server = Server(reply)
        async with server as url:
            rpc = AsyncRpcClient(url, token="tok", timeout=2.0)
            try:
                assert [await rpc.block_number() for _ in range(5)] == [1, 2, 3, 4, 5]
            finally:
                await rpc.aclose()
        assert server.connections == 2  # one until "Connection: close", then a new one
        head = server.heads[0].decode()
        assert head.startswith("POST /rpc HTTP/1.1\r\n")
        assert "Authorization: Bearer tok\r\n" in head

    asyncio.run(main())


def test_an_idle_connection_the_server_dropped_is_replaced() -> None:
    async def main() -> None:
        writers: list[asyncio.StreamWriter] = []
        calls = 0

        async def reply(body: dict[str, Any], head: bytes) -> bytes | None:
            nonlocal calls
            calls += 1
            return answer(body, hex(calls))

        server = Server(reply)
        async with server as url:
            rpc = AsyncRpcClient(url, token="", timeout=2.0)
            try:
                assert await rpc.block_number() == 1
                # the server drops the kept connection without a word (an idle timeout)
                assert rpc._lean is not None
                for _, writer in rpc._lean._idle:
                    writers.append(writer)
                for transport in [w.transport for w in writers]:
                    transport.abort()
                assert await rpc.block_number() == 2
            finally:
                await rpc.aclose()
        assert server.connections == 2

    asyncio.run(main())


def test_failures_map_as_the_httpx_path_does() -> None:
    async def main() -> None:
        async def refuse(body: dict[str, Any], head: bytes) -> bytes | None:
            if body["method"] == "eth_chainId":
                payload = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32003,"message":"no"}}'
                return b"HTTP/1.1 403 F\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
            if body["method"] == "eth_gasPrice":
                return b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>"
            if body["method"] == "eth_syncing":
                return b"SMTP ready\r\n\r\n"
            if body["method"] == "eth_accounts":
                return None  # closes without answering
            if body["method"] in ("eth_getLogs", "eth_call"):
                await asyncio.sleep(5)
            return b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"

        async with Server(refuse) as url:
            rpc = AsyncRpcClient(url, token="", timeout=0.3)
            try:
                with pytest.raises(NodeUnavailableError):
                    await rpc.block_number()  # 503
                with pytest.raises(RpcError) as refused:
                    await rpc.chain_id()  # the guard's 403 with a JSON-RPC error
                assert refused.value.rpc_code == -32003
                for method in ("eth_gasPrice", "eth_syncing", "eth_accounts"):
                    with pytest.raises(NodeUnavailableError):
                        await rpc.request(method)
                with pytest.raises(RangeRefusedError):
                    await rpc.request("eth_getLogs", {"fromBlock": "0x0", "toBlock": "0x1"})
                with pytest.raises(NodeUnavailableError):
                    await rpc.request("eth_call", {}, "latest")
                # and it still answers afterwards (with a fresh connection each time)
                with pytest.raises(NodeUnavailableError):
                    await rpc.block_number()
            finally:
                await rpc.aclose()
        # nothing listens any more
        rpc = AsyncRpcClient(url, token="", timeout=0.3)
        try:
            with pytest.raises(NodeUnavailableError):
                await rpc.block_number()
        finally:
            await rpc.aclose()

    asyncio.run(main())


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Content-Length, a chunked body or a body to the connection's end longer than
    MAX_BODY_BYTES is no answer (NodeUnavailableError), whatever the server goes on sending;
    one within it is read as before."""
    monkeypatch.setattr(http1, "MAX_BODY_BYTES", 64)
    big = b'{"jsonrpc":"2.0","id":1,"result":"' + b"0" * 100 + b'"}'

    async def main() -> None:
        async def huge(body: dict[str, Any], head: bytes) -> bytes | None:
            method = body["method"]
            if method == "eth_chainId":  # declares 10 GB and sends forever
                return b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n" + big
            if method == "eth_gasPrice":
                size = b"%x" % len(big)
                return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + size + b"\r\n" + big + b"\r\n0\r\n\r\n")  # fmt: skip
            if method == "eth_syncing":
                return b"HTTP/1.0 200 OK\r\n\r\n" + big
            return answer(body, "0x1")

        async with Server(huge) as url:
            rpc = AsyncRpcClient(url, token="", timeout=2)
            try:
                for method in ("eth_chainId", "eth_gasPrice", "eth_syncing"):
                    with pytest.raises(NodeUnavailableError):
                        await rpc.request(method)
                assert await rpc.block_number() == 1
            finally:
                await rpc.aclose()

    asyncio.run(main())


def test_a_body_to_the_connections_end_is_read_whole_across_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "MAX_BODY_BYTES", 64)

    async def main() -> None:
        reader = asyncio.StreamReader()
        for piece in (b"a" * 30, b"b" * 30, b"c" * 4):  # 64 bytes: the limit itself
            reader.feed_data(piece)
        reader.feed_eof()
        assert await http1._to_end(reader) == b"a" * 30 + b"b" * 30 + b"c" * 4
        reader = asyncio.StreamReader()
        reader.feed_data(b"x" * 65)
        reader.feed_eof()
        with pytest.raises(ValueError, match="more than 64 bytes"):
            await http1._to_end(reader)

    asyncio.run(main())


def test_batches_and_concurrent_calls_share_the_pool() -> None:
    async def main() -> None:
        async def reply(body: Any, head: bytes) -> bytes | None:
            await asyncio.sleep(0.01)
            if isinstance(body, list):
                payload = json.dumps(
                    [{"jsonrpc": "2.0", "id": b["id"], "result": b["params"][0]} for b in body]
                ).encode()
                return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
            return answer(body, body["params"][0] if body["params"] else "0x0")

        server = Server(reply)
        async with server as url:
            rpc = AsyncRpcClient(url, token="", timeout=2.0)
            try:
                results = await asyncio.gather(
                    *(rpc.request("echo", hex(i)) for i in range(20)),
                    rpc.batch([("echo", [hex(i)]) for i in range(300)]),
                )
            finally:
                await rpc.aclose()
        assert results[:20] == [hex(i) for i in range(20)]
        assert results[20] == [hex(i) for i in range(300)]
        assert server.connections <= 16

    asyncio.run(main())

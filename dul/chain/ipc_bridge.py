"""Test infrastructure: a node that speaks JSON-RPC over HTTP only (Hardhat's), isolated as
anvil is — in a network namespace of its own, answering only on an IPC socket.

    unshare -n python -m dul.chain.ipc_bridge --url http://127.0.0.1:PORT --socket PATH -- CMD…

brings the namespace's loopback interface up (a new namespace's is down), starts the node's
command, waits until it answers, then relays each newline-terminated JSON-RPC message from the
socket to the node and its reply back as one line (what `dul.chain.ipc` speaks). Without
`--socket` it only supervises the node (the loopback fallback). SIGTERM stops the node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import httpx

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2 in the namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def wait_answering(url: str, node: subprocess.Popen[bytes], timeout: float) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    deadline = time.monotonic() + timeout
    while True:
        if node.poll() is not None:
            sys.exit(f"the node exited during start-up with status {node.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if "result" in httpx.post(url, json=body, timeout=1.0).json():
                return
        if time.monotonic() > deadline:
            sys.exit(f"the node did not answer at {url} within {timeout:g}s")
        time.sleep(0.05)


async def relay(url: str, path: str, node: subprocess.Popen[bytes]) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while line := await reader.readline():
                    if not line.strip():
                        continue
                    expects_reply = _expects_reply(line)
                    reply = await client.post(
                        url, content=line, headers={"content-type": "application/json"}
                    )
                    if expects_reply:
                        compact = json.dumps(reply.json(), separators=(",", ":"))
                        writer.write(compact.encode() + b"\n")
                        await writer.drain()
            except (OSError, ValueError, httpx.HTTPError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        old_umask = os.umask(0o077)
        try:
            server = await asyncio.start_unix_server(serve, path, limit=MAX_MESSAGE_BYTES)
        finally:
            os.umask(old_umask)
        async with server:
            while node.poll() is None:
                await asyncio.sleep(0.2)


def _expects_reply(line: bytes) -> bool:
    try:
        message = json.loads(line)
    except ValueError:
        return True  # the node answers a parse error
    if isinstance(message, dict):
        return "id" in message
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dul.chain.ipc_bridge")
    parser.add_argument("--url", required=True, help="the node's http URL inside the namespace")
    parser.add_argument("--socket", help="the IPC socket to answer on (none: supervise only)")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--cwd", help="the node's working directory")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("the node's command is missing")
    if args.socket:
        loopback_up()
    node = subprocess.Popen(command, stdin=subprocess.DEVNULL, cwd=args.cwd)

    def stop(signum: int, _frame: object) -> None:
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wait_answering(args.url, node, args.start_timeout)
    if args.socket:
        asyncio.run(relay(args.url, args.socket, node))
    return node.wait()


if __name__ == "__main__":
    sys.exit(main())

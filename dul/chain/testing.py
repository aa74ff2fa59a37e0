"""Helpers for tests that need a real chain: free ports, throw-away settings, a handle.

Lives in the package (like `starlette.testclient`) so every test module can import it with
full types; `tests/conftest.py`'s `chain` fixture builds on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from dul.chain.ipc import ipc_call, is_ipc_target
from dul.chain.node import ChainNode, _format_seconds
from dul.chain.rpc_auth import OPERATOR_PERMISSIONS, bearer_headers
from dul.chain.settings import ChainSettings
from dul.home import Home

#: Deterministic operator key of test chains (public knowledge: never use it outside tests).
TEST_OPERATOR_KEY = "0x" + keccak(b"dul test operator").hex()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def throwaway_chain_settings(operator: str | None = None, **overrides: Any) -> ChainSettings:
    """Settings for a throw-away chain on free ports with 0.2 s blocks."""
    public, internal = free_ports(2)
    values: dict[str, Any] = {
        "port": public,
        "node_port": internal,
        "block_time": 0.2,
        "chain_id": 31337,
        "operator_address": operator,
        "start_timeout": 30.0,
    }
    values.update(overrides)
    return ChainSettings(**values)


def _listening_sockets() -> dict[int, set[str]]:
    """Loopback/wildcard TCP ports in LISTEN state (as this process's network namespace sees
    them) with their socket inodes."""
    found: dict[int, set[str]] = {}
    for table, addresses in (
        ("/proc/net/tcp", {"0100007F", "00000000"}),
        ("/proc/net/tcp6", {"00000000000000000000000001000000", "0" * 32}),
    ):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[3] == "0A" and address in addresses:
                    found.setdefault(int(port, 16), set()).add(fields[9])
    return found


def _socket_owners(inodes: set[str]) -> set[int]:
    """Pids holding one of the sockets (all processes as root, else this user's)."""
    owners: set[int] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        owners.add(int(fd_dir.parent.name))
    return owners


def ports_answering_cheat_methods() -> dict[int, set[int]]:
    """Every listening local TCP port that answers `evm_snapshot` or `anvil_setBalance` over
    HTTP JSON-RPC, with the pids that hold it: what any local user could rewrite a chain by."""
    answered: dict[int, set[int]] = {}
    probes: tuple[tuple[str, list[str]], ...] = (
        ("evm_snapshot", []),
        ("anvil_setBalance", ["0x" + "00" * 19 + "01", "0x0"]),
    )
    with httpx.Client(timeout=1.0) as client:
        for port, inodes in sorted(_listening_sockets().items()):
            for method, params in probes:
                body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
                try:
                    reply = client.post(f"http://127.0.0.1:{port}", json=body).json()
                except (httpx.HTTPError, ValueError):
                    continue
                if isinstance(reply, dict) and "result" in reply:
                    answered[port] = _socket_owners(inodes)
    return answered


#: ethers v6 from the repository's node_modules (`npm ci`), for wallet-compatibility tests.
ETHERS = Path(__file__).resolve().parents[2] / "node_modules" / "ethers"


def run_ethers_wallet(
    rpc_url: str, key: bytes, to: str, token: str | None = None
) -> dict[str, Any]:
    """A stock ethers v6 wallet sends one zero-value transaction (`ethers_wallet.cjs`): the
    JSON line it prints, or AssertionError carrying its error output."""
    env = {**os.environ, "RPC_URL": rpc_url, "KEY": "0x" + key.hex(), "TO": to}
    if token is not None:
        env["RPC_TOKEN"] = token
    script = Path(__file__).with_name("ethers_wallet.cjs")
    node = shutil.which("node") or "node"
    done = subprocess.run(
        [node, str(script)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


#: The nodes the chain-facing tests run on (a session fixture parameter, named in test ids).
NODES = ("anvil", "hardhat")
HARDHAT_CONFIG = Path(__file__).with_name("hardhat-node.config.js")
HARDHAT_CLI = Path(__file__).resolve().parents[2] / "node_modules/hardhat/internal/cli/cli.js"
BRIDGE_MODULE = "dul.chain.ipc_bridge"


class HardhatChainNode(ChainNode):
    """Hardhat's node (EDR, npm `hardhat`) in place of anvil, behind the same permissioned
    proxy and isolated the same way: in a network namespace of its own, bound to its
    127.0.0.1 (`--hostname`; it binds every interface otherwise), answering the proxy on an
    IPC socket through `dul.chain.ipc_bridge`. It keeps no state across a restart."""

    node_marker = BRIDGE_MODULE

    def _node_command(
        self, launcher: list[str] | None, host: str, port: int, ipc: str | None
    ) -> tuple[list[str], str, str]:
        s = self.settings
        node = shutil.which("node") or "node"
        cache = self.home.chain_dir / "hardhat-cache"
        self.node_env = {
            **os.environ,
            "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
            "DUL_HARDHAT_CHAIN_ID": str(s.chain_id),
            "DUL_HARDHAT_GAS_LIMIT": str(s.gas_limit),
            "DUL_HARDHAT_BLOCK_MS": str(max(1, round(s.block_time * 1000))),
            "DUL_HARDHAT_CACHE": str(cache),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
        url = f"http://{host}:{port}"
        hardhat = [
            node, str(HARDHAT_CLI), "--config", str(HARDHAT_CONFIG),
            "node", "--hostname", host, "--port", str(port),
        ]  # fmt: skip
        bridge = [sys.executable, "-m", BRIDGE_MODULE, "--url", url]
        bridge += ["--start-timeout", _format_seconds(s.start_timeout)]
        bridge += ["--cwd", str(HARDHAT_CLI.parents[3])]  # Hardhat runs from its project only
        if launcher is None or ipc is None:
            return [*bridge, "--", *hardhat], url, str(HARDHAT_CLI)
        return [*launcher, *bridge, "--socket", ipc, "--", *hardhat], ipc, str(HARDHAT_CLI)


def start_chain(kind: str, home: Home, settings: ChainSettings) -> ChainNode:
    """A started chain of `kind` (one of NODES) behind the permissioned proxy."""
    if kind not in NODES:
        raise ValueError(f"unknown node {kind!r}: one of {', '.join(NODES)}")
    node = ChainNode(home, settings) if kind == "anvil" else HardhatChainNode(home, settings)
    node.start()
    return node


#: anvil's cheat methods under Hardhat's names (same parameters).
_HARDHAT_CHEATS = {
    "anvil_mine": "hardhat_mine",
    "anvil_setStorageAt": "hardhat_setStorageAt",
    "anvil_impersonateAccount": "hardhat_impersonateAccount",
    "anvil_stopImpersonatingAccount": "hardhat_stopImpersonatingAccount",
    "anvil_setBalance": "hardhat_setBalance",
    "anvil_setCode": "hardhat_setCode",
    "anvil_setNonce": "hardhat_setNonce",
}


def node_call_raw(node_url: str, method: str, *params: Any, timeout: float = 30.0) -> Any:
    """One JSON-RPC call to the node itself, past the proxy: over its IPC socket when
    `node_url` is a path (the namespaced node), else over HTTP (the loopback fallback).
    The full reply (result or error)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    if is_ipc_target(node_url):
        return ipc_call(node_url, body, timeout=timeout)
    return httpx.post(node_url, json=body, timeout=timeout).json()


def node_call(node_url: str, method: str, *params: Any, timeout: float = 30.0) -> Any:
    """`node_call_raw`'s result, or AssertionError carrying the JSON-RPC error."""
    reply = node_call_raw(node_url, method, *params, timeout=timeout)
    assert isinstance(reply, dict), f"{method}: not a JSON-RPC reply: {reply}"
    assert "error" not in reply, f"{method} failed: {reply['error']}"
    return reply["result"]


@dataclass
class ChainHandle:
    """A running embedded chain, as the `chain` fixture yields it."""

    rpc_url: str
    node_url: str  # the node's IPC socket path, or its http URL in the loopback fallback
    chain_id: int
    home: Home
    operator: LocalAccount
    node: ChainNode
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0))
    token: str | None = None
    """The RPC token `rpc`/`send_raw` present: `DUL_RPC_TOKEN`, else one for the operator
    signed with the chain's own key."""
    kind: str = "anvil"
    """Which node answers (one of NODES): `node_rpc` speaks its cheat methods."""

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = os.environ.get("DUL_RPC_TOKEN") or self.node.issue_token(
                "tests", OPERATOR_PERMISSIONS, 24 * 3600
            )
        self.client.headers.update(bearer_headers(self.token))

    @property
    def env(self) -> dict[str, str]:
        """For subprocess / CLI tests: `CliRunner().invoke(app, [...], env=chain.env)`."""
        env = {"DUL_HOME": str(self.home.root), "DUL_RPC_URL": self.rpc_url}
        return {**env, "DUL_RPC_TOKEN": self.token} if self.token else env

    def rpc_raw(self, method: str, *params: Any, url: str | None = None) -> dict[str, Any]:
        """The full JSON-RPC reply (result or error)."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        reply: dict[str, Any] = self.client.post(url or self.rpc_url, json=body).json()
        return reply

    def rpc(self, method: str, *params: Any, url: str | None = None) -> Any:
        """The result, or AssertionError carrying the JSON-RPC error."""
        reply = self.rpc_raw(method, *params, url=url)
        assert "error" not in reply, f"{method} failed: {reply['error']}"
        return reply["result"]

    def node_rpc(self, method: str, *params: Any) -> Any:
        """Drive the node itself, past the permissioned proxy (cheat methods: evm_snapshot,
        evm_revert, anvil_setStorageAt, anvil_impersonateAccount, …). Only for test set-up and
        attacks that the product never does; the result, or AssertionError with the error.
        Reaches the namespaced node over its IPC socket (`node_url` is then its path)."""
        reply = self.node_rpc_raw(method, *params)
        assert "error" not in reply, f"{method} failed: {reply['error']}"
        return reply["result"]

    def node_rpc_raw(self, method: str, *params: Any) -> dict[str, Any]:
        """`node_rpc`'s full JSON-RPC reply (result or error). anvil's cheat methods are
        asked of Hardhat's node under its own names."""
        if method == "evm_revert":
            return self._revert(*params)
        if self.kind == "hardhat":
            if method == "anvil_dropAllTransactions":
                return self._drop_pending_transactions()
            if method == "anvil_mine":
                return self._mine_blocks(int(params[0], 16) if params else 1)
            method = _HARDHAT_CHEATS.get(method, method)
        reply: dict[str, Any] = node_call_raw(self.node_url, method, *params)
        return reply

    def _revert(self, *params: Any) -> dict[str, Any]:
        """`evm_revert`, then the node's clock set back to this machine's
        (`evm_setNextBlockTimestamp`, which both nodes take as their new offset).

        Neither node keeps its clock through a revert, and what it does instead stays for the
        rest of the node's life, summed over every revert: anvil goes back to the snapshot's
        block time (behind the wall clock by the time since the snapshot); Hardhat's node (EDR
        0.12) adds the whole seconds since the snapshot to its offset, ahead of the wall clock
        by as much (its `revert_to_snapshot` adds what its comment says to subtract). Measured
        with 0.2 s blocks: Hardhat's latest block 1.2-2.0 s behind the wall clock idle, +1.9 s
        ahead after a revert 3 s after its snapshot, +7.9 s after a second one 6 s after its
        own; anvil 9 s behind after the same two. Every later test on a shared node then saw a
        consent just recorded (in force from its block's time) not yet in force at the
        gateway's clock, or a code's expiry not yet past on chain. Hardhat's node mines no block
        meanwhile: one mined between the revert and the reset would keep its clock ahead."""
        pause = self.kind == "hardhat"
        if pause:
            node_call(self.node_url, "evm_setIntervalMining", 0)
        try:
            reply: dict[str, Any] = node_call_raw(self.node_url, "evm_revert", *params)
            if reply.get("result") is True:
                self.set_clock_to_wall()
        finally:
            if pause:
                block_ms = max(1, round(self.node.settings.block_time * 1000))
                node_call(self.node_url, "evm_setIntervalMining", block_ms)
        return reply

    def set_clock_to_wall(self, limit_s: float = 10.0) -> None:
        """Set the node's clock to this machine's (`evm_setNextBlockTimestamp`, which both
        nodes take as their new offset). A chain's time never goes back: where the node runs
        ahead, its blocks keep the latest one's time until this machine's clock reaches it.
        For tests that run the node ahead."""
        deadline = time.monotonic() + limit_s
        while True:
            latest = node_call(self.node_url, "eth_getBlockByNumber", "latest", False)
            now, stamp = int(time.time()), int(latest["timestamp"], 16)
            reply = node_call_raw(self.node_url, "evm_setNextBlockTimestamp", hex(max(now, stamp)))
            if now >= stamp and "error" not in reply:  # an error: a block came first, again
                return
            assert time.monotonic() < deadline, f"the node's clock stayed ahead: {stamp} > {now}"
            time.sleep(0.05)

    def _mine_blocks(self, count: int) -> dict[str, Any]:
        """Blocks one `evm_mine` each (in one batch): Hardhat's `hardhat_mine` makes "reserved"
        blocks whose `parentHash` reads as zero, which no chain follower can link."""
        body = [{"jsonrpc": "2.0", "id": n, "method": "evm_mine", "params": []}
                for n in range(count)]  # fmt: skip
        if is_ipc_target(self.node_url):
            replies = ipc_call(self.node_url, body, timeout=120.0)
        else:
            replies = httpx.post(self.node_url, json=body, timeout=120.0).json()
        failed = [r for r in replies if "error" in r]
        assert not failed, f"evm_mine failed: {failed[:1]}"
        return {"jsonrpc": "2.0", "id": 1, "result": None}

    def _drop_pending_transactions(self) -> dict[str, Any]:
        """Hardhat drops one transaction at a time: each of the pending block's."""
        pending = node_call(self.node_url, "eth_getBlockByNumber", "pending", False)
        for tx_hash in pending["transactions"]:
            node_call(self.node_url, "hardhat_dropTransaction", tx_hash)
        return {"jsonrpc": "2.0", "id": 1, "result": None}

    def wait_receipt(
        self, tx_hash: str, timeout: float = 10.0, *, url: str | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            receipt = self.rpc("eth_getTransactionReceipt", tx_hash, url=url)
            if receipt is not None:
                return dict(receipt)
            time.sleep(0.05)
        raise AssertionError(f"no receipt for {tx_hash} within {timeout}s")

    def send_raw(self, raw: bytes, *, url: str | None = None) -> dict[str, Any]:
        """Submit a signed transaction (through the proxy by default), wait for its receipt."""
        tx_hash = self.rpc("eth_sendRawTransaction", "0x" + raw.hex(), url=url)
        return self.wait_receipt(str(tx_hash), url=url)


def chain_haystack(request: Callable[..., Any], first_block: int = 0) -> tuple[bytes, int, int]:
    """Every transaction input and every event (data and topics) from `first_block` to the
    head, joined: what a privacy scan searches for patients' identities. `request(method,
    params)` is a JSON-RPC call answering `{"result": ...}` (web3's `provider.make_request`).
    Returns (haystack, transactions, logs)."""

    def call(method: str, *params: Any) -> Any:
        answer = request(method, list(params))
        assert "error" not in answer, answer
        return answer["result"]

    head = int(call("eth_blockNumber"), 16)
    parts: list[bytes] = []
    transactions = 0
    for number in range(first_block, head + 1):
        block = call("eth_getBlockByNumber", hex(number), True)
        for tx in block["transactions"]:
            parts.append(bytes.fromhex(tx["input"][2:]))
            transactions += 1
    logs = call("eth_getLogs", {"fromBlock": hex(first_block), "toBlock": hex(head)})
    for entry in logs:
        parts.append(bytes.fromhex(entry["data"][2:]))
        parts.extend(bytes.fromhex(topic[2:]) for topic in entry["topics"])
    return b"\n".join(parts), transactions, len(logs)

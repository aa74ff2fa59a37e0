"""The permissioned endpoint against a real anvil over real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from dul.chain.rpc_filter import METHOD_NOT_FOUND, UNAUTHORIZED
from dul.chain.testing import ChainHandle, free_port
from dul.chain.upstream import StreamUpstream, UpstreamError

pytestmark = pytest.mark.integration

TO = "0x000000000000000000000000000000000000dEaD"


def membership_double_creation_code(member: str) -> bytes:
    """Test double for `Membership.isAuthorizedSender(address)`, hand-assembled EVM.

    Runtime: return abi-encoded `calldata[4:36] == member` for any call (the selector is
    not checked). Creation code copies the 33-byte runtime into memory and returns it.
    """
    runtime = (
        bytes.fromhex("600435")  # PUSH1 4 CALLDATALOAD            -> the address argument
        + b"\x73"
        + bytes.fromhex(member[2:])  # PUSH20 member
        + bytes.fromhex("14")  # EQ
        + bytes.fromhex("60005260206000f3")  # PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN
    )
    assert len(runtime) == 0x21
    # PUSH1 0x21 DUP1 PUSH1 0x0b PUSH1 0 CODECOPY PUSH1 0 RETURN  (11 bytes, then runtime)
    return bytes.fromhex("602180600b6000396000f3") + runtime


def _post(url: str, body: Any) -> Any:
    return httpx.post(url, json=body, timeout=10.0).json()


def _request(method: str, *params: Any, request_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}


def _nonce(chain: ChainHandle, address: str) -> int:
    return int(chain.rpc("eth_getTransactionCount", address, "pending"), 16)


def _transfer(chain: ChainHandle, account: LocalAccount, *, dynamic: bool = False) -> bytes:
    """A signed zero-fee transfer (legacy, or EIP-1559 when `dynamic`)."""
    tx: dict[str, Any] = {
        "to": TO,
        "value": 0,
        "gas": 21_000,
        "nonce": _nonce(chain, account.address),
        "chainId": chain.chain_id,
    }
    if dynamic:
        tx.update(type=2, maxFeePerGas=0, maxPriorityFeePerGas=0)
    else:
        tx["gasPrice"] = 0
    return bytes(account.sign_transaction(tx).raw_transaction)


# --- methods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("anvil_mine", []),
        ("anvil_setBalance", [TO, "0x1"]),
        ("evm_mine", []),
        ("evm_snapshot", []),
        ("hardhat_mine", []),
        ("debug_traceTransaction", ["0x" + "00" * 32]),
        ("personal_sign", ["0x00", TO]),
        ("admin_nodeInfo", []),
        ("miner_start", []),
        ("txpool_content", []),
        ("eth_sendTransaction", [{"from": TO, "to": TO}]),
        ("eth_sign", [TO, "0x00"]),
        ("eth_signTransaction", [{"from": TO}]),
        ("eth_signTypedData_v4", [TO, "{}"]),
    ],
)
def test_refuses_non_standard_and_key_holding_methods(
    chain: ChainHandle, method: str, params: list[Any]
) -> None:
    reply = chain.rpc_raw(method, *params)
    assert reply["id"] == 1
    assert reply["error"]["code"] == METHOD_NOT_FOUND
    assert method in reply["error"]["message"]


def test_the_node_itself_would_have_answered(chain: ChainHandle) -> None:
    """Guards the test above: the refusals come from the proxy, not from anvil."""
    assert "result" in chain.node_rpc_raw("evm_snapshot")
    assert chain.node_rpc("eth_accounts")  # anvil's unlocked dev accounts


def test_hides_the_nodes_unlocked_accounts(chain: ChainHandle) -> None:
    assert chain.rpc("eth_accounts") == []


def test_forwards_standard_reads(chain: ChainHandle) -> None:
    assert int(chain.rpc("eth_chainId"), 16) == chain.chain_id
    assert chain.rpc("net_version") == str(chain.chain_id)
    assert "anvil" in chain.rpc("web3_clientVersion").lower()
    block = chain.rpc("eth_getBlockByNumber", "latest", False)
    assert int(block["baseFeePerGas"], 16) == 0
    assert int(block["gasLimit"], 16) == 1_000_000_000


def test_web3_works_through_the_proxy(chain: ChainHandle) -> None:
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    assert w3.eth.chain_id == chain.chain_id
    assert w3.eth.block_number >= 0
    tx_hash = w3.eth.send_raw_transaction(_transfer(chain, chain.operator))
    assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["status"] == 1


# --- senders ------------------------------------------------------------------------------


def test_operator_transactions_are_mined_without_any_balance(chain: ChainHandle) -> None:
    assert int(chain.rpc("eth_getBalance", chain.operator.address, "latest"), 16) == 0
    receipt = chain.send_raw(_transfer(chain, chain.operator))
    assert receipt["status"] == "0x1"
    assert receipt["from"] == chain.operator.address.lower()
    assert chain.send_raw(_transfer(chain, chain.operator, dynamic=True))["status"] == "0x1"


def test_a_non_members_transaction_is_refused(chain: ChainHandle) -> None:
    stranger: LocalAccount = Account.create()
    reply = chain.rpc_raw("eth_sendRawTransaction", "0x" + _transfer(chain, stranger).hex())
    assert reply["error"] == {
        "code": UNAUTHORIZED,
        "message": (
            f"transaction sender {stranger.address.lower()} is not a member of the data space"
        ),
    }
    assert _nonce(chain, stranger.address) == 0  # never reached the node


def test_garbage_raw_transactions_are_invalid_params(chain: ChainHandle) -> None:
    for params in (["0x1234"], ["nothex"], []):
        reply = chain.rpc_raw("eth_sendRawTransaction", *params)
        assert reply["error"]["code"] == -32602


# --- JSON-RPC framing ---------------------------------------------------------------------


def test_batches_keep_order_and_ids(chain: ChainHandle) -> None:
    stranger: LocalAccount = Account.create()
    batch = [
        _request("eth_chainId", request_id="a"),
        _request("anvil_mine", request_id=2),
        _request("eth_accounts", request_id=3),
        _request("eth_sendRawTransaction", "0x" + _transfer(chain, stranger).hex(), request_id=4),
        _request("eth_blockNumber", request_id=None),
        {"jsonrpc": "2.0", "id": 6},
        _request("net_version", request_id=7),
    ]
    replies = _post(chain.rpc_url, batch)
    assert [r["id"] for r in replies] == ["a", 2, 3, 4, None, 6, 7]
    assert int(replies[0]["result"], 16) == chain.chain_id
    assert replies[1]["error"]["code"] == METHOD_NOT_FOUND
    assert replies[2]["result"] == []
    assert replies[3]["error"]["code"] == UNAUTHORIZED
    assert replies[4]["result"].startswith("0x")
    assert replies[5]["error"]["code"] == -32600
    assert replies[6]["result"] == str(chain.chain_id)


def test_all_forwarded_batch(chain: ChainHandle) -> None:
    batch = [_request("eth_blockNumber", request_id=i) for i in range(50)]
    replies = _post(chain.rpc_url, batch)
    assert [r["id"] for r in replies] == list(range(50))


def test_malformed_bodies_get_json_rpc_errors(chain: ChainHandle) -> None:
    parse = httpx.post(chain.rpc_url, content=b"{not json", timeout=5.0)
    assert parse.status_code == 200
    assert parse.json()["error"]["code"] == -32700
    assert _post(chain.rpc_url, [])["error"]["code"] == -32600
    assert _post(chain.rpc_url, 42)["error"]["code"] == -32600
    too_big = httpx.post(chain.rpc_url, content=b" " * (3 * 1024 * 1024), timeout=10.0)
    assert too_big.status_code == 413


# --- membership through the deployment manifest --------------------------------------------


@contextmanager
def proxy_process(upstream: str, deployment: Path, operator: str | None) -> Iterator[str]:
    """A second proxy (own manifest) in front of the shared node, as `dul chain up` starts it."""
    port = free_port()
    args = [sys.executable, "-m", "dul.chain.rpc_proxy", "--upstream", upstream]
    args += ["--port", str(port), "--deployment", str(deployment), "--membership-ttl", "0.2"]
    if operator is not None:
        args += ["--operator", operator]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                httpx.post(url, json=_request("eth_chainId"), timeout=1.0)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "proxy did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def test_members_named_by_the_membership_contract_may_send(
    chain: ChainHandle, tmp_path: Path
) -> None:
    member: LocalAccount = Account.create()
    stranger: LocalAccount = Account.create()
    creation = chain.operator.sign_transaction(
        {
            "data": membership_double_creation_code(member.address),
            "value": 0,
            "gas": 200_000,
            "gasPrice": 0,
            "nonce": _nonce(chain, chain.operator.address),
            "chainId": chain.chain_id,
        }
    )
    membership = chain.send_raw(bytes(creation.raw_transaction))["contractAddress"]
    assert membership

    manifest = tmp_path / "deployment.json"
    with proxy_process(chain.node_url, manifest, operator=None) as url:
        # Before any deployment nobody but a configured operator may send.
        refused = chain.rpc_raw(
            "eth_sendRawTransaction", "0x" + _transfer(chain, member).hex(), url=url
        )
        assert refused["error"]["code"] == UNAUTHORIZED

        manifest.write_text(
            json.dumps(
                {
                    "operator": chain.operator.address,
                    "contracts": {"Membership": {"address": membership}},
                }
            )
        )
        receipt = chain.send_raw(_transfer(chain, member), url=url)
        assert receipt["status"] == "0x1"
        assert receipt["from"] == member.address.lower()

        reply = chain.rpc_raw(
            "eth_sendRawTransaction", "0x" + _transfer(chain, stranger).hex(), url=url
        )
        assert reply["error"]["code"] == UNAUTHORIZED
        assert stranger.address.lower() in reply["error"]["message"]

        # Members send, but only the operator deploys.
        member_creation = member.sign_transaction(
            {
                "data": b"\x00",
                "value": 0,
                "gas": 100_000,
                "gasPrice": 0,
                "nonce": _nonce(chain, member.address),
                "chainId": chain.chain_id,
            }
        )
        reply = chain.rpc_raw(
            "eth_sendRawTransaction", "0x" + bytes(member_creation.raw_transaction).hex(), url=url
        )
        assert reply["error"]["code"] == UNAUTHORIZED
        assert "contract creation is reserved to the operator" in reply["error"]["message"]

        # The manifest's operator is honoured too (this proxy has no --operator).
        assert chain.send_raw(_transfer(chain, chain.operator), url=url)["status"] == "0x1"


def test_an_unreachable_node_is_a_json_rpc_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with proxy_process(dead, tmp_path / "deployment.json", operator=None) as url:
        reply = httpx.post(url, json=_request("eth_blockNumber", request_id=9), timeout=10.0)
        assert reply.status_code == 502
        assert reply.json()["error"]["code"] == -32603
        assert reply.json()["id"] == 9


# --- the upstream connection pool against odd HTTP servers ---------------------------------


async def _serve_once_per_connection(responses: list[bytes]) -> tuple[asyncio.Server, int]:
    """A server that answers one request per connection with the next canned response, then
    closes the connection (so a pooled keep-alive connection is stale on its next use)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(responses.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


def test_upstream_reads_chunked_and_close_delimited_bodies_and_survives_closed_connections() -> (
    None
):
    responses = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",  # keep-alive, then closed
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.0 503 Busy\r\n\r\nclose-delimited",
    ]

    async def scenario() -> list[tuple[int, bytes]]:
        server, port = await _serve_once_per_connection(responses)
        upstream = StreamUpstream(f"http://127.0.0.1:{port}", timeout=5.0)
        try:
            return [await upstream.post(b"{}") for _ in range(3)]
        finally:
            await upstream.aclose()
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == [(200, b"first"), (200, b"abcde"), (503, b"close-delimited")]


def test_upstream_reports_an_unreachable_node() -> None:
    async def scenario() -> None:
        upstream = StreamUpstream(f"http://127.0.0.1:{free_port()}", timeout=2.0)
        with pytest.raises(UpstreamError, match="cannot connect"):
            await upstream.post(b"{}")

    asyncio.run(scenario())

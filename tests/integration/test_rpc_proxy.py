"""The permissioned endpoint against a real anvil over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
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
from eth_hash.auto import keccak

from dul.chain.ipc import IpcUpstream
from dul.chain.rpc_auth import bearer_headers
from dul.chain.rpc_filter import INVALID_PARAMS, METHOD_NOT_FOUND, UNAUTHORIZED
from dul.chain.testing import (
    ETHERS,
    ChainHandle,
    free_port,
    ports_answering_cheat_methods,
    run_ethers_wallet,
)
from dul.chain.upstream import StreamUpstream, UpstreamError
from dul.contracts.ledger import connect
from dul.contracts.world import World
from dul.domain import Role
from dul.signing import LocalSigner

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

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


def _auth() -> dict[str, str]:
    """The session's operator token (the `rpc_token` fixture sets DUL_RPC_TOKEN)."""
    return bearer_headers(os.environ["DUL_RPC_TOKEN"])


def _post(url: str, body: Any) -> Any:
    return httpx.post(url, json=body, timeout=10.0, headers=_auth()).json()


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
    assert chain.node_rpc("eth_accounts") == []  # started without dev accounts
    assert chain.node_rpc("eth_gasPrice") != "0x0"  # why the proxy answers the fee methods


# --- the node is out of reach -------------------------------------------------------------


def test_no_local_port_answers_cheat_methods(chain: ChainHandle, world: World) -> None:
    """From outside the node's namespace: every listening TCP port is asked for evm_snapshot
    and anvil_setBalance; none answers them, while the proxy serves members."""
    status = chain.node.status()
    assert status.isolation == "netns+ipc", status.warning
    assert status.node_port is None
    assert status.node_url is not None
    assert Path(status.node_url).parent.stat().st_mode & 0o777 == 0o700
    ours = {status.anvil_pid, status.proxy_pid}
    answered = ports_answering_cheat_methods()
    # Other data spaces on a shared machine may run an unisolated node of their own; this
    # one's processes must answer on none of the ports.
    assert not [port for port, owners in answered.items() if owners & ours or not owners], answered
    # ...and the proxy still serves members.
    member = world.requester
    nonce = _nonce(chain, member.address)
    tx = {"to": TO, "value": 0, "gas": 21_000, "gasPrice": 0, "nonce": nonce}
    signed = member.sign_transaction({**tx, "chainId": chain.chain_id, "data": b""})
    assert chain.send_raw(signed)["status"] == "0x1"


# --- wallets with default fee settings ----------------------------------------------------


def test_fee_methods_answer_the_nodes_zero_gas_price(chain: ChainHandle) -> None:
    assert chain.rpc("eth_gasPrice") == "0x0"
    assert chain.rpc("eth_maxPriorityFeePerGas") == "0x0"
    history = chain.rpc("eth_feeHistory", "0x4", "latest", [10, 50, 90])
    assert {int(fee, 16) for fee in history["baseFeePerGas"]} == {0}
    assert {int(tip, 16) for rewards in history["reward"] for tip in rewards} == {0}


def test_web3_sends_with_its_default_fees(chain: ChainHandle) -> None:
    w3 = connect(chain.rpc_url)
    tx: dict[str, Any] = {"from": chain.operator.address, "to": TO, "value": 0}
    tx.update(
        nonce=w3.eth.get_transaction_count(chain.operator.address, "pending"),
        gas=w3.eth.estimate_gas(tx),  # type: ignore[arg-type]
        maxPriorityFeePerGas=w3.eth.max_priority_fee,
        maxFeePerGas=w3.eth.max_priority_fee + 2 * w3.eth.get_block("latest")["baseFeePerGas"],
        chainId=w3.eth.chain_id,
    )
    assert (tx["maxFeePerGas"], w3.eth.gas_price) == (0, 0)
    signed = chain.operator.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["status"] == 1


@pytest.mark.skipif(not ETHERS.is_dir(), reason="ethers is not installed (npm ci)")
def test_an_ethers_wallet_with_default_settings_sends_a_member_transaction(
    chain: ChainHandle, world: World
) -> None:
    key = keccak(b"dul tests ethers wallet member")
    member = LocalSigner(key)
    world.ledger.transact(
        world.operator, "Membership", "grantMemberRole", world.institute, member.address,
        Role.REQUESTER,
    )  # fmt: skip
    out = run_ethers_wallet(chain.rpc_url, key, TO, os.environ["DUL_RPC_TOKEN"])
    # A zero base fee reads as "no EIP-1559" to ethers: it sends a legacy transaction at the
    # gas price the proxy answers (1 gwei from anvil itself would fail "insufficient funds").
    assert out["fees"] == {"gasPrice": "0", "maxFeePerGas": "null", "maxPriorityFeePerGas": "null"}
    assert out["type"] == 0
    assert out["status"] == 1
    assert out["from"] == member.address
    assert int(chain.rpc("eth_getBalance", member.address, "latest"), 16) == 0


def test_hides_the_nodes_unlocked_accounts(chain: ChainHandle) -> None:
    assert chain.rpc("eth_accounts") == []


def test_forwards_standard_reads(chain: ChainHandle) -> None:
    assert int(chain.rpc("eth_chainId"), 16) == chain.chain_id
    assert chain.rpc("net_version") == str(chain.chain_id)
    assert chain.kind in chain.rpc("web3_clientVersion").lower()
    block = chain.rpc("eth_getBlockByNumber", "latest", False)
    assert int(block["baseFeePerGas"], 16) == 0
    assert int(block["gasLimit"], 16) == 1_000_000_000


def test_state_and_block_overrides_are_refused(chain: ChainHandle) -> None:
    """A state override (eth_call's third parameter) runs any code as any contract with any
    storage; a block override any block. The guard passes the standard two parameters only."""
    returns_42 = "0x602a60005260206000f3"  # PUSH1 42 PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN
    call = {"to": TO, "data": "0x"}
    override = {TO: {"code": returns_42}}
    assert int(chain.node_rpc("eth_call", call, "latest", override), 16) == 42  # anvil would
    assert chain.rpc("eth_call", call, "latest") == "0x"
    for method, params in (
        ("eth_call", [call, "latest", override]),
        ("eth_call", [call, "latest", {}, {"number": "0x1"}]),
        ("eth_estimateGas", [call, "latest", override]),
        ("eth_createAccessList", [call, "latest", override]),
        ("eth_call", {"transaction": call, "block": "latest", "stateOverrides": override}),
    ):
        reply = _post(chain.rpc_url, {"jsonrpc": "2.0", "id": 7, "method": method,
                                      "params": params})  # fmt: skip
        assert reply["id"] == 7, reply
        assert reply["error"]["code"] == INVALID_PARAMS, reply
        assert "override" in reply["error"]["message"]
    batch = _post(
        chain.rpc_url,
        [_request("eth_chainId"), _request("eth_call", call, "latest", override, request_id=2)],
    )
    assert "result" in batch[0]
    assert batch[1]["error"]["code"] == INVALID_PARAMS


def test_web3_works_through_the_proxy(chain: ChainHandle) -> None:
    w3 = connect(chain.rpc_url)
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


def test_a_transaction_without_chain_id_is_refused_even_from_the_operator(
    chain: ChainHandle,
) -> None:
    """A pre-EIP-155 signature is valid on every chain: a copy from another network must not
    be replayable here, whoever signed it."""
    nonce = _nonce(chain, chain.operator.address)
    legacy: dict[str, Any] = {"to": TO, "value": 0, "gas": 21_000, "gasPrice": 0, "nonce": nonce}
    unprotected = chain.operator.sign_transaction(legacy)
    reply = chain.rpc_raw("eth_sendRawTransaction", "0x" + bytes(unprotected.raw_transaction).hex())
    assert reply["error"]["code"] == -32602
    assert "without a chain id (pre-EIP-155)" in reply["error"]["message"]
    assert _nonce(chain, chain.operator.address) == nonce  # never reached the node


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
    parse = httpx.post(chain.rpc_url, content=b"{not json", timeout=5.0, headers=_auth())
    assert parse.status_code == 200
    assert parse.json()["error"]["code"] == -32700
    assert _post(chain.rpc_url, [])["error"]["code"] == -32600
    assert _post(chain.rpc_url, 42)["error"]["code"] == -32600
    too_big = httpx.post(
        chain.rpc_url, content=b" " * (3 * 1024 * 1024), timeout=10.0, headers=_auth()
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == -32600


def _streamed(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), 65536):
        yield data[start : start + 65536]


CALL = b'{"jsonrpc":"2.0","id":1,'


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"[" * 100_000 + b"]" * 100_000, {}, 200, -32700),
        (CALL + b'"method":"eth_call","params":' + b"[" * 100_000, {}, 200, -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["\xff\xfe"]}', {}, 200, -32700),
        ('{"a": 1}'.encode("utf-16"), {}, 200, -32700),
        (b'{"jsonrpc":"2.0","id":1e999,"method":"anvil_mine"}', {}, 200, -32700),
        (b'{"jsonrpc":"2.0","id":NaN,"method":"eth_chainId"}', {}, 200, -32700),
        (b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"eth_chainId"}', {}, 200, -32700),
        (b'{"jsonrpc":"2.0","id":' + b"9" * 40 + b',"method":"eth_chainId"}', {}, 200, -32600),
        (b'{"jsonrpc":"2.0","id":{"x":[]},"method":"eth_chainId"}', {}, 200, -32600),
        (b'{"id":1,"method":"eth_chainId"}', {}, 200, -32600),
        (b"", {}, 200, -32700),
        (CALL + b'"method":"eth_chainId"}', {"content-type": "text/plain"}, 415, -32600),
        (b"a=1", {"content-type": "application/x-www-form-urlencoded"}, 415, -32600),
    ],
)  # fmt: skip
def test_every_malformed_body_is_a_json_rpc_error(
    chain: ChainHandle, body: bytes, headers: dict[str, str], status: int, code: int
) -> None:
    reply = httpx.post(chain.rpc_url, content=body, headers={**headers, **_auth()}, timeout=10.0)
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["jsonrpc"] == "2.0"
    assert reply.json()["id"] in (None, 1)  # the request's own id only when it is valid
    assert reply.json()["error"]["code"] == code


def test_a_chunked_body_is_bounded_while_it_streams(chain: ChainHandle) -> None:
    reply = httpx.post(
        chain.rpc_url,
        content=_streamed(b" " * (3 * 1024 * 1024)),
        timeout=10.0,
        headers=_auth(),
    )
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == -32600


def test_other_paths_and_verbs_get_json_rpc_errors(chain: ChainHandle) -> None:
    for reply in (
        httpx.get(chain.rpc_url, timeout=5.0, headers=_auth()),
        httpx.post(
            chain.rpc_url + "/other", json=_request("eth_chainId"), timeout=5.0, headers=_auth()
        ),
    ):
        assert reply.status_code in (404, 405)
        assert reply.json()["error"]["code"] == -32600
    assert httpx.get(chain.rpc_url + "/healthz", timeout=5.0).json() == {"status": "ok"}


def test_notifications_get_no_reply_and_do_not_stall_the_node(chain: ChainHandle) -> None:
    notification = {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []}
    for body in (notification, [notification, notification]):
        reply = httpx.post(chain.rpc_url, json=body, timeout=5.0, headers=_auth())
        assert reply.status_code == 204
        assert reply.content == b""
    mixed = _post(chain.rpc_url, [notification, _request("eth_chainId", request_id=5)])
    assert mixed == [{"jsonrpc": "2.0", "id": 5, "result": hex(chain.chain_id)}]
    # A node may answer a notification anyway (Hardhat's does): no such reply is left on a
    # pooled connection for a later caller; and a null id is answered as null.
    for _ in range(8):
        assert chain.rpc("eth_chainId") == hex(chain.chain_id)
    null_id = _post(chain.rpc_url, _request("eth_chainId", request_id=None))
    assert null_id == {"jsonrpc": "2.0", "id": None, "result": hex(chain.chain_id)}
    mixed = _post(
        chain.rpc_url, [notification, _request("anvil_mine", request_id=6), _request("net_version")]
    )
    assert [r["id"] for r in mixed] == [6, 1]
    # Refused or locally answered notifications get no reply either (JSON-RPC 2.0 §6).
    refused = {"jsonrpc": "2.0", "method": "anvil_mine", "params": []}
    local = {"jsonrpc": "2.0", "method": "eth_accounts", "params": []}
    for body in (refused, local, [refused, local]):
        reply = httpx.post(chain.rpc_url, json=body, timeout=5.0, headers=_auth())
        assert reply.status_code == 204
        assert reply.content == b""
    mixed = _post(chain.rpc_url, [refused, _request("net_version", request_id=7), local])
    assert [r["id"] for r in mixed] == [7]
    # A malformed request without an id is still answered (id null), as the spec says.
    mixed = _post(chain.rpc_url, [{"jsonrpc": "2.0"}, refused])
    assert [(r["id"], r["error"]["code"]) for r in mixed] == [(None, -32600)]
    assert int(chain.rpc("eth_chainId"), 16) == chain.chain_id


# --- membership through the deployment manifest --------------------------------------------


@contextmanager
def proxy_process(upstream: str, deployment: Path, operator: str | None) -> Iterator[str]:
    """A second proxy (own manifest) in front of the shared node, as `dul chain up` starts it."""
    port = free_port()
    args = [sys.executable, "-m", "dul.rpc_proxy", "--upstream", upstream]
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


@pytest.mark.parametrize("kind", ["http", "ipc"])
def test_an_unreachable_node_is_a_json_rpc_error(tmp_path: Path, kind: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}" if kind == "http" else str(tmp_path / "no.ipc")
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


# --- the IPC connection pool against odd unix-socket servers --------------------------------


async def _unix_server(path: Path, replies: list[bytes | None]) -> asyncio.Server:
    """Answers each message with the next canned reply (None: no reply, close) and closes the
    connection after each reply, so a pooled connection is stale on its next use."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n")
        reply = replies.pop(0)
        if reply is not None:
            writer.write(reply)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, str(path))


def test_ipc_upstream_reconnects_after_a_dead_connection(tmp_path: Path) -> None:
    path = tmp_path / "node.ipc"

    async def scenario() -> list[tuple[int, bytes]]:
        server = await _unix_server(path, [b'{"id":1}\n', b'[{"id":2},{"id":3}]\n'])
        upstream = IpcUpstream(str(path), timeout=5.0)
        try:
            first = await upstream.post(b'{"id":1}')
            second = await upstream.post(b'[{"id":2},\n{"id":3}]')  # the idle one is dead
            return [first, second]
        finally:
            await upstream.aclose()
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == [(200, b'{"id":1}'), (200, b'[{"id":2},{"id":3}]')]


def test_ipc_upstream_reports_a_dead_node_and_a_silent_one(tmp_path: Path) -> None:
    path = tmp_path / "node.ipc"

    async def scenario() -> None:
        with pytest.raises(UpstreamError, match="cannot connect"):
            await IpcUpstream(str(path), timeout=2.0).post(b"{}")
        server = await _unix_server(path, [None])
        upstream = IpcUpstream(str(path), timeout=2.0)
        try:
            with pytest.raises(UpstreamError, match="closed the connection"):
                await upstream.post(b'{"id":1}')
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_ipc_upstream_keeps_one_request_per_connection(chain: ChainHandle) -> None:
    """The node answers pipelined requests out of order: concurrent posts must still each get
    their own reply."""
    assert chain.node.status().isolation == "netns+ipc"

    async def scenario() -> list[Any]:
        upstream = IpcUpstream(chain.node_url, max_connections=4, timeout=10.0)
        try:
            bodies = [
                json.dumps(_request("eth_getBlockByNumber", hex(i % 3), False, request_id=i))
                for i in range(40)
            ]
            replies = await asyncio.gather(*(upstream.post(b.encode()) for b in bodies))
            return [json.loads(content)["id"] for _, content in replies]
        finally:
            await upstream.aclose()

    assert asyncio.run(scenario()) == list(range(40))

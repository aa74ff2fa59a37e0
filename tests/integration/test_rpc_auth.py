"""The public RPC wants a bearer JWT on every request (Besu's JWT public-key mode), against the
session's real chain: refusals, a member's token made by the CLI, web3.py and ethers with it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from eth_hash.auto import keccak
from typer.testing import CliRunner

from dul.chain.rpc_auth import (
    OPERATOR_PERMISSIONS,
    UNAUTHORIZED_CODE,
    bearer_headers,
    issue_token,
    public_pem,
    signing_key,
)
from dul.chain.testing import ETHERS, ChainHandle, run_ethers_wallet
from dul.cli.main import app
from dul.contracts.ledger import connect
from dul.contracts.world import World
from dul.domain import Role
from dul.signing import LocalSigner

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

TO = "0x000000000000000000000000000000000000dEaD"


def _call(
    chain: ChainHandle, method: str, *params: Any, token: str | None, headers: Any = None
) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    return httpx.post(
        chain.rpc_url, json=body, headers=headers or bearer_headers(token), timeout=10.0
    )


def _refused(reply: httpx.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["code"] == UNAUTHORIZED_CODE
    message: str = error["message"]
    assert message.startswith("Unauthorized")
    return message


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT made by hand (PyJWT refuses to use a public key as an HMAC secret)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing = f"{head}.{part(json.dumps(claims).encode())}"
    return f"{signing}.{part(hmac.new(secret, signing.encode(), hashlib.sha256).digest())}"


def _session_key(chain: ChainHandle) -> Any:
    return signing_key(chain.node.rpc_key_path, create=False)


def _cli(chain: ChainHandle, *args: str) -> Any:
    result = CliRunner().invoke(app, ["admin", "rpc-token", "create", *args], env=chain.env)
    return result


def test_without_a_token_reads_and_sends_are_401(chain: ChainHandle) -> None:
    tx: dict[str, Any] = {"to": TO, "value": 0, "gas": 21_000, "gasPrice": 0, "nonce": 0}
    signed = chain.operator.sign_transaction({**tx, "chainId": 1})
    for method, params in (
        ("eth_blockNumber", []),
        ("eth_getLogs", [{"fromBlock": "0x0"}]),
        ("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()]),
    ):
        reply = _call(chain, method, *params, token=None)
        assert "Bearer" in _refused(reply, 401)
        assert reply.headers["www-authenticate"] == "Bearer"
    for headers in (
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-jwt"},
    ):
        _refused(_call(chain, "eth_chainId", token=None, headers=headers), 401)
    # The proxy's health check stays open.
    assert httpx.get(chain.rpc_url + "/healthz", timeout=5.0).status_code == 200


def test_expired_foreign_and_malformed_tokens_are_401(chain: ChainHandle, tmp_path: Path) -> None:
    key = _session_key(chain)
    expired = issue_token(key, "late", OPERATOR_PERMISSIONS, 60, now=time.time() - 3600)
    assert "expired" in _refused(_call(chain, "eth_chainId", token=expired), 401)

    stranger = signing_key(tmp_path / "other.pem", create=True)
    foreign = issue_token(stranger, "mallory", OPERATOR_PERMISSIONS, 3600)
    assert "invalid token" in _refused(_call(chain, "eth_chainId", token=foreign), 401)

    no_expiry = jwt.encode({"permissions": ["*:*"]}, key, algorithm="RS256")
    _refused(_call(chain, "eth_chainId", token=no_expiry), 401)

    no_permissions = jwt.encode({"exp": int(time.time()) + 600}, key, algorithm="RS256")
    assert "permissions" in _refused(_call(chain, "eth_chainId", token=no_permissions), 401)

    # The public key used as an HMAC secret (algorithm confusion) does not pass.
    confused = _hs256({"permissions": ["*:*"], "exp": int(time.time()) + 600}, public_pem(key))
    _refused(_call(chain, "eth_chainId", token=confused), 401)


def test_a_token_without_get_logs_is_refused_for_it(chain: ChainHandle) -> None:
    token = issue_token(
        _session_key(chain), "dashboard", ("eth:blockNumber", "eth:chainId", "net:*"), 600
    )
    assert _call(chain, "eth_blockNumber", token=token).json()["result"].startswith("0x")
    assert _call(chain, "net_version", token=token).json()["result"] == str(chain.chain_id)
    message = _refused(_call(chain, "eth_getLogs", {"fromBlock": "0x0"}, token=token), 403)
    assert "eth:getLogs" in message
    _refused(_call(chain, "eth_sendRawTransaction", "0x00", token=token), 403)
    # In a batch, each call is judged on its own.
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getLogs", "params": [{}]},
    ]
    replies = httpx.post(chain.rpc_url, json=batch, headers=bearer_headers(token)).json()
    assert replies[0]["result"] == hex(chain.chain_id)
    assert replies[1]["error"]["code"] == UNAUTHORIZED_CODE


def test_a_members_token_from_the_cli_serves_reads_web3_and_ethers(
    chain: ChainHandle, world: World
) -> None:
    key = keccak(b"dul tests rpc token member")
    member = LocalSigner(key)
    refused = _cli(chain, "--account", member.address)
    assert refused.exit_code == 1
    assert "not_a_member" in refused.stderr
    world.ledger.transact(
        world.operator, "Membership", "grantMemberRole", world.institute, member.address,
        Role.REQUESTER,
    )  # fmt: skip
    made = _cli(chain, "--account", member.address, "--ttl", "2h", "--json")
    assert made.exit_code == 0, made.output
    facts = json.loads(made.stdout)
    assert facts["subject"] == member.address
    assert facts["permissions"] == ["eth:*", "net:*", "web3:*"]
    assert facts["ttl_s"] == 7200
    token = facts["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 7200

    assert int(_call(chain, "eth_blockNumber", token=token).json()["result"], 16) > 0
    w3 = connect(chain.rpc_url, token=token)
    assert w3.eth.chain_id == chain.chain_id
    assert w3.eth.get_transaction_count(member.address) == 0
    if ETHERS.is_dir():
        out = run_ethers_wallet(chain.rpc_url, key, TO, token)
        assert out["status"] == 1
        assert out["from"] == member.address
        with pytest.raises(AssertionError, match=r"401|[Uu]nauthorized"):
            run_ethers_wallet(chain.rpc_url, key, TO, "not-a-token")


def test_a_members_token_stops_reading_once_the_member_is_removed(
    chain: ChainHandle, world: World
) -> None:
    """Reading needs membership too (SPEC §1): a token made for a member's account is honoured
    while the chain says the account is an active member, not for the rest of its life."""
    member = LocalSigner(keccak(os.urandom(32)))
    tx = world.ledger.transact
    tx(world.operator, "Membership", "grantMemberRole", world.institute, member.address,
       Role.REQUESTER)  # fmt: skip
    made = _cli(chain, "--account", member.address, "--json")
    assert made.exit_code == 0, made.output
    token = json.loads(made.stdout)["token"]
    assert _call(chain, "eth_blockNumber", token=token).json()["result"].startswith("0x")
    tx(world.operator, "Membership", "revokeMemberRole", member.address, Role.REQUESTER)
    time.sleep(2.5)  # the guard caches a membership answer 2 s
    message = _refused(_call(chain, "eth_blockNumber", token=token), 403)
    assert member.address.lower() in message.lower()
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}]
    _refused(httpx.post(chain.rpc_url, json=batch, headers=bearer_headers(token)), 403)
    # a service's token names no account: the chain's membership does not apply to it
    service = issue_token(_session_key(chain), "dashboard", ("eth:blockNumber",), 600)
    assert _call(chain, "eth_blockNumber", token=service).json()["result"].startswith("0x")


def test_a_read_token_for_a_service_cannot_send(chain: ChainHandle) -> None:
    made = _cli(chain, "--service", "audit-indexer", "--preset", "read", "--json")
    assert made.exit_code == 0, made.output
    token = json.loads(made.stdout)["token"]
    assert "eth:getLogs" in json.loads(made.stdout)["permissions"]
    assert "result" in _call(chain, "eth_getLogs", {"fromBlock": "latest"}, token=token).json()
    _refused(_call(chain, "eth_sendRawTransaction", "0x00", token=token), 403)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "either --account"),
        (["--service", "x", "--account", TO], "either --account"),
        (["--service", "Bad Name"], "lower-case"),
        (["--service", "x", "--permission", "eth_getLogs"], "eth:getLogs"),
        (["--service", "x", "--ttl", "0m"], "between 1m"),
        (["--service", "x", "--ttl", "400d"], "between 1m"),
        (["--service", "x", "--ttl", "soon"], "--ttl"),
        (["--service", "x", "--preset", "admin"], "--preset"),
        (["--account", "nobody-key"], "unknown_account"),
    ],
)
def test_the_cli_refuses_bad_input_in_one_line(
    chain: ChainHandle, args: list[str], fragment: str
) -> None:
    result = _cli(chain, *args)
    assert result.exit_code == 1
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert "eyJ" not in result.stdout  # no token printed


def test_the_cli_needs_the_chains_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUL_CHAIN_RPC_AUTH_KEY")
    result = CliRunner().invoke(
        app,
        ["admin", "rpc-token", "create", "--service", "ops"],
        env={"DUL_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 1
    assert "no_rpc_key" in result.stderr
    assert "dul chain up" in result.stderr


def test_the_session_token_reaches_every_client(chain: ChainHandle) -> None:
    """Guards the suite's set-up: clients without an explicit token use DUL_RPC_TOKEN."""
    assert os.environ["DUL_RPC_TOKEN"] == chain.token
    assert connect(chain.rpc_url).eth.chain_id == chain.chain_id

"""RPC bearer tokens without servers: Besu's permission rule, issuing, verifying, where a client
finds its token."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from dul.chain.rpc_auth import (
    MEMBER_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    READ_PERMISSIONS,
    RpcAuthError,
    TokenVerifier,
    bearer_headers,
    check_method,
    issue_token,
    permission_error,
    permitted,
    public_pem,
    rpc_token,
    signing_key,
)
from dul.chain.rpc_filter import READ_METHODS
from dul.errors import ConfigError


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> object:
    return signing_key(tmp_path_factory.mktemp("key") / "rpc-jwt.pem", create=True)


@pytest.mark.parametrize(
    ("permissions", "method", "allowed"),
    [
        (["*:*"], "eth_getLogs", True),
        (["eth:*"], "eth_getLogs", True),
        (["eth:getLogs"], "eth_getLogs", True),
        (["eth:blockNumber"], "eth_getLogs", False),
        (["net:*"], "eth_getLogs", False),
        (["eth:getlogs"], "eth_getLogs", False),  # Besu compares names exactly
        (["eth:*"], "anvil_mine", False),
        (["eth:sendRawTransaction"], "eth_sendRawTransaction", True),
        ([], "eth_chainId", False),
        (["*:*"], "nounderscore", True),
        (["eth:*"], "nounderscore", False),
    ],
)
def test_besus_permission_rule(permissions: list[str], method: str, allowed: bool) -> None:
    assert permitted(permissions, method) is allowed


def test_presets() -> None:
    assert MEMBER_PERMISSIONS == ("eth:*", "net:*", "web3:*")
    assert OPERATOR_PERMISSIONS == ("*:*",)
    assert all(permitted(READ_PERMISSIONS, m) for m in READ_METHODS)
    assert not permitted(READ_PERMISSIONS, "eth_sendRawTransaction")
    assert all(permission_error(p) is None for p in READ_PERMISSIONS)


@pytest.mark.parametrize("bad", ["eth_getLogs", "eth:", ":*", "eth:get-logs", "ETH:*", "", "a:b:c"])
def test_malformed_permissions(bad: str) -> None:
    assert permission_error(bad) is not None


def test_the_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "rpc-jwt.pem"
    with pytest.raises(ConfigError, match="dul chain up"):
        signing_key(path, create=False)
    made = signing_key(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_pem(signing_key(path, create=False)) == public_pem(made)
    assert public_pem(made).startswith(b"-----BEGIN PUBLIC KEY-----")
    path.write_text("garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        signing_key(path, create=False)


def test_a_token_round_trips_and_expires(key: object) -> None:
    verifier = TokenVerifier(public_pem(key))
    token = issue_token(key, "0xabc", ("eth:blockNumber",), 120, now=1_000_000)
    caller = verifier.caller(f"Bearer {token}", now=1_000_060)
    assert caller.subject == "0xabc"
    assert caller.permissions == frozenset({"eth:blockNumber"})
    check_method(caller, "eth_blockNumber")
    with pytest.raises(RpcAuthError) as refused:
        check_method(caller, "eth_getLogs")
    assert refused.value.status == 403
    assert "eth:getLogs" in refused.value.message
    # Cached, but the expiry is still checked on every call.
    with pytest.raises(RpcAuthError, match="expired") as late:
        verifier.caller(f"bearer {token}", now=1_000_121)
    assert late.value.status == 401


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Token x", "Bearer a.b.c"])
def test_missing_or_malformed_headers_are_401(key: object, header: str | None) -> None:
    with pytest.raises(RpcAuthError) as refused:
        TokenVerifier(public_pem(key)).caller(header)
    assert refused.value.status == 401


def test_a_token_from_another_key_is_401(key: object, tmp_path: Path) -> None:
    other = signing_key(tmp_path / "other.pem", create=True)
    token = issue_token(other, "x", OPERATOR_PERMISSIONS, 600)
    with pytest.raises(RpcAuthError, match="invalid token"):
        TokenVerifier(public_pem(key)).caller(f"Bearer {token}")


@pytest.mark.parametrize(
    ("permissions", "ttl", "fragment"),
    [
        ((), 600, "at least one permission"),
        (("eth_call",), 600, "eth:getLogs"),
        (("eth:*",), 59, "between"),
        (("eth:*",), 367 * 86400, "between"),
    ],
)
def test_issue_refuses_bad_tokens(
    key: object, permissions: tuple[str, ...], ttl: int, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        issue_token(key, "x", permissions, ttl)


def test_where_a_client_finds_its_token(
    key: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DUL_RPC_TOKEN", "DUL_RPC_TOKEN_FILE", "DUL_CHAIN_RPC_AUTH_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DUL_HOME", str(tmp_path / "home"))
    assert rpc_token() is None  # no token anywhere, no key: a node without authentication
    assert bearer_headers(None) == {}

    # The holder of this data directory's signing key makes its own.
    signing_key(tmp_path / "home" / "keys" / "rpc-jwt.pem", create=True)
    local = rpc_token()
    assert local is not None
    assert TokenVerifier(
        public_pem(signing_key(tmp_path / "home" / "keys" / "rpc-jwt.pem", create=False))
    ).caller(f"Bearer {local}").permissions == frozenset({"*:*"})

    token_file = tmp_path / "service.jwt"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("DUL_RPC_TOKEN_FILE", str(token_file))
    assert rpc_token() == "from-file"
    monkeypatch.setenv("DUL_RPC_TOKEN", "from-env")
    assert rpc_token() == "from-env"
    assert bearer_headers("t") == {"Authorization": "Bearer t"}

    monkeypatch.delenv("DUL_RPC_TOKEN")
    token_file.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        rpc_token()
    os.unlink(token_file)
    with pytest.raises(ConfigError, match="cannot read"):
        rpc_token()


def test_verifying_a_cached_token_is_cheap(key: object) -> None:
    """Every request carries the token: a repeat is a dictionary look-up, not a signature
    check (counted, not timed)."""
    verifier = TokenVerifier(public_pem(key))
    token = issue_token(key, "x", OPERATOR_PERMISSIONS, 600)
    checks = 0
    original = verifier._verify

    def counting(value: str) -> object:
        nonlocal checks
        checks += 1
        return original(value)

    verifier._verify = counting  # type: ignore[assignment,method-assign]
    for _ in range(100):
        verifier.caller(f"Bearer {token}", now=time.time())
    assert checks == 1

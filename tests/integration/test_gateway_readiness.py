"""The gateway's readiness follows its key's standing for as long as it serves: a GATEWAY role
revoked (or the organization suspended) after start-up turns /readyz false, and it recovers
when the role is back — a green signal over a key the chain no longer accepts would hide that
every recording is about to fail."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from eth_hash.auto import keccak
from pydantic import SecretStr

from dul.chain.testing import ChainHandle, free_port
from dul.contracts.world import World
from dul.domain import Role
from dul.keys import KeyStore
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.testing import serve

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


def _wait_for(url: str, ready: bool, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.get(f"{url}/readyz", timeout=5)
        body: dict[str, object] = reply.json()
        if (reply.status_code == 200) == ready:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz did not turn ready={ready}: {body}")
        time.sleep(0.1)


def test_a_revoked_gateway_role_turns_readiness_false_until_it_is_back(
    world: World, chain: ChainHandle, tmp_path: Path
) -> None:
    keys = KeyStore(chain.home, passphrase="readiness-tests", scrypt_n=2**10)
    address = keys.import_key("hospital-a.readiness-gateway", keccak(b"dul readiness gateway"))
    grant = ("Membership", "grantMemberRole", world.hospital, address, Role.GATEWAY)
    world.ledger.transact(world.operator, *grant)
    settings = GatewaySettings(
        home=chain.home.root,
        org="hospital-a",
        key="hospital-a.readiness-gateway",
        key_passphrase=SecretStr("readiness-tests"),
        rpc_url=chain.rpc_url,
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        port=free_port(),
        chain_check_interval_s=0.2,
    )
    with serve(settings) as url:
        assert _wait_for(url, ready=True)["checks"]["signer"] is True  # type: ignore[index]
        world.ledger.transact(
            world.operator, "Membership", "revokeMemberRole", address, Role.GATEWAY
        )
        body = _wait_for(url, ready=False)
        assert body["checks"]["signer"] is False  # type: ignore[index]
        assert body["status"] == "not_ready"

        world.ledger.transact(world.operator, *grant)
        assert _wait_for(url, ready=True)["checks"]["signer"] is True  # type: ignore[index]

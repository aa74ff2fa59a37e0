"""`dul admin …` through the real CLI against the session chain: organizations, members, the
two-step operator hand-over and API tokens — each command's printed result and what the chain
says afterwards, and refusals as one line with a non-zero exit that change nothing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from dul.chain.testing import TEST_OPERATOR_KEY, ChainHandle
from dul.cli.main import app
from dul.contracts.world import World
from dul.domain import OrgStatus, slug_id
from dul.keys import KeyStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

PASSPHRASE = "cli-admin-tests"


@pytest.fixture(scope="module")
def env(chain: ChainHandle, world: World) -> dict[str, str]:
    """The session chain's data directory with the operator's keystore as `cli-operator`."""
    keys = KeyStore(chain.home, passphrase=PASSPHRASE, scrypt_n=2**10)
    if "cli-operator" not in dict(keys.list()):
        keys.import_key("cli-operator", TEST_OPERATOR_KEY)
    return {
        **chain.env,
        "DUL_KEY_PASSPHRASE": PASSPHRASE,
        "DUL_KEY_SCRYPT_N": str(2**10),
        "COLUMNS": "200",
    }


def dul(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def ok(env: dict[str, str], *args: str) -> Any:
    """Run with `--json`, expect success, return the parsed output."""
    result = dul(env, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(result: Result, code: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert code in lines[0], result.stderr


def new_key(env: dict[str, str], name: str) -> str:
    created = ok(env, "keys", "new", name)
    return str(created["address"])


def test_org_add_show_suspend_reinstate(env: dict[str, str], world: World) -> None:
    slug = f"cli-{uuid.uuid4().hex[:8]}"
    added = dul(
        env,
        "admin",
        "org",
        "add",
        slug,
        "--kind",
        "research",
        "--name",
        "CLI Lab",
        "--key",
        "cli-operator",
    )
    assert added.exit_code == 0, added.output
    assert f"org={slug} kind=RESEARCH tx=0x" in added.stdout
    assert world.ledger.call("Membership", "organization", slug_id(slug))[1] == OrgStatus.ACTIVE

    shown = ok(env, "admin", "org", "show", slug)
    assert shown == {"org": slug, "kind": "RESEARCH", "status": "ACTIVE"}

    suspended = ok(env, "admin", "org", "suspend", slug, "--key", "cli-operator")
    assert suspended["status"] == "SUSPENDED"
    assert suspended["tx"].startswith("0x")
    assert ok(env, "admin", "org", "show", slug)["status"] == "SUSPENDED"
    # Suspending twice is refused before anything is sent.
    refused(
        dul(env, "admin", "org", "suspend", slug, "--key", "cli-operator"),
        "MembershipOrganizationStatusUnchanged",
    )

    reinstated = ok(env, "admin", "org", "reinstate", slug, "--key", "cli-operator")
    assert reinstated["status"] == "ACTIVE"
    assert ok(env, "admin", "org", "show", slug)["status"] == "ACTIVE"

    unknown = ok(env, "admin", "org", "show", f"none-{uuid.uuid4().hex[:6]}")
    assert unknown["status"] == "NONE"
    assert unknown["kind"] == "-"
    refused(
        dul(
            env,
            "admin",
            "org",
            "add",
            slug,
            "--kind",
            "research",
            "--name",
            "Again",
            "--key",
            "cli-operator",
        ),
        "Membership",
    )
    bad_kind = dul(
        env,
        "admin",
        "org",
        "add",
        "cli-x",
        "--kind",
        "bakery",
        "--name",
        "X",
        "--key",
        "cli-operator",
    )
    assert bad_kind.exit_code == 2
    assert "unknown kind 'bakery'" in bad_kind.output


def test_member_add_show_remove(env: dict[str, str], world: World) -> None:
    name = f"cli-member-{uuid.uuid4().hex[:6]}"
    address = new_key(env, name)
    slug = f"cli-{uuid.uuid4().hex[:8]}"
    ok(
        env,
        "admin",
        "org",
        "add",
        slug,
        "--kind",
        "hospital",
        "--name",
        "H",
        "--key",
        "cli-operator",
    )

    added = dul(
        env, "admin", "member", "add", slug, name, "--role", "steward", "--key", "cli-operator"
    )
    assert added.exit_code == 0, added.output
    assert f"org={slug} account={address} role=STEWARD tx=0x" in added.stdout
    ok(
        env,
        "admin",
        "member",
        "add",
        slug,
        address.lower(),
        "--role",
        "requester",
        "--key",
        "cli-operator",
    )
    shown = ok(env, "admin", "member", "show", name)
    assert shown == {"account": address, "org": slug, "roles": ["STEWARD", "REQUESTER"]}
    assert world.ledger.call("Membership", "isAuthorizedSender", address) is True

    removed = ok(
        env, "admin", "member", "remove", address, "--role", "steward", "--key", "cli-operator"
    )
    assert removed["revoked"] is True
    assert removed["role"] == "STEWARD"
    ok(env, "admin", "member", "remove", name, "--role", "requester", "--key", "cli-operator")
    assert ok(env, "admin", "member", "show", name) == {
        "account": address,
        "org": None,
        "roles": [],
    }
    refused(dul(env, "admin", "member", "show", "no-such-key"), "unknown_account")
    refused(
        dul(env, "admin", "member", "add", slug, name, "--role", "steward", "--key", name),
        "Membership",
    )


def _wait_until(world: World, moment: int) -> None:
    deadline = time.monotonic() + 30
    while world.ledger.w3.eth.get_block("latest")["timestamp"] <= moment:
        assert time.monotonic() < deadline, "the chain's clock did not reach the hand-over time"
        time.sleep(0.2)


def test_operator_hand_over_and_back(env: dict[str, str], world: World) -> None:
    operator = world.operator.address
    before = ok(env, "admin", "transfer", "status")
    assert before["operator"] == operator
    assert before["pending"] is None
    assert before["delay_s"] == 5

    name = f"cli-next-op-{uuid.uuid4().hex[:6]}"
    successor = new_key(env, name)
    begun = ok(env, "admin", "transfer", "begin", name, "--key", "cli-operator")
    assert begun["pending"] == successor
    assert ok(env, "admin", "transfer", "status")["pending"] == successor
    cancelled = ok(env, "admin", "transfer", "cancel", "--key", "cli-operator")
    assert cancelled["cancelled"] is True
    assert ok(env, "admin", "transfer", "status")["pending"] is None
    # Nobody is pending: accepting is refused in one line.
    refused(dul(env, "admin", "transfer", "accept", "--key", name), "AccessControl")

    begun = ok(env, "admin", "transfer", "begin", name, "--key", "cli-operator")
    _wait_until(world, int(begun["accept_after_unix"]))
    accepted = ok(env, "admin", "transfer", "accept", "--key", name)
    assert accepted["operator"] == successor
    try:
        assert ok(env, "admin", "transfer", "status")["operator"] == successor
    finally:  # hand the role back: the rest of the session's tests act as the first operator
        back = ok(env, "admin", "transfer", "begin", operator, "--key", name)
        _wait_until(world, int(back["accept_after_unix"]))
        ok(env, "admin", "transfer", "accept", "--key", "cli-operator")
    assert world.ledger.call("Membership", "defaultAdmin") == operator


def test_tokens_create_list_revoke(env: dict[str, str], world: World) -> None:
    name = f"cli-engine-{uuid.uuid4().hex[:6]}"
    created = ok(env, "admin", "token", "create", name, "--org", "hospital-a")
    assert created["org"] == "hospital-a"
    assert created["role"] == "access-service"
    assert len(created["token"]) >= 32
    text = dul(
        env, "admin", "token", "create", name + "-s", "--org", "hospital-a", "--role", "steward"
    )
    assert text.exit_code == 0
    assert "shown once" in text.stdout

    listed = {row["name"]: row for row in ok(env, "admin", "token", "list")}
    assert listed[name] == {
        "name": name,
        "org": "hospital-a",
        "role": "access-service",
        "revoked": False,
        "expired": False,
    }
    assert created["token"] not in json.dumps(listed)

    assert ok(env, "admin", "token", "revoke", name) == {"name": name, "revoked": True}
    assert {row["name"]: row for row in ok(env, "admin", "token", "list")}[name]["revoked"]
    refused(dul(env, "admin", "token", "revoke", name), "token_not_found")

    unknown_org = f"nowhere-{uuid.uuid4().hex[:6]}"
    refused(dul(env, "admin", "token", "create", name + "-x", "--org", unknown_org), "unknown_org")
    assert name + "-x" not in {row["name"] for row in ok(env, "admin", "token", "list")}
    bad_role = dul(
        env, "admin", "token", "create", name + "-y", "--org", "hospital-a", "--role", "janitor"
    )
    assert bad_role.exit_code == 2


def test_contracts_deploy_verifies_the_recorded_deployment(
    env: dict[str, str], world: World
) -> None:
    verified = ok(env, "contracts", "deploy", "--key", "cli-operator")
    assert verified["new"] is False
    assert verified["contracts"]["AccessLog"]["address"] == world.ledger.deployment.address(
        "AccessLog"
    )
    text = dul(env, "contracts", "deploy", "--key", "cli-operator")
    assert "verified existing deployment" in text.stdout

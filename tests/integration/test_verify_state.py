"""`verify` finds rewrites of the chain itself, on a throw-away chain of this module's own
(every test here attacks the node past the permissioned proxy, which the session's chain must
never see): storage rewritten under AccessLog and Membership (`state_differs_from_events`,
named by contract, view and key), a membership change sent by an impersonated operator
(`transaction_not_signed_by_sender`), and a history rolled back under a signed checkpoint
(`checkpoint_not_on_chain`). A clean chain gives none of them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eth_account import Account
from eth_hash.auto import keccak
from eth_typing import HexStr
from typer.testing import CliRunner

from audit.checkpoints import store_digest
from audit.cli import app as audit_cli
from audit.testing import drop_stores, index_into, make_store_url, record_story
from audit.verify import Finding, VerifyReport, verify_store
from dul.artifacts import ReleaseRef, content_id, register_artifact
from dul.chain.rpc import RpcClient
from dul.chain.testing import (
    TEST_OPERATOR_KEY,
    ChainHandle,
    start_chain,
    throwaway_chain_settings,
)
from dul.contracts.deploy import deploy
from dul.contracts.ledger import Ledger, connect
from dul.contracts.world import World
from dul.domain import ArtifactKind, Role
from dul.home import Home
from dul.keys import KeyStore
from dul.signing import LocalSigner

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

PASSPHRASE = "checkpoint-tests"
#: What verify says of an impersonated operator's transaction, by node.
IMPERSONATED = {
    "anvil": "it carries no signature (r = s = 0)",
    "hardhat": "its signature recovers to no public key",
}


@pytest.fixture(scope="module")
def node(node_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainHandle]:
    """A chain of this module's own (the node of `node_kind` behind the proxy, 0.2 s blocks)."""
    operator = Account.from_key(TEST_OPERATOR_KEY)
    home = Home(tmp_path_factory.mktemp("verify-state-home")).ensure()
    settings = throwaway_chain_settings(operator=operator.address, start_timeout=120.0)
    chain_node = start_chain(node_kind, home, settings)
    status = chain_node.status()
    assert status.rpc_url is not None
    assert status.node_url is not None
    assert status.chain_id is not None
    handle = ChainHandle(status.rpc_url, status.node_url, status.chain_id, home, operator,
                         chain_node, kind=node_kind)  # fmt: skip
    try:
        yield handle
    finally:
        handle.client.close()
        chain_node.stop()


@pytest.fixture(scope="module")
def world(node: ChainHandle) -> World:
    operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
    w3 = connect(node.rpc_url)
    deployment, _ = deploy(w3, operator, node.home.deployment, admin_delay=5)
    return World(Ledger(w3, deployment), operator).build()


@pytest.fixture(scope="module")
def story(world: World) -> tuple[bytes, bytes]:
    """A story touching every audited contract: organizations and members, a dataset, an
    agreement with granted and denied accesses and a release, consents (one withdrawn), an
    authorization code, an artifact registered from the release. The agreement's id and the
    denied request's."""
    agreement, _, exported, denied, result = record_story(world)
    consents = world.record_consents([keccak(b"patient one"), keccak(b"patient two")])
    world.ledger.transact(world.steward, "ConsentRegistry", "withdrawConsent", consents[1])
    world.issue_authorization(keccak(b"a code"), keccak(b"patient one"), world.institute)
    release = ReleaseRef(exported.request.request_id, agreement, result)
    register_artifact(world.ledger, world.requester, result, ArtifactKind.RESULT, [release],
                      metadata_hash=content_id(b"result card"))  # fmt: skip
    return agreement, denied.request.request_id


@pytest.fixture(scope="module")
def agreement(story: tuple[bytes, bytes]) -> bytes:
    return story[0]


@pytest.fixture
def store(agreement: bytes, tmp_path: Path) -> str:
    """A fresh SQLite store URL (each test indexes it when its chain is ready)."""
    return make_store_url("sqlite", tmp_path, [])


def cli_env(node: ChainHandle) -> dict[str, str]:
    """The CLI's environment: this chain, the keystores' passphrase, and no lag alarm (the
    chain mines every 0.2 s; how far the store lags is not what these tests look at)."""
    return {**node.env, "DUL_KEY_PASSPHRASE": PASSPHRASE,
            "DUL_AUDIT_INDEX_BEHIND_BLOCKS": "10000000",
            "DUL_AUDIT_INDEX_BEHIND_S": "31536000"}  # fmt: skip


def head(node: ChainHandle) -> int:
    return int(node.rpc("eth_blockNumber"), 16)


def wait_blocks(node: ChainHandle, count: int = 2) -> int:
    """Until `count` more blocks are mined (a rewrite of the latest state shows from then on)."""
    target = head(node) + max(count, 0)
    deadline = time.monotonic() + 30
    while head(node) < target:
        assert time.monotonic() < deadline, "no new blocks"
        time.sleep(0.05)
    return head(node)


def verify(node: ChainHandle, world: World, url: str, **options: Any) -> VerifyReport:
    engine = index_into(world.ledger.deployment, node.rpc_url, url)
    rpc = RpcClient(node.rpc_url)
    try:
        return verify_store(engine, rpc, start_block=int(world.ledger.deployment.raw["block"]),
                            workers=1, **options)  # fmt: skip
    finally:
        rpc.close()
        engine.dispose()


def named(report: VerifyReport, check: str) -> list[Finding]:
    return [f for f in report.findings if f.check == check]


def word(value: int | bytes | str) -> bytes:
    if isinstance(value, str):
        value = bytes.fromhex(value.removeprefix("0x"))
    if isinstance(value, bytes):
        return value.rjust(32, b"\0")
    return value.to_bytes(32, "big")


def mapping_slot(key: int | bytes | str, base: int) -> int:
    return int.from_bytes(keccak(word(key) + word(base)), "big")


def storage(node: ChainHandle, contract: str, slot: int) -> int:
    return int(node.node_rpc("eth_getStorageAt", contract, hex(slot), "latest"), 16)


def set_storage(node: ChainHandle, contract: str, slot: int, value: int) -> None:
    assert node.node_rpc("anvil_setStorageAt", contract, hex(slot), "0x" + word(value).hex())


def find_mapping(node: ChainHandle, contract: str, key: int | bytes | str, holds: int) -> int:
    """The storage slot of `mapping[key]` whose value is `holds` (the layout is the compiler's:
    try the first base slots)."""
    for base in range(64):
        slot = mapping_slot(key, base)
        if storage(node, contract, slot) == holds:
            return slot
    raise AssertionError(f"no mapping slot of {contract} holds {holds} for that key")


def test_a_clean_chain_gives_no_state_or_transaction_findings(
    node: ChainHandle, world: World, store: str
) -> None:
    report = verify(node, world, store)
    assert report.ok, report.findings
    assert report.checked["state_views"] >= 30
    assert report.checked["transactions"] >= 15  # deployment, members, story: each once
    assert "state_and_transactions" in report.seconds


def test_a_storage_rewrite_on_access_log_is_named(
    node: ChainHandle, world: World, store: str, agreement: bytes
) -> None:
    access_log = world.ledger.deployment.address("AccessLog")
    used = world.ledger.call("AccessLog", "accessesUsed", agreement)
    assert used == 2  # the story's granted query and export
    slot = find_mapping(node, access_log, agreement, used)
    set_storage(node, access_log, slot, 0)  # the quota counter set back
    try:
        wait_blocks(node)
        report = verify(node, world, store)
    finally:
        set_storage(node, access_log, slot, used)
        wait_blocks(node)
    (finding,) = named(report, "state_differs_from_events")
    assert finding.contract == "AccessLog"
    assert finding.key == "0x" + agreement.hex()
    assert finding.details["function"] == "accessesUsed(bytes32)"
    assert finding.details["fields"] == {"used": {"events": 2, "chain": 0}}
    assert not report.ok
    assert set(report.findings_by_check) == {"state_differs_from_events"}


def test_an_erased_decision_is_named_at_its_access(
    node: ChainHandle, world: World, store: str, story: tuple[bytes, bytes]
) -> None:
    """The access's slot cleared: the chain would take the same signed request again."""
    access_log = world.ledger.deployment.address("AccessLog")
    agreement, denied = story
    assert world.ledger.call("AccessLog", "decisionOf", denied, agreement) == 2  # DENIED

    def access_slot(base: int) -> int:  # _accesses[agreementId][requestId]
        return mapping_slot(denied, mapping_slot(agreement, base))

    slot = next(access_slot(base) for base in range(64)
                if storage(node, access_log, access_slot(base)))  # fmt: skip
    packed = storage(node, access_log, slot)
    set_storage(node, access_log, slot, 0)
    try:
        wait_blocks(node)
        report = verify(node, world, store)
    finally:
        set_storage(node, access_log, slot, packed)
        wait_blocks(node)
    (finding,) = named(report, "state_differs_from_events")
    assert (finding.contract, finding.key) == ("AccessLog", "0x" + denied.hex())
    assert finding.details["function"] == "decisionOf(bytes32,bytes32)"
    assert finding.details["fields"] == {"decision": {"events": 2, "chain": 0}}
    with sa.create_engine(store).connect() as conn:
        b, t, i = conn.execute(
            sa.text("SELECT block_number, tx_index, log_index FROM access_event "
                    "WHERE access_id = :a"), {"a": "0x" + denied.hex()},
        ).one()  # fmt: skip
    assert finding.position == f"{b}/{t}/{i}"


def test_a_storage_rewrite_on_membership_is_named(
    node: ChainHandle, world: World, store: str
) -> None:
    membership = world.ledger.deployment.address("Membership")
    gateway = world.gateway.address
    org_slot = find_mapping(node, membership, gateway, int.from_bytes(world.hospital, "big"))
    roles_slot = org_slot + 1  # Member {OrgId org; uint8 roles}
    roles = storage(node, membership, roles_slot)
    assert roles == 1 << Role.GATEWAY
    set_storage(node, membership, roles_slot, roles | 1 << Role.STEWARD)  # made a steward
    try:
        wait_blocks(node)
        report = verify(node, world, store)
    finally:
        set_storage(node, membership, roles_slot, roles)
        wait_blocks(node)
    findings = named(report, "state_differs_from_events")
    assert [(f.contract, f.key, f.details["function"]) for f in findings] == [
        ("Membership", gateway.lower(), "memberOf(address)")
    ]
    assert findings[0].details["fields"] == {"roles": {"events": 4, "chain": 5}}
    assert "Membership.memberOf" in findings[0].message


def test_a_rewritten_consent_scope_is_named(node: ChainHandle, world: World, store: str) -> None:
    """A specific consent's scope hash rewritten in storage (so that `consentScope` no longer
    matches the studies, requesters and disease term its event recorded)."""
    registry = world.ledger.deployment.address("ConsentRegistry")
    [consent] = world.record_consents(
        [keccak(os.urandom(32))], studies=[keccak(b"a study")], requesters=[world.institute]
    )
    scope = world.ledger.call("ConsentRegistry", "consentScope", consent)
    assert scope != bytes(32)
    base = find_mapping(node, registry, consent, int.from_bytes(world.hospital, "big"))
    scope_slot = base + 4  # StoredConsent {holder; subject; packed terms; subjectKey; scope}
    assert storage(node, registry, scope_slot) == int.from_bytes(scope, "big")
    set_storage(node, registry, scope_slot, 1)
    try:
        wait_blocks(node)
        report = verify(node, world, store)
    finally:
        set_storage(node, registry, scope_slot, int.from_bytes(scope, "big"))
        wait_blocks(node)
    (finding,) = named(report, "state_differs_from_events")
    assert (finding.contract, finding.key) == ("ConsentRegistry", "0x" + consent.hex())
    assert finding.details["function"] == "consentScope(bytes32)"


def test_a_membership_change_by_an_impersonated_operator_is_named(
    node: ChainHandle, world: World, store: str
) -> None:
    """A node that lets anyone act as the operator (no key needed): the grant executes and
    its event is indexed, but the transaction carries no signature of the operator."""
    snapshot = node.node_rpc("evm_snapshot")
    operator = world.operator.address
    rogue = LocalSigner(HexStr("0x" + keccak(os.urandom(32)).hex()))
    data = world.ledger.contract("Membership").encode_abi(
        "grantMemberRole", [world.hospital, rogue.address, int(Role.GATEWAY)]
    )
    try:
        node.node_rpc("anvil_impersonateAccount", operator)
        tx_hash = node.node_rpc("eth_sendTransaction", {
            "from": operator, "to": world.ledger.deployment.address("Membership"),
            "data": data, "gasPrice": "0x0",
        })  # fmt: skip
        node.node_rpc("anvil_stopImpersonatingAccount", operator)
        assert node.wait_receipt(tx_hash)["status"] == "0x1"
        assert world.ledger.call("Membership", "memberOf", rogue.address)[1] == 1 << Role.GATEWAY
        report = verify(node, world, store)
    finally:
        assert node.node_rpc("evm_revert", snapshot) is True
        node.node_rpc("anvil_dropAllTransactions")
    (finding,) = named(report, "transaction_not_signed_by_sender")
    assert finding.key == tx_hash
    assert finding.details["sender"] == operator.lower()
    # Each node marks an impersonated sender its own way: anvil with no signature, Hardhat's
    # with one that recovers to no key; verify names both.
    assert finding.details["reason"] == IMPERSONATED[node.kind]
    assert finding.table == "event"
    assert finding.position is not None
    # the grant's event is on chain, so the state agrees with the events: only the signature
    assert set(report.findings_by_check) == {"transaction_not_signed_by_sender"}


def test_a_checkpoint_taken_before_a_rollback_fails_verify_naming_it(
    node: ChainHandle, world: World, agreement: bytes, tmp_path: Path
) -> None:
    """Two signed checkpoints (CLI): one before a snapshot, one after blocks that a revert
    then erases. The chain's new history outgrows the old; an independently indexed store
    verifies, with the checkpoint directory, that the later checkpoint's block is gone (named)
    while the earlier one holds, its store digest reproduced by the new store."""
    keys = KeyStore(node.home, passphrase=PASSPHRASE, scrypt_n=2**10)
    name = f"regulator-{os.urandom(4).hex()}"
    regulator = keys.import_key(name, keccak(name.encode()))
    directory = tmp_path / "kept-by-the-regulator"
    runner = CliRunner()
    env = cli_env(node)

    def take(url: str) -> dict[str, Any]:
        engine = index_into(world.ledger.deployment, node.rpc_url, url)
        engine.dispose()
        result = runner.invoke(audit_cli, ["checkpoint", "--key", name, "--out", str(directory),
                                           "--database-url", url, "--json"], env=env)  # fmt: skip
        assert result.exit_code == 0, result.output
        facts: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
        assert facts["signer"] == regulator
        assert oct(Path(facts["file"]).stat().st_mode & 0o777) == "0o600"
        return facts

    before = take(make_store_url("sqlite", tmp_path, []))
    snapshot = node.node_rpc("evm_snapshot")
    world.activate(world.research_terms())
    forked = take(make_store_url("sqlite", tmp_path, []))
    assert forked["block_number"] > before["block_number"]
    assert node.node_rpc("evm_revert", snapshot) is True
    node.node_rpc("anvil_dropAllTransactions")
    world.activate(world.research_terms())  # another history from the snapshot on
    wait_blocks(node, forked["block_number"] + 1 - head(node))  # the new history outgrows it
    url = make_store_url("sqlite", tmp_path, [])
    index_into(world.ledger.deployment, node.rpc_url, url).dispose()
    result = runner.invoke(audit_cli, ["verify", "--json", "--checkpoints", str(directory),
                                       "--database-url", url], env=env)  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout.splitlines()[-1])
    gone = [f for f in report["findings"] if f["check"] == "checkpoint_not_on_chain"]
    assert [f["key"] for f in gone] == [Path(forked["file"]).name]
    assert gone[0]["details"]["block_hash"] == forked["block_hash"]
    assert gone[0]["details"]["node_hash"] not in (None, forked["block_hash"])
    # the new store differs from the signed digest too (it holds the new history); the
    # checkpoint taken before the snapshot holds, digest and all
    assert report["findings_by_check"] == {"checkpoint_not_on_chain": 1,
                                           "checkpoint_store_differs": 1}  # fmt: skip
    assert {f["key"] for f in report["findings"]} == {Path(forked["file"]).name}
    assert report["checked"]["checkpoints"] == 2
    as_text = runner.invoke(audit_cli, ["verify", "--checkpoints", str(directory),
                                        "--database-url", url],
                            env={**env, "COLUMNS": "250"})  # fmt: skip
    assert as_text.exit_code == 1
    assert "checkpoint_not_on_chain" in as_text.stdout
    assert "NOT OK" in as_text.stdout


def test_checkpoint_and_verify_refuse_bad_input_in_one_line(
    node: ChainHandle, world: World, agreement: bytes, tmp_path: Path
) -> None:
    url = make_store_url("sqlite", tmp_path, [])
    index_into(world.ledger.deployment, node.rpc_url, url).dispose()
    runner = CliRunner()
    env = cli_env(node)
    missing = runner.invoke(audit_cli, ["verify", "--checkpoints", str(tmp_path / "none"),
                                        "--database-url", url], env=env)  # fmt: skip
    assert missing.exit_code == 2
    assert "checkpoints_not_found" in missing.stderr
    out = ["--out", str(tmp_path), "--database-url", url]
    unknown_key = runner.invoke(audit_cli, ["checkpoint", "--key", "nobody", *out], env=env)
    assert unknown_key.exit_code == 2
    assert len(unknown_key.stderr.strip().splitlines()) == 1
    name = f"hospital-{os.urandom(4).hex()}"
    KeyStore(node.home, passphrase=PASSPHRASE, scrypt_n=2**10).import_key(name, os.urandom(32))
    too_far = runner.invoke(audit_cli, ["checkpoint", "--key", name, *out, "--block", "999999"],
                            env=env)  # fmt: skip
    assert too_far.exit_code == 2
    assert "block_not_indexed" in too_far.stderr
    assert list(tmp_path.glob("checkpoint-*.json")) == []
    # a forged file among good ones is named, and the rest still checked
    good = runner.invoke(audit_cli, ["checkpoint", "--key", name, "--out", str(tmp_path / "d"),
                                     "--database-url", url, "--json"], env=env)  # fmt: skip
    assert good.exit_code == 0, good.output
    document = json.loads(Path(json.loads(good.stdout)["file"]).read_text())
    document["typed_data"]["message"]["blockNumber"] = "1"
    (tmp_path / "d" / "forged.json").write_text(json.dumps(document))
    (tmp_path / "d" / "junk.json").write_text("{not json")
    result = runner.invoke(audit_cli, ["verify", "--json", "--checkpoints", str(tmp_path / "d"),
                                       "--database-url", url], env=env)  # fmt: skip
    assert result.exit_code == 1
    report = json.loads(result.stdout.splitlines()[-1])
    assert sorted(f["key"] for f in report["findings"]) == ["forged.json", "junk.json"]
    assert report["findings_by_check"] == {"checkpoint_invalid": 2}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_store_digest_is_the_same_on_every_backend(
    node: ChainHandle, world: World, agreement: bytes, tmp_path: Path, backend: str
) -> None:
    cleanup: list[tuple[str, str]] = []
    reference = index_into(world.ledger.deployment, node.rpc_url,
                           make_store_url("sqlite", tmp_path, []))  # fmt: skip
    other = index_into(world.ledger.deployment, node.rpc_url,
                       make_store_url(backend, tmp_path, cleanup))  # fmt: skip
    try:
        with reference.connect() as a, other.connect() as b:
            # both indexed the chain up to its head, a few blocks apart
            checkpoint = sa.text("SELECT block_number FROM checkpoint")
            common = min(int(c.execute(checkpoint).scalar_one()) for c in (a, b))
            blocks = [int(world.ledger.deployment.raw["block"]) + 5, common]
            digests = store_digest(a, blocks)
            assert digests == store_digest(b, blocks)
            assert digests[blocks[0]] != digests[blocks[1]]
    finally:
        reference.dispose()
        other.dispose()
        drop_stores(cleanup)

"""Against a node that serves at most 1,000 blocks per eth_getLogs, as Besu does with
`--rpc-max-logs-range 1000` (imposed by a second permission guard, `--max-log-range 1000`, in
front of the session's node, after more than 1,000 blocks were mined): the gateway's consent
view, its steward reads and the steward CLI, the submitter's recovery of an already recorded
access, and the indexer all read their logs in pages the node serves."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from eth_hash.auto import keccak
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from audit.indexer import Indexer
from audit.migrations import migrate as migrate_store
from audit.store import AuditStore, create_store_engine
from dul import log as dul_log
from dul.chain.log_range import RANGE_LIMIT_CODE, RANGE_LIMIT_MESSAGE
from dul.chain.rpc import AsyncRpcClient, RpcClient
from dul.chain.rpc_auth import bearer_headers, rpc_token
from dul.chain.testing import ChainHandle, free_port
from dul.cli.steward import app as steward_app
from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
from dul.contracts.world import World
from dul.domain import Decision, DenyReason, Operation, Role, Scenario, Tier
from dul.keys import KeyStore
from ledger_gateway.client import GatewayClient, sign_request
from ledger_gateway.migrations import migrate
from ledger_gateway.outbox import NewAccess, OperationStatus
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.store import SqlOutbox, make_engine
from ledger_gateway.submitter import Submitter, SubmitterSettings, encode_access_record
from ledger_gateway.testing import GatewayHandle, serve
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

LIMIT = 1_000
PASSPHRASE = "gateway-tests"  # the keystore passphrase the session's fixtures use


def _rpc(url: str, method: str, *params: object) -> dict[str, object]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    headers = bearer_headers(rpc_token())  # the chain's proxy wants it; the guard ignores it
    reply: dict[str, object] = httpx.post(url, json=body, timeout=30, headers=headers).json()
    return reply


@pytest.fixture(scope="module")
def limited(chain: ChainHandle, world: World) -> Iterator[str]:
    """A guard refusing eth_getLogs over more than LIMIT blocks, the chain past LIMIT blocks
    since the deployment (mined in a burst, at the current time)."""
    first = int(world.ledger.deployment.raw["block"])
    while (missing := first + 2 * LIMIT + 200 - int(chain.rpc("eth_blockNumber"), 16)) > 0:
        chain.node_rpc("anvil_mine", hex(min(missing, 600)), "0x0")
    port = free_port()
    args = [sys.executable, "-m", "dul.rpc_proxy", "--upstream", chain.node_url,
            "--port", str(port), "--deployment", str(chain.home.deployment),
            "--operator", chain.operator.address, "--max-log-range", str(LIMIT),
            "--log-level", "WARNING"]  # fmt: skip
    # Its log goes to a file: a pipe nobody reads would stop the guard once full.
    log_path = chain.home.logs_dir / f"limited-guard-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a Python start: 20 s was too short at load 25
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                _rpc(url, "eth_chainId")
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the limited guard did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def limited_gateway(
    world: World, chain: ChainHandle, limited: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayHandle]:
    keys = KeyStore(chain.home, passphrase=PASSPHRASE, scrypt_n=2**14)
    address = keys.import_key("hospital-a.limited-gateway", keccak(b"dul tests limited gateway"))
    world.ledger.transact(
        world.operator, "Membership", "grantMemberRole", world.hospital, address, Role.GATEWAY
    )
    settings = GatewaySettings(
        home=chain.home.root,
        org="hospital-a",
        key="hospital-a.limited-gateway",
        key_passphrase=SecretStr(PASSPHRASE),
        rpc_url=limited,
        database_url=f"sqlite:///{tmp_path_factory.mktemp('limited') / 'gateway.db'}",
        port=free_port(),
        batch_latency_ms=20,
        deadline_margin_s=5,
    )
    token = TokenStore(settings.tokens_path).create(
        f"limited-{settings.port}", "hospital-a", TokenRole.ACCESS_SERVICE
    )
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    with serve(settings) as url, GatewayClient(url, token) as client:
        yield GatewayHandle(url, token, client, domain, settings)


def test_the_guard_refuses_wide_ranges_with_besus_error(chain: ChainHandle, limited: str) -> None:
    head = int(chain.rpc("eth_blockNumber"), 16)
    wide = _rpc(limited, "eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest"})
    assert wide["error"] == {"code": RANGE_LIMIT_CODE, "message": RANGE_LIMIT_MESSAGE}
    edge = {"fromBlock": hex(head - LIMIT), "toBlock": hex(head)}
    assert isinstance(_rpc(limited, "eth_getLogs", edge)["result"], list)
    past = {"fromBlock": hex(head - LIMIT - 1), "toBlock": hex(head)}
    assert _rpc(limited, "eth_getLogs", past)["error"] == wide["error"]
    # the unlimited guard serves the same query
    assert isinstance(_rpc(chain.rpc_url, "eth_getLogs", past)["result"], list)


def test_the_consent_view_catches_up_in_pages(world: World, limited_gateway: GatewayHandle) -> None:
    agreement = world.activate(world.cohort_terms())
    consented = [os.urandom(32) for _ in range(4)]
    world.record_consents(consented, [Scenario.RESEARCH])
    request = AccessRequest(
        request_id=os.urandom(32),
        agreement_id=agreement,
        dataset_id=world.dataset,
        field_mask=0b0110,
        tier=Tier.PSEUDONYMIZED,
        operation=Operation.QUERY,
        request_hash=keccak(b"SELECT count(*) FROM person"),
        deadline=int(time.time()) + 600,
    )
    cohort = [*consented, os.urandom(32)]
    body = sign_request(world.requester, request, limited_gateway.domain, cohort=cohort)
    answer = limited_gateway.client.request_access(body)
    assert answer.decision == "GRANTED", answer
    assert answer.cohort is not None
    assert answer.cohort.admitted == ["0x" + r.hex() for r in sorted(consented)]
    assert limited_gateway.client.get_access(answer.access_id, wait=True).status == "confirmed"


def invoke(env: dict[str, str], *args: str) -> Result:
    saved = structlog.get_config()
    dul_log.configure("WARNING")
    try:
        return CliRunner().invoke(steward_app, list(args), env=env)
    finally:
        structlog.configure(**saved)


def run(env: dict[str, str], *args: str) -> dict[str, object]:
    result = invoke(env, *args)
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_steward_commands_read_terms_and_fields_in_pages(
    chain: ChainHandle, limited: str, limited_gateway: GatewayHandle, tmp_path: Path
) -> None:
    keys = KeyStore(chain.home, passphrase=PASSPHRASE, scrypt_n=2**14)
    names = {name for name, _ in keys.list()}
    for name, seed in (("hospital-a.steward", "steward"), ("institute.steward", "partner-steward")):
        if name not in names:
            keys.import_key(name, keccak(f"dul world {seed}".encode()))
    token = TokenStore(limited_gateway.settings.tokens_path).create(
        f"limited-steward-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )
    env = {
        "DUL_HOME": str(chain.home.root),
        "DUL_RPC_URL": limited,
        "DUL_KEY_PASSPHRASE": PASSPHRASE,
        "DUL_GATEWAY_URL": limited_gateway.url,
        "DUL_GATEWAY_TOKEN": token,
    }
    draft = tmp_path / "draft.toml"
    draft.write_text(
        'holder = "hospital-a"\nrequester = "institute"\nscenario = "RESEARCH"\n'
        'max_tier = "DEIDENTIFIED"\noperations = ["QUERY"]\nquota = 5\ndays = 30\n'
        '[[datasets]]\nid = "hospital-a/omop-cdm"\nfields = ["person.year_of_birth"]\n'
    )
    explicit = tmp_path / "draft.json"
    drafted = run(env, "agreement", "draft", str(draft), "--out", str(explicit), "--json")
    agreement = str(drafted["agreement_id"])
    submitted = run(env, "agreement", "submit", str(explicit), "--key", "hospital-a.steward",
                    "--json")  # fmt: skip
    assert submitted["status"] == "confirmed"
    for key, expected in (("hospital-a.steward", "PROPOSED"), ("institute.steward", "ACTIVE")):
        signed = run(env, "agreement", "sign", agreement, "--key", key, "--yes", "--json")
        assert signed["agreement_status"] == expected
    shown = run(env, "agreement", "show", agreement, "--json")
    assert (shown["status"], shown["quota"]) == ("ACTIVE", 5)
    assert "person.year_of_birth" in json.dumps(shown)


def test_the_submitter_finds_an_already_recorded_access_in_pages(
    chain: ChainHandle, world: World, limited: str, tmp_path: Path
) -> None:
    """A batch with an access already on chain reverts; the submitter finds the recorded one
    (newest pages first) and records the rest."""
    agreement = world.activate(world.research_terms())
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))

    def new_access(n: int) -> tuple[NewAccess, AccessRecord]:
        request = AccessRequest(
            request_id=keccak(agreement + n.to_bytes(8, "big")),
            agreement_id=agreement,
            dataset_id=world.dataset,
            field_mask=0b0110,
            tier=Tier.DEIDENTIFIED,
            operation=Operation.QUERY,
            request_hash=keccak(b"SELECT count(*) FROM person"),
            deadline=int(time.time()) + 3_600,
        )
        record = AccessRecord(request, world.requester.address,
                              request.sign(world.requester, domain), Decision.GRANTED,
                              DenyReason.NONE)  # fmt: skip
        queued = NewAccess(
            request_id=request.request_id,
            body_hash=keccak(b"body" + request.request_id),
            org=world.hospital,
            agreement_id=agreement,
            decision=Decision.GRANTED,
            reasons=(),
            record=encode_access_record(record.as_abi()),
        )
        return queued, record

    (first, on_chain), (second, _) = new_access(0), new_access(1)
    receipt = world.ledger.transact(
        world.gateway, "AccessLog", "recordAccesses", [on_chain.as_abi()]
    )
    recorded_block = receipt["blockNumber"]  # not the head read after it: a block may follow

    async def scenario() -> list[OperationStatus]:
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
        migrate(url)
        outbox = SqlOutbox(make_engine(url))
        await outbox.start()
        await outbox.add_accesses([first, second])
        rpc = AsyncRpcClient(limited)
        submitter = Submitter(
            outbox, rpc, world.gateway,
            access_log=world.ledger.deployment.address("AccessLog"), chain_id=chain.chain_id,
            settings=SubmitterSettings(max_delay=0.05, poll_interval=0.05, resend_after=2.0),
        )  # fmt: skip
        await submitter.start()
        deadline = time.monotonic() + 30
        while await outbox.depth() > 0:
            task = submitter.task
            if task is not None and task.done():
                task.result()
            assert time.monotonic() < deadline, "outbox not drained"
            await asyncio.sleep(0.05)
        views = await outbox.get_many([first.request_id, second.request_id])
        await submitter.stop()
        await rpc.aclose()
        await outbox.close()
        return [views[first.request_id].status, views[second.request_id].status]

    statuses = asyncio.run(scenario())
    assert statuses == [OperationStatus.CONFIRMED, OperationStatus.CONFIRMED]
    found = world.ledger.find_logs(
        {
            "address": world.ledger.deployment.address("AccessLog"),
            "topics": [None, None, "0x" + agreement.hex()],
        }
    )
    assert sorted(bytes(e["topics"][1]) for e in found) == sorted(
        [first.request_id, second.request_id]
    )
    assert min(e["blockNumber"] for e in found) == recorded_block


def test_the_indexer_pages_below_the_limit(
    chain: ChainHandle, world: World, limited: str, tmp_path: Path
) -> None:
    deployment = world.ledger.deployment
    engine = create_store_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate_store(engine)
    indexer = Indexer(
        AuditStore(engine),
        RpcClient(limited),
        chain_id=deployment.chain_id,
        contracts=deployment.addresses,
        start_block=int(deployment.raw["block"]),
        page_size=5_000,
        poll_interval=0.05,
    )
    try:
        target = int(chain.rpc("eth_blockNumber"), 16)
        summary = indexer.run(to_block=target)
        assert summary.refused_ranges > 0
        assert summary.checkpoint_block == target
        everything = world.ledger.find_logs({"address": list(deployment.addresses.values())})
        assert summary.events == len([e for e in everything if e["blockNumber"] <= target]) > 0
    finally:
        indexer.close()

"""`dul gateway serve --workers 2` as real processes on the session chain: both workers decide
into one outbox and exactly one runs the submitter (the lease). `kill -9` of the submitter's
worker and then of another worker, with requests in flight: the other worker takes the lease
over, the server starts new workers, every answered request is on chain exactly once and
none twice. (A client retries a request whose connection died: requests are idempotent.)"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_abi.abi import decode
from eth_hash.auto import keccak

from dul.chain.testing import ChainHandle, free_port
from dul.contracts.typed_data import AccessRequest, access_log_domain
from dul.contracts.world import World
from dul.domain import Decision, Operation, Role, Tier
from dul.keys import KeyStore
from ledger_gateway.client import sign_request
from ledger_gateway.submitter import ACCESS_RECORD_TYPE, ACCESS_RECORDED_TOPIC
from ledger_gateway.testing import GatewayProcess
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = pytest.mark.integration

KEY = "hospital-a.workers-gateway"
REQUESTS = 600
CONCURRENCY = 32


@pytest.fixture
def server(
    world: World, chain: ChainHandle, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, Path, str]]:
    """The two-worker gateway, its SQLite file's lease path and an access-service token."""
    keys = KeyStore(chain.home, passphrase="gateway-tests", scrypt_n=2**14)
    if KEY not in {n for n, _ in keys.list()}:
        address = keys.import_key(KEY, keccak(b"dul tests workers gateway"))
        world.ledger.transact(
            world.operator, "Membership", "grantMemberRole", world.hospital, address, Role.GATEWAY
        )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DUL_")},
        **chain.env,  # DUL_HOME, DUL_RPC_URL and the session's DUL_RPC_TOKEN
        "DUL_KEY_PASSPHRASE": "gateway-tests",
        "DUL_GATEWAY_KEY": KEY,
        "DUL_GATEWAY_STATE_DIR": str(tmp_path),
        "DUL_GATEWAY_BATCH_LATENCY_MS": "20",
        "DUL_GATEWAY_DEADLINE_MARGIN_S": "5",
        "DUL_GATEWAY_LEASE_CHECK_S": "0.2",
        "DUL_LOG_LEVEL": "WARNING",
    }
    token = TokenStore(tmp_path / "tokens.json").create("w", "hospital-a", TokenRole.ACCESS_SERVICE)
    process = GatewayProcess(env, free_port(), tmp_path / "gateway.log", workers=2)
    process.start(timeout=180)  # two interpreters importing everything on loaded cores
    try:
        yield process, tmp_path / "gateway.db-submitter.lock", token
    finally:
        process.stop()


def leader(lease: Path) -> int:
    return int(lease.read_text().split()[0])


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST until answered: a request whose connection the kill broke is sent again, for up
    to 180 s (the server restarts a killed worker: importing, catching up and taking the
    lease took over 30 s on a busy machine with the suite on four workers)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            reply = await client.post("/v1/access-requests", json=body)
        except httpx.TransportError:
            await asyncio.sleep(0.1)
            continue
        assert reply.status_code == 201, reply.text
        answer: dict[str, Any] = reply.json()
        return answer
    raise AssertionError("no worker answered")


def on_chain(chain: ChainHandle, world: World, agreement: bytes) -> list[tuple[str, str]]:
    """(request id, decision) of every AccessRecorded event of `agreement`."""
    access_log = world.ledger.deployment.address("AccessLog")
    topics = ["0x" + ACCESS_RECORDED_TOPIC.hex(), None, "0x" + agreement.hex()]
    filter_ = {"address": access_log, "fromBlock": "0x0", "toBlock": "latest", "topics": topics}
    events = []
    for entry in chain.rpc("eth_getLogs", filter_):
        _, record = decode(["address", ACCESS_RECORD_TYPE], bytes.fromhex(entry["data"][2:]))
        events.append((entry["topics"][1], Decision(record[4]).name))
    return events


@pytest.mark.timeout(600)
def test_kill_9_of_the_submitters_worker_and_of_another_loses_nothing_and_records_once(
    world: World, chain: ChainHandle, server: tuple[GatewayProcess, Path, str]
) -> None:
    process, lease, token = server
    began = time.monotonic()  # /readyz answers once one worker serves; the other may be starting
    while len(workers := process.workers()) < 2:
        assert time.monotonic() - began < 120, "the server did not start its second worker"
        time.sleep(0.2)
    assert len(workers) == 2
    first_leader = leader(lease)
    assert first_leader in workers  # one of the two holds the lease, the other waits

    agreement = world.activate(world.research_terms(quota=10**9))
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    deadline = int(time.time()) + 3_600
    bodies = [
        sign_request(
            world.requester,
            AccessRequest(os.urandom(32), agreement, world.dataset,
                          (1 << 7) if i % 10 == 0 else 0b0110, Tier.DEIDENTIFIED,
                          Operation.QUERY, keccak(i.to_bytes(8, "big")), deadline),
            domain,
        ).model_dump()
        for i in range(REQUESTS)
    ]  # fmt: skip
    killed: list[int] = []

    async def scenario() -> dict[str, dict[str, Any]]:
        queue = collections.deque(bodies)
        answers: dict[str, dict[str, Any]] = {}

        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=CONCURRENCY)
        http = httpx.AsyncClient(base_url=process.url, headers=headers, timeout=30, limits=limits)

        async def a_worker_that_only_decides() -> int:
            # the server may not have replaced the killed submitter yet, nor a live worker taken
            # the lease over: wait for both, or the second kill could hit the next submitter
            began = time.monotonic()
            while True:
                holder = leader(lease)
                others = [p for p in process.workers() if p != holder]
                if holder != first_leader and alive(holder) and others:
                    return others[0]
                assert time.monotonic() - began < 120, "no second worker beside the submitter"
                await asyncio.sleep(0.2)

        async def client() -> None:
            while queue:
                body = queue.popleft()
                answers[body["request_id"]] = await post(http, body)
                if len(answers) == REQUESTS // 4 and not killed:
                    killed.append(first_leader)
                    os.kill(first_leader, signal.SIGKILL)  # the submitter's process
                elif len(answers) == REQUESTS // 2 and len(killed) == 1:
                    killed.append(0)  # claimed: the other clients go on while this one waits
                    killed[1] = await a_worker_that_only_decides()
                    os.kill(killed[1], signal.SIGKILL)

        async with http:
            await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        return answers

    answers = asyncio.run(scenario())
    assert len(killed) == 2
    assert len(answers) == REQUESTS

    # the lease moved to a live worker; the server replaced the dead ones
    began = time.monotonic()
    while leader(lease) == first_leader or not alive(leader(lease)):
        assert time.monotonic() - began < 30, "no worker took the submitter lease over"
        time.sleep(0.2)
    # a SIGKILLed process takes a moment to exit (its memory torn down) before it shows as a
    # zombie or disappears: it must be gone soon, not at this very instant
    while any(alive(pid) for pid in killed):
        assert time.monotonic() - began < 40, "a killed worker is still running"
        time.sleep(0.1)
    while len(process.workers()) < 2:
        assert time.monotonic() - began < 60, "the server did not replace its workers"
        time.sleep(0.2)

    while True:  # drained: every acknowledged decision recorded
        reply = httpx.get(f"{process.url}/readyz", timeout=5).json()
        if reply["outbox_depth"] == 0:
            break
        assert time.monotonic() - began < 120, f"the outbox did not drain: {reply}"
        time.sleep(0.3)

    recorded = on_chain(chain, world, agreement)
    counts = collections.Counter(request_id for request_id, _ in recorded)
    assert set(counts.values()) == {1}  # nothing twice
    assert dict(recorded) == {rid: a["decision"] for rid, a in answers.items()}  # nothing lost
    assert collections.Counter(dict(recorded).values()) == {"GRANTED": 540, "DENIED": 60}

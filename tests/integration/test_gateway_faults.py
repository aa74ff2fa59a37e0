"""Faults of the gateway as a real process (`dul gateway serve`) on a private chain:

- `kill -9` while 2,000 requests are in flight: after a restart on the same data directory every
  answered request is on chain exactly once, none is recorded twice, and a client's retry of an
  unanswered request gets one record and one answer;
- the chain node stopped and restarted under load: decisions go on being answered into the
  outbox, `/readyz` turns 503, a full outbox answers 503 `outbox_full` with Retry-After, and when
  the node is back the outbox drains — every accepted decision on chain exactly once.

Each test builds its own chain (anvil + proxy, 0.2 s blocks) and deploys the contracts; the
figures they measure (answered before the kill, recovery time, drain rate) are logged as
`gateway_faults.*` events (run with `-s` to see them).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from eth_abi.abi import decode
from eth_account import Account
from eth_hash.auto import keccak
from eth_typing import ChecksumAddress, HexStr

from dul.chain.node import ChainNode
from dul.chain.rpc_auth import bearer_headers, rpc_token
from dul.chain.testing import TEST_OPERATOR_KEY, free_port, node_call, throwaway_chain_settings
from dul.contracts.deploy import deploy
from dul.contracts.ledger import Ledger, connect
from dul.contracts.typed_data import AccessRequest, Domain, access_log_domain
from dul.contracts.world import World
from dul.domain import Decision, Operation, Tier
from dul.home import Home
from dul.keys import KeyStore
from dul.signing import LocalSigner
from ledger_gateway.client import sign_request
from ledger_gateway.submitter import ACCESS_RECORD_TYPE, ACCESS_RECORDED_TOPIC
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = pytest.mark.integration

log = structlog.get_logger("gateway_faults")

PASSPHRASE = "gateway-fault-tests"  # a throw-away keystore in tmp_path
Body = dict[str, Any]


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    home: Home
    node: ChainNode
    world: World
    rpc_url: str

    @property
    def access_log(self) -> ChecksumAddress:
        return self.world.ledger.deployment.address("AccessLog")

    @property
    def domain(self) -> Domain:
        return access_log_domain(self.world.ledger.chain_id, self.access_log)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A private chain with the contracts, the small world, and the gateway's key imported."""
    operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
    home = Home(tmp_path / "home").ensure()
    node = ChainNode(
        home, throwaway_chain_settings(operator=Account.from_key(TEST_OPERATOR_KEY).address)
    )
    status = node.start()
    assert status.rpc_url is not None
    try:
        w3 = connect(status.rpc_url)
        deployment, _ = deploy(w3, operator, home.deployment, admin_delay=5)
        world = World(Ledger(w3, deployment), operator).build()
        KeyStore(home, passphrase=PASSPHRASE, scrypt_n=2**14).import_key(
            "hospital-a.gateway", keccak(b"dul world gateway")
        )
        yield Stack(home, node, world, status.rpc_url)
    finally:
        node.stop()


class GatewayProcess:
    """`dul gateway serve` as its own process on the stack's data directory (so its outbox,
    SQLite in DUL_HOME/gateway, survives a kill and the next start picks it up)."""

    def __init__(self, stack: Stack, **env: str) -> None:
        self.stack = stack
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DUL_")},
            "DUL_HOME": str(stack.home.root),
            "DUL_RPC_URL": stack.rpc_url,
            "DUL_RPC_TOKEN": os.environ["DUL_RPC_TOKEN"],  # the session's (conftest)
            "DUL_KEY_PASSPHRASE": PASSPHRASE,
            "DUL_GATEWAY_PORT": str(self.port),
            "DUL_GATEWAY_BATCH_LATENCY_MS": "20",
            "DUL_LOG_LEVEL": "WARNING",
            **env,
        }
        self.token = TokenStore(stack.home.root / "gateway" / "tokens.json").create(
            f"faults-{self.port}", "hospital-a", TokenRole.ACCESS_SERVICE
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.stack.home.logs_dir / "gateway.log"

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until /readyz answers 200; the seconds that took."""
        began = time.monotonic()
        self.starts += 1
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from dul.cli.main import app; app()", "gateway", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        while time.monotonic() - began < timeout:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the gateway did not become ready: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush, nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    """Every gateway process a test starts is stopped at its end, whatever happened."""
    started: list[GatewayProcess] = []
    try:
        yield started
    finally:
        for gateway in started:
            gateway.stop()


# --------------------------------------------------------------------------- requests


def signed_bodies(stack: Stack, agreement: bytes, count: int, *, deny_every: int = 0) -> list[Body]:
    """`count` requester-signed requests; every `deny_every`-th asks for a field out of scope."""
    world = stack.world
    deadline = int(time.time()) + 3_600
    bodies = []
    for i in range(count):
        denied = deny_every > 0 and i % deny_every == 0
        request = AccessRequest(
            request_id=os.urandom(32),
            agreement_id=agreement,
            dataset_id=world.dataset,
            field_mask=(1 << 7) if denied else 0b0110,
            tier=Tier.DEIDENTIFIED,
            operation=Operation.QUERY,
            request_hash=keccak(i.to_bytes(8, "big")),
            deadline=deadline,
        )
        bodies.append(sign_request(world.requester, request, stack.domain).model_dump())
    return bodies


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for the gateway's JSON
    answers (httpx would cost more client CPU than the gateway under test, on two cores)."""

    def __init__(self, url: str, token: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: Body | None = None) -> Reply:
        """Raises OSError / asyncio.IncompleteReadError / ValueError when the gateway goes."""
        try:
            return await self._request(method, path, body)
        except BaseException:
            self.close()
            raise

    async def _request(self, method: str, path: str, body: Body | None) -> Reply:
        if self.stream is None:
            self.stream = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.stream
        payload = b"" if body is None else json.dumps(body).encode()
        writer.write(
            f"{method} {path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise asyncio.IncompleteReadError(b"", None)
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        return Reply(status, headers, json.loads(raw) if raw else None)

    def close(self) -> None:
        if self.stream is not None:
            self.stream[1].close()
            self.stream = None


async def post_all(
    url: str, token: str, bodies: Sequence[Body], concurrency: int
) -> dict[str, Reply]:
    """POST every body once (no retries) with `concurrency` connections: the replies by id."""
    queue = collections.deque(bodies)
    replies: dict[str, Reply] = {}

    async def worker() -> None:
        connection = Connection(url, token)
        try:
            while queue:
                body = queue.popleft()
                replies[body["request_id"]] = await connection.request(
                    "POST", "/v1/access-requests", body
                )
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return replies


async def poll(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.1
) -> float:
    """Wait until `check()` is true; the seconds it took (AssertionError after `timeout`)."""
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(interval)
    return time.monotonic() - began


async def readyz(client: httpx.AsyncClient) -> httpx.Response | None:
    try:
        return await client.get("/readyz", timeout=2)
    except httpx.HTTPError:
        return None


async def drained(client: httpx.AsyncClient) -> bool:
    """Ready, and nothing left in the outbox."""
    reply = await readyz(client)
    return reply is not None and reply.status_code == 200 and reply.json()["outbox_depth"] == 0


def metric(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def on_chain(stack: Stack, agreement: bytes) -> list[tuple[str, str]]:
    """(request id, decision name) of every AccessRecorded event of `agreement`."""
    reply = httpx.post(
        stack.rpc_url,
        headers=bearer_headers(rpc_token()),
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getLogs",
            "params": [
                {
                    "address": stack.access_log,
                    "fromBlock": "0x0",
                    "toBlock": "latest",
                    "topics": [
                        "0x" + ACCESS_RECORDED_TOPIC.hex(),
                        None,
                        "0x" + agreement.hex(),
                    ],
                }
            ],
        },
        timeout=30,
    ).json()
    assert "error" not in reply, reply
    events = []
    for entry in reply["result"]:
        _, record = decode(["address", ACCESS_RECORD_TYPE], bytes.fromhex(entry["data"][2:]))
        events.append((entry["topics"][1], Decision(record[4]).name))
    return events


# --------------------------------------------------------------------------- kill -9


REQUESTS = 2_000
CONCURRENCY = 200
KILL_AFTER = 500
"""Answers received before the SIGKILL; CONCURRENCY more are in flight at that moment."""


@pytest.mark.timeout(400)
def test_kill_9_with_2000_requests_in_flight_loses_no_answer_and_records_none_twice(
    stack: Stack, gateways: list[GatewayProcess]
) -> None:
    agreement = stack.world.activate(stack.world.research_terms(quota=10**9))
    bodies = signed_bodies(stack, agreement, REQUESTS, deny_every=10)
    by_id = {b["request_id"]: b for b in bodies}
    gateway = GatewayProcess(stack)
    gateways.append(gateway)
    gateway.start()

    async def scenario() -> dict[str, float]:
        figures: dict[str, float] = {}
        queue = collections.deque(bodies)
        answered: dict[str, Reply] = {}
        lost: set[str] = set()  # sent, no answer: the gateway died under them
        killed = asyncio.Event()

        async def worker() -> None:
            connection = Connection(gateway.url, gateway.token)
            while queue and not killed.is_set():
                body = queue.popleft()
                try:
                    reply = await connection.request("POST", "/v1/access-requests", body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    lost.add(body["request_id"])
                    continue
                answered[body["request_id"]] = reply
                if len(answered) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    gateway.kill()
            connection.close()

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        figures["load_s"] = time.monotonic() - began
        not_sent = [b["request_id"] for b in queue]
        statuses = collections.Counter(r.status for r in answered.values())
        assert set(statuses) == {201}, statuses  # no 500, no 503 on the way
        figures |= {
            "answered_before_kill": len(answered),
            "in_flight_at_kill": len(lost),
            "not_sent": len(not_sent),
        }

        # restart on the same data directory and database; recovery re-sends what was signed
        restarted = time.monotonic()
        figures["restart_ready_s"] = await asyncio.to_thread(gateway.start)
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            await poll(lambda: drained(client), 40, "the outbox drains after the restart")
            figures["recovery_s"] = time.monotonic() - restarted

            # the gateway's own view: every answered decision confirmed, with the same answer
            connection = Connection(gateway.url, gateway.token)
            for request_id, reply in answered.items():
                now = await connection.request("GET", f"/v1/access-requests/{request_id}")
                assert now.status == 200, now.body
                assert now.body["status"] == "confirmed", now.body
                assert now.body["decision"] == reply.body["decision"]
            connection.close()

            # on chain: every answered request exactly once, nothing twice
            counts = collections.Counter(
                request_id for request_id, _ in await asyncio.to_thread(on_chain, stack, agreement)
            )
            assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]
            assert set(answered) <= set(counts), set(answered) - set(counts)
            assert set(counts) <= set(by_id)
            figures["unanswered_recorded_anyway"] = len(set(counts) & lost)

            # the client retries what got no answer: one record and one answer each; a replay
            # of answered requests gets the same answer as before the kill
            retry = [by_id[i] for i in sorted(lost)] + [by_id[i] for i in not_sent]
            replayed = list(answered)[:100]
            replies = await post_all(
                gateway.url, gateway.token, retry + [by_id[i] for i in replayed], 50
            )
            for request_id in replayed:
                before, after = answered[request_id].body, replies[request_id].body
                assert replies[request_id].status == 201, after
                assert (after["access_id"], after["decision"]) == (
                    before["access_id"],
                    before["decision"],
                )
            assert {r.status for r in replies.values()} == {201}
            await poll(lambda: drained(client), 40, "the retried requests are recorded")
            metrics = (await client.get("/metrics")).text
            figures["resends_after_restart"] = metric(
                metrics, "dul_gateway_transaction_resends_total"
            )

        events = await asyncio.to_thread(on_chain, stack, agreement)
        counts = collections.Counter(request_id for request_id, _ in events)
        assert len(events) == len(counts) == REQUESTS  # all 2,000, each once
        expected = {
            i: ("DENIED" if b["field_mask"] == 1 << 7 else "GRANTED") for i, b in by_id.items()
        }
        assert dict(events) == expected
        for request_id, reply in answered.items():
            assert reply.body["decision"] == expected[request_id]
        return figures

    figures = asyncio.run(scenario())
    log.info("gateway_faults.kill_9", **{k: round(v, 2) for k, v in figures.items()})


# --------------------------------------------------------------------------- node outage


OUTBOX_LIMIT = 300
LOAD_REQUESTS = 1_200
LOAD_CONCURRENCY = 16


@dataclass
class Load:
    """A closed-loop client population that retries each 503 with the same body, as an access
    service should, until every request has an answer."""

    url: str
    token: str
    bodies: Sequence[Body]
    answers: dict[str, Reply] = field(default_factory=dict)
    refusals: list[tuple[float, Reply]] = field(default_factory=list)
    """(monotonic time, reply) of every 503."""
    errors: list[Reply] = field(default_factory=list)
    answered_at: dict[str, float] = field(default_factory=dict)
    sending: asyncio.Event = field(default_factory=asyncio.Event)
    """Cleared, the clients send nothing new until it is set again."""

    async def run(self, concurrency: int) -> None:
        queue = collections.deque(self.bodies)
        self.sending.set()

        async def worker() -> None:
            connection = Connection(self.url, self.token)
            while queue:
                await self.sending.wait()
                if not queue:  # another client took the last one meanwhile
                    break
                body = queue.popleft()
                reply = await connection.request("POST", "/v1/access-requests", body)
                if reply.status == 201:
                    self.answers[body["request_id"]] = reply
                    self.answered_at[body["request_id"]] = time.monotonic()
                elif reply.status == 503:
                    self.refusals.append((time.monotonic(), reply))
                    queue.append(body)  # retry later, same body
                    await asyncio.sleep(0.05)
                else:
                    self.errors.append(reply)
            connection.close()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


@pytest.mark.timeout(300)
def test_chain_node_stopped_and_restarted_under_load(
    stack: Stack, gateways: list[GatewayProcess]
) -> None:
    agreement = stack.world.activate(stack.world.research_terms(quota=10**9))
    warm = signed_bodies(stack, agreement, 10)
    bodies = signed_bodies(stack, agreement, LOAD_REQUESTS, deny_every=10)
    gateway = GatewayProcess(stack, DUL_GATEWAY_OUTBOX_LIMIT=str(OUTBOX_LIMIT))
    gateways.append(gateway)
    gateway.start()

    async def scenario() -> dict[str, float]:
        figures: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            # the agreement and the requester are in the gateway's cache
            warmed = await post_all(gateway.url, gateway.token, warm, 4)
            assert {r.status for r in warmed.values()} == {201}
            await poll(lambda: drained(client), 20, "the warm-up requests are recorded")

            load = Load(gateway.url, gateway.token, bodies)
            running = asyncio.create_task(load.run(LOAD_CONCURRENCY))
            await poll(lambda: _true(len(load.answers) >= 150), 20, "150 answers before the stop")
            # The gateway can answer faster than the chain records, up to the outbox's bound (a
            # fast run had filled it before the stop: nothing was then answered during the
            # outage): the clients pause until the outbox has room for half the bound again,
            # and send on as the node stops, its transactions still in flight.
            load.sending.clear()

            async def room() -> bool:
                reply = await readyz(client)
                return reply is not None and reply.json()["outbox_depth"] <= OUTBOX_LIMIT // 2

            await poll(room, 20, "room in the outbox before the stop")
            load.sending.set()
            figures["answered_before_stop"] = len(load.answers)
            stopped = time.monotonic()
            await asyncio.to_thread(stack.node.stop)
            figures["stop_s"] = time.monotonic() - stopped

            async def not_ready() -> bool:
                reply = await readyz(client)
                return reply is not None and reply.status_code == 503

            figures["not_ready_after_s"] = await poll(not_ready, 15, "/readyz turns 503")
            reply = await readyz(client)
            assert reply is not None
            assert reply.status_code == 503
            assert reply.headers["retry-after"].isdigit()
            assert reply.json()["checks"]["chain"] is False

            async def full() -> bool:
                return any(t > stopped for t, _ in load.refusals)

            await poll(full, 20, "the outbox fills and the gateway refuses with 503")
            answered_during_outage = sum(1 for t in load.answered_at.values() if t > stopped)
            seen = collections.Counter(
                (t > stopped, r.body.get("code") if isinstance(r.body, dict) else r.status)
                for t, r in load.refusals
            )  # (after the stop?, code) of every 503: what to read when this fails
            assert answered_during_outage > 0, (figures, seen)  # cached agreements are decided
            figures["answered_during_outage"] = answered_during_outage
            for _, refusal in load.refusals:
                assert refusal.body["code"] == "outbox_full", refusal.body
                assert int(refusal.headers["retry-after"]) >= 1
            depths: list[int] = []

            async def at_bound() -> bool:
                # the bound is checked against a count re-read each second, so the first
                # refusals may come a little below it; accepting resumes up to it
                reply = await readyz(client)
                depths.append(-1 if reply is None else reply.json()["outbox_depth"])
                return depths[-1] >= OUTBOX_LIMIT - LOAD_CONCURRENCY

            await poll(at_bound, 10, "the outbox fills up to its bound")
            depth = depths[-1]
            assert depth <= OUTBOX_LIMIT, depths
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "dul_gateway_chain_reachable") == 0
            assert depth <= metric(metrics, "dul_gateway_outbox_depth") <= OUTBOX_LIMIT
            await asyncio.sleep(1.0)  # hold the outage with the client retrying
            reply = await readyz(client)
            assert reply is not None
            depth = reply.json()["outbox_depth"]
            figures["outbox_depth_at_restart"] = depth

            backlog = len(warm) + len(load.answers)  # accepted before the node is back
            restarted = time.monotonic()
            await asyncio.to_thread(stack.node.start)
            figures["node_start_s"] = time.monotonic() - restarted

            async def backlog_recorded() -> bool:
                return len(await asyncio.to_thread(on_chain, stack, agreement)) >= backlog

            await poll(backlog_recorded, 40, "the backlog is recorded", interval=0.2)
            figures["backlog_drain_s"] = time.monotonic() - restarted
            figures["backlog_events_per_s"] = depth / (
                figures["backlog_drain_s"] - figures["node_start_s"]
            )
            await asyncio.wait_for(running, 60)
            await poll(lambda: drained(client), 40, "the outbox drains once the node is back")
            figures["drain_s"] = time.monotonic() - restarted
            after = [t for t in load.answered_at.values() if t > restarted]
            figures["answered_after_restart"] = len(after)
            figures["refusals"] = len(load.refusals)
            assert load.errors == []
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "dul_gateway_chain_reachable") == 1
            assert metric(metrics, "dul_gateway_outbox_depth") == 0
            assert metric(metrics, "dul_gateway_transaction_resends_total") >= 1
            # Every request once: the node's stop leaves every block whole (an exit dump that
            # raced a block once left ~50 confirmations unseen and some operations FAILED).
            confirmed = metric(metrics, 'dul_gateway_confirmations_total{outcome="confirmed"}')
            assert confirmed == len(warm) + LOAD_REQUESTS
            assert metric(metrics, 'dul_gateway_confirmations_total{outcome="failed"}') == 0
            assert metric(metrics, "dul_gateway_submission_seconds_count") >= 1
            figures["resends"] = metric(metrics, "dul_gateway_transaction_resends_total")

        events = await asyncio.to_thread(on_chain, stack, agreement)
        counts = collections.Counter(request_id for request_id, _ in events)
        assert max(counts.values()) == 1
        assert set(counts) == {b["request_id"] for b in [*warm, *bodies]}
        for request_id, decision in events:
            if request_id in load.answers:
                assert load.answers[request_id].body["decision"] == decision
        return figures

    figures = asyncio.run(scenario())
    log.info("gateway_faults.node_outage", **{k: round(v, 2) for k, v in figures.items()})


async def _true(value: bool) -> bool:
    return value


# --------------------------------------------------------------------------- quota and restarts


def node_rpc(stack: Stack, method: str, *params: Any) -> Any:
    """A call to anvil itself (test set-up only: the product never uses cheat codes)."""
    url = stack.node.status().node_url
    assert url is not None
    return node_call(url, method, *params, timeout=10)


@pytest.mark.timeout(300)
def test_a_restart_with_grants_in_the_outbox_keeps_the_quota(
    stack: Stack, gateways: list[GatewayProcess]
) -> None:
    quota, first, second = 100, 80, 80
    agreement = stack.world.activate(stack.world.research_terms(quota=quota))
    gateway = GatewayProcess(stack)
    gateways.append(gateway)
    gateway.start()
    node_rpc(stack, "evm_setIntervalMining", 0)  # granted decisions stay unmined for now
    try:

        async def scenario() -> tuple[dict[str, Reply], dict[str, Reply]]:
            before = await post_all(
                gateway.url, gateway.token, signed_bodies(stack, agreement, first), 8
            )
            await asyncio.to_thread(gateway.kill)
            await asyncio.to_thread(gateway.start)
            after = await post_all(
                gateway.url, gateway.token, signed_bodies(stack, agreement, second), 8
            )
            return before, after

        before, after = asyncio.run(scenario())
    finally:
        node_rpc(stack, "evm_setIntervalMining", 1)

    async def settle() -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            await poll(lambda: drained(client), 40, "the outbox drains")

    asyncio.run(settle())
    answers = {**before, **after}
    assert {r.status for r in answers.values()} == {201}
    granted = [i for i, r in answers.items() if r.body["decision"] == "GRANTED"]
    events = dict(on_chain(stack, agreement))
    lost = [i for i in granted if events.get(i) != "GRANTED"]
    headers = {"Authorization": f"Bearer {gateway.token}"}
    now = collections.Counter(
        (body["status"], body["error"])
        for body in (
            httpx.get(f"{gateway.url}/v1/access-requests/{i}", headers=headers).json() for i in lost
        )
    )
    assert (len(granted), len(lost)) == (quota, 0), (
        f"{len(granted)} grants answered on a quota of {quota}; {len(lost)} of them are not "
        f"on chain (status, error now: {dict(now)})"
    )


# ------------------------------------------------------------- a chain that mines nothing


@pytest.mark.timeout(300)
def test_a_chain_that_mines_nothing_degrades_readiness_until_it_records_again(
    stack: Stack, gateways: list[GatewayProcess]
) -> None:
    """A node that still answers but produces no block (a QBFT network without its quorum)
    must not leave the gateway green while its answers go unrecorded: past
    DUL_GATEWAY_UNRECORDED_ALARM_S, /readyz is degraded naming them and the stalled head, the
    metric counts their age and `dul gateway ready` says so; once blocks come, all clear."""
    from typer.testing import CliRunner

    from dul.cli.main import app

    agreement = stack.world.activate(stack.world.research_terms(quota=10))
    gateway = GatewayProcess(stack, DUL_GATEWAY_UNRECORDED_ALARM_S="2")
    gateways.append(gateway)
    gateway.start()
    node_rpc(stack, "evm_setIntervalMining", 0)
    try:

        async def stalled() -> dict[str, Any]:
            replies = await post_all(
                gateway.url, gateway.token, signed_bodies(stack, agreement, 3), 3
            )
            assert {r.status for r in replies.values()} == {201}
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                await poll(
                    lambda: _degraded_by(client, "operations_not_on_chain"), 30,
                    "readiness names the unrecorded operations",
                )  # fmt: skip
                body: dict[str, Any] = (await client.get("/readyz")).json()
                body["metrics"] = (await client.get("/metrics")).text
                return body

        body = asyncio.run(stalled())
        assert (body["ready"], body["status"]) == (True, "degraded"), body
        reason = body["degraded"]["operations_not_on_chain"]
        # one transaction, or more when a loaded machine spread the three over batches
        unrecorded = r"3 answered operation\(s\) in [1-3] transaction\(s\) are not on chain"
        assert re.match(unrecorded, reason), reason
        assert "its head has stayed at block" in reason, reason
        assert metric(body["metrics"], "dul_gateway_oldest_unrecorded_seconds") >= 2
        shown = CliRunner().invoke(app, ["gateway", "ready", "--gateway", gateway.url])
        assert shown.exit_code == 0, shown.output
        assert "degraded" in shown.output
        assert "operations_not_on_chain: 3 answered operation(s)" in " ".join(shown.output.split())
    finally:
        node_rpc(stack, "evm_setIntervalMining", 1)

    async def recorded() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            await poll(lambda: drained(client), 60, "the outbox drains once blocks come")
            body: dict[str, Any] = (await client.get("/readyz")).json()
            body["metrics"] = (await client.get("/metrics")).text
            return body

    body = asyncio.run(recorded())
    assert (body["ready"], body["status"], body["degraded"]) == (True, "ready", {}), body
    assert metric(body["metrics"], "dul_gateway_oldest_unrecorded_seconds") == 0
    shown = CliRunner().invoke(app, ["gateway", "ready", "--gateway", gateway.url])
    assert (shown.exit_code, "degraded" in shown.output) == (0, False), shown.output


async def _degraded_by(client: httpx.AsyncClient, name: str) -> bool:
    reply = await readyz(client)
    return reply is not None and name in reply.json().get("degraded", {})

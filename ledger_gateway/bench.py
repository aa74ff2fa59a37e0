"""`dul bench gateway`: recorded access events per second end to end (HTTP in → decision →
on chain, confirmed) through the single and the batch API, decision latency at a fixed offered
load, and beside them the raw rate at which the node takes pre-signed transactions. For
`dul bench patients`: `cohort_decision_ms`, the decision on a 10,000-subject consent cohort.

Everything runs on a private scratch stack; the gateway runs as its own process (`dul gateway
serve`) so the load generator here does not share its interpreter.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sqlite3
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from eth_hash.auto import keccak
from eth_typing import HexStr

from dul import services
from dul.chain.rpc_auth import bearer_headers, rpc_token
from dul.chain.testing import free_port
from dul.consent_terms import ConsentTerms
from dul.contracts import bindings
from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
from dul.contracts.world import World, derived_signer
from dul.domain import Decision, Operation, Role, Scenario, Tier
from dul.keys import KeyStore
from dul.scratch import Scratch, scratch_stack
from ledger_gateway.client import sign_request
from ledger_gateway.models import AccessRequestIn
from ledger_gateway.relay import function
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.submitter import (
    TX_GAS_CAP,
    SubmitterSettings,
    batch_capacity,
    record_accesses_calldata,
)
from ledger_gateway.tokens import TokenRole, TokenStore

log = structlog.get_logger(__name__)

PASSPHRASE = "bench-only"  # noqa: S105 - a throw-away keystore in a temporary directory


LATENCY_RATES = (250.0, 1_000.0)
"""Offered loads measured beside the main one (`offered_rate`), so the knee is visible."""


@dataclass(frozen=True)
class GatewayBenchSizes:
    single_requests: int = 12_000
    """~6 s at ~2,000/s: the rates count events confirmed on chain, so a run ends on a block
    (0.5 s here) and one block is ≤ 8% of the window (of 3,000 requests' ~1.5 s it was a third:
    the same tree measured 1,600 or 2,100/s depending on which block its last records made)."""
    batch_requests: int = 40_000
    """~6-8 s at 5,000-7,000/s, so that the last block (0.5 s) is <= 8% of the window, as for
    the single API (at 20,000 the window was ~3-4 s and its last block up to 15% of it)."""
    batch_size: int = 500
    concurrency: int = 64
    offered_rate: float = 500.0
    latency_seconds: float = 10.0
    """Seconds of open-loop load at each offered rate."""
    raw_transactions: int = 2_000
    raw_batched_records: int = 40_000
    """Records sent in pre-signed `recordAccesses` transactions of the submitter's size, once
    before the single API and once right after the batch API: the ceiling is both runs'
    records over both runs' seconds. One 20,000-record run of ~2 s measured 7,975-12,949/s on
    one tree (its last block up to a quarter of the window; the machine's speed and the
    chain's size drifting between it, measured first, and the batch API, measured minutes
    later); two runs bracketing the batch API see the same chain and the same hour it does."""


def _requests(world: World, agreement: bytes, count: int, domain: Any) -> list[AccessRequestIn]:
    deadline = int(time.time()) + 7_200
    return [
        sign_request(
            world.requester,
            AccessRequest(
                request_id=os.urandom(32),
                agreement_id=agreement,
                dataset_id=world.dataset,
                field_mask=0b0110,
                tier=Tier.DEIDENTIFIED,
                operation=Operation.QUERY,
                request_hash=keccak(i.to_bytes(8, "big")),
                deadline=deadline,
            ),
            domain,
        )
        for i in range(count)
    ]


ACCESSES_USED = bindings.function("AccessLog", "accessesUsed")


async def _used(rpc: httpx.AsyncClient, access_log: str, agreement: bytes) -> int:
    data = "0x" + ACCESSES_USED.encode(agreement).hex()
    call = {"to": access_log, "data": data}
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [call, "latest"]}
    reply = (await rpc.post("", json=body)).json()
    return int(ACCESSES_USED.decode_output(bytes.fromhex(reply["result"][2:]))[0])


async def _until_used(
    rpc_url: str, access_log: str, agreement: bytes, target: int, timeout: float
) -> float:
    """Seconds (monotonic clock) at which the chain's used count reached `target`."""
    headers = bearer_headers(rpc_token())
    async with httpx.AsyncClient(base_url=rpc_url, timeout=10, headers=headers) as rpc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await _used(rpc, access_log, agreement) >= target:
                return time.monotonic()
            await asyncio.sleep(0.05)
    raise TimeoutError(f"only part of {target} accesses confirmed within {timeout:.0f} s")


class _Connection:
    """One keep-alive HTTP/1.1 connection. The load generator must cost far less than the
    gateway it measures: httpx spends 1-2 ms of client CPU per request here, this ~0.1 ms.

    A server may close a keep-alive connection that sat idle (uvicorn: after 5 s): a request
    that finds its reused connection closed is sent again once on a new one. Access requests
    are idempotent by request id, so a request the server did see is answered as stored."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
        self.stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.reconnects = 0
        """Times a reused connection was found closed and opened again."""

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        return await self.post_raw(path, json.dumps(body).encode())

    async def post_raw(self, path: str, payload: bytes) -> tuple[int, bytes]:
        """POST an already encoded JSON body."""
        request = (
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        while True:
            fresh = self.stream is None
            if self.stream is None:
                self.stream = await asyncio.open_connection(self.host, self.port, limit=2**24)
            try:
                return await self._exchange(request)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if fresh:  # a new connection that fails is the server's failure, not idleness
                    raise
                self.reconnects += 1

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.stream is not None
        reader, writer = self.stream
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            if not status_line:
                raise ConnectionResetError("the server closed the connection")
            raise RuntimeError(f"not an HTTP answer: {status_line[:100]!r}")
        length = 0
        close = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await reader.readexactly(length)
        if close:
            self.close()
        return int(parts[1]), body

    def close(self) -> None:
        if self.stream is not None:
            self.stream[1].close()
            self.stream = None


async def _drive(
    url: str, token: str, bodies: Sequence[bytes], path: str, concurrency: int
) -> list[float]:
    """POST every encoded body with `concurrency` workers; the per-request latencies in
    seconds. Bodies are encoded before the clock starts, as the raw node's transactions are
    signed before theirs: the load generator shares the two cores with what it measures (a
    500-request batch body was ~2 ms of its CPU to encode)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def worker() -> None:
        connection = _Connection(url, token)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                status, answer = await connection.post_raw(path, body)
                if status != 201:
                    raise RuntimeError(f"gateway answered {status}: {answer[:300]!r}")
                latencies.append(time.perf_counter() - started)
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _open_loop(
    url: str, token: str, bodies: Sequence[dict[str, Any]], rate: float
) -> list[float]:
    """Send at a fixed offered rate whatever the answers (no coordinated omission): each
    request is due at its slot, and its latency counts from the slot, not from the send.

    The load generator's collector is off meanwhile: a full collection of its heap (the scratch
    world, the signed bodies, a task per request) stalled every send for 90-280 ms, and the
    stall counted as the gateway's latency (timed with the collector's callbacks at 500 and
    1,000 req/s, loaded machine). What its requests leave behind is freed by reference count;
    the collector runs again at the end."""
    latencies: list[float] = []
    idle: list[_Connection] = []
    gc.collect()
    gc.disable()
    start = time.perf_counter() + 0.2

    async def one(index: int, body: dict[str, Any]) -> None:
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        connection = idle.pop() if idle else _Connection(url, token)
        status, answer = await connection.post("/v1/access-requests", body)
        idle.append(connection)
        if status != 201:
            raise RuntimeError(f"gateway answered {status}: {answer[:300]!r}")
        latencies.append(time.perf_counter() - due)

    try:
        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    finally:
        gc.enable()
        for connection in idle:
            connection.close()
    return latencies


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _raw_sender(scratch: Scratch, name: str) -> Any:
    """A fresh GATEWAY member of the world's hospital, signing pre-built transactions."""
    world = scratch.world
    sender = derived_signer(name)
    world.ledger.transact(
        world.operator,
        "Membership",
        "grantMemberRole",
        world.hospital,
        sender.address,
        Role.GATEWAY,
    )
    return sender


def _signed_records(world: World, agreement: bytes, domain: Any, count: int) -> list[bytes]:
    """`count` encoded GRANTED records of distinct requests under `agreement`."""
    deadline = int(time.time()) + 3_600
    records = []
    for _ in range(count):
        request = AccessRequest(
            os.urandom(32),
            agreement,
            world.dataset,
            0b0110,
            Tier.DEIDENTIFIED,
            Operation.QUERY,
            keccak(bytes(8)),
            deadline,
        )
        record = AccessRecord(
            request,
            world.requester.address,
            request.sign(world.requester, domain),
            Decision.GRANTED,
        )
        records.append(record.encode())
    return records


def _send_raw(rpc_url: str, raws: Sequence[str], per_call: int) -> None:
    """Send signed transactions in JSON-RPC batches of `per_call`; any refusal is an error."""
    with httpx.Client(base_url=rpc_url, timeout=120, headers=bearer_headers(rpc_token())) as rpc:
        for offset in range(0, len(raws), per_call):
            calls = [
                {"jsonrpc": "2.0", "id": n, "method": "eth_sendRawTransaction", "params": [raw]}
                for n, raw in enumerate(raws[offset : offset + per_call])
            ]
            replies = rpc.post("", json=calls).json()
            if not isinstance(replies, list):
                raise RuntimeError(f"node refused a batch of transactions: {replies}")
            for reply in replies:
                if "error" in reply:
                    raise RuntimeError(f"node refused a pre-signed transaction: {reply['error']}")


def _check_receipts(rpc_url: str, raws: Sequence[str]) -> None:
    """Every transaction mined and successful."""
    hashes = ["0x" + keccak(bytes.fromhex(raw[2:])).hex() for raw in raws]
    with httpx.Client(base_url=rpc_url, timeout=120, headers=bearer_headers(rpc_token())) as rpc:
        for offset in range(0, len(hashes), 100):
            calls = [
                {"jsonrpc": "2.0", "id": n, "method": "eth_getTransactionReceipt", "params": [h]}
                for n, h in enumerate(hashes[offset : offset + 100])
            ]
            for reply in rpc.post("", json=calls).json():
                receipt = reply.get("result")
                if not receipt or receipt.get("status") != "0x1":
                    raise RuntimeError(f"a pre-signed transaction did not succeed: {reply}")


def _raw_node_seconds(scratch: Scratch, count: int, per_tx: int = 1, run: int = 0) -> float:
    """Seconds the node takes to mine `count` records in pre-signed `recordAccesses`
    transactions of `per_tx` records each (sent in JSON-RPC batches, counted once the chain's
    quota use says mined; every receipt checked afterwards)."""
    world = scratch.world
    ledger = world.ledger
    sender = _raw_sender(scratch, f"bench-raw-gateway-{per_tx}-{run}")
    agreement = world.activate(world.research_terms(quota=10**9))
    access_log = ledger.deployment.address("AccessLog")
    domain = access_log_domain(ledger.chain_id, access_log)
    records = _signed_records(world, agreement, domain, count)
    nonce = ledger.w3.eth.get_transaction_count(sender.address)
    gas = SubmitterSettings()
    raws: list[str] = []
    for offset in range(0, count, per_tx):
        chunk = records[offset : offset + per_tx]
        tx = {
            "to": access_log,
            "data": record_accesses_calldata(chunk),
            "gas": min(TX_GAS_CAP, gas.gas_base + gas.gas_per_record * len(chunk)),
            "gasPrice": 0,
            "nonce": nonce + len(raws),
            "chainId": ledger.chain_id,
        }
        raws.append("0x" + sender.sign_transaction(tx).hex())
    # a 256-record transaction is ~0.3 MB of hex: two per body stay under anvil's 2 MiB
    per_call = 100 if per_tx == 1 else 2
    started = time.monotonic()
    _send_raw(scratch.rpc_url, raws, per_call)
    finished = asyncio.run(_until_used(scratch.rpc_url, access_log, agreement, count, 300))
    _check_receipts(scratch.rpc_url, raws)
    return finished - started


def _start_gateway(scratch: Scratch, port: int) -> str:
    """`dul gateway serve` as its own process on the scratch stack; its URL once ready."""
    keys = KeyStore(scratch.home, passphrase=PASSPHRASE, scrypt_n=2**14)
    keys.import_key("hospital-a.gateway", keccak(b"dul world gateway"))
    url = f"http://127.0.0.1:{port}"
    env = {
        "DUL_RPC_URL": scratch.rpc_url,
        "DUL_KEY_PASSPHRASE": PASSPHRASE,
        "DUL_GATEWAY_PORT": str(port),
        "DUL_LOG_LEVEL": "WARNING",
    }
    services.start(scratch.home, "gateway", ["gateway", "serve"], url, env=env)
    return url


def _latency(
    url: str, token: str, world: World, domain: Any, rate: float, seconds: float
) -> tuple[float, float]:
    """Decision p50 and p99 in ms at `rate` req/s offered for `seconds` (a fresh agreement)."""
    agreement = world.activate(world.research_terms(quota=10**9))
    count = max(1, int(rate * seconds))
    bodies = [b.model_dump() for b in _requests(world, agreement, count, domain)]
    latencies = asyncio.run(_open_loop(url, token, bodies, rate))
    return (
        round(statistics.median(latencies) * 1000, 2),
        round(_percentile(latencies, 0.99) * 1000, 2),
    )


def outbox_commit_ms(directory: Path, commits: int = 300, rows: int = 10) -> tuple[float, float]:
    """p50 and p99 in ms of a durable commit on the disk under `directory`: `rows` rows of a
    decision's size inserted and committed as the outbox commits them (SQLite, WAL,
    synchronous=FULL). A decision is acknowledged after such a commit, so its latency cannot
    sit below this disk's: this figure is printed beside `decision_p99_ms`."""
    path = directory / "bench-commit.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB)")
        times: list[float] = []
        for _ in range(commits):
            batch = [(os.urandom(32), os.urandom(700)) for _ in range(rows)]
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO t VALUES (?, ?)", batch)
            db.execute("COMMIT")
            times.append(time.perf_counter() - started)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return (
        round(statistics.median(times) * 1000, 2),
        round(_percentile(times, 0.99) * 1000, 2),
    )


def _phases(
    api: str, events: int, started: float, answered: float, done: float
) -> dict[str, float]:
    """The two parts of an `*_events_per_s` window (first request sent → every event confirmed
    on chain): `*_answered_per_s`, requests answered (decided and stored durably) per second
    until the last answer, which no block boundary rounds; `*_confirm_tail_s`, the last answer
    → the chain's count complete: batching, sending and the wait for the block that holds the
    last records (up to one block interval on its own)."""
    return {
        f"{api}_answered_per_s": round(events / max(answered - started, 1e-9), 1),
        f"{api}_confirm_tail_s": round(done - answered, 3),
    }


def submitter_batch() -> int:
    """Records per transaction of a gateway with default settings."""
    return batch_capacity(SubmitterSettings(max_batch=GatewaySettings().batch_max))


def run(sizes: GatewayBenchSizes | None = None) -> dict[str, float]:
    sizes = sizes or GatewayBenchSizes()
    with scratch_stack() as scratch:
        world = scratch.world
        ledger = world.ledger
        access_log = ledger.deployment.address("AccessLog")
        domain = access_log_domain(ledger.chain_id, access_log)
        per_tx = submitter_batch()
        results: dict[str, float] = {
            "raw_node_tx_per_s": round(
                sizes.raw_transactions / _raw_node_seconds(scratch, sizes.raw_transactions), 1
            ),
            "raw_node_batch_records": per_tx,
        }
        raw_batched = [_raw_node_seconds(scratch, sizes.raw_batched_records, per_tx)]
        port = free_port()
        url = _start_gateway(scratch, port)
        try:
            token = TokenStore(scratch.home.root / "gateway" / "tokens.json").create(
                "bench", "hospital-a", TokenRole.ACCESS_SERVICE
            )
            agreement = world.activate(world.research_terms(quota=10**9))
            bodies = [
                b.model_dump_json().encode()
                for b in _requests(world, agreement, sizes.single_requests, domain)
            ]
            service = services.running(scratch.home, "gateway")
            pid = service.pid if service else None
            cpu = _cpu_seconds(pid)
            started = time.monotonic()
            asyncio.run(_drive(url, token, bodies, "/v1/access-requests", sizes.concurrency))
            answered = time.monotonic()
            done = asyncio.run(
                _until_used(scratch.rpc_url, access_log, agreement, len(bodies), 600)
            )
            results["single_events_per_s"] = round(len(bodies) / (done - started), 1)
            results.update(_phases("single", len(bodies), started, answered, done))
            cpu = _cpu_per_event(pid, cpu, len(bodies))
            if cpu is not None:
                results["single_gateway_cpu_us_per_event"] = cpu

            agreement = world.activate(world.research_terms(quota=10**9))
            signed = [
                b.model_dump_json().encode()
                for b in _requests(world, agreement, sizes.batch_requests, domain)
            ]
            batches = [
                b'{"requests":[' + b",".join(signed[i : i + sizes.batch_size]) + b"]}"
                for i in range(0, len(signed), sizes.batch_size)
            ]
            cpu = _cpu_seconds(pid)
            started = time.monotonic()
            asyncio.run(_drive(url, token, batches, "/v1/access-requests/batch", 4))
            answered = time.monotonic()
            done = asyncio.run(
                _until_used(scratch.rpc_url, access_log, agreement, len(signed), 600)
            )
            results["batch_events_per_s"] = round(len(signed) / (done - started), 1)
            results.update(_phases("batch", len(signed), started, answered, done))
            cpu = _cpu_per_event(pid, cpu, len(signed))
            if cpu is not None:
                results["batch_gateway_cpu_us_per_event"] = cpu
            raw_batched.append(_raw_node_seconds(scratch, sizes.raw_batched_records, per_tx, run=1))
            for name, seconds in zip(("first", "second"), raw_batched, strict=True):
                results[f"raw_node_batched_{name}_events_per_s"] = round(
                    sizes.raw_batched_records / seconds, 1
                )
            ceiling = 2 * sizes.raw_batched_records / sum(raw_batched)
            results["raw_node_batched_events_per_s"] = round(ceiling, 1)
            results["batch_vs_raw_batched"] = round(results["batch_events_per_s"] / ceiling, 3)

            # The disk's own commit latency, same run, same directory as the gateway's outbox:
            # what every decision waits for once (the floor under decision_p99_ms).
            commit_p50, commit_p99 = outbox_commit_ms(scratch.home.root / "gateway")
            results["outbox_commit_p50_ms"] = commit_p50
            results["outbox_commit_p99_ms"] = commit_p99
            main = sizes.offered_rate
            for rate in sorted({main, *LATENCY_RATES}):
                p50, p99 = _latency(url, token, world, domain, rate, sizes.latency_seconds)
                if rate == main:
                    results["decision_p50_ms"], results["decision_p99_ms"] = p50, p99
                if rate in LATENCY_RATES:
                    results[f"decision_p50_ms_{rate:.0f}"] = p50
                    results[f"decision_p99_ms_{rate:.0f}"] = p99
            results["offered_load_rps"] = main
            return results
        finally:
            services.stop(scratch.home, "gateway")


# --------------------------------------------------------------------------- patients


@dataclass(frozen=True)
class CohortBenchSizes:
    cohort: int = 10_000
    """Subjects named by each access request."""
    consented: float = 0.8
    """Share of them holding a consent that covers the agreement."""
    decisions: int = 100
    """Measured decisions: 100 so that p95 is the 96th of them, not the slowest of 20."""
    consents_per_tx: int = 128
    """`recordConsents` batch while seeding (the contract's maximum; ~85k gas each)."""


def _seed_consents(scratch: Scratch, subjects: Sequence[bytes], per_tx: int) -> None:
    """Record a RESEARCH consent for every subject: pre-signed steward transactions sent in
    one JSON-RPC batch, then wait until the last is mined."""
    world = scratch.world
    ledger = world.ledger
    registry = ledger.deployment.address("ConsentRegistry")
    record = function("ConsentRegistry", "recordConsents")
    until = int(time.time()) + 30 * 86_400
    nonce = ledger.w3.eth.get_transaction_count(world.steward.address)
    raws: list[str] = []
    for offset in range(0, len(subjects), per_tx):
        chunk = subjects[offset : offset + per_tx]
        terms = [ConsentTerms(world.hospital, s, 1 << Scenario.RESEARCH, until, (42,)).as_abi()
                 for s in chunk]  # fmt: skip
        tx = {
            "to": registry,
            "data": record.encode(terms),
            "gas": min(TX_GAS_CAP, 200_000 + 100_000 * len(chunk)),
            "gasPrice": 0,
            "nonce": nonce + len(raws),
            "chainId": ledger.chain_id,
        }
        raws.append("0x" + world.steward.sign_transaction(tx).hex())
    with httpx.Client(
        base_url=scratch.rpc_url, timeout=120, headers=bearer_headers(rpc_token())
    ) as rpc:
        for offset in range(0, len(raws), 8):  # ~0.4 MB per HTTP body
            calls = [
                {"jsonrpc": "2.0", "id": n, "method": "eth_sendRawTransaction", "params": [raw]}
                for n, raw in enumerate(raws[offset : offset + 8])
            ]
            replies = rpc.post("", json=calls).json()
            if not isinstance(replies, list):
                raise RuntimeError(f"node refused the consent batches: {replies}")
            for reply in replies:
                if "error" in reply:
                    raise RuntimeError(f"node refused a consent batch: {reply['error']}")
    last = keccak(bytes.fromhex(raws[-1][2:]))
    receipt = ledger.w3.eth.wait_for_transaction_receipt(HexStr("0x" + last.hex()), timeout=300)
    if receipt["status"] != 1:
        raise RuntimeError("the last consent batch reverted")


async def _timed_posts(
    url: str, token: str, path: str, payloads: Sequence[bytes]
) -> tuple[list[float], list[dict[str, Any]]]:
    """POST each pre-encoded JSON body in turn on one keep-alive connection: the latency of
    each (send to last byte of the answer) and the answers."""
    connection = _Connection(url, token)
    latencies: list[float] = []
    answers: list[dict[str, Any]] = []
    try:
        for payload in payloads:
            started = time.perf_counter()
            status, body = await connection.post_raw(path, payload)
            latencies.append(time.perf_counter() - started)
            if status != 201:
                raise RuntimeError(f"gateway answered {status}: {body[:300]!r}")
            answers.append(json.loads(body))
    finally:
        connection.close()
    return latencies, answers


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_event(pid: int | None, before: float | None, events: int) -> float | None:
    """The gateway process's CPU (every thread: API, submitter, background polling) per event
    since `before`, in µs: unlike a rate, it barely moves with other work on the cores."""
    after = _cpu_seconds(pid)
    if before is None or after is None or not events:
        return None
    return round((after - before) / events * 1e6, 1)


def cohort_decision_ms(
    sizes: CohortBenchSizes | None = None, *, scratch: Scratch | None = None
) -> dict[str, float]:
    """Decision latency of an access naming a 10,000-subject cohort under a COHORT_CONSENT
    agreement, ~80% of the subjects consented: HTTP in (one keep-alive connection, body encoded
    beforehand) -> signature, consent filtering against the gateway's consent view (caught up to
    the chain head first), RFC 9162 tree of the admitted subjects, decision, durable write of
    the record and its leaves (SQLite, synchronous=FULL) -> the answer with the admitted list.
    The gateway is `dul gateway serve` in its own process on a scratch stack (or on `scratch`).

    Returns `cohort_10k_decision_ms` (p50) beside p95, the sizes and the admitted count."""
    sizes = sizes or CohortBenchSizes()
    if scratch is None:
        with scratch_stack() as own:
            return cohort_decision_ms(sizes, scratch=own)
    world = scratch.world
    ledger = world.ledger
    domain = access_log_domain(ledger.chain_id, ledger.deployment.address("AccessLog"))
    subjects = [os.urandom(32) for _ in range(sizes.cohort)]
    consented = subjects[: round(sizes.cohort * sizes.consented)]
    started = time.monotonic()
    _seed_consents(scratch, consented, sizes.consents_per_tx)
    log.info("bench.consents_seeded", consents=len(consented), s=time.monotonic() - started)
    agreement = world.activate(world.cohort_terms(quota=10**9))
    port = free_port()
    url = _start_gateway(scratch, port)
    token = TokenStore(scratch.home.root / "gateway" / "tokens.json").create(
        f"bench-patients-{port}", "hospital-a", TokenRole.ACCESS_SERVICE
    )
    try:
        deadline = int(time.time()) + 3_600
        warm_up = 3

        def body(index: int) -> bytes:
            request = AccessRequest(
                request_id=os.urandom(32),
                agreement_id=agreement,
                dataset_id=world.dataset,
                field_mask=0b0110,
                tier=Tier.PSEUDONYMIZED,
                operation=Operation.QUERY,
                request_hash=keccak(index.to_bytes(8, "big")),
                deadline=deadline,
            )
            signed = sign_request(world.requester, request, domain, cohort=subjects)
            return signed.model_dump_json().encode()

        payloads = [body(i) for i in range(warm_up + sizes.decisions)]
        asyncio.run(_timed_posts(url, token, "/v1/access-requests", payloads[:warm_up]))
        service = services.running(scratch.home, "gateway")
        cpu_before = _cpu_seconds(service.pid if service else None)
        latencies, answers = asyncio.run(
            _timed_posts(url, token, "/v1/access-requests", payloads[warm_up:])
        )
        cpu_after = _cpu_seconds(service.pid if service else None)
        for answer in answers:  # every measured decision admitted exactly the consented
            cohort = answer.get("cohort") or {}
            if answer["decision"] != "GRANTED" or cohort.get("size") != len(consented):
                raise RuntimeError(
                    f"unexpected answer: {answer['decision']} {answer['reasons']} "
                    f"admitting {cohort.get('size')} of {len(consented)} consented"
                )
        results = {
            "cohort_10k_decision_ms": round(statistics.median(latencies) * 1000, 2),
            "cohort_decision_p95_ms": round(_percentile(latencies, 0.95) * 1000, 2),
            "cohort_size": sizes.cohort,
            "cohort_admitted": len(consented),
            "cohort_decisions": len(latencies),
        }
        if cpu_before is not None and cpu_after is not None:
            # the gateway's own CPU per decision (background polling included): what the
            # figure would be without other processes competing for the cores
            spent = (cpu_after - cpu_before) / len(latencies)
            results["cohort_decision_gateway_cpu_ms"] = round(spent * 1000, 2)
        return results
    finally:
        services.stop(scratch.home, "gateway")

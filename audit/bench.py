"""Indexer catch-up rate: raw `eth_getLogs` fetch + decode against catch-up into SQLite and
PostgreSQL, on a private chain filled with access events (for `dul bench audit`).

    catchup_rate(events=50_000, postgres_url="postgresql+psycopg://…")  -> dict of figures

Each catch-up runs in a fresh child process so its peak RSS is its own (the generator's
memory does not count). Never run by the tests: timings belong to `dul bench`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("audit.bench")

BATCH = 200


@contextlib.contextmanager
def filled_chain(home_root: Path, events: int) -> Iterator[dict[str, Any]]:
    """A private chain under `home_root`, deployed, with `events` access events recorded in
    `recordAccesses` batches of 200 pre-signed raw transactions: what the catch-ups need (rpc
    url, deployment path, head block). The chain stops when the block ends, or when filling it
    fails or is interrupted (Ctrl-C, SIGTERM) — it used to outlive an interrupted fill."""
    from eth_hash.auto import keccak
    from eth_typing import HexStr

    from dul.chain.node import ChainNode
    from dul.chain.testing import TEST_OPERATOR_KEY, throwaway_chain_settings
    from dul.contracts.bindings import function
    from dul.contracts.deploy import deploy
    from dul.contracts.ledger import Ledger, connect
    from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
    from dul.contracts.world import World
    from dul.domain import Decision, DenyReason, Operation, Tier
    from dul.home import Home
    from dul.signing import LocalSigner

    operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
    home = Home(home_root).ensure()
    # No state dumps while measuring: anvil writes its whole state (85 MB at 50,000 events, the
    # blocks included) every `state_interval` seconds; at the default 1 s the idle node used
    # 0.45 of a core instead of 0.15, taken from the catch-ups measured here on 2 cores (a
    # throw-away chain is never resumed).
    settings = throwaway_chain_settings(
        operator=operator.address, block_time=0.5, state_interval=86_400
    )
    node = ChainNode(home, settings)
    status = node.start()
    previous = os.environ.get("DUL_RPC_TOKEN")
    try:
        assert status.rpc_url is not None
        # This process and the measuring children present the chain's own RPC token.
        os.environ["DUL_RPC_TOKEN"] = node.issue_token("bench", ("*:*",), 86_400)
        w3 = connect(status.rpc_url)
        deployment, _ = deploy(w3, operator, home.deployment, admin_delay=5)
        world = World(Ledger(w3, deployment), operator).build()
        agreement = world.activate(world.research_terms(quota=events + 1))
        domain = access_log_domain(deployment.chain_id, deployment.address("AccessLog"))
        record_accesses = function("AccessLog", "recordAccesses")
        gateway = world.gateway
        nonce = int(w3.eth.get_transaction_count(gateway.address, "pending"))
        deadline = int(time.time()) + 86_400
        hashes: list[HexStr] = []
        started = time.perf_counter()
        for batch_start in range(0, events, BATCH):
            records = []
            for n in range(batch_start, min(events, batch_start + BATCH)):
                denied = n % 10 == 9
                request = AccessRequest(
                    request_id=keccak(f"bench {n}".encode()),
                    agreement_id=agreement,
                    dataset_id=world.dataset,
                    field_mask=0b0110,
                    tier=Tier.PSEUDONYMIZED if denied else Tier.DEIDENTIFIED,
                    operation=Operation.QUERY,
                    request_hash=keccak(f"query {n % 97}".encode()),
                    deadline=deadline,
                )
                signature = world.requester.sign_digest(request.digest(domain))
                records.append(
                    AccessRecord(
                        request,
                        world.requester.address,
                        signature,
                        Decision.DENIED if denied else Decision.GRANTED,
                        DenyReason.TIER_ABOVE_CEILING if denied else DenyReason.NONE,
                        cohort_root=b"\0" * 32 if denied else keccak(f"cohort {n}".encode()),
                        cohort_size=0 if denied else 100 + n % 50,
                    ).as_abi()
                )
            data = record_accesses.encode(records)
            raw = gateway.sign_transaction(
                {
                    "to": deployment.address("AccessLog"),
                    "data": "0x" + data.hex(),
                    "gas": 60_000 * len(records) + 500_000,
                    "gasPrice": 0,
                    "nonce": nonce,
                    "chainId": deployment.chain_id,
                    "value": 0,
                }
            )
            nonce += 1
            hashes.append(HexStr(w3.eth.send_raw_transaction(raw).to_0x_hex()))
        for tx_hash in hashes[-1:]:
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=600, poll_latency=0.2)
            if receipt["status"] != 1:
                raise RuntimeError(f"bench batch {tx_hash} reverted")
        failed = [h for h in hashes if w3.eth.get_transaction_receipt(h)["status"] != 1]
        if failed:
            raise RuntimeError(f"{len(failed)} bench batches reverted")
        log.info("bench.filled", events=events, seconds=round(time.perf_counter() - started, 1))
        yield {
            "rpc_url": status.rpc_url,
            "deployment": str(home.deployment),
            "head": w3.eth.block_number,
        }
    finally:
        node.stop()
        if previous is None:  # as `dul.scratch.scratch_stack` leaves it
            os.environ.pop("DUL_RPC_TOKEN", None)
        else:
            os.environ["DUL_RPC_TOKEN"] = previous


def _child(kind: str, rpc_url: str, deployment_path: str, to_block: int, url: str) -> None:
    """One measurement in this (fresh) process; prints a JSON line with rate and peak RSS."""
    from audit.events import AUDITED_CONTRACTS, EventDecoder
    from audit.indexer import Indexer
    from audit.settings import AuditSettings
    from dul.chain.log_pages import PageSizer
    from dul.chain.rpc import RangeRefusedError, RpcClient
    from dul.contracts.deployment import Deployment

    deployment = Deployment.load(Path(deployment_path))
    settings = AuditSettings()
    gc.freeze()  # as `dul audit index` does once started
    start = int(deployment.raw["block"])
    events = 0
    workers = 0
    phases: dict[str, float] = {}
    cpu_started = _cpu_s()
    own = resource.getrusage(resource.RUSAGE_SELF)
    own_cpu_started = own.ru_utime + own.ru_stime
    started = time.perf_counter()
    if kind == "raw":
        contracts = {n: a for n, a in deployment.addresses.items() if n in AUDITED_CONTRACTS}
        decoder = EventDecoder(contracts)
        rpc = RpcClient(rpc_url)
        sizer = PageSizer(settings.page_size, settings.max_page_size, settings.max_logs_per_page)
        first = start
        while first <= to_block:
            last = min(to_block, first + sizer.size - 1)
            try:
                logs = rpc.request(
                    "eth_getLogs",
                    {"fromBlock": hex(first), "toBlock": hex(last), "address": decoder.addresses},
                )
            except RangeRefusedError:  # a reply too large for the node or the guard: as the
                if not sizer.refuse(last - first + 1):  # indexer does, a smaller page
                    raise
                continue
            decoded = [decoder.decode(entry) for entry in logs]
            events += len(decoded)
            sizer.after(last - first + 1, len(logs))
            first = last + 1
        rpc.close()
    else:
        settings = AuditSettings(
            database_url=url, rpc_url=rpc_url, deployment_path=Path(deployment_path)
        )
        indexer = Indexer.open(settings)
        opened = time.perf_counter()
        summary = indexer.run(to_block=to_block)
        ran = time.perf_counter()
        events = summary.events
        workers = indexer.fetch_workers
        indexer.close()  # joins the fetch workers: their CPU and memory count below
        closed = time.perf_counter()
        # where the wall time went: migrating the empty store, indexing (the readers'
        # indexes built at its end included), closing (the workers joined, SQLite's last
        # WAL checkpoint into the database file)
        phases = {"open": opened - started, "run": ran - opened, "close": closed - ran}
    seconds = time.perf_counter() - started
    cpu_s = _cpu_s() - cpu_started
    own = resource.getrusage(resource.RUSAGE_SELF)
    own_cpu_s = own.ru_utime + own.ru_stime - own_cpu_started
    own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers else 0.0
    print(json.dumps({
        "events": events, "seconds": seconds, "kind": kind, "cpu_s": cpu_s,
        "own_cpu_s": own_cpu_s,
        # every worker counted at the largest one's peak (pages they share with this
        # process counted again): an upper bound of the catch-up's memory
        "rss_mb": own_mb + workers * worker_mb, "own_rss_mb": own_mb, "workers": workers,
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
    }))  # fmt: skip


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the fetch workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(kind: str, chain: dict[str, Any], url: str = "") -> dict[str, float]:
    command = [
        sys.executable, "-m", "audit.bench", "--child", kind,
        chain["rpc_url"], chain["deployment"], str(chain["head"]), url,
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        peak_mb = 0.0
        deadline = time.monotonic() + 3600
        try:
            while process.poll() is None and time.monotonic() < deadline:
                peak_mb = max(peak_mb, _tree_pss_mb(process.pid))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(PSS_EVERY_S)
        finally:  # past the deadline, or this run interrupted: the measurement ends with it
            if process.poll() is None:
                process.kill()
                process.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    log.info("bench.measured", kind=kind, result=stdout.strip()[-200:])
    if process.returncode != 0:
        # the child's traceback ends in the error itself: that line, not its stack
        last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
        raise RuntimeError(f"bench {kind} failed: {last.strip()[:500] or process.returncode}")
    result: dict[str, float] = json.loads(stdout.strip().splitlines()[-1])
    result["pss_mb"] = peak_mb
    return result


PSS_EVERY_S = 0.25
"""How often the catch-up's memory is sampled. Reading a process's PSS walks its page tables
under its memory lock: ~6.7 ms of CPU for the 300 MB writer, so every 50 ms it took ~7% of
the 2-core machine from the catch-up it measured; the pipeline's memory is flat once its
pages flow, so a sample every 250 ms (~1.3%) sees the same peak (284-288 against 290-296 MB,
3 runs each)."""


def _tree_pss_mb(pid: int) -> float:
    """Proportional set size of `pid` and its children (the fetch workers), in MB: memory a
    forked worker shares with the indexer is counted once. 0 where /proc cannot tell."""
    total_kb = 0
    for member in [pid, *child_pids(pid)]:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
    return total_kb / 1024


def child_pids(pid: int) -> list[int]:
    """The children of every thread of `pid` (none where /proc cannot tell)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _peak_mb(measured: dict[str, float]) -> float:
    """The catch-up's peak memory: its processes' summed PSS, sampled every 250 ms (their
    summed peak RSS where /proc has no PSS: pages shared with a forked worker counted twice)."""
    return round(measured["pss_mb"] or measured["rss_mb"], 1)


def _cpu_us(measured: dict[str, float], key: str = "cpu_s") -> float:
    """Client CPU per event: the measuring process and its fetch workers (`cpu_s`; not the
    node's), or the indexer's own process, which writes (`own_cpu_s`)."""
    return round(measured[key] * 1e6 / max(measured["events"], 1), 1)


CATCHUP_ROUNDS = 3
"""Rounds of catch-ups (raw, SQLite, PostgreSQL) measured on the one filled chain. The machine's
speed moves by a quarter from one minute to the next (the same tree's 50,000-event SQLite
catch-up measured 23,194-32,307 events/s within ten minutes, the node's own CPU per event
11.8-18.2 us with it), so one run told the minute more than the tree: each figure is now the
median round's, every round's rate listed beside it."""


def catchup_rate(
    events: int = 50_000,
    postgres_url: str | None = None,
    work_dir: Path | None = None,
    rounds: int = CATCHUP_ROUNDS,
) -> dict[str, Any]:
    """Fills a private chain with `events` access events, then measures `rounds` rounds of raw
    fetch + decode, catch-up into SQLite and (with `postgres_url`, an empty database or one
    this bench may fill) into PostgreSQL. Keys follow `dul bench --json`'s `audit.*`. The
    chain, its home and the stores are removed afterwards (`work_dir`, when given, is kept)."""
    root = work_dir or Path(tempfile.mkdtemp(prefix="dul-bench-audit-"))
    try:
        with filled_chain(root / "home", events) as chain:
            measured: list[dict[str, dict[str, Any]]] = []
            for _ in range(max(1, rounds)):
                store = root / f"audit-{uuid.uuid4().hex[:6]}.db"
                each = {"raw": _measure("raw", chain),
                        "sqlite": _measure("index", chain, f"sqlite:///{store}")}  # fmt: skip
                for path in store.parent.glob(f"{store.name}*"):  # -wal, -shm: ~130 MB a round
                    path.unlink()
                if postgres_url:
                    with scratch_schema(postgres_url) as url:
                        each["postgres"] = _measure("index", chain, url)
                measured.append(each)
    finally:
        if work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return catchup_figures(measured)


def catchup_figures(measured: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The `audit.*` catch-up figures of rounds of measurements (`_measure`'s results by kind:
    raw, sqlite, maybe postgres): each rate the median round's, each ratio the median of the
    rounds' own (a catch-up over the raw run of its minute), the CPU and phases of the run
    whose rate is the median, the peak memory the largest of any run; every round's rate in
    `*_rounds`, in the order measured."""

    def rate(run: dict[str, Any]) -> float:
        return float(run["events"]) / float(run["seconds"])

    def median_run(kind: str) -> dict[str, Any]:
        runs = sorted((each[kind] for each in measured), key=rate)
        return runs[(len(runs) - 1) // 2]

    def ratio(kind: str) -> float:
        ratios = sorted(rate(each[kind]) / rate(each["raw"]) for each in measured)
        return round(ratios[(len(ratios) - 1) // 2], 2)

    raw, sqlite = median_run("raw"), median_run("sqlite")
    out: dict[str, Any] = {
        "indexed_events": int(sqlite["events"]),
        "raw_fetch_decode_events_per_s": round(rate(raw)),
        "raw_cpu_us_per_event": _cpu_us(raw),
        "sqlite_events_per_s": round(rate(sqlite)),
        "sqlite_vs_raw": ratio("sqlite"),
        "sqlite_cpu_us_per_event": _cpu_us(sqlite),
        "sqlite_writer_cpu_us_per_event": _cpu_us(sqlite, "own_cpu_s"),
        "catchup_peak_rss_mb": max(_peak_mb(each["sqlite"]) for each in measured),
        "fetch_workers": int(sqlite.get("workers", 0)),
        "sqlite_phases_s": sqlite.get("phases_s"),
        "catchup_rounds": len(measured),
        "raw_fetch_decode_events_per_s_rounds": [round(rate(each["raw"])) for each in measured],
        "sqlite_events_per_s_rounds": [round(rate(each["sqlite"])) for each in measured],
    }
    if all("postgres" in each for each in measured):
        pg = median_run("postgres")
        out["postgres_events_per_s"] = round(rate(pg))
        out["postgres_vs_raw"] = ratio("postgres")
        out["postgres_cpu_us_per_event"] = _cpu_us(pg)
        out["postgres_writer_cpu_us_per_event"] = _cpu_us(pg, "own_cpu_s")
        out["postgres_phases_s"] = pg.get("phases_s")
        out["postgres_events_per_s_rounds"] = [round(rate(each["postgres"])) for each in measured]
        out["catchup_peak_rss_mb"] = max(
            out["catchup_peak_rss_mb"], *(_peak_mb(each["postgres"]) for each in measured)
        )
    return out


@contextlib.contextmanager
def scratch_schema(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty schema in the PostgreSQL database at `postgres_url` (its
    search_path), dropped afterwards. Every catch-up measured there starts from an empty store
    and leaves the database as it was: a second run into the tables of the first would find
    their checkpoint on a chain that is gone and roll every event back as a reorg inside the
    measured window (and leave a reorg incident behind)."""
    from sqlalchemy import create_engine, text

    from dul.pg_schema import schema_url

    name = f"dul_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        try:
            yield schema_url(postgres_url, name)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        admin.dispose()


def check_postgres(postgres_url: str) -> None:
    """Raises ValueError, naming the driver's reason, unless a scratch schema can be made and
    dropped in that database: checked before anything is measured, not minutes later."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    try:
        backend = make_url(postgres_url).get_backend_name()
    except ArgumentError as exc:
        raise ValueError(str(exc)) from None
    if backend != "postgresql":
        raise ValueError(f"a {backend} URL, not PostgreSQL's (postgresql+psycopg://…)")
    try:
        with scratch_schema(postgres_url):
            pass
    except (DBAPIError, NoSuchModuleError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ValueError(reason[0][:300] if reason else type(exc).__name__) from None


# --- provenance latency and verify time (issue 4 targets: p95 <= 20 ms, verify <= 60 s at 1M) ----

SYNTH_AGREEMENTS = 100
SYNTH_PER_BLOCK = 200


def _sign_chunk(key: bytes, digests: list[bytes]) -> list[bytes]:
    """Signs in a worker process (synthesis of a big store is dominated by this)."""
    from dul.signing import LocalSigner

    signer = LocalSigner(key)
    return [signer.sign_digest(d) for d in digests]


def _bulk_insert(engine: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    from audit.store import COHORT_COLUMNS, COLUMNS

    columns = (
        COLUMNS.get(table)
        or COHORT_COLUMNS.get(table)
        or {
            "block": ("number", "hash", "parent_hash", "timestamp", "events"),
            "checkpoint": ("id", "chain_id", "contracts", "block_number", "block_hash"),
        }[table]
    )
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        names = ", ".join(columns)
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor = raw.cursor()
            marks = ", ".join("?" * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)  # noqa: S608 - fixed names
            cursor.close()


def synthesize_store(
    store_url: str, accesses: int = 1_000_000, workers: int = 2, *, signatures: bool = True
) -> dict[str, Any]:
    """Fills an empty store with `accesses` access events by bulk insert, BYPASSING THE CHAIN.

    The rows are what the indexer would have written for a realistic data space (2 orgs, 1
    dataset, 100 active agreements with real EIP-712 party signatures, one access per log in
    blocks of 200, 90% granted with real requester signatures, a release for every 10th
    grant), so provenance queries and verify's off-chain checks see a store of the real shape
    and size. What is missing: the `event` table (raw logs; provenance never reads it) and of
    course the chain itself, so verify's chain comparison cannot run on it.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from eth_hash.auto import keccak

    from audit.migrations import migrate
    from audit.store import create_store_engine
    from audit.verify import access_request_digest
    from dul.contracts.typed_data import (
        ACCESS_LOG_DOMAIN_NAME,
        DOMAIN_VERSION,
        AgreementTerms,
        agreement_domain,
    )
    from dul.contracts.world import derived_signer
    from dul.domain import (
        AgreementStatus,
        ConsentPolicy,
        Decision,
        DenyReason,
        Operation,
        OrgKind,
        Role,
        Scenario,
        Tier,
        operations_mask,
        slug_id,
    )
    from dul.signing import domain_separator

    started = time.perf_counter()
    engine = create_store_engine(store_url)
    migrate(engine)
    chain_id = 31337
    contracts = {
        name: "0x" + keccak(name.encode())[-20:].hex()
        for name in ("Membership", "DatasetRegistry", "AgreementRegistry", "AccessLog")
    }

    def hexed(value: bytes) -> str:
        return "0x" + value.hex()

    def tx(n: int) -> str:
        return hexed(keccak(f"tx {n}".encode()))

    hospital, institute, dataset = (
        slug_id("hospital-a"),
        slug_id("institute"),
        slug_id("hospital-a/omop"),
    )
    steward, partner = derived_signer("steward"), derived_signer("partner-steward")
    requester_key = keccak(b"dul world requester")  # derived_signer's key, for the workers
    gateway, requester = derived_signer("gateway"), derived_signer("requester")
    _bulk_insert(engine, "organization", [
        (hexed(hospital), int(OrgKind.HOSPITAL), "Hospital A", 1, 1, 0, 0, tx(1)),
        (hexed(institute), int(OrgKind.RESEARCH), "Institute", 1, 1, 0, 1, tx(1)),
    ])  # fmt: skip
    _bulk_insert(engine, "member_role", [
        (2, 0, i, hexed(org), signer.address.lower(), int(role), True, tx(2))
        for i, (org, signer, role) in enumerate([
            (hospital, steward, Role.STEWARD), (hospital, gateway, Role.GATEWAY),
            (institute, partner, Role.STEWARD), (institute, requester, Role.REQUESTER),
        ])
    ])  # fmt: skip
    fields = [f"table.field_{i}" for i in range(8)]
    _bulk_insert(engine, "dataset", [
        (hexed(dataset), hexed(hospital), hexed(keccak(b"OMOP")), int(Tier.PSEUDONYMIZED), 8,
         json.dumps(fields), 3, 0, 0, tx(3)),
    ])  # fmt: skip
    domain = agreement_domain(chain_id, _checksum(contracts["AgreementRegistry"]))
    agreement_rows, scope_rows, sig_rows, status_rows, agreement_ids = [], [], [], [], []
    for n in range(SYNTH_AGREEMENTS):
        terms = AgreementTerms(
            holder=hospital, requester=institute, datasets=(dataset,), field_masks=(0b11110,),
            scenario=Scenario.RESEARCH, max_tier=Tier.DEIDENTIFIED,
            operations=operations_mask(Operation.QUERY, Operation.EXPORT_RESULT),
            valid_from=0, valid_until=2**40, quota=accesses, consent_policy=ConsentPolicy.NONE,
            terms_hash=keccak(b"terms"), nonce=n + 1, deadline=2**40, duo_codes=(42,),
        )  # fmt: skip
        digest = terms.digest(domain)
        agreement = hexed(terms.agreement_id)
        agreement_ids.append(agreement)
        block = 4 + n
        agreement_rows.append((
            agreement, 1, None, hexed(hospital), hexed(institute), hexed(digest),
            int(Scenario.RESEARCH), json.dumps([42]), hexed(bytes(32)), hexed(bytes(32)),
            int(Tier.DEIDENTIFIED), terms.operations, 0, 2**40, accesses,
            int(ConsentPolicy.NONE), hexed(terms.terms_hash), hex(n + 1), 2**40, 0,
            int(AgreementStatus.ACTIVE), block, 0, 0, tx(block),
        ))  # fmt: skip
        scope_rows.append((agreement, hexed(dataset), hex(0b11110), block))
        for i, signer in enumerate((steward, partner)):
            sig_rows.append((block, 0, 1 + i, agreement, signer.address.lower(), i,
                             hexed(signer.sign_digest(digest)), tx(block)))  # fmt: skip
        status_rows.append((block, 0, 3, agreement, "AgreementActivated",
                            int(AgreementStatus.ACTIVE), None, None, None, tx(block)))  # fmt: skip
    _bulk_insert(engine, "agreement", agreement_rows)
    _bulk_insert(engine, "agreement_dataset", scope_rows)
    _bulk_insert(engine, "agreement_signature", sig_rows)
    _bulk_insert(engine, "agreement_status_change", status_rows)

    separator = domain_separator(ACCESS_LOG_DOMAIN_NAME, DOMAIN_VERSION, chain_id,
                                 _checksum(contracts["AccessLog"]))  # fmt: skip
    first_block = 10 + SYNTH_AGREEMENTS
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if signatures else None
    dummy = bytes(32) + bytes(31) + b"\x01" + b"\x1b"
    chunk = 50_000
    try:
        for start in range(0, accesses, chunk):
            rows, digests, releases, blocks = [], [], [], []
            for n in range(start, min(accesses, start + chunk)):
                block, log_index = first_block + n // SYNTH_PER_BLOCK, n % SYNTH_PER_BLOCK
                denied = n % 10 == 9
                access_id = hexed(keccak(n.to_bytes(8, "big")))
                agreement = agreement_ids[n % SYNTH_AGREEMENTS]
                tier = int(Tier.PSEUDONYMIZED if denied else Tier.DEIDENTIFIED)
                operation = int(Operation.EXPORT_RESULT if n % 20 == 0 else Operation.QUERY)
                request_hash = hexed(keccak(f"query {n % 97}".encode()))
                columns = (access_id, agreement, hexed(dataset), "0x6", tier, operation,
                           request_hash, hexed(bytes(32)), 2**40)  # fmt: skip
                if pool is not None:
                    digests.append(access_request_digest(separator, columns))
                rows.append([
                    block, 0, log_index, access_id, tx(block), agreement, hexed(dataset),
                    requester.address.lower(), gateway.address.lower(),
                    int(Decision.DENIED if denied else Decision.GRANTED),
                    int(DenyReason.TIER_ABOVE_CEILING if denied else DenyReason.NONE), tier,
                    operation, "0x6", request_hash,
                    hexed(bytes(32)) if denied else hexed(keccak(f"cohort {n}".encode())),
                    0 if denied else 100 + n % 50, hexed(bytes(32)), 2**40,
                ])  # fmt: skip
                if not denied and n % 10 == 0:
                    releases.append((block, 0, SYNTH_PER_BLOCK + log_index, access_id, agreement,
                                     hexed(keccak(f"result {n}".encode())), 0, 1024,
                                     gateway.address.lower(), tx(block)))  # fmt: skip
                if log_index == 0:
                    blocks.append((block, hexed(keccak(f"block {block}".encode())), None,
                                   1_700_000_000 + block, 0))  # fmt: skip
            if pool is None:
                signed = [dummy] * len(rows)
            else:
                parts = [digests[i : i + 5_000] for i in range(0, len(digests), 5_000)]
                signed = [s for part in pool.map(_sign_chunk, [requester_key] * len(parts),
                                                  parts) for s in part]  # fmt: skip
            access_rows = [
                (*row, hexed(sig[:32]), hexed(sig[32:64]), sig[64])
                for row, sig in zip(rows, signed, strict=True)
            ]
            _bulk_insert(engine, "access_event", access_rows)
            _bulk_insert(engine, "result_release", releases)
            _bulk_insert(engine, "block", blocks)
    finally:
        if pool is not None:
            pool.shutdown()
    last = first_block + (accesses - 1) // SYNTH_PER_BLOCK
    with engine.begin() as conn:
        conn.execute(sa_text("UPDATE block SET events = :e"), {"e": SYNTH_PER_BLOCK})
    _bulk_insert(engine, "checkpoint", [(1, chain_id, json.dumps(contracts), last,
                                         hexed(keccak(f"block {last}".encode())))])  # fmt: skip
    engine.dispose()
    seconds = round(time.perf_counter() - started, 1)
    log.info("bench.synthesized", accesses=accesses, seconds=seconds)
    return {"accesses": accesses, "agreements": SYNTH_AGREEMENTS, "seconds": seconds,
            "agreement_ids": agreement_ids}  # fmt: skip


def sa_text(sql: str) -> Any:
    from sqlalchemy import text

    return text(sql)


def _checksum(address: str) -> Any:
    from dul.signing import checksum_address

    return checksum_address(bytes.fromhex(address[2:]))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def provenance_latency(store_url: str, samples: int = 1_000, seed: int = 7) -> dict[str, Any]:
    """p50 / p95 of provenance queries on an indexed (or synthesized) store, in process.

    The mix is what a regulator asks: 40% an access upward (under what agreement, whose
    signatures), 30% a released result upward, 20% an agreement downward (first 100
    accesses and their releases), 10% an agreement both ways. Ids are drawn at random from
    the store (by rowid/offset, outside the timed section). Time = the `provenance()` call:
    queries plus building the graph model, no HTTP.
    """
    import random

    from sqlalchemy import text

    from audit.app import read_only_engine
    from audit.provenance import Direction, Kind, provenance

    rng = random.Random(seed)  # noqa: S311 - sampling ids, not cryptography
    engine = read_only_engine(store_url)
    with engine.connect() as conn:
        total = int(conn.execute(text("SELECT count(*) FROM access_event")).scalar_one())
        releases = int(conn.execute(text("SELECT count(*) FROM result_release")).scalar_one())
        agreements = [r[0] for r in conn.execute(text("SELECT agreement_id FROM agreement"))]

        def pick(table: str, column: str, count: int) -> str:
            offset = rng.randrange(count)
            return str(conn.execute(
                text(f"SELECT {column} FROM {table} ORDER BY block_number, tx_index, log_index "  # noqa: S608 - fixed names
                     "LIMIT 1 OFFSET :o"), {"o": offset}).scalar_one())  # fmt: skip

        plan: list[tuple[str, Kind, str, Direction]] = []
        for _ in range(samples):
            roll = rng.random()
            if roll < 0.4 or not releases:
                plan.append(("access_up", Kind.ACCESS, pick("access_event", "access_id", total),
                             Direction.UP))  # fmt: skip
            elif roll < 0.7:
                artifact = pick("result_release", "result_hash", releases)
                plan.append(("artifact_up", Kind.ARTIFACT, artifact, Direction.UP))
            elif roll < 0.9:
                plan.append(("agreement_down", Kind.AGREEMENT, rng.choice(agreements),
                             Direction.DOWN))  # fmt: skip
            else:
                plan.append(("agreement_both", Kind.AGREEMENT, rng.choice(agreements),
                             Direction.BOTH))  # fmt: skip
    for _label, kind, item, direction in plan[:20]:  # warm the page cache and the pool
        provenance(engine, kind, item, direction=direction)
    timings: dict[str, list[float]] = {}
    for label, kind, item, direction in plan:
        began = time.perf_counter()
        provenance(engine, kind, item, direction=direction)
        timings.setdefault(label, []).append((time.perf_counter() - began) * 1000)
    engine.dispose()
    every = [t for ts in timings.values() for t in ts]
    return {
        "indexed_events": total,
        "provenance_p50_ms": round(_percentile(every, 0.5), 2),
        "provenance_p95_ms": round(_percentile(every, 0.95), 2),
        "by_query": {
            label: {
                "n": len(ts),
                "p50_ms": round(_percentile(ts, 0.5), 2),
                "p95_ms": round(_percentile(ts, 0.95), 2),
            }
            for label, ts in sorted(timings.items())
        },
    }


def verify_time(synthesized_store_url: str, *, workers: int | None = None) -> dict[str, Any]:
    """`verify` time on a synthesized store (e.g. 1M rows from `synthesize_store`): signatures
    and invariants of every row, the chain comparison SKIPPED with the state and transaction
    checks (the synthesized rows, and their transaction hashes, were never on a chain):
    `verify_offchain_s` for `verify_offchain_events`."""
    from audit.app import read_only_engine
    from audit.verify import verify_store

    engine = read_only_engine(synthesized_store_url)
    began = time.perf_counter()
    report = verify_store(engine, None, chain=False, workers=workers)
    out = {
        "verify_offchain_events": report.checked.get("accesses", 0),
        "verify_offchain_s": round(time.perf_counter() - began, 2),
        "verify_offchain_ok": report.ok,
        "verify_offchain_findings": report.findings_total,
        "verify_offchain_phases": report.seconds,
        "verify_offchain_note": "chain comparison skipped: synthesized rows were never on a chain",
    }
    engine.dispose()
    return out


# --- the patient transparency report (issue 5 target: <= 100 ms at 1M indexed accesses) --------


def add_cohorts(
    store_url: str,
    *,
    measured: int = 10,
    cohorts_per_subject: int = 200,
    cohort_accesses: int = 5_000,
    cohort_size: tuple[int, int] = (80, 120),
    population: int = 50_000,
    seed: int = 11,
) -> dict[str, Any]:
    """Gives `cohort_accesses` granted accesses of a synthesized store (`synthesize_store`)
    real cohorts, BYPASSING THE CHAIN and the hospital store: members drawn from `population`
    subjects (each with a RESEARCH consent), every `measured` subject in `cohorts_per_subject`
    of them, each access's recorded root and size replaced by its tree's, the members written
    with their proofs as the indexer writes them (`audit.cohorts.cohort_rows`). The measured
    subjects also get a withdrawn consent and two authorization codes (one redeemed), so a
    report has every part. Returns the measured subject references."""
    import random

    from eth_hash.auto import keccak

    from audit.cohorts import CohortAccess, cohort_rows
    from audit.store import COUNT_CONSENTED, create_store_engine
    from dul.cohort import CohortTree
    from dul.domain import AuthorizationStatus, ConsentStatus, Decision, Scenario, slug_id

    rng = random.Random(seed)  # noqa: S311 - synthetic data, not cryptography
    started = time.perf_counter()
    engine = create_store_engine(store_url)
    with engine.connect() as conn:
        candidates = [
            (int(b), int(t), int(i), str(a))
            for b, t, i, a in conn.execute(
                sa_text(
                    "SELECT block_number, tx_index, log_index, access_id FROM access_event "
                    "WHERE decision = :g AND log_index % 7 = 3"
                ),
                {"g": int(Decision.GRANTED)},
            )
        ]
        holder = conn.execute(sa_text("SELECT org_id FROM organization LIMIT 1")).scalar_one()
    chosen = sorted(rng.sample(candidates, min(cohort_accesses, len(candidates))))
    people = [keccak(f"subject {n}".encode()) for n in range(population)]
    watched = [keccak(f"measured subject {n}".encode()) for n in range(measured)]
    membership: list[set[bytes]] = [
        set(rng.sample(people, rng.randint(*cohort_size))) for _ in chosen
    ]
    for subject in watched:
        for at in rng.sample(range(len(chosen)), min(cohorts_per_subject, len(chosen))):
            membership[at].add(subject)
    roots: list[tuple[Any, ...]] = []
    cohorts: list[tuple[Any, ...]] = []
    members: list[tuple[Any, ...]] = []
    total_members = 0
    for (b, t, i, access_id), subjects in zip(chosen, membership, strict=True):
        tree = CohortTree.build(subjects)
        root = "0x" + tree.root.hex()
        roots.append((root, tree.size, b, t, i))
        rows = cohort_rows(CohortAccess(b, t, i, access_id, root, tree.size), tree.subjects,
                           "bench")  # fmt: skip
        cohorts.extend(rows.cohorts.values())
        members.extend(rows.members)
        if len(members) >= 200_000:
            total_members += len(members)
            _bulk_insert(engine, "cohort_member", members)
            members = []
    total_members += len(members)
    _bulk_insert(engine, "cohort_member", members)
    _bulk_insert(engine, "cohort", cohorts)
    with engine.begin() as conn:
        conn.execute(
            sa_text(
                "UPDATE access_event SET cohort_root = :r, cohort_size = :n "
                "WHERE block_number = :b AND tx_index = :t AND log_index = :i"
            ),
            [{"r": r, "n": n, "b": b, "t": t, "i": i} for r, n, b, t, i in roots],
        )
    hexed = "0x{}".format
    research = 1 << Scenario.RESEARCH
    # no disease, studies or requesters named; recorded by a steward (not by_subject)
    UNLIMITED = ("0x" + "00" * 32, "", "", False)  # noqa: N806
    consents = [
        (hexed(keccak(b"consent " + subject).hex()), holder, hexed(subject.hex()), research,
         "[42, 46]", 1_700_000_000, 1_900_000_000, hexed("00" * 20), hexed("11" * 20),
         int(ConsentStatus.GRANTED), 5, 0, n, hexed(keccak(b"consent tx").hex()), *UNLIMITED)
        for n, subject in enumerate(people + watched)
    ]  # fmt: skip
    withdrawals = []
    codes = []
    for n, subject in enumerate(watched):
        old = hexed(keccak(b"old consent " + subject).hex())
        consents.append((old, holder, hexed(subject.hex()), research | 1 << Scenario.TEACHING,
                         "[42]", 1_600_000_000, 1_900_000_000, hexed("00" * 20),
                         hexed("11" * 20), int(ConsentStatus.WITHDRAWN), 4, 0, n,
                         hexed(keccak(b"old tx").hex()), *UNLIMITED))  # fmt: skip
        withdrawals.append((4, 1, n, old, holder, hexed(subject.hex()), hexed("11" * 20), True,
                            hexed(keccak(b"withdrawal tx").hex())))  # fmt: skip
        for k, status in enumerate((AuthorizationStatus.ISSUED, AuthorizationStatus.REVOKED)):
            codes.append((hexed(keccak(bytes([k]) + subject).hex()), holder, hexed(subject.hex()),
                          hexed(slug_id("insurer").hex()), hexed(slug_id("hospital-a/omop").hex()),
                          "0x6", 3, int(Scenario.INSURANCE_CLAIM), 1_900_000_000,
                          hexed("11" * 20), False, int(status), 6, k, n,
                          hexed(keccak(b"code tx").hex()), False))  # fmt: skip
    _bulk_insert(engine, "consent", consents)
    _bulk_insert(engine, "consent_withdrawal", withdrawals)
    _bulk_insert(engine, "patient_authorization", codes)
    with engine.begin() as conn:  # what the indexer counts when it writes a cohort
        conn.execute(COUNT_CONSENTED, [{"b": b, "t": t, "i": i} for _, _, b, t, i in roots])
    engine.dispose()
    seconds = round(time.perf_counter() - started, 1)
    log.info("bench.cohorts_added", cohorts=len(chosen), members=total_members, seconds=seconds)
    return {
        "measured_subjects": ["0x" + s.hex() for s in watched],
        "cohort_accesses": len(chosen),
        "cohort_members": total_members,
        "population": population,
        "seconds": seconds,
    }


def transparency_report_ms(
    store_url: str,
    *,
    accesses: int = 1_000_000,
    cohorts_per_subject: int = 200,
    measured: int = 10,
    samples: int = 300,
    seed: int = 7,
) -> dict[str, Any]:
    """p50 / p95 of the patient transparency report of a subject admitted to
    `cohorts_per_subject` cohorts, over the store at `store_url` of `accesses` indexed access
    events: one filled by `synthesize_store` (an empty one is filled, without signatures: the
    report never reads them), then `add_cohorts` (added where missing). Time =
    `subject_report()` plus rendering its JSON, as the API answers it (wall clock; the
    process's CPU time beside it, which other load on the machine does not inflate). Every
    timed report is checked (outside the timing) to list `cohorts_per_subject` accesses, and a
    sample of their proofs to verify against the access's root.
    """
    import random

    from eth_hash.auto import keccak

    from audit.app import read_only_engine
    from audit.migrations import migrate
    from audit.store import create_store_engine
    from audit.transparency import subject_report
    from dul.cohort import verify_inclusion

    rng = random.Random(seed)  # noqa: S311 - sampling, not cryptography
    probe = create_store_engine(store_url)
    migrate(probe)
    with probe.connect() as conn:
        filled = int(conn.execute(sa_text("SELECT count(*) FROM access_event")).scalar_one())
        with_cohorts = int(conn.execute(sa_text("SELECT count(*) FROM cohort")).scalar_one())
    probe.dispose()
    synthesized: dict[str, Any] = {}
    if not filled:
        synthesized["accesses"] = synthesize_store(store_url, accesses, signatures=False)["seconds"]
    if not with_cohorts:
        added = add_cohorts(store_url, measured=measured, cohorts_per_subject=cohorts_per_subject)
        synthesized["cohorts"] = added["seconds"]
    else:  # filled by `add_cohorts` before: its subjects are derived, not stored
        added = {
            "measured_subjects": [
                "0x" + keccak(f"measured subject {n}".encode()).hex() for n in range(measured)
            ]
        }
    subjects: list[str] = added["measured_subjects"]
    engine = read_only_engine(store_url)
    with engine.connect() as conn:
        indexed = int(conn.execute(sa_text("SELECT count(*) FROM access_event")).scalar_one())
        members = int(conn.execute(sa_text("SELECT count(*) FROM cohort_member")).scalar_one())
    plan = [rng.choice(subjects) for _ in range(samples)]
    for subject in plan[:20]:  # warm the page cache and the pool
        subject_report(engine, subject).model_dump_json()
    timings: list[float] = []
    cpu: list[float] = []
    checked = 0
    sizes: list[int] = []
    for subject in plan:
        began, began_cpu = time.perf_counter(), time.process_time()
        report = subject_report(engine, subject)
        report.model_dump_json()
        timings.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
        sizes.append(len(report.accesses))
        if rng.random() < 0.05:
            for access in report.accesses[:20]:
                proof = [bytes.fromhex(x[2:]) for x in access.inclusion.proof]
                if not verify_inclusion(bytes.fromhex(access.inclusion.root[2:]),
                                        access.inclusion.size, access.inclusion.index,
                                        bytes.fromhex(subject[2:]), proof):  # fmt: skip
                    raise RuntimeError(f"bench: a proof of {subject} does not verify")
                checked += 1
    if min(sizes) < cohorts_per_subject:
        raise RuntimeError(f"bench: a report listed {min(sizes)} accesses, not "
                           f"{cohorts_per_subject}")  # fmt: skip
    out: dict[str, Any] = {
        "transparency_report_ms": round(_percentile(timings, 0.95), 2),
        "transparency_report_p50_ms": round(_percentile(timings, 0.5), 2),
        "transparency_report_p95_ms": round(_percentile(timings, 0.95), 2),
        "transparency_report_target_ms": 100,
        "transparency_report_cpu_p50_ms": round(_percentile(cpu, 0.5), 2),
        "accesses_per_report": round(sum(sizes) / len(sizes), 1),
        "indexed_events": indexed,
        "cohort_members": members,
        "proofs_checked": checked,
        "samples": len(timings),
        "synthesis_s": synthesized,
    }
    engine.dispose()
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, rpc_url, deployment_path, to_block = sys.argv[2:6]
        _child(
            kind, rpc_url, deployment_path, int(to_block), sys.argv[6] if len(sys.argv) > 6 else ""
        )
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
        print(json.dumps(catchup_rate(count, os.environ.get("DUL_BENCH_POSTGRES_URL"))))

"""Indexer catch-up rate: raw `eth_getLogs` fetch + decode against catch-up into SQLite and
PostgreSQL, on a private chain filled with access events (for `dul bench audit`).

    catchup_rate(events=50_000, postgres_url="postgresql+psycopg://…")  -> dict of figures

Each catch-up runs in a fresh child process so its peak RSS is its own (the generator's
memory does not count). Never run by the tests: timings belong to `dul bench`.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("audit.bench")

BATCH = 200


def fill_chain(home_root: Path, events: int) -> dict[str, Any]:
    """Starts a private chain under `home_root`, deploys, and records `events` access events
    in `recordAccesses` batches of 200 pre-signed raw transactions. Returns what the
    catch-ups need (rpc url, deployment path, head block); the chain keeps running."""
    from eth_abi.abi import encode
    from eth_hash.auto import keccak
    from eth_typing import HexStr

    from dul.chain.node import ChainNode
    from dul.chain.testing import TEST_OPERATOR_KEY, throwaway_chain_settings
    from dul.contracts.deploy import deploy
    from dul.contracts.ledger import Ledger, connect
    from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
    from dul.contracts.world import World
    from dul.domain import Decision, DenyReason, Operation, Tier
    from dul.home import Home
    from dul.signing import LocalSigner

    operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
    home = Home(home_root).ensure()
    node = ChainNode(home, throwaway_chain_settings(operator=operator.address, block_time=0.5))
    status = node.start()
    assert status.rpc_url is not None
    w3 = connect(status.rpc_url)
    deployment, _ = deploy(w3, operator, home.deployment, admin_delay=5)
    world = World(Ledger(w3, deployment), operator).build()
    agreement = world.activate(world.research_terms(quota=events + 1))
    domain = access_log_domain(deployment.chain_id, deployment.address("AccessLog"))
    record_type = "(bytes32,bytes32,bytes32,address,uint8,uint8,uint8,uint8,uint256,bytes32,bytes32,uint32,bytes32,uint64,bytes32,bytes32,uint8)[]"  # noqa: E501 - one ABI type
    selector = keccak(f"recordAccesses({record_type[:-2]}[])".encode())[:4]
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
        data = selector + encode([record_type], [records])
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
    return {
        "rpc_url": status.rpc_url,
        "deployment": str(home.deployment),
        "head": w3.eth.block_number,
        "stop": lambda: node.stop(),
    }


def _child(kind: str, rpc_url: str, deployment_path: str, to_block: int, url: str) -> None:
    """One measurement in this (fresh) process; prints a JSON line with rate and peak RSS."""
    from audit.events import AUDITED_CONTRACTS, EventDecoder
    from audit.indexer import Indexer, JsonRpc, PageSizer
    from audit.settings import AuditSettings
    from dul.contracts.ledger import Deployment

    deployment = Deployment.load(Path(deployment_path))
    settings = AuditSettings()
    start = int(deployment.raw["block"])
    events = 0
    started = time.perf_counter()
    if kind == "raw":
        contracts = {n: a for n, a in deployment.addresses.items() if n in AUDITED_CONTRACTS}
        decoder = EventDecoder(contracts)
        rpc = JsonRpc(rpc_url)
        sizer = PageSizer(settings.page_size, settings.max_page_size, settings.max_logs_per_page)
        first = start
        while first <= to_block:
            last = min(to_block, first + sizer.size - 1)
            logs = rpc.call(
                "eth_getLogs",
                {"fromBlock": hex(first), "toBlock": hex(last), "address": decoder.addresses},
            )
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
        summary = indexer.run(to_block=to_block)
        events = summary.events
        indexer.close()
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"events": events, "seconds": seconds, "rss_mb": rss_mb, "kind": kind}))


def _measure(kind: str, chain: dict[str, Any], url: str = "") -> dict[str, float]:
    command = [
        sys.executable, "-m", "audit.bench", "--child", kind,
        chain["rpc_url"], chain["deployment"], str(chain["head"]), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
    log.info("bench.measured", kind=kind, result=done.stdout.strip()[-200:])
    if done.returncode != 0:
        raise RuntimeError(f"bench {kind} failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def catchup_rate(
    events: int = 50_000, postgres_url: str | None = None, work_dir: Path | None = None
) -> dict[str, Any]:
    """Fills a private chain with `events` access events, then measures raw fetch + decode,
    catch-up into SQLite and (with `postgres_url`, an empty database or one this bench may
    fill) into PostgreSQL. Keys follow `dul bench --json`'s `audit.*`."""
    root = work_dir or Path(tempfile.mkdtemp(prefix="dul-bench-audit-"))
    chain = fill_chain(root / "home", events)
    try:
        raw = _measure("raw", chain)
        sqlite = _measure("index", chain, f"sqlite:///{root / f'audit-{uuid.uuid4().hex[:6]}.db'}")
        out: dict[str, Any] = {
            "indexed_events": int(sqlite["events"]),
            "raw_fetch_decode_events_per_s": round(raw["events"] / raw["seconds"]),
            "sqlite_events_per_s": round(sqlite["events"] / sqlite["seconds"]),
            "catchup_peak_rss_mb": round(sqlite["rss_mb"], 1),
        }
        if postgres_url:
            pg = _measure("index", chain, postgres_url)
            out["postgres_events_per_s"] = round(pg["events"] / pg["seconds"])
            out["catchup_peak_rss_mb"] = round(max(sqlite["rss_mb"], pg["rss_mb"]), 1)
        return out
    finally:
        chain["stop"]()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, rpc_url, deployment_path, to_block = sys.argv[2:6]
        _child(
            kind, rpc_url, deployment_path, int(to_block), sys.argv[6] if len(sys.argv) > 6 else ""
        )
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
        print(json.dumps(catchup_rate(count, os.environ.get("DUL_BENCH_POSTGRES_URL"))))

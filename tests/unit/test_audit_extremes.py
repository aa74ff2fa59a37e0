"""No value the chain can hold breaks the audit trail: every event the indexer decodes, with
extreme values in every field (0 and the maximum of each uint width, all-zero and all-ones
words and addresses, empty and longest arrays, empty, NUL-holding and non-UTF-8 text, block
times of 0 and 2**64 - 1), goes through decode -> store -> provenance, exports and reports ->
verify on SQLite and PostgreSQL. The stored rows read back equal to what the chain says
(verify re-reads the same logs through the JSON-RPC client's transport seam and finds no row,
block or status difference), and nothing raises.

Each example writes its page above the origin and the store is rolled back to the origin after
it, as the indexer does on a reorg (ids repeat across examples; the chain never repeats one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from eth_abi.abi import encode
from eth_utils.abi import event_abi_to_log_topic
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from audit.events import AUDITED_CONTRACTS, EventDecoder, EventSpec
from audit.exports import block_times, fhir_json, graph_blocks, prov_json
from audit.migrations import migrate
from audit.provenance import Kind, NotFoundError, provenance
from audit.reports import agreement_report
from audit.store import AuditStore, BlockRef, create_store_engine
from audit.testing import drop_stores, make_store_url
from audit.transparency import subject_report
from audit.verify import verify_store
from dul.chain.rpc import RpcClient
from dul.contracts.bindings import canonical_type

ADDRESSES = {name: "0x" + f"{n + 1:02x}" * 20 for n, name in enumerate(AUDITED_CONTRACTS)}
DECODER = EventDecoder(ADDRESSES)
SPECS: list[EventSpec] = sorted(
    (spec for specs in DECODER.specs.values() for spec in specs.values()),
    # One code is never both revoked and redeemed on chain; revoked first, the status both
    # the store and verify derive is the redemption's.
    key=lambda s: (s.contract, s.name != "AuthorizationRevoked", s.name),
)
ORIGIN = 100
LONGEST = 256
"""The contracts' longest lists (dataset fields, artifact parents and releases)."""
CHAIN_CHECKS = {"row_differs", "row_missing", "row_not_on_chain", "status_differs",
                "block_hash_mismatch", "checkpoint_mismatch"}  # fmt: skip


def _word(n: int, high: bool) -> bytes:
    """The n-th distinct word counting up from zero or down from all ones."""
    return ((1 << 256) - 1 - n if high else n).to_bytes(32, "big")


def _value(param: dict[str, Any], high: bool, length: int, n: int = 0) -> Any:
    """An extreme value of one ABI parameter (the n-th element when inside an array); every
    array of the example has `length` elements, distinct where ids are (the chain's rule)."""
    type_: str = param["type"]
    if type_.endswith("[]"):
        inner = {**param, "type": type_[:-2]}
        return st.tuples(*(_value(inner, high, length, i) for i in range(length))).map(list)
    if type_ == "tuple":
        return st.tuples(*(_value(c, high, length, n) for c in param["components"]))
    if type_.startswith("uint"):
        bits = int(type_[4:] or 256)
        return st.sampled_from([0, 1, (1 << bits) - 1])
    if type_ == "address":
        return st.sampled_from(["0x" + "00" * 20, "0x" + "ff" * 20])
    if type_ == "bool":
        return st.booleans()
    if type_ == "bytes32":
        return st.just(_word(n, high))
    if type_.startswith("bytes") and type_ != "bytes":
        size = int(type_[5:])
        return st.sampled_from([bytes(size), b"\xff" * size])
    if type_ in ("bytes", "string"):  # strings are encoded as their raw bytes
        return st.sampled_from(
            [b"", b"\x00", b"\xff\xfe not utf-8", "é 🩺 ".encode() * 40, b"x" * 1024]
        )
    raise AssertionError(f"no strategy for {type_}")


def _encoding_type(param: dict[str, Any]) -> str:
    """The ABI type the test encodes with: `string` as `bytes` (same encoding, any bytes)."""
    if param["type"].startswith("tuple"):
        inner = ",".join(_encoding_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"]).replace("string", "bytes")


@st.composite
def extreme_logs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """One log of every event type, one block each above ORIGIN; and block number -> hash."""
    length = LONGEST if draw(st.booleans()) else 0
    high = draw(st.booleans())
    logs: list[dict[str, Any]] = []
    hashes: dict[int, str] = {ORIGIN: "0x" + "0a" * 32}
    for n, spec in enumerate(SPECS):
        block = ORIGIN + 1 + n
        hashes[block] = "0x" + (block.to_bytes(4, "big") * 8).hex()
        topics = [spec.topic0]
        data_types: list[str] = []
        data_values: list[Any] = []
        abi = next(e for e in DECODER_ABIS[spec.contract] if e.get("name") == spec.name)
        for param in abi["inputs"]:
            value = draw(_value(param, high, length))
            if param.get("indexed"):
                topics.append("0x" + encode([_encoding_type(param)], [value]).hex())
            else:
                data_types.append(_encoding_type(param))
                data_values.append(value)
        timestamp = draw(st.sampled_from([0, 1, (1 << 64) - 1]))
        logs.append({
            "address": ADDRESSES[spec.contract],
            "topics": topics,
            "data": "0x" + encode(data_types, data_values).hex(),
            "blockNumber": hex(block),
            "blockHash": hashes[block],
            "blockTimestamp": hex(timestamp),
            "transactionHash": "0x" + (n + 1).to_bytes(32, "big").hex(),
            "transactionIndex": hex(draw(st.sampled_from([0, 0xFFFF]))),
            "logIndex": hex(draw(st.sampled_from([0, 0xFFFF]))),
            "removed": False,
        })  # fmt: skip
    return logs, hashes


def _abis() -> dict[str, list[dict[str, Any]]]:
    from dul.contracts.artifacts import load

    return {name: [e for e in load(name).abi if e["type"] == "event"] for name in ADDRESSES}


DECODER_ABIS = _abis()


def test_every_event_type_is_generated_with_its_canonical_signature() -> None:
    for spec in SPECS:
        abi = next(e for e in DECODER_ABIS[spec.contract] if e["name"] == spec.name)
        assert (
            spec.signature == f"{spec.name}({','.join(canonical_type(p) for p in abi['inputs'])})"
        )
        assert spec.topic0 == "0x" + event_abi_to_log_topic(abi).hex()  # type: ignore[arg-type]
    assert {s.name for s in SPECS} >= {"AccessRecorded", "AgreementProposed", "ConsentRecorded",
                                       "ArtifactRegistered", "AuthorizationIssued",
                                       "DatasetRegistered", "OrganizationRegistered"}  # fmt: skip


class Node(httpx.BaseTransport):
    """What the node says about the current example: its logs and block hashes (the JSON-RPC
    client's transport seam, so verify re-reads them exactly as from a node)."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []
        self.hashes: dict[int, str] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if isinstance(body, list):  # a batch: each request answered alike
            return httpx.Response(200, json=[self.answer(item) for item in body])
        return httpx.Response(200, json=self.answer(body))

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        method, params = body["method"], body["params"]
        if method == "eth_getLogs":
            low, high = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
            result: Any = [e for e in self.logs if low <= int(e["blockNumber"], 16) <= high]
        elif method == "eth_getBlockByNumber":
            number = int(params[0], 16)
            known = self.hashes.get(number)
            result = None if known is None else {
                "number": hex(number), "hash": known, "parentHash": "0x" + "00" * 32,
                "timestamp": "0x0",
            }  # fmt: skip
        else:  # contract state and transactions: this node has none to give
            error = {"code": -32601, "message": f"method {method} not found"}
            return {"jsonrpc": "2.0", "id": body["id"], "error": error}
        return {"jsonrpc": "2.0", "id": body["id"], "result": result}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AuditStore, sa.Engine]]:
    cleanup: list[tuple[str, str]] = []
    url = make_store_url(str(request.param), tmp_path_factory.mktemp("extremes"), cleanup)
    engine = create_store_engine(url)
    try:
        migrate(engine)
        audit = AuditStore(engine)
        audit.initialize(1, ADDRESSES, BlockRef(ORIGIN, "0x" + "0a" * 32, "0x" + "09" * 32, 0))
        yield audit, engine
    finally:
        engine.dispose()
        drop_stores(cleanup)


def _ids(logs: list[dict[str, Any]]) -> Iterator[tuple[Kind, str]]:
    """Every id a regulator could ask about in this page."""
    for entry in logs:
        event = DECODER.decode(entry)
        a = event.args
        for kind, key in ((Kind.ACCESS, "accessId"), (Kind.ARTIFACT, "artifactId"),
                          (Kind.ORGANIZATION, "org"), (Kind.DATASET, "dataset"),
                          (Kind.SUBJECT, "subject")):  # fmt: skip
            if isinstance(a.get(key), str):
                yield kind, a[key]
        if event.name == "AgreementProposed":
            yield Kind.AGREEMENT, a["id"]
        if event.name == "ResultReleased":
            yield Kind.ARTIFACT, a["resultHash"]


@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])  # fmt: skip
@given(page=extreme_logs())
def test_extreme_values_index_query_and_verify(
    store: tuple[AuditStore, sa.Engine], page: tuple[list[dict[str, Any]], dict[int, str]]
) -> None:
    audit, engine = store
    logs, hashes = page
    events = [DECODER.decode(entry) for entry in logs]
    last = max(hashes)
    audit.write_page(ORIGIN + 1, BlockRef(last, hashes[last], hashes[last - 1],
                     events[-1].block_timestamp), events,
                     previous_checkpoint=ORIGIN)  # fmt: skip
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT deadline, block_number FROM access_event ORDER BY deadline"
            )).all()  # fmt: skip
            times: dict[int, int | None] = {
                int(n): t for n, t in conn.execute(sa.text("SELECT number, timestamp FROM block"))
            }
        access = next(e for e in events if e.name == "AccessRecorded")
        assert [int(r[0]) for r in rows] == [access.args["record"]["deadline"]]
        assert times[access.block_number] == access.block_timestamp

        for kind, key in _ids(logs):
            try:
                graph = provenance(engine, kind, key)
            except NotFoundError:
                continue
            json.loads(graph.model_dump_json())
            json.loads(prov_json(graph))
            json.loads(fhir_json(graph, block_times(engine, graph_blocks(graph))))
            if kind == Kind.AGREEMENT:
                agreement_report(engine, key)
            if kind == Kind.SUBJECT:
                subject_report(engine, key)

        node = Node()
        node.logs, node.hashes = logs, hashes
        rpc = RpcClient("http://node.invalid", transport=node)
        try:
            report = verify_store(engine, rpc, start_block=ORIGIN + 1, workers=1)
        finally:
            rpc.close()
        chain_findings = [f for f in report.findings if f.check in CHAIN_CHECKS]
        assert chain_findings == []
        assert report.checked["rows.access_event"] == 1
    finally:
        removed = audit.rollback_to(
            BlockRef(ORIGIN, hashes[ORIGIN], "0x" + "09" * 32, 0),
            reorg={"checkpoint_number": last, "checkpoint_hash": hashes[last], "node_hash": None},
        )
        assert removed == len(events)


def test_the_store_keeps_every_uint64_exactly(tmp_path: Path) -> None:
    """Ordering and comparison over a full-width column stay numeric on SQLite: INTEGER below
    2**63, fixed-width text above it."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    audit = AuditStore(engine)
    values = [0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 2, (1 << 64) - 1, 10**20]
    with engine.begin() as conn:
        for n, value in enumerate(values):
            audit._put_block(conn, BlockRef(n, f"0x{n:064x}", None, value), 0)
    with engine.connect() as conn:
        ordered = [int(t) for (t,) in conn.execute(
            sa.text("SELECT timestamp FROM block ORDER BY timestamp DESC"))]  # fmt: skip
        above = (
            conn.execute(
                sa.text("SELECT number FROM block WHERE timestamp > :t ORDER BY number"),
                {"t": (1 << 63) - 1},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert ordered == sorted(values, reverse=True)
    assert above == [3, 4, 5, 6]

"""A regulator who does not trust the audit service checks its provenance answers against the
chain with nothing but standard JSON-RPC through the permission guard (a read-only token from
`dul admin rpc-token create --service … --preset read`) and the packaged ABIs: for every node
and edge of `GET /v1/provenance/{access,agreement,subject}/{id}` it fetches the receipt of the
named transaction (`eth_getTransactionReceipt`) and the block's logs (`eth_getLogs`), finds the
log at the named log index, checks block, transaction index and hash, that the log comes from a
deployed contract and decodes as one of its events with `eth_abi` from the artifact's ABI alone,
that the node's id is among the log's values, and that every attribute the service reports
under a name the event carries has the log's value. The README's "Checking an answer against the
chain" names the same calls."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_abi.abi import decode as abi_decode
from eth_hash.auto import keccak
from typer.testing import CliRunner

from audit.console.testing import serve_audit
from audit.settings import AuditSettings
from audit.testing import audit_token, index_with_cohorts, with_token_file
from dul.chain.testing import ChainHandle
from dul.cli.main import app
from dul.contracts.typed_data import AccessRequest
from dul.contracts.world import World
from dul.domain import Decision, DenyReason, Operation, Scenario, Tier
from ledger_gateway.client import sign_request
from ledger_gateway.testing import GatewayHandle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "dul/contracts/artifacts"
SOURCES = ROOT / "solidity/contracts"


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


# --------------------------------------------------------------------------- the ABI alone


def canonical(param: dict[str, Any]) -> str:
    """An ABI parameter's canonical type (tuples spelled out), as the event signature has it."""
    kind: str = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(canonical(c) for c in param["components"]) + ")" + kind[5:]
    return kind


@dataclass
class EventAbi:
    contract: str
    name: str
    inputs: list[dict[str, Any]]


def events_by_topic() -> dict[str, EventAbi]:
    out: dict[str, EventAbi] = {}
    for path in sorted(ARTIFACTS.glob("*.json")):
        artifact = json.loads(path.read_text())
        if not isinstance(artifact, dict) or "abi" not in artifact:
            continue
        for item in artifact["abi"]:
            if item.get("type") == "event" and not item.get("anonymous"):
                types = ",".join(canonical(p) for p in item["inputs"])
                topic = hexed(keccak(f"{item['name']}({types})".encode()))
                out[topic] = EventAbi(path.stem, item["name"], item["inputs"])
    return out


def solidity_enums() -> dict[str, list[str]]:
    """Each enum's member names, from the contracts' source (the ABI has only the enum's name,
    `internalType: "enum Tier"`, and its uint8)."""
    out: dict[str, list[str]] = {}
    for path in SOURCES.rglob("*.sol"):
        for name, body in re.findall(r"\benum\s+(\w+)\s*\{([^}]*)\}", path.read_text()):
            out[name] = [m.strip() for m in re.sub(r"//[^\n]*", "", body).split(",") if m.strip()]
    return out


ENUMS = solidity_enums()


def plain(value: Any, param: dict[str, Any]) -> Any:
    """A decoded ABI value as JSON would carry it: bytes as 0x-hex, tuples as named dicts, an
    enum by its member's name."""
    kind: str = param["type"]
    internal = str(param.get("internalType", ""))
    if internal.startswith("enum ") and not kind.endswith("]"):
        members = ENUMS[internal.split()[-1].split(".")[-1]]
        return members[value] if value < len(members) else value
    if kind.endswith("]"):
        inner = {**param, "type": kind[: kind.rindex("[")]}
        return [plain(v, inner) for v in value]
    if kind == "tuple":
        return {c["name"]: plain(v, c) for v, c in zip(value, param["components"], strict=True)}
    if isinstance(value, bytes):
        return hexed(value)
    if kind == "address":
        return str(value).lower()
    return value


def decode_log(log: dict[str, Any], abi: EventAbi) -> dict[str, Any]:
    indexed = [p for p in abi.inputs if p["indexed"]]
    rest = [p for p in abi.inputs if not p["indexed"]]
    out: dict[str, Any] = {}
    for param, topic in zip(indexed, log["topics"][1:], strict=True):
        raw = bytes.fromhex(topic[2:])
        kind = canonical(param)
        if kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("("):
            out[param["name"]] = hexed(raw)  # a hash of the value: only comparable as such
        else:
            out[param["name"]] = plain(abi_decode([kind], raw)[0], param)
    values = abi_decode([canonical(p) for p in rest], bytes.fromhex(log["data"][2:]))
    for param, value in zip(rest, values, strict=True):
        out[param["name"]] = plain(value, param)
    return out


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every field of a decoded event by its snake_case name (a struct's fields by their own)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, prefix))
        out[snake(name)] = value
    return out


#: The service's names for values of the log (field of the service: field of the event).
ALIASES = {"agreement_id": "id", "previous_id": "previous", "dataset_id": "dataset",
           "org_id": "org", "subject_ref": "subject", "root": "cohort_root",
           "size": "cohort_size"}  # fmt: skip


def as_reported(fields: dict[str, Any]) -> dict[str, Any]:
    """The log's fields under the names the service uses for them too: the requester's
    signature as r ‖ s ‖ v, a disease code as its term (UTF-8, left-aligned)."""
    out = dict(fields)
    for name, source in ALIASES.items():
        if source in fields and name not in fields:
            out[name] = fields[source]
    if {"sig_r", "sig_s", "sig_v"} <= fields.keys():
        out["requester_signature"] = (fields["sig_r"] + fields["sig_s"][2:]
                                      + f"{fields['sig_v']:02x}")  # fmt: skip
    if "disease_code" in fields:
        raw = bytes.fromhex(fields["disease_code"][2:]).rstrip(b"\0")
        out["disease"] = raw.decode() if raw else None
    return out


def scalars(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from scalars(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from scalars(v)
    else:
        yield str(value).lower()


# --------------------------------------------------------------------------- the story


@dataclass
class Answers:
    audit: str
    token: str
    access: str
    agreement: str
    subject: str
    batched: str


@pytest.fixture(scope="module")
def answers(
    world: World, chain: ChainHandle, gateway: GatewayHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Answers]:  # fmt: skip
    """A consented cohort's access through the gateway, its released result, indexed with the
    gateway's cohort store; the audit service served."""
    subject, others = os.urandom(32), [os.urandom(32) for _ in range(3)]
    world.record_consents([subject, *others], [Scenario.RESEARCH])
    agreement = world.activate(world.cohort_terms())
    request = AccessRequest(
        request_id=os.urandom(32), agreement_id=agreement, dataset_id=world.dataset,
        field_mask=0b0110, tier=Tier.PSEUDONYMIZED, operation=Operation.QUERY,
        request_hash=keccak(b"SELECT count(*) FROM person"), deadline=int(time.time()) + 600,
    )  # fmt: skip
    signed = sign_request(world.requester, request, gateway.domain, cohort=[subject, *others])
    answer = gateway.client.request_access(signed)
    assert answer.decision == "GRANTED", answer
    assert gateway.client.get_access(answer.access_id, wait=True).status == "confirmed"
    release = gateway.client.release_result(
        answer.access_id, keccak(b"n=4"), "AGGREGATE_RESULT", 3, wait=True
    )
    assert release.status == "confirmed"
    # a second agreement's accesses recorded together: the second log of its transaction,
    # after a denial and a release in between
    research = world.activate(world.research_terms())
    first = world.access_record(research)
    denied = world.access_record(research, Decision.DENIED, DenyReason.TIER_ABOVE_CEILING,
                                 tier=Tier.IDENTIFIED)  # fmt: skip
    batched = world.access_record(research, operation=Operation.EXPORT_RESULT)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses",
                          [first.as_abi(), denied.as_abi(), batched.as_abi()])  # fmt: skip
    store = f"sqlite:///{tmp_path_factory.mktemp('raw-check') / 'audit.db'}"
    engine, indexer = index_with_cohorts(world.ledger.deployment, chain.rpc_url, store,
                                         [gateway.settings.effective_database_url])  # fmt: skip
    settings = with_token_file(AuditSettings(
        database_url=store, rpc_url=chain.rpc_url, deployment_path=chain.home.deployment,
        index_behind_blocks=10_000_000, index_behind_s=31_536_000,
    ))  # fmt: skip
    with serve_audit(settings) as url:
        yield Answers(url, audit_token(settings), answer.access_id, hexed(agreement),
                      hexed(subject), hexed(batched.request.request_id))  # fmt: skip
    indexer.close()
    engine.dispose()


@pytest.fixture(scope="module")
def read_token(chain: ChainHandle) -> str:
    """What a regulator is given: a read-only JSON-RPC token."""
    made = CliRunner().invoke(
        app, ["admin", "rpc-token", "create", "--service", "regulator", "--preset", "read"],
        env={**chain.env, "COLUMNS": "200"},
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert token.count(".") == 2, made.stdout  # a JWT
    return token


class Rpc:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token, self.calls = url, token, 0

    def __call__(self, method: str, *params: Any) -> Any:
        self.calls += 1
        reply = httpx.post(self.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"},
                           json={"jsonrpc": "2.0", "id": self.calls, "method": method,
                                 "params": list(params)})  # fmt: skip
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert "error" not in body, body
        return body["result"]


def mismatches(graph: dict[str, Any], rpc: Rpc, addresses: set[str]) -> list[str]:
    """Every way the graph's chain references disagree with the chain (empty: none)."""
    topics = events_by_topic()
    receipts: dict[str, Any] = {}
    found: list[str] = []
    items = [(f"node {n['id']}", n) for n in graph["nodes"] if n.get("chain")]
    items += [(f"edge {e['source']} -{e['relation']}-> {e['target']}", e) for e in graph["edges"]]
    assert items, "the answer names no chain reference"
    for what, item in items:
        ref = item["chain"]
        tx_hash = ref["tx_hash"]
        if tx_hash not in receipts:
            receipts[tx_hash] = rpc("eth_getTransactionReceipt", tx_hash)
        receipt = receipts[tx_hash]
        if receipt is None:
            found.append(f"{what}: no transaction {tx_hash}")
            continue
        if int(receipt["blockNumber"], 16) != ref["block"]:
            found.append(f"{what}: block {ref['block']}, the receipt's {receipt['blockNumber']}")
        if int(receipt["transactionIndex"], 16) != ref["tx_index"]:
            found.append(f"{what}: tx index {ref['tx_index']}, the receipt's "
                         f"{receipt['transactionIndex']}")  # fmt: skip
        logs = [g for g in receipt["logs"] if int(g["logIndex"], 16) == ref["log_index"]]
        if not logs:
            found.append(f"{what}: tx {tx_hash} has no log {ref['log_index']}")
            continue
        log = logs[0]
        # the same log, read as a regulator's indexer would: eth_getLogs of that one block
        block_logs = rpc("eth_getLogs", {"fromBlock": hex(ref["block"]),
                                         "toBlock": hex(ref["block"]),
                                         "address": log["address"]})  # fmt: skip
        same = [g for g in block_logs if int(g["logIndex"], 16) == ref["log_index"]]
        if (
            len(same) != 1
            or same[0]["transactionHash"] != tx_hash
            or same[0]["data"] != log["data"]
        ):
            found.append(f"{what}: eth_getLogs of block {ref['block']} disagrees with the receipt")
        if log["address"].lower() not in addresses:
            found.append(f"{what}: log from {log['address']}, not a deployed contract")
            continue
        abi = topics.get(log["topics"][0])
        if abi is None:
            found.append(f"{what}: log topic {log['topics'][0]} is no packaged event")
            continue
        decoded = decode_log(log, abi)
        values = set(scalars(decoded))
        if "source" not in item:  # a node: its id must be in the event that states it
            ident = item["id"].split(":", 1)[1].lower()
            if re.fullmatch(r"0x[0-9a-f]+", ident) and ident not in values:
                found.append(f"{what}: id not in {abi.contract}.{abi.name} {decoded}")
        fields = as_reported(flat(decoded))
        for name, value in (item.get("attributes") or {}).items():
            if name in fields and not same_value(name, value, fields[name]):
                found.append(f"{what}: {name}={value!r}, {abi.name}.{name} is {fields[name]!r}")
    return found


#: uint8 fields that hold a set of enum members as bits (the service names the members).
BIT_SETS = {"operations": "Operation", "scenarios": "Scenario"}


def same_value(name: str, reported: Any, logged: Any) -> bool:
    """Whether the service's value is the log's, read the way the README says the service
    writes them: uint256 masks as 0x-hex, enums and bit sets by member names, DUO codes as
    `DUO:0000042`, hashes and addresses as lowercase 0x-hex."""
    if reported is None and logged == "0x" + "00" * 32:
        return True  # no previous version, no code: the service says none
    if logged is None or reported is None:
        return logged is reported
    if isinstance(logged, bool) or isinstance(reported, bool):
        return reported is logged
    if name in BIT_SETS and isinstance(logged, int) and isinstance(reported, list):
        members = ENUMS[BIT_SETS[name]]
        return sum(1 << members.index(str(m)) for m in reported) == logged
    if isinstance(logged, int):
        if isinstance(reported, str):
            return reported.startswith("0x") and int(reported, 16) == logged
        return isinstance(reported, int) and reported == logged
    if isinstance(logged, str) and isinstance(reported, int):  # an enum given by its index
        return any(members[reported : reported + 1] == [logged] for members in ENUMS.values())
    if isinstance(logged, list):
        if name == "duo_codes":
            return bool(reported == [f"DUO:{code:07d}" for code in logged])
        return isinstance(reported, list) and [str(v).lower() for v in reported] == [
            str(v).lower() for v in logged
        ]
    return str(reported).lower() == str(logged).lower()


@pytest.mark.parametrize("kind", ["access", "agreement", "subject", "batched"])
def test_every_chain_reference_of_a_provenance_answer_is_the_chain_s(
    answers: Answers, world: World, chain: ChainHandle, read_token: str, kind: str
) -> None:
    ident = {"access": answers.access, "agreement": answers.agreement,
             "subject": answers.subject, "batched": answers.batched}[kind]  # fmt: skip
    kind = "access" if kind == "batched" else kind
    got = httpx.get(f"{answers.audit}/v1/provenance/{kind}/{ident}", timeout=60,
                    headers={"Authorization": f"Bearer {answers.token}"})  # fmt: skip
    assert got.status_code == 200, got.text
    graph = got.json()
    addresses = {a.lower() for a in world.ledger.deployment.addresses.values()}
    rpc = Rpc(chain.rpc_url, read_token)
    found = mismatches(graph, rpc, addresses)
    assert not found, "\n".join(found)
    # the token reads and nothing else: the regulator's check needs no more
    refused = httpx.post(chain.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method":
                         "eth_sendRawTransaction", "params": ["0x00"]}, timeout=30,
                         headers={"Authorization": f"Bearer {read_token}"})  # fmt: skip
    assert refused.status_code == 403, refused.text


def test_the_check_catches_a_wrong_reference(
    answers: Answers, world: World, chain: ChainHandle, read_token: str
) -> None:
    """The check is not vacuous: one log index off, or a value changed, is named."""
    graph = httpx.get(f"{answers.audit}/v1/provenance/access/{answers.access}", timeout=60,
                      headers={"Authorization": f"Bearer {answers.token}"}).json()  # fmt: skip
    addresses = {a.lower() for a in world.ledger.deployment.addresses.values()}
    rpc = Rpc(chain.rpc_url, read_token)
    node_id = f"access:{answers.access}@{answers.agreement}"
    access = next(n for n in graph["nodes"] if n["id"] == node_id)
    moved = {**access, "chain": {**access["chain"], "log_index": access["chain"]["log_index"] + 7}}
    assert mismatches({"nodes": [moved], "edges": []}, rpc, addresses)
    changed = {**access, "attributes": {**access["attributes"], "cohort_size": 10_000}}
    assert mismatches({"nodes": [changed], "edges": []}, rpc, addresses)

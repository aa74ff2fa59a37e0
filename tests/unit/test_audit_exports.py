"""PROV-JSON and FHIR exports of a provenance graph, without a chain: both parse back with
their own libraries, keep every chain reference, and map each access and release once."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.provenance import Provenance
from prov.model import ProvActivity, ProvAgent, ProvDocument, ProvEntity

from audit.exports import fhir_bundle, fhir_json, graph_blocks, prov_document, prov_json
from audit.provenance import ChainRef, Direction, Edge, Graph, Node

AGREEMENT = "0x" + "a1" * 32
ACCESS = "0x" + "b2" * 32
DENIED = "0x" + "b3" * 32
RESULT = "0x" + "c3" * 32
DATASET = "0x" + "d4" * 32
HOSPITAL = "0x" + "e5" * 32
REQUESTER = "0x" + "f6" * 20
GATEWAY = "0x" + "07" * 20


def ref(block: int, log_index: int = 0) -> ChainRef:
    return ChainRef(block=block, tx_index=0, log_index=log_index, tx_hash="0x" + f"{block:064x}")


def access_node(access_id: str, decision: str, reason: str, block: int) -> Node:
    return Node(
        id=f"access:{access_id}", type="access", prov="activity", label="access",
        chain=ref(block),
        attributes={
            "access_id": access_id, "decision": decision, "reason": reason,
            "tier": "DEIDENTIFIED", "operation": "EXPORT_RESULT", "field_mask": "0x6",
            "request_hash": "0x" + "11" * 32, "cohort_root": "0x" + "22" * 32,
            "cohort_size": 42, "authorization_ref": "0x" + "00" * 32,
            "requester_signature": "0x" + "33" * 65,
        },
    )  # fmt: skip


def sample_graph() -> Graph:
    nodes = [
        Node(id=f"agreement:{AGREEMENT}", type="agreement", prov="entity", label="agreement v1",
             chain=ref(10), attributes={"scenario": "RESEARCH", "status_history": [
                 {"event": "AgreementActivated", "chain": ref(11).model_dump()}]}),
        Node(id=f"dataset:{DATASET}", type="dataset", prov="entity", label="omop",
             chain=ref(5), attributes={"fields": ["person.person_id"]}),
        Node(id=f"organization:{HOSPITAL}", type="organization", prov="agent",
             label="Hospital A", chain=ref(2)),
        Node(id=f"account:{REQUESTER}", type="account", prov="agent", label=REQUESTER,
             chain=ref(3), attributes={"roles": ["REQUESTER"]}),
        Node(id=f"account:{GATEWAY}", type="account", prov="agent", label=GATEWAY,
             chain=ref(3, 1), attributes={"roles": ["GATEWAY"]}),
        access_node(ACCESS, "GRANTED", "NONE", 20),
        access_node(DENIED, "DENIED", "QUOTA_EXHAUSTED", 21),
        Node(id=f"artifact:{RESULT}", type="artifact", prov="entity", label="result",
             chain=ref(30), attributes={"kind": "AGGREGATE_RESULT", "size": 10}),
    ]  # fmt: skip
    edges = []
    for access, block in ((ACCESS, 20), (DENIED, 21)):
        a = f"access:{access}"
        edges += [
            Edge(relation="used", source=a, target=f"agreement:{AGREEMENT}", chain=ref(block),
                 attributes={"role": "agreement"}),
            Edge(relation="used", source=a, target=f"dataset:{DATASET}", chain=ref(block),
                 attributes={"role": "dataset"}),
            Edge(relation="wasAssociatedWith", source=a, target=f"account:{REQUESTER}",
                 chain=ref(block), attributes={"role": "requester"}),
            Edge(relation="wasAssociatedWith", source=a, target=f"account:{GATEWAY}",
                 chain=ref(block), attributes={"role": "recorder"}),
        ]  # fmt: skip
    edges += [
        Edge(relation="actedOnBehalfOf", source=f"account:{GATEWAY}",
             target=f"organization:{HOSPITAL}", chain=ref(3, 1), attributes={"role": "GATEWAY"}),
        Edge(relation="wasAttributedTo", source=f"agreement:{AGREEMENT}",
             target=f"organization:{HOSPITAL}", chain=ref(10), attributes={"role": "holder"}),
        Edge(relation="wasDerivedFrom", source=f"agreement:{AGREEMENT}",
             target=f"dataset:{DATASET}", chain=ref(10), attributes={"role": "scope"}),
        Edge(relation="wasGeneratedBy", source=f"artifact:{RESULT}", target=f"access:{ACCESS}",
             chain=ref(30), attributes={"kind": "AGGREGATE_RESULT", "size": 10,
                                        "recorder": GATEWAY}),
    ]  # fmt: skip
    return Graph(
        root=f"agreement:{AGREEMENT}", direction=Direction.BOTH, nodes=nodes, edges=edges, limit=100
    )


def test_prov_json_parses_back_with_every_node_relation_and_chain_reference() -> None:
    graph = sample_graph()
    text = prov_json(graph)
    document = ProvDocument.deserialize(content=text, format="json")
    assert document == prov_document(graph)  # the round trip loses nothing
    kinds = {type(r) for r in document.get_records()}
    assert {ProvEntity, ProvActivity, ProvAgent} <= kinds
    body = json.loads(text)
    assert set(body["entity"]) == {
        f"dul:agreement-{AGREEMENT}",
        f"dul:dataset-{DATASET}",
        f"dul:artifact-{RESULT}",
    }
    assert len(body["used"]) == 4
    assert len(body["wasAssociatedWith"]) == 4
    assert len(body["wasGeneratedBy"]) == 1
    assert len(body["actedOnBehalfOf"]) == 1
    (generated,) = body["wasGeneratedBy"].values()
    assert generated["prov:entity"] == f"dul:artifact-{RESULT}"
    assert generated["prov:activity"] == f"dul:access-{ACCESS}"
    assert generated["dul:block"] == {"$": "30", "type": "xsd:int"} or generated["dul:block"] == 30
    assert generated["dul:txHash"] == "0x" + f"{30:064x}"


def test_fhir_bundle_parses_back_with_an_audit_event_per_access_and_a_provenance_per_release() -> (
    None
):
    graph = sample_graph()
    times = {block: 1_700_000_000 + block for block in graph_blocks(graph)}
    bundle = Bundle.model_validate_json(fhir_json(graph, times))
    assert bundle == fhir_bundle(graph, times).model_copy(update={"timestamp": bundle.timestamp})
    resources = [entry.resource for entry in bundle.entry or []]
    events = {r.id: r for r in resources if isinstance(r, AuditEvent)}
    (provenance,) = [r for r in resources if isinstance(r, Provenance)]
    # typed models proved the parse; the checks read their JSON form (Optional-free)
    granted: dict[str, Any] = json.loads(events[ACCESS[2:]].model_dump_json(exclude_none=True))
    denied: dict[str, Any] = json.loads(events[DENIED[2:]].model_dump_json(exclude_none=True))
    released: dict[str, Any] = json.loads(provenance.model_dump_json(exclude_none=True))
    assert (granted["type"]["code"], granted["subtype"][0]["code"], granted["action"]) == (
        "110113", "AuthZ-Consent", "E"
    )  # fmt: skip
    assert (granted["outcome"], "outcomeDesc" in granted) == ("0", False)
    assert (denied["outcome"], denied["outcomeDesc"]) == ("8", "denied: QUOTA_EXHAUSTED")
    assert granted["recorded"].startswith("2023-11-14T22:13:40")
    (requestor,) = [a for a in granted["agent"] if a["requestor"]]
    assert requestor["who"]["identifier"]["value"] == REQUESTER
    assert requestor["purposeOfUse"][0]["coding"][0]["code"] == "HRESCH"
    details = {d["type"]: d["valueString"] for d in granted["entity"][0]["detail"]}
    assert details["block"] == "20"
    assert details["cohortRoot"] == "0x" + "22" * 32
    assert released["target"][0]["identifier"]["value"] == RESULT
    assert released["policy"] == [f"urn:dul:agreement:{AGREEMENT}"]
    assert released["entity"][0]["what"]["identifier"]["value"] == ACCESS


def test_an_empty_graph_exports_empty_documents() -> None:
    graph = Graph(root="dataset:x", direction=Direction.UP, nodes=[], edges=[], limit=1)
    assert ProvDocument.deserialize(content=prov_json(graph), format="json").get_records() == []
    assert Bundle.model_validate_json(fhir_json(graph, {})).entry is None


def authorization_node(
    code: str, *, multi_use: bool, uses: list[str], agreements: list[str] | None = None
) -> Node:
    history: list[dict[str, Any]] = [{"event": "issued", "chain": ref(40).model_dump()}]
    history += [{"event": "redeemed", "access_id": use, "chain": ref(41 + i).model_dump(),
                 **({"agreement_id": agreements[i]} if agreements else {})}
                for i, use in enumerate(uses)]  # fmt: skip
    return Node(
        id=f"authorization:{code}", type="authorization", prov="entity",
        label="authorization code issued (INSURANCE_CLAIM)", chain=ref(40),
        attributes={
            "code_hash": code, "subject_ref": "0x" + "5e" * 32, "holder_org": HOSPITAL,
            "grantee_org": "0x" + "1a" * 32, "dataset_id": DATASET, "field_mask": "0x6",
            "tier": "PSEUDONYMIZED", "scenario": "INSURANCE_CLAIM", "expires_at": 1_800_000_000,
            "issued_by": "patient", "multi_use": multi_use, "status": "ISSUED",
            "redeemed_by_access": uses[-1] if uses else None, "history": history,
        },
    )  # fmt: skip


def test_fhir_says_whether_a_code_opens_one_access_or_every_one_until_it_expires() -> None:
    """FHIR R4 Consent has no element for how often a permit may be used: the provision's
    `urn:dul:authorization-use` extension says `once` or `until-expiry`, its
    `urn:dul:authorization-uses` how many accesses redeemed it, and each use is a `related`
    data reference to its access."""
    once, multi, unused = "0x" + "c0" * 32, "0x" + "c1" * 32, "0x" + "c2" * 32
    uses = ["0x" + f"{n:02x}" * 32 for n in (0xA1, 0xA2, 0xA3)]
    graph = Graph(
        root=f"authorization:{multi}", direction=Direction.BOTH, limit=100, edges=[],
        nodes=[authorization_node(once, multi_use=False, uses=[ACCESS]),
               authorization_node(multi, multi_use=True, uses=uses),
               authorization_node(unused, multi_use=False, uses=[])],
    )  # fmt: skip
    text = fhir_json(graph, {})
    Bundle.model_validate_json(text)  # valid FHIR
    consents = {e["resource"]["identifier"][0]["value"]: e["resource"]
                for e in json.loads(text)["entry"]}  # fmt: skip

    def use_of(code: str) -> tuple[str, int, list[str]]:
        provision = consents[code]["provision"]
        ext = {e["url"]: e for e in provision["extension"]}
        return (
            ext["urn:dul:authorization-use"]["valueCode"],
            ext["urn:dul:authorization-uses"]["valueUnsignedInt"],
            [d["reference"]["identifier"]["value"] for d in provision.get("data", [])],
        )

    assert use_of(once) == ("once", 1, [ACCESS])
    assert use_of(multi) == ("until-expiry", 3, uses)
    assert use_of(unused) == ("once", 0, [])


def test_fhir_names_each_use_of_a_code_by_its_request_id_at_its_agreement() -> None:
    """A request id names one access per agreement: two uses of a code by one request id under
    two agreements are two accesses, each referenced as `id@agreement` like its AuditEvent's
    entity; a node with only its last use (`redeemed_by_access` and `_agreement`) names that."""
    code, last_only = "0x" + "c3" * 32, "0x" + "c4" * 32
    agreements = [AGREEMENT, "0x" + "a2" * 32]
    both = authorization_node(code, multi_use=True, uses=[ACCESS, ACCESS], agreements=agreements)
    last = authorization_node(last_only, multi_use=False, uses=[])
    last.attributes.update(redeemed_by_access=ACCESS, redeemed_by_agreement=AGREEMENT)
    graph = Graph(root=f"authorization:{code}", direction=Direction.BOTH, limit=100, edges=[],
                  nodes=[both, last])  # fmt: skip
    consents = {e["resource"]["identifier"][0]["value"]: e["resource"]
                for e in json.loads(fhir_json(graph, {}))["entry"]}  # fmt: skip

    def data_of(c: str) -> list[str]:
        return [d["reference"]["identifier"]["value"] for d in consents[c]["provision"]["data"]]

    assert data_of(code) == [f"{ACCESS}@{g}" for g in agreements]
    assert data_of(last_only) == [f"{ACCESS}@{AGREEMENT}"]

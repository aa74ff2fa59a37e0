"""Exports of a provenance graph in the regulators' formats.

- **PROV-JSON** (W3C PROV-DM, through the `prov` package): every node becomes an entity,
  activity or agent and every edge its PROV relation; chain references are kept as
  `dul:block`, `dul:txHash`, `dul:txIndex`, `dul:logIndex` attributes, so the document can be
  checked against the chain without the audit service.
- **FHIR R4 Bundle** (through `fhir.resources`, its R4B models: AuditEvent, Provenance and
  Bundle are the same in R4 and R4B): an AuditEvent per access in the spirit of IHE BALP's
  consent-decision pattern (type DICOM 110113 Security Alert, subtype AuthZ-Consent, action
  E, outcome 0 on a grant and 8 on a denial with the reason in outcomeDesc, the requester as
  the requesting agent, the gateway as the authorization service, the agreement and dataset
  as entities), and a Provenance per released result (target the result hash, the access
  as its source entity, the agreement as the policy), and one per registered artifact (target
  the artifact, its parent artifacts and released results as `derivation` entities, the owner
  organization as author, the registrant as enterer, the releases' agreements as policies).
  Cohorts are on chain as Merkle roots
  only (recorded as a detail); in a subject's graph an access also names its patient — by the
  subject reference, an identifier and nothing else — as the Patient object of the event.
- **FHIR Consent** per consent node (scope `research` when it permits research, AI training
  or teaching, `patient-privacy` otherwise; status `active` while GRANTED, `inactive` once
  withdrawn; the validity as `provision.period`; DUO terms as `provision.purpose` codings of
  the DUO ontology, beside the scenario and its HL7 purpose of use) and per authorization code
  (scope `patient-privacy`, the grantee as the provision's recipient actor, the expiry as the
  period's end, `inactive` once redeemed — with the access as `provision.data` — or revoked).
  The patient is referenced by the subject reference only; the chain record of each is its
  `sourceReference`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.auditevent import (
    AuditEvent,
    AuditEventAgent,
    AuditEventEntity,
    AuditEventEntityDetail,
    AuditEventSource,
)
from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.consent import (
    Consent,
    ConsentProvision,
    ConsentProvisionActor,
    ConsentProvisionData,
)
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.provenance import Provenance, ProvenanceAgent, ProvenanceEntity
from fhir.resources.R4B.reference import Reference
from prov.model import ProvDocument
from sqlalchemy import Engine, bindparam, text

from audit.provenance import ChainRef, Edge, Graph, Node, store_errors

DUL_NAMESPACE = "urn:dul:"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
BALP_AUTHZ_SUBTYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
DUO = "http://purl.obolibrary.org/obo/duo.owl"
"""The GA4GH Data Use Ontology (terms as `DUO:0000042`)."""
_RESEARCH_SCOPES = {"RESEARCH", "AI_TRAINING", "TEACHING"}

#: Scenario -> HL7 v3 ActReason purpose of use, where one fits. A break-glass access carries
#: ETREAT (emergency treatment) and BTG (break the glass) of the same code system instead.
_PURPOSE = {
    "CLINICAL_CARE": "TREAT",
    "RESEARCH": "HRESCH",
    "AI_TRAINING": "HRESCH",
    "INSURANCE_CLAIM": "CLMATTCH",
}


# --- PROV-JSON --------------------------------------------------------------------------------


def _qname(node_id: str) -> str:
    type_, _, key = node_id.partition(":")
    return f"dul:{type_}-{key.replace('/', '-').replace('@', '-')}"


def _chain_attributes(chain: ChainRef | None) -> dict[str, Any]:
    if chain is None:
        return {}
    return {
        "dul:block": chain.block,
        "dul:txIndex": chain.tx_index,
        "dul:logIndex": chain.log_index,
        "dul:txHash": chain.tx_hash,
    }


def _literal(value: Any) -> Any:
    """PROV attribute values are literals: structures go in as JSON text."""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def prov_document(graph: Graph) -> ProvDocument:
    """The graph as a PROV-DM document."""
    document = ProvDocument()
    document.add_namespace("dul", DUL_NAMESPACE)
    for node in graph.nodes:
        attributes: dict[str, Any] = {
            "prov:type": f"dul:{node.type}",
            "prov:label": node.label,
            **_chain_attributes(node.chain),
        }
        attributes.update(
            {f"dul:{k}": _literal(v) for k, v in node.attributes.items() if v is not None}
        )
        if node.id in graph.cut:  # linked to more that the requester's role may not see
            attributes["dul:cut"] = True
        if node.prov == "entity":
            document.entity(_qname(node.id), attributes)
        elif node.prov == "activity":
            document.activity(_qname(node.id), other_attributes=attributes)
        else:
            document.agent(_qname(node.id), attributes)
    for n, edge in enumerate(graph.edges):
        _relation(document, edge, f"dul:edge-{n}")
    return document


def _relation(document: ProvDocument, edge: Edge, identifier: str) -> None:
    attributes = _chain_attributes(edge.chain)
    attributes.update({f"dul:{k}": _literal(v) for k, v in edge.attributes.items()})
    source, target = _qname(edge.source), _qname(edge.target)
    if edge.relation == "used":
        document.used(source, target, identifier=identifier, other_attributes=attributes)
    elif edge.relation == "wasGeneratedBy":
        document.wasGeneratedBy(source, target, identifier=identifier, other_attributes=attributes)
    elif edge.relation == "wasDerivedFrom":
        document.wasDerivedFrom(source, target, identifier=identifier, other_attributes=attributes)
    elif edge.relation == "wasAssociatedWith":
        document.wasAssociatedWith(
            source, target, identifier=identifier, other_attributes=attributes
        )
    elif edge.relation == "actedOnBehalfOf":
        document.actedOnBehalfOf(source, target, identifier=identifier, other_attributes=attributes)
    elif edge.relation == "wasAttributedTo":
        document.wasAttributedTo(source, target, identifier=identifier, other_attributes=attributes)
    else:  # pragma: no cover - the builder only makes the relations above
        raise ValueError(f"no PROV relation {edge.relation}")


def prov_json(graph: Graph) -> str:
    return str(prov_document(graph).serialize(format="json"))


# --- FHIR -------------------------------------------------------------------------------------


def block_times(engine: Engine, blocks: Iterable[int]) -> dict[int, int | None]:
    """Block number -> timestamp for the blocks a graph mentions (one query)."""
    numbers = sorted(set(blocks))
    if not numbers:
        return {}
    with store_errors(), engine.connect() as conn:
        rows = conn.execute(
            text("SELECT number, timestamp FROM block WHERE number IN :numbers").bindparams(
                bindparam("numbers", expanding=True)
            ),
            {"numbers": numbers},
        ).all()
    return {int(n): None if t is None else int(t) for n, t in rows}


def graph_blocks(graph: Graph) -> set[int]:
    return {n.chain.block for n in graph.nodes if n.chain} | {e.chain.block for e in graph.edges}


_LAST_INSTANT = 253_402_300_799
"""9999-12-31T23:59:59Z: FHIR has no later instant (a block time can be up to 2**64 - 1)."""


def _instant(timestamp: int | None) -> str:
    moment = datetime.fromtimestamp(min(timestamp or 0, _LAST_INSTANT), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _bound(timestamp: Any) -> str | None:
    """A validity bound as a FHIR dateTime; None for "forever" (past year 9999) or unknown."""
    try:
        if timestamp is None or int(timestamp) > _LAST_INSTANT:
            return None
        return _instant(int(timestamp))
    except (OverflowError, OSError, ValueError):
        return None


def _ref(
    system: str, value: str, display: str | None = None, type_: str | None = None
) -> Reference:
    return Reference(
        identifier=Identifier(system=f"{DUL_NAMESPACE}{system}", value=value),
        display=_fhir_string(display),
        type=type_,
    )


def _fhir_string(value: str | None) -> str | None:
    """FHIR strings are never empty or blank: an organization registered with an empty name
    has no display, not an invalid one."""
    return value if value is not None and value.strip() else None


def _coding(system: str, code: str, display: str | None = None) -> Coding:
    return Coding(system=system, code=code, display=_fhir_string(display))


def _detail(name: str, value: Any) -> AuditEventEntityDetail:
    return AuditEventEntityDetail(type=name, valueString=_fhir_string(str(value)) or "(empty)")


def _chain_details(chain: ChainRef) -> list[AuditEventEntityDetail]:
    return [
        _detail("block", chain.block),
        _detail("txHash", chain.tx_hash),
        _detail("txIndex", chain.tx_index),
        _detail("logIndex", chain.log_index),
    ]


def _key(node_id: str) -> str:
    return node_id.partition(":")[2]


def _fhir_id(hex_id: str) -> str:
    """A FHIR id ([A-Za-z0-9.-]{1,64}): the 64 hex digits of a bytes32."""
    return hex_id[2:] if hex_id.startswith("0x") else hex_id


def _audit_event(
    graph: Graph, access: Node, out_edges: Mapping[str, list[Edge]], times: Mapping[int, int | None]
) -> AuditEvent:
    assert access.chain is not None
    a = access.attributes
    granted = a["decision"] == "GRANTED"
    related = {e.attributes.get("role"): e for e in out_edges.get(access.id, [])}
    agreement_edge, dataset_edge = related.get("agreement"), related.get("dataset")
    requester_edge, recorder_edge = related.get("requester"), related.get("recorder")
    agreement = graph.node(agreement_edge.target) if agreement_edge else None
    purpose: list[CodeableConcept] = []
    glass = a.get("break_glass_reason")
    if agreement is not None:
        scenario = str(agreement.attributes["scenario"])
        codings = [_coding(f"{DUL_NAMESPACE}scenario", scenario)]
        if glass:  # an emergency access without the patient's code
            codings[:0] = [_coding(ACT_REASON, "ETREAT", "Emergency Treatment"),
                           _coding(ACT_REASON, "BTG", "break the glass")]  # fmt: skip
        elif scenario in _PURPOSE:
            codings.insert(0, _coding(ACT_REASON, _PURPOSE[scenario]))
        purpose.append(CodeableConcept(coding=codings))
    agents: list[AuditEventAgent] = []
    if requester_edge is not None:
        requester = _key(requester_edge.target)
        org = _organization_of(graph, out_edges, requester_edge.target)
        agents.append(
            AuditEventAgent(
                type=CodeableConcept(coding=[_coding(PARTICIPATION, "IRCP",
                                                     "information recipient")]),
                who=_ref("account", requester, type_="Device"),
                requestor=True,
                purposeOfUse=purpose or None,
            )
        )  # fmt: skip
        if org is not None:
            agents.append(
                AuditEventAgent(
                    type=CodeableConcept(coding=[_coding(f"{DUL_NAMESPACE}role",
                                                         "requester-organization")]),
                    who=_ref("organization", _key(org.id), org.label, "Organization"),
                    requestor=False,
                )
            )  # fmt: skip
    gateway_ref = None
    if recorder_edge is not None:
        gateway_ref = _ref("account", _key(recorder_edge.target), "gateway", "Device")
        agents.append(
            AuditEventAgent(
                type=CodeableConcept(coding=[_coding(SECURITY_ROLE, "authserver",
                                                     "authorization server")]),
                who=gateway_ref,
                requestor=False,
                policy=[f"{DUL_NAMESPACE}agreement:{_key(agreement_edge.target)}"]
                if agreement_edge else None,
            )
        )  # fmt: skip
    entities = [
        AuditEventEntity(
            what=_ref("access", _key(access.id)),
            type=_coding(ENTITY_TYPE, "2", "System Object"),
            detail=[
                _detail("tier", a["tier"]),
                _detail("operation", a["operation"]),
                _detail("fieldMask", a["field_mask"]),
                _detail("requestHash", a["request_hash"]),
                _detail("cohortRoot", a["cohort_root"]),
                _detail("cohortSize", a["cohort_size"]),
                _detail("requesterSignature", a["requester_signature"]),
                *_break_glass_details(a),
                *_chain_details(access.chain),
            ],
        )
    ]
    if agreement_edge is not None:
        entities.append(
            AuditEventEntity(
                what=_ref("agreement", _key(agreement_edge.target), type_="Contract"),
                type=_coding(ENTITY_TYPE, "2", "System Object"),
                description="the data-use agreement the decision was made under",
            )
        )
    if dataset_edge is not None:
        entities.append(
            AuditEventEntity(
                what=_ref("dataset", _key(dataset_edge.target)),
                type=_coding(ENTITY_TYPE, "2", "System Object"),
                description="the dataset accessed (data stays in the hospital)",
            )
        )
    member = related.get("cohort member")
    if member is not None:  # a subject's graph: the patient, by reference only
        entities.append(
            AuditEventEntity(
                what=_ref("subject", _key(member.target), type_="Patient"),
                type=_coding(ENTITY_TYPE, "1", "Person"),
                role=_coding(OBJECT_ROLE, "1", "Patient"),
                description="the patient, by subject reference, as a member of the cohort",
                detail=[
                    _detail("leafIndex", member.attributes.get("leaf_index")),
                    _detail("admittedBy", member.attributes.get("admitted_by")),
                ],
            )
        )
    return AuditEvent(
        id=_fhir_id(a["access_id"]),
        type=_coding(DCM, "110113", "Security Alert"),
        subtype=[_coding(BALP_AUTHZ_SUBTYPE, "AuthZ-Consent",
                         "Authorization Decision using Roles and Consent")],
        action="E",
        recorded=_instant(times.get(access.chain.block)),
        outcome="0" if granted else "8",
        outcomeDesc=None if granted else f"denied: {a['reason']}",
        purposeOfEvent=purpose or None,
        agent=agents or [AuditEventAgent(requestor=False, who=_ref("account", "unknown"))],
        source=AuditEventSource(
            observer=gateway_ref or _ref("contract", "AccessLog"),
            type=[_coding(SOURCE_TYPE, "6", "Security Server")],
        ),
        entity=entities,
    )  # fmt: skip


def _break_glass_details(a: Mapping[str, Any]) -> list[AuditEventEntityDetail]:
    """A break-glass access's reason, review deadline and review (nothing for others)."""
    if not a.get("break_glass_reason"):
        return []
    details = [_detail("breakGlassReason", a["break_glass_reason"]),
               _detail("breakGlassReview", a["break_glass_review"])]  # fmt: skip
    if a.get("break_glass_review_due") is not None:
        details.append(_detail("breakGlassReviewDue", _instant(a["break_glass_review_due"])))
    return details


def _organization_of(
    graph: Graph, out_edges: Mapping[str, list[Edge]], account_id: str
) -> Node | None:
    for edge in out_edges.get(account_id, []):
        if edge.relation == "actedOnBehalfOf":
            return graph.node(edge.target)
    return None


def _provenance(
    graph: Graph, edge: Edge, access: Node | None, times: Mapping[int, int | None]
) -> Provenance:
    """One released result: edge = result wasGeneratedBy access."""
    result = _key(edge.source)
    agents = [
        ProvenanceAgent(
            type=CodeableConcept(coding=[_coding(PROVENANCE_PARTICIPANT, "performer",
                                                 "Performer")]),
            who=_ref("account", str(edge.attributes.get("recorder", "unknown")),
                     "gateway", "Device"),
        )
    ]  # fmt: skip
    policy: list[str] = []
    if access is not None:
        for out in graph.edges:
            if out.source == access.id and out.attributes.get("role") == "agreement":
                policy.append(f"{DUL_NAMESPACE}agreement:{_key(out.target)}")
            if out.source == access.id and out.attributes.get("role") == "requester":
                agents.append(
                    ProvenanceAgent(
                        type=CodeableConcept(coding=[_coding(PROVENANCE_PARTICIPANT, "author",
                                                             "Author")]),
                        who=_ref("account", _key(out.target), "requester", "Device"),
                    )
                )  # fmt: skip
    return Provenance(
        id=_fhir_id(result)[:32] + f"-{edge.chain.block}-{edge.chain.log_index}",
        target=[_ref("result", result, str(edge.attributes.get("kind", "result")))],
        recorded=_instant(times.get(edge.chain.block)),
        policy=policy or None,
        activity=CodeableConcept(coding=[_coding(f"{DUL_NAMESPACE}release",
                                                 str(edge.attributes.get("kind")))]),
        agent=agents,
        entity=[
            ProvenanceEntity(
                role="source",
                what=_ref("access", _key(edge.target), f"block {edge.chain.block} tx "
                          f"{edge.chain.tx_hash} log {edge.chain.log_index}"),
            )
        ],
    )  # fmt: skip


def _derivation(
    node: Node, out_edges: Mapping[str, list[Edge]], times: Mapping[int, int | None]
) -> Provenance:
    """One registered artifact (ArtifactRegistry): what it was derived from (the parent
    artifacts and released results it names; a model update's own release is its release's
    Provenance), its owner organization as author, its registrant as enterer, and the
    agreements of the releases it names as policies."""
    assert node.chain is not None
    a = node.attributes
    key = _key(node.id)
    entities: list[ProvenanceEntity] = []
    policy: list[str] = []
    for edge in out_edges.get(node.id, []):
        if edge.relation != "wasDerivedFrom":
            continue
        target = _key(edge.target)
        agreement = edge.attributes.get("agreement_id")
        if edge.attributes.get("role") == "release":
            access = f"{edge.attributes.get('access_id')}@{agreement}"
            display = f"result released by access {access}"
            if agreement and f"{DUL_NAMESPACE}agreement:{agreement}" not in policy:
                policy.append(f"{DUL_NAMESPACE}agreement:{agreement}")
        else:
            display = "artifact"
        entities.append(ProvenanceEntity(role="derivation", what=_ref("artifact", target, display)))
    agents = [
        ProvenanceAgent(
            type=CodeableConcept(coding=[_coding(PROVENANCE_PARTICIPANT, "author", "Author")]),
            who=_ref("organization", str(a.get("owner_org")), str(a.get("owner")),
                     "Organization"),
        ),
        ProvenanceAgent(
            type=CodeableConcept(coding=[_coding(PROVENANCE_PARTICIPANT, "enterer", "Enterer")]),
            who=_ref("account", str(a.get("registrant")), "registrant", "Device"),
        ),
    ]  # fmt: skip
    chain = node.chain
    return Provenance(
        id=_fhir_id(key)[:32] + "-derivation",
        target=[_ref("artifact", key, str(a.get("kind", "artifact")))],
        recorded=_instant(times.get(chain.block)),
        policy=policy or None,
        activity=CodeableConcept(coding=[_coding(f"{DUL_NAMESPACE}derivation",
                                                 str(a.get("kind")))]),
        agent=agents,
        entity=entities or None,
        signature=None,
    )  # fmt: skip


def _source(node: Node, event: str) -> Reference | None:
    """The chain record of a consent or code: where anyone can check it."""
    if node.chain is None:
        return None
    chain = node.chain
    return Reference(
        identifier=Identifier(system=f"{DUL_NAMESPACE}tx", value=chain.tx_hash),
        display=f"{event} at block {chain.block}, tx {chain.tx_hash}, log {chain.log_index}",
    )


def _consent_resource(node: Node, times: Mapping[int, int | None]) -> Consent:
    """A consent node as a FHIR Consent."""
    a = node.attributes
    scenarios = [str(s) for s in a.get("scenarios", [])]
    scope = "research" if _RESEARCH_SCOPES & set(scenarios) else "patient-privacy"
    purposes = [_coding(DUO, str(code)) for code in a.get("duo_codes", [])]
    for scenario in scenarios:
        purposes.append(_coding(f"{DUL_NAMESPACE}scenario", scenario))
        if scenario in _PURPOSE:
            purposes.append(_coding(ACT_REASON, _PURPOSE[scenario]))
    # Specific consent: only these studies, for these recipients, of this disease.
    purposes += [_coding(f"{DUL_NAMESPACE}study", str(s)) for s in a.get("studies") or []]
    recipients = [
        ConsentProvisionActor(
            role=CodeableConcept(coding=[_coding(PARTICIPATION, "IRCP", "information recipient")]),
            reference=_ref("organization", str(org), type_="Organization"),
        )
        for org in a.get("requesters") or []
    ]
    disease = a.get("disease")
    return Consent(
        id=_fhir_id(str(a["consent_id"])),
        identifier=[Identifier(system=f"{DUL_NAMESPACE}consent", value=str(a["consent_id"]))],
        status="active" if a.get("status") == "GRANTED" else "inactive",
        scope=CodeableConcept(coding=[_coding(CONSENT_SCOPE, scope)]),
        category=[CodeableConcept(coding=[_coding(LOINC, "59284-0", "Patient Consent")])],
        patient=_ref("subject", str(a["subject_ref"]), type_="Patient"),
        dateTime=_instant(times.get(node.chain.block)) if node.chain else None,
        organization=[_ref("organization", str(a["holder_org"]), type_="Organization")],
        # Who agreed: the patient when they granted it with their own key.
        performer=[_ref("subject", str(a["subject_ref"]), type_="Patient")]
        if a.get("granted_by") == "patient"
        else [_ref("organization", str(a["holder_org"]), type_="Organization")],
        policyRule=CodeableConcept(coding=[_coding(ACT_CODE, "OPTIN", "opt-in")]),
        sourceReference=_source(node, "ConsentRecorded"),
        provision=ConsentProvision(
            type="permit",
            period=Period(start=_bound(a.get("valid_from")), end=_bound(a.get("valid_until"))),
            purpose=purposes or None,
            actor=recipients or None,
            code=[CodeableConcept(coding=[_coding(f"{DUL_NAMESPACE}disease", str(disease))])]
            if disease
            else None,
        ),
    )


def _authorization_uses(a: Mapping[str, Any]) -> list[str]:
    """The accesses that redeemed a code, oldest first (its history; else its last one), each
    named `id@agreement` as its AuditEvent's entity is (the bare id where the agreement is not
    known: a store without the access)."""
    uses = [_access_name(e.get("access_id"), e.get("agreement_id"))
            for e in a.get("history") or [] if e.get("event") == "redeemed"]  # fmt: skip
    last = _access_name(a.get("redeemed_by_access"), a.get("redeemed_by_agreement"))
    return [u for u in uses if u] or ([last] if last else [])


def _access_name(access_id: Any, agreement_id: Any) -> str:
    if not access_id:
        return ""
    return f"{access_id}@{agreement_id}" if agreement_id else str(access_id)


def _authorization_resource(node: Node, times: Mapping[int, int | None]) -> Consent:
    """An authorization code node as a FHIR Consent: disclosures to one grantee, once or (a
    multi-use code) for every fitting access until it expires.

    FHIR R4 Consent has no element for how often a permit may be used, so the provision carries
    two extensions: `urn:dul:authorization-use` (code `once` | `until-expiry`) and
    `urn:dul:authorization-uses` (how many accesses redeemed it); each use is a `related` data
    reference to its access."""
    a = node.attributes
    scenario = str(a.get("scenario"))
    purposes = [_coding(f"{DUL_NAMESPACE}scenario", scenario)]
    if scenario in _PURPOSE:
        purposes.insert(0, _coding(ACT_REASON, _PURPOSE[scenario]))
    uses = _authorization_uses(a)
    return Consent(
        id=_fhir_id(str(a["code_hash"])),
        identifier=[Identifier(system=f"{DUL_NAMESPACE}authorization", value=str(a["code_hash"]))],
        status="active" if a.get("status") == "ISSUED" else "inactive",
        scope=CodeableConcept(coding=[_coding(CONSENT_SCOPE, "patient-privacy")]),
        category=[CodeableConcept(coding=[_coding(LOINC, "59284-0", "Patient Consent")])],
        patient=_ref("subject", str(a["subject_ref"]), type_="Patient"),
        dateTime=_instant(times.get(node.chain.block)) if node.chain else None,
        organization=[_ref("organization", str(a["holder_org"]), type_="Organization")],
        # Who agreed: the patient when they signed the code with their own key.
        performer=[_ref("subject", str(a["subject_ref"]), type_="Patient")]
        if a.get("issued_by") == "patient"
        else [_ref("organization", str(a["holder_org"]), type_="Organization")],
        policyRule=CodeableConcept(coding=[_coding(ACT_CODE, "OPTIN", "opt-in")]),
        sourceReference=_source(node, "AuthorizationIssued"),
        provision=ConsentProvision(
            extension=[
                Extension(
                    url=f"{DUL_NAMESPACE}authorization-use",
                    valueCode="until-expiry" if a.get("multi_use") else "once",
                ),
                Extension(url=f"{DUL_NAMESPACE}authorization-uses", valueUnsignedInt=len(uses)),
            ],
            type="permit",
            period=Period(end=_bound(a.get("expires_at"))),
            actor=[
                ConsentProvisionActor(
                    role=CodeableConcept(
                        coding=[_coding(PARTICIPATION, "IRCP", "information recipient")]
                    ),
                    reference=_ref("organization", str(a["grantee_org"]), type_="Organization"),
                )
            ],
            purpose=purposes,
            data=[
                ConsentProvisionData(meaning="related", reference=_ref("access", use))
                for use in uses
            ]
            or None,
        ),
    )


def fhir_bundle(graph: Graph, times: Mapping[int, int | None]) -> Bundle:
    """A `collection` Bundle: an AuditEvent per access node, a Provenance per release edge, a
    Consent per consent and authorization-code node."""
    out_edges: dict[str, list[Edge]] = {}
    for edge in graph.edges:
        out_edges.setdefault(edge.source, []).append(edge)
    entries: list[BundleEntry] = []
    event_ids: set[str] = set()
    for node in graph.nodes:
        if node.type == "access":
            event = _audit_event(graph, node, out_edges, times)
            if event.id in event_ids:
                # A request id names one access per agreement: the second access of an id in
                # this bundle is named by the SHA-256 of `id@agreement` (a FHIR id holds 64).
                event.id = hashlib.sha256(_key(node.id).encode()).hexdigest()
            event_ids.add(str(event.id))
            entries.append(BundleEntry(fullUrl=f"urn:dul:auditevent:{event.id}", resource=event))
        elif node.type in ("artifact", "model") and node.attributes.get("registered"):
            derivation = _derivation(node, out_edges, times)
            entries.append(
                BundleEntry(fullUrl=f"urn:dul:provenance:{derivation.id}", resource=derivation)
            )
        elif node.type in ("consent", "authorization"):
            build = _consent_resource if node.type == "consent" else _authorization_resource
            consent = build(node, times)
            entries.append(
                BundleEntry(fullUrl=f"urn:dul:{node.type}:{consent.id}", resource=consent)
            )
    for edge in graph.edges:
        if edge.relation == "wasGeneratedBy":
            access = next((n for n in graph.nodes if n.id == edge.target), None)
            provenance = _provenance(graph, edge, access, times)
            entries.append(
                BundleEntry(fullUrl=f"urn:dul:provenance:{provenance.id}", resource=provenance)
            )
    return Bundle(
        type="collection",
        timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        identifier=Identifier(system=f"{DUL_NAMESPACE}provenance", value=graph.root),
        entry=entries,
    )


def fhir_json(graph: Graph, times: Mapping[int, int | None]) -> str:
    text_: str = fhir_bundle(graph, times).model_dump_json(exclude_none=True)
    return text_

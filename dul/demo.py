"""`dul demo`: the whole story of the trusted data space on the embedded stack.

Three hospitals, a research institute, an AI lab, an insurer and a regulator. Stewards draft and
sign agreements through their hospital's gateway; requesters sign every access request with their
own key; patients consent, and one withdraws between two queries; a patient's one-time code lets
the insurer see one claim's records, once; hospital A's emergency department breaks the glass on
an unconscious patient's records at hospital C, and hospital C's steward reviews it; the AI lab
trains a model across the three hospitals in two federated rounds. Then the regulator's view,
read from the audit service only: the model's provenance, the research agreement's compliance
report, the break-glass access and its review, and a clean verify.

Every step goes through the product's own interfaces (gateway REST, steward-signed transactions,
the requester's artifact registration); nothing is written to the chain behind their back.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from eth_hash.auto import keccak

from dul.artifacts import ReleaseRef, content_id, register_artifact
from dul.consent_terms import ConsentTerms, disease_code
from dul.contracts.ledger import Ledger, connect
from dul.contracts.typed_data import (
    AccessRequest,
    AgreementTerms,
    ConsentWithdrawal,
    PatientAuthorization,
    access_log_domain,
    consent_domain,
)
from dul.contracts.world import OMOP_FIELDS
from dul.domain import (
    ArtifactKind,
    BreakGlassOutcome,
    BreakGlassReason,
    ConsentPolicy,
    Operation,
    Scenario,
    Tier,
    break_glass_ref,
    consent_id,
    operations_mask,
    scenario_mask,
    slug_id,
)
from dul.errors import DulError
from dul.home import Home, write_private
from dul.keys import KeyStore
from dul.patient_tokens import PatientToken, patient_token_domain
from dul.signing import LocalSigner, Signer
from dul.stack import StackStatus, gateway_settings, patient_page_agreements, up
from dul.subjects import code_hash, load_subject_key, new_authorization_code, new_subject_key
from dul.subjects import subject_ref as make_subject_ref
from ledger_gateway.client import GatewayClient, sign_redemption, sign_request
from ledger_gateway.models import AccessOut
from ledger_gateway.relay import function
from ledger_gateway.steward_client import StewardClient, sign_steward_call
from ledger_gateway.tokens import TokenRole, TokenStore

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
PATIENTS = tuple(f"P-{n:04d}" for n in range(1, 13))
CONSENTING = PATIENTS[:10]  # P-0011 and P-0012 never consented
WITHDRAWING = "P-0003"
DISEASE_SPECIFIC = "P-0009"
STUDY_SPECIFIC = "P-0010"
DIABETES_T2 = "MONDO:0005148"
"""Type 2 diabetes mellitus (Mondo): the research study's disease term."""
CLAIMANT = "P-0005"
EMERGENCY_PATIENT = "C-0042"
"""Hospital C's patient, brought unconscious to hospital A's emergency department."""
MOVER = "P-0012"
"""Moves to hospital B and authorizes it, from hospital A's patient page, with a one-time code
(no research consent needed: the code is the patient's own say)."""
SHORT_WINDOW_S = 25
"""The short agreement's window: long enough for one grant, over before the story ends."""

Progress = Callable[[str], None]


class DemoError(DulError):
    """A step of the story did not turn out as the story says it must."""

    code = "demo_failed"


def _fields(*names: str) -> int:
    mask = 0
    for name in names:
        mask |= 1 << OMOP_FIELDS.index(name)
    return mask


RESEARCH_FIELDS = _fields(
    "person.year_of_birth",
    "person.gender_concept_id",
    "condition_occurrence.condition_concept_id",
    "condition_occurrence.condition_start_date",
)
TRAINING_FIELDS = _fields(
    "person.year_of_birth", "measurement.measurement_concept_id", "measurement.value_as_number"
)
CARE_FIELDS = _fields(
    "person.person_id",
    "person.year_of_birth",
    "condition_occurrence.condition_concept_id",
    "drug_exposure.drug_concept_id",
    "measurement.measurement_concept_id",
    "measurement.value_as_number",
)
EMERGENCY_FIELDS = _fields(
    "person.person_id",
    "condition_occurrence.condition_concept_id",
    "drug_exposure.drug_concept_id",
)
CLAIM_FIELDS = _fields(
    "person.person_id",
    "condition_occurrence.condition_concept_id",
    "condition_occurrence.condition_start_date",
    "drug_exposure.drug_concept_id",
)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def dataset_of(hospital: str) -> bytes:
    return slug_id(f"{hospital}/omop-cdm")


@dataclass
class Story:
    """The cast, their keys and clients, and the facts the story has established so far."""

    home: Home
    status: StackStatus
    ledger: Ledger
    keys: KeyStore
    say: Progress
    stewards: dict[str, StewardClient] = field(default_factory=dict)
    services: dict[str, GatewayClient] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def signer(self, name: str) -> Signer:
        return self.keys.unlock(name)

    # --- agreements -----------------------------------------------------------------------------

    def agreement(
        self,
        holder: str,
        requester: str,
        countersigner: str,
        *,
        scenario: Scenario,
        max_tier: Tier,
        operations: int,
        consent: ConsentPolicy,
        fields: int,
        quota: int,
        valid_for: int,
        duo: tuple[int, ...],
        title: str,
        break_glass_review_hours: int = 0,
        disease: str | None = None,
    ) -> bytes:
        """Drafted and submitted by the holder's steward, signed by both parties (EIP-712);
        `disease`: the study's disease term (a CURIE), signed with the terms."""
        now = int(time.time())
        terms = AgreementTerms(
            holder=slug_id(holder),
            requester=slug_id(requester),
            datasets=(dataset_of(holder),),
            field_masks=(fields,),
            scenario=scenario,
            max_tier=max_tier,
            operations=operations,
            valid_from=now - 60,
            valid_until=now + valid_for,
            quota=quota,
            consent_policy=consent,
            terms_hash=keccak(f"{title}: terms document v1".encode()),
            nonce=time.time_ns(),
            deadline=now + 3_600,
            duo_codes=duo,
            break_glass_review_hours=break_glass_review_hours,
            disease_code=bytes(32) if disease is None else disease_code(disease),
        )
        steward = self.signer(f"{holder}.steward")
        client = self.stewards[holder]
        data = function("AgreementRegistry", "propose").encode(terms.as_abi())
        address = self.ledger.deployment.address("AgreementRegistry")
        client.propose(sign_steward_call(self.ledger.w3, steward, address, data), wait=True)
        agreement = _hex(terms.agreement_id)
        client.sign_agreement(agreement, steward, wait=True)
        client.sign_agreement(agreement, self.signer(countersigner), wait=True)
        status = client.get_agreement(agreement).status
        if status != "ACTIVE":
            raise DemoError(f"agreement {title} is {status} after both signatures")
        self.say(
            f"agreement [bold]{title}[/]: {holder} ↔ {requester}, {scenario.name} up to "
            f"{max_tier.name}, quota {quota}, signed by {holder}.steward and {countersigner}"
        )
        self.facts.setdefault("agreements", {})[title] = agreement
        return terms.agreement_id

    # --- accesses -------------------------------------------------------------------------------

    def request(
        self,
        step: str,
        hospital: str,
        requester: str,
        agreement: bytes,
        *,
        fields: int,
        tier: Tier,
        operation: Operation = Operation.QUERY,
        query: str,
        cohort: list[bytes] | None = None,
        code: str | None = None,
        break_glass: BreakGlassReason | None = None,
        expect: str,
    ) -> AccessOut:
        """One access request signed by the requester, decided by the hospital's gateway and
        waited for until it is on chain. `break_glass`: an emergency access without a code,
        for this reason (the requester signs it)."""
        ref = bytes(32)
        if code:
            ref = code_hash(code)
        elif break_glass is not None:
            ref = break_glass_ref(break_glass)
        request = AccessRequest(
            request_id=keccak(uuid.uuid4().bytes),
            agreement_id=agreement,
            dataset_id=dataset_of(hospital),
            field_mask=fields,
            tier=tier,
            operation=operation,
            request_hash=keccak(query.encode()),
            deadline=int(time.time()) + 600,
            authorization_ref=ref,
        )
        domain = access_log_domain(
            self.ledger.chain_id, self.ledger.deployment.address("AccessLog")
        )
        signer = self.signer(requester)
        client = self.services[hospital]
        if code is None:
            answer = client.request_access(
                sign_request(signer, request, domain, cohort=cohort), wait=True
            )
        else:
            answer = client.redeem(sign_redemption(signer, request, domain, code), wait=True)
        if answer.decision != expect or answer.status != "confirmed":
            raise DemoError(
                f"{step}: expected {expect} on chain, got {answer.decision} ({answer.status}, "
                f"{answer.reasons}, {answer.error})"
            )
        why = ", ".join(answer.reasons)
        if answer.authorization_fault:
            why += f" ({answer.authorization_fault})"
        admitted = answer.cohort.size if answer.cohort else None
        cohort_note = ""
        if cohort is not None and answer.cohort is not None and answer.decision == "GRANTED":
            cohort_note = f", cohort {answer.cohort.size} of {len(cohort)} admitted"
        mark = "[green]GRANTED[/]" if answer.decision == "GRANTED" else f"[red]DENIED[/] {why}"
        self.say(f"{step}: {mark}{cohort_note}  (block {answer.block_number})")
        self.facts.setdefault("accesses", []).append(
            {
                "step": step,
                "hospital": hospital,
                "access_id": answer.access_id,
                "decision": answer.decision,
                "reasons": answer.reasons,
                "authorization_fault": answer.authorization_fault,
                "admitted": admitted,
                "block": answer.block_number,
            }
        )
        return answer

    def release(self, hospital: str, access: AccessOut, payload: bytes, kind: str) -> bytes:
        result = content_id(payload)
        answer = self.services[hospital].release_result(
            access.access_id, result, kind, len(payload), wait=True
        )
        if answer.status != "confirmed":
            raise DemoError(f"release from {access.access_id} is {answer.status}: {answer.error}")
        return result


def _subject_key(home: Home, hospital: str) -> bytes:
    path = home.root / "keys" / f"{hospital}.subject-key"
    return load_subject_key(path) if path.exists() else new_subject_key(path)


def _tokens(home: Home, status: StackStatus) -> tuple[dict[str, str], dict[str, str]]:
    """Fresh steward and access-service tokens for every hospital gateway of the story."""
    stewards: dict[str, str] = {}
    services: dict[str, str] = {}
    suffix = secrets.token_hex(3)
    for hospital in HOSPITALS:
        if hospital not in status.gateway_urls:
            raise DemoError(f"no gateway runs for {hospital}; is its gateway key in DUL_HOME?")
        tokens = TokenStore(gateway_settings(home, hospital).tokens_path)
        stewards[hospital] = tokens.create(f"demo-steward-{suffix}", hospital, TokenRole.STEWARD)
        services[hospital] = tokens.create(
            f"demo-service-{suffix}", hospital, TokenRole.ACCESS_SERVICE
        )
    return stewards, services


def kept_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts as `demo.json` keeps them: without the patients' one-time codes (shown once on
    the way out, written nowhere)."""
    kept = dict(facts)
    for step in ("authorization", "transfer"):
        if step in facts:
            kept[step] = {k: v for k, v in facts[step].items() if k != "code"}
    return kept


def told(home: Home) -> bool:
    """Whether the story was told in this data directory (its facts are kept there)."""
    return (home.root / "demo.json").exists()


def tell(home: Home, say: Progress) -> dict[str, Any]:
    """Bring the stack up with the sample data space and tell the story; return its facts.

    A data directory holds one telling (its patients consent once): told before, the stack is
    brought up again and the regulator's view of the recorded story is read afresh."""
    started = time.monotonic()
    status = up(home, demo=True)
    assert status.chain.rpc_url is not None
    assert status.audit_url is not None
    if told(home):
        facts: dict[str, Any] = json.loads((home.root / "demo.json").read_text())
        say(
            "the story was told before in this data directory: the regulator's view of it "
            "follows (`dul down && rm -r $DUL_HOME` to tell it anew)"
        )
        facts["regulator"] = regulator_view(status.audit_url, facts, say, status.regulator_token)
        facts["regulator_token"] = status.regulator_token
        return facts
    ledger = Ledger(connect(status.chain.rpc_url), status.deployment)
    say(
        f"stack up: chain {status.chain.rpc_url}, gateways "
        f"{', '.join(status.gateway_urls.values())}, audit {status.audit_url}"
    )
    story = Story(home, status, ledger, KeyStore(home), say)
    steward_tokens, service_tokens = _tokens(home, status)
    for hospital in HOSPITALS:
        url = status.gateway_urls[hospital]
        story.stewards[hospital] = StewardClient(url, steward_tokens[hospital])
        story.services[hospital] = GatewayClient(url, service_tokens[hospital])
    try:
        _research(story)
        _insurance(story)
        _transfer(story)
        _break_glass(story)
        _federated(story)
        _expired(story)
        story.facts["regulator"] = regulator_view(
            status.audit_url, story.facts, say, status.regulator_token
        )
    finally:
        for client in (*story.stewards.values(), *story.services.values()):
            client.close()
    story.facts["urls"] = {
        "rpc_url": status.chain.rpc_url,
        "gateway_urls": status.gateway_urls,
        "audit_url": status.audit_url,
        "patient_url": status.patient_url,
    }
    story.facts["seconds"] = round(time.monotonic() - started, 1)
    write_private(home.root / "demo.json", json.dumps(kept_facts(story.facts), indent=2) + "\n")
    if status.access_token:  # shown once, never kept in the data directory
        story.facts["access_token"] = status.access_token
    story.facts["regulator_token"] = status.regulator_token  # likewise
    return story.facts


def _research(story: Story) -> None:
    say = story.say
    research = story.agreement(
        "hospital-a",
        "institute",
        "institute.steward",
        scenario=Scenario.RESEARCH,
        max_tier=Tier.PSEUDONYMIZED,
        operations=operations_mask(Operation.QUERY),
        consent=ConsentPolicy.COHORT_CONSENT,
        fields=RESEARCH_FIELDS,
        quota=3,
        valid_for=90 * 86_400,
        duo=(7, 46),  # disease-specific (type 2 diabetes), non-commercial
        disease=DIABETES_T2,
        title="research",
    )
    short = story.agreement(
        "hospital-b",
        "institute",
        "institute.requester",
        scenario=Scenario.RESEARCH,
        max_tier=Tier.DEIDENTIFIED,
        operations=operations_mask(Operation.QUERY),
        consent=ConsentPolicy.NONE,
        fields=RESEARCH_FIELDS,
        quota=10,
        valid_for=SHORT_WINDOW_S,
        duo=(42, 25),
        title="short-research",
    )
    story.facts["short_until"] = int(time.time()) + SHORT_WINDOW_S

    # Patients consent at hospital A; their pseudonyms become subject references under the
    # hospital's secret key here, on the steward's machine, and go nowhere else.
    key = _subject_key(story.home, "hospital-a")
    refs = {p: make_subject_ref(key, p) for p in PATIENTS}
    patient_key = LocalSigner(secrets.token_bytes(32))  # the withdrawing patient's own wallet
    holder = slug_id("hospital-a")
    general = ConsentTerms(
        holder=holder,
        subject=bytes(32),
        scenarios=scenario_mask(Scenario.RESEARCH),
        valid_until=int(time.time()) + 365 * 86_400,
        duo_codes=(42,),
    )
    # Specific consent: one patient consents to type 2 diabetes research only, another to this
    # study of the institute only; both are in this study's cohort.
    scopes = {
        DISEASE_SPECIFIC: replace(general, duo_codes=(7,), disease_code=disease_code(DIABETES_T2)),
        STUDY_SPECIFIC: replace(general, studies=(research,), requesters=(slug_id("institute"),)),
    }
    terms = [
        replace(
            scopes.get(p, general),
            subject=refs[p],
            subject_key=patient_key.address if p == WITHDRAWING else "0x" + "00" * 20,
        ).as_abi()
        for p in CONSENTING
    ]
    steward = story.signer("hospital-a.steward")
    registry = story.ledger.deployment.address("ConsentRegistry")
    data = function("ConsentRegistry", "recordConsents").encode(terms)
    raw = sign_steward_call(story.ledger.w3, steward, registry, data)
    story.stewards["hospital-a"].record_consents(raw, wait=True)
    say(
        f"consents: {len(CONSENTING)} of {len(PATIENTS)} patients consent to research at "
        f"hospital-a ({DISEASE_SPECIFIC}: {DIABETES_T2} research only; {STUDY_SPECIFIC}: this "
        "study only)"
    )

    cohort = [refs[p] for p in PATIENTS]

    def ask(step: str, query: str, expect: str, **scope: Any) -> AccessOut:
        """The institute's query at hospital A naming all twelve patients."""
        wanted = {"fields": RESEARCH_FIELDS, "tier": Tier.PSEUDONYMIZED, **scope}
        return story.request(
            step,
            "hospital-a",
            "institute.requester",
            research,
            query=query,
            cohort=cohort,
            expect=expect,
            **wanted,
        )

    query = "SELECT gender, count(*) FROM condition_occurrence WHERE condition = 'T2D' GROUP BY 1"
    first = ask("research query 1", query, "GRANTED")
    story.release("hospital-a", first, b"gender,count\nF,412\nM,398\n", "AGGREGATE_RESULT")

    # The patient withdraws with their own key; the hospital's gateway relays the signature.
    withdrawn = consent_id(holder, refs[WITHDRAWING], 0)
    deadline = int(time.time()) + 600
    signature = ConsentWithdrawal(withdrawn, deadline).sign(
        patient_key, consent_domain(story.ledger.chain_id, registry)
    )
    story.stewards["hospital-a"].relay_patient_withdrawal(
        refs[WITHDRAWING], withdrawn, deadline, signature, wait=True
    )
    say(f"consent withdrawn by patient {WITHDRAWING} (own signature), effective at once")
    story.facts["withdrawal"] = {"subject": _hex(refs[WITHDRAWING]), "consent_id": _hex(withdrawn)}

    second = ask("research query 2 (after the withdrawal)", query + " -- rerun", "GRANTED")
    if second.cohort is None or first.cohort is None or second.cohort.size != first.cohort.size - 1:
        raise DemoError("the withdrawn patient is still in the second query's cohort")
    ask(
        "research query out of scope (drug exposure)",
        "SELECT drug, count(*) FROM drug_exposure GROUP BY 1",
        "DENIED",
        fields=RESEARCH_FIELDS | _fields("drug_exposure.drug_concept_id"),
    )
    ask(
        "research query over tier (IDENTIFIED)",
        "SELECT * FROM person",
        "DENIED",
        tier=Tier.IDENTIFIED,
    )
    ask(
        "research query 3",
        "SELECT year_of_birth / 10, count(*) FROM person GROUP BY 1",
        "GRANTED",
        tier=Tier.DEIDENTIFIED,
    )
    ask(
        "research query over quota (4th of 3)",
        "SELECT count(*) FROM person",
        "DENIED",
        tier=Tier.DEIDENTIFIED,
    )
    story.request(
        "short agreement query (inside its window)",
        "hospital-b",
        "institute.requester",
        short,
        fields=RESEARCH_FIELDS,
        tier=Tier.DEIDENTIFIED,
        query="SELECT count(*) FROM condition_occurrence",
        expect="GRANTED",
    )
    story.facts["short_agreement"] = _hex(short)


def _insurance(story: Story) -> None:
    claims = story.agreement(
        "hospital-a",
        "insurer",
        "insurer.steward",
        scenario=Scenario.INSURANCE_CLAIM,
        max_tier=Tier.IDENTIFIED,
        operations=operations_mask(Operation.QUERY),
        consent=ConsentPolicy.PATIENT_AUTHORIZATION,
        fields=CLAIM_FIELDS,
        quota=100,
        valid_for=365 * 86_400,
        duo=(),
        title="insurance-claims",
    )
    key = _subject_key(story.home, "hospital-a")
    subject = make_subject_ref(key, CLAIMANT)
    code = new_authorization_code()  # shown to the patient once; the chain sees its hash
    authorization = (
        slug_id("hospital-a"),
        subject,
        slug_id("insurer"),
        dataset_of("hospital-a"),
        CLAIM_FIELDS,
        Tier.IDENTIFIED,
        Scenario.INSURANCE_CLAIM,
        0,
        int(time.time()) + 7 * 86_400,
        False,  # one use
        bytes(32),
    )
    data = function("ConsentRegistry", "issueAuthorization").encode(code_hash(code), authorization)
    registry = story.ledger.deployment.address("ConsentRegistry")
    steward = story.signer("hospital-a.steward")
    story.stewards["hospital-a"].issue_authorization(
        sign_steward_call(story.ledger.w3, steward, registry, data), wait=True
    )
    story.say(
        f"one-time code issued for patient {CLAIMANT} to the insurer (only its hash on chain)"
    )
    redeemed = story.request(
        "insurer claim with the patient's code",
        "hospital-a",
        "insurer.requester",
        claims,
        fields=CLAIM_FIELDS,
        tier=Tier.IDENTIFIED,
        query="claim 2026-118 supporting records",
        code=code,
        expect="GRANTED",
    )
    reuse = story.request(
        "insurer reuses the same code",
        "hospital-a",
        "insurer.requester",
        claims,
        fields=CLAIM_FIELDS,
        tier=Tier.IDENTIFIED,
        query="claim 2026-118 supporting records, again",
        code=code,
        expect="DENIED",
    )
    story.facts["authorization"] = {
        "code": code,  # spent now; the patient was shown it once, the chain never
        "code_hash": _hex(code_hash(code)),
        "subject": _hex(subject),
        "redeemed_by": redeemed.access_id,
        "reuse": reuse.access_id,
        "reuse_fault": reuse.authorization_fault,
    }


def _transfer(story: Story) -> None:
    """A patient moves to hospital B. Hospital A registers the patient's own key; the patient,
    signed in on A's patient page with a token A's steward signed, gives B a one-time code
    there — the page's own API calls, the Authorization signed with the patient's key —, and
    B's clinical system opens the patient's records at A once with it."""
    transfer = story.agreement(
        "hospital-a",
        "hospital-b",
        "hospital-b.steward",
        scenario=Scenario.CLINICAL_CARE,
        max_tier=Tier.IDENTIFIED,
        operations=operations_mask(Operation.QUERY),
        consent=ConsentPolicy.PATIENT_AUTHORIZATION,
        fields=CARE_FIELDS,
        quota=1_000,
        valid_for=365 * 86_400,
        duo=(43,),
        title="transfer-care",
    )
    page_url = story.status.patient_url
    if page_url is None:
        raise DemoError("hospital-a's patient page is not running (dul up starts it)")
    offered = patient_page_agreements(story.home)
    listed = json.loads(offered.read_text()) if offered.exists() else []
    write_private(offered, json.dumps([*listed, _hex(transfer)]) + "\n")

    holder = slug_id("hospital-a")
    subject = make_subject_ref(_subject_key(story.home, "hospital-a"), MOVER)
    wallet = LocalSigner(secrets.token_bytes(32))  # the patient's own key, in their browser
    steward = story.signer("hospital-a.steward")
    registry = story.ledger.deployment.address("ConsentRegistry")
    data = function("ConsentRegistry", "registerSubjectKey").encode(holder, subject, wallet.address)
    story.stewards["hospital-a"].register_subject_key(
        subject, sign_steward_call(story.ledger.w3, steward, registry, data), wait=True
    )
    domain = patient_token_domain(
        story.ledger.chain_id, story.ledger.deployment.address("Membership")
    )
    now = int(time.time())
    token = PatientToken(subject, holder, now, now + 900).signed(steward, domain).encode()
    story.say(f"patient {MOVER} moves to hospital-b; hospital-a registers the patient's own key")

    with httpx.Client(
        base_url=page_url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as page:
        session = page.get("/api/session")
        if session.status_code != 200:
            raise DemoError(f"the patient page refused the sign-in: {session.text[:300]}")
        signed_in = session.json()
        offer = next((o for o in signed_in["offers"] if o["agreement_id"] == _hex(transfer)), None)
        if offer is None or offer["grantee"] != "hospital-b":
            raise DemoError(f"the patient page does not offer the transfer: {signed_in['offers']}")
        code = new_authorization_code()  # drawn in the patient's browser; the chain sees its hash
        expires = int(time.time()) + 7 * 86_400
        signature = PatientAuthorization(
            code_hash=code_hash(code),
            holder=holder,
            subject=subject,
            grantee=bytes.fromhex(offer["grantee_id"][2:]),
            dataset=bytes.fromhex(offer["dataset_id"][2:]),
            field_mask=int(offer["field_mask"]),
            tier=Tier(offer["tier_value"]),
            scenario=Scenario(offer["scenario_value"]),
            expires_at=expires,
        ).sign(wallet, consent_domain(signed_in["chain_id"], signed_in["consent_registry"]))
        issued = page.post(
            "/api/codes",
            json={
                "agreement_id": offer["agreement_id"],
                "dataset_id": offer["dataset_id"],
                "code_hash": _hex(code_hash(code)),
                "expires_at": expires,
                "signature": _hex(signature),
            },
        )
        if issued.status_code != 200 or issued.json().get("status") != "confirmed":
            raise DemoError(f"the patient page did not record the code: {issued.text[:300]}")
        qr = page.post("/api/qr", json={"code": code})
        if qr.status_code != 200 or not qr.text.lstrip().startswith("<svg"):
            raise DemoError(f"the patient page drew no QR code: {qr.text[:200]}")
    story.say(
        f"patient {MOVER} gives hospital-b a one-time code on hospital-a's patient page "
        "(signed with the patient's key; shown once, with its QR code)"
    )
    redeemed = story.request(
        "hospital-b opens the moved patient's records with the code",
        "hospital-a",
        "hospital-b.requester",
        transfer,
        fields=CARE_FIELDS,
        tier=Tier.IDENTIFIED,
        query="transfer of care: problem list, medication, recent labs",
        code=code,
        expect="GRANTED",
    )
    reuse = story.request(
        "hospital-b reuses the transfer code",
        "hospital-a",
        "hospital-b.requester",
        transfer,
        fields=CARE_FIELDS,
        tier=Tier.IDENTIFIED,
        query="transfer of care, again",
        code=code,
        expect="DENIED",
    )
    story.facts["transfer"] = {
        "code": code,  # spent; kept in memory for the output only, never in demo.json
        "code_hash": _hex(code_hash(code)),
        "subject": _hex(subject),
        "agreement": _hex(transfer),
        "patient_key": wallet.address,
        "patient_url": page_url,
        "redeemed_by": redeemed.access_id,
        "reuse": reuse.access_id,
        "reuse_fault": reuse.authorization_fault,
    }


def _break_glass(story: Story) -> None:
    """An emergency at hospital C: its patient arrives unconscious at hospital A, whose
    clinicians may see hospital C's records only with the patient's code — or, under the
    agreement's break-glass term, without one, flagged for hospital C's review."""
    care = story.agreement(
        "hospital-c",
        "hospital-a",
        "hospital-a.steward",
        scenario=Scenario.CLINICAL_CARE,
        max_tier=Tier.IDENTIFIED,
        operations=operations_mask(Operation.QUERY),
        consent=ConsentPolicy.PATIENT_AUTHORIZATION,
        fields=EMERGENCY_FIELDS,
        quota=50,
        valid_for=365 * 86_400,
        duo=(43,),
        title="emergency-care",
        break_glass_review_hours=24,
    )
    patient = make_subject_ref(_subject_key(story.home, "hospital-c"), EMERGENCY_PATIENT)

    def ask(step: str, expect: str, reason: BreakGlassReason | None = None) -> AccessOut:
        return story.request(
            step, "hospital-c", "hospital-a.clinician", care, fields=EMERGENCY_FIELDS,
            tier=Tier.IDENTIFIED, query="allergies, conditions and medication of the patient",
            cohort=[patient], break_glass=reason, expect=expect,
        )  # fmt: skip

    denied = ask("hospital A's emergency department without the patient's code", "DENIED")
    reason = BreakGlassReason.PATIENT_INCAPACITATED
    access = ask("break-glass: the patient is unconscious", "GRANTED", reason)
    key = bytes.fromhex(access.access_id[2:])
    due = int(story.ledger.call("AccessLog", "breakGlassOf", key, care)[0])
    story.say(
        f"break-glass access flagged on chain ({reason.name}); hospital C must review it by "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(due))}"
    )
    finding = "Patient unconscious on arrival at hospital A; allergy check before surgery."
    data = function("AccessLog", "reviewBreakGlass").encode(
        key, care, int(BreakGlassOutcome.UPHELD), keccak(finding.encode())
    )
    address = story.ledger.deployment.address("AccessLog")
    raw = sign_steward_call(story.ledger.w3, story.signer("hospital-c.steward"), address, data)
    story.stewards["hospital-c"].review_break_glass(access.access_id, raw, wait=True)
    outcome = BreakGlassOutcome(story.ledger.call("AccessLog", "breakGlassOf", key, care)[1])
    if outcome != BreakGlassOutcome.UPHELD:
        raise DemoError(f"the break-glass review is {outcome.name} on chain, not UPHELD")
    story.say("hospital C's steward reviewed the break-glass access: [bold]UPHELD[/]")
    story.facts["break_glass"] = {
        "agreement": _hex(care),
        "denied": denied.access_id,
        "access_id": access.access_id,
        "reason": reason.name,
        "review_due": due,
        "outcome": outcome.name,
        "finding_hash": _hex(keccak(finding.encode())),
    }


def _federated(story: Story) -> None:
    agreements = {
        hospital: story.agreement(
            hospital,
            "ai-lab",
            "ai-lab.requester",
            scenario=Scenario.AI_TRAINING,
            max_tier=Tier.MODEL_PARAMETERS,
            operations=operations_mask(Operation.TRAIN),
            consent=ConsentPolicy.NONE,
            fields=TRAINING_FIELDS,
            quota=10,
            valid_for=30 * 86_400,
            duo=(42, 46),
            title=f"training-{hospital}",
        )
        for hospital in HOSPITALS
    }
    lab = story.signer("ai-lab.requester")
    models: list[str] = []
    previous: bytes | None = None
    for round_ in (1, 2):
        updates: list[bytes] = []
        for hospital in HOSPITALS:
            access = story.request(
                f"round {round_} training at {hospital}",
                hospital,
                "ai-lab.requester",
                agreements[hospital],
                fields=TRAINING_FIELDS,
                tier=Tier.MODEL_PARAMETERS,
                operation=Operation.TRAIN,
                query=f"federated round {round_}: logistic regression, 5 local epochs",
                expect="GRANTED",
            )
            update = story.release(
                hospital, access, f"round {round_} update from {hospital}".encode(), "MODEL_UPDATE"
            )
            release = ReleaseRef(bytes.fromhex(access.access_id[2:]), agreements[hospital], update)
            register_artifact(story.ledger, lab, update, ArtifactKind.MODEL_UPDATE, [release], [])
            updates.append(update)
        model = content_id(f"model v{round_}: weights after round {round_}".encode())
        parents = updates + ([previous] if previous else [])
        register_artifact(story.ledger, lab, model, ArtifactKind.MODEL, [], parents)
        story.say(
            f"model v{round_} registered by ai-lab, derived from {len(updates)} updates"
            + (" and model v1" if previous else "")
        )
        models.append(_hex(model))
        previous = model
    story.facts["models"] = models


def _expired(story: Story) -> None:
    remaining = story.facts["short_until"] + 2 - time.time()
    if remaining > 0:
        time.sleep(remaining)
    story.request(
        "short agreement query (after its window)",
        "hospital-b",
        "institute.requester",
        bytes.fromhex(story.facts["short_agreement"][2:]),
        fields=RESEARCH_FIELDS,
        tier=Tier.DEIDENTIFIED,
        query="SELECT count(*) FROM condition_occurrence -- late",
        expect="DENIED",
    )


def regulator_view(
    audit_url: str, facts: dict[str, Any], say: Progress, token: str | None
) -> dict[str, Any]:
    """What the regulator sees, from the audit service alone (signed in with the sample
    regulator's token), once it has indexed the story."""
    model = facts["models"][-1]
    last_block = max(a["block"] or 0 for a in facts["accesses"])
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=audit_url, timeout=60, headers=headers) as audit:
        deadline = time.monotonic() + 120
        while True:
            verify = audit.get("/v1/verify")
            checked = verify.json().get("checkpoint_block") or 0
            graph = audit.get(f"/v1/provenance/artifact/{model}", params={"direction": "up"})
            if graph.status_code == 200 and int(checked) >= last_block:
                break
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the audit service has not indexed the story (block {checked} of "
                    f"{last_block}; provenance answered {graph.status_code})"
                )
            time.sleep(0.5)
        provenance = graph.json()
        report = audit.get(f"/v1/reports/agreements/{facts['agreements']['research']}").json()
        emergency = None
        if "emergency-care" in facts.get("agreements", {}):
            emergency = audit.get(
                f"/v1/reports/agreements/{facts['agreements']['emergency-care']}"
            ).json()
        verify_body = audit.get("/v1/verify").json()
    types: dict[str, int] = {}
    for node in provenance["nodes"]:
        types[node["type"]] = types.get(node["type"], 0) + 1
    say(
        f"regulator: provenance of model v2 has {len(provenance['nodes'])} nodes "
        f"({', '.join(f'{n} {t}' for t, n in sorted(types.items()))})"
    )
    view = {"provenance": provenance, "report": report, "verify": verify_body, "node_types": types}
    if emergency is not None:
        states = ", ".join(f"{n} {k}" for k, n in emergency.get("break_glass_by_state", {}).items())
        say(f"regulator: emergency-care agreement's break-glass accesses: {states or 'none'}")
        view["emergency_report"] = emergency
    return view

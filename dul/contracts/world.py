"""Build a small data space on a fresh deployment: organizations, members, a dataset.

Shared by the tests, `dul bench` and the demo so that each does not grow its own set-up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_hash.auto import keccak

from dul.contracts.ledger import Ledger
from dul.contracts.typed_data import (
    AccessRecord,
    AccessRequest,
    AgreementTerms,
    access_log_domain,
    agreement_domain,
)
from dul.domain import (
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
from dul.signing import LocalSigner, Signer

OMOP_FIELDS = (
    "person.person_id",
    "person.year_of_birth",
    "person.gender_concept_id",
    "condition_occurrence.condition_concept_id",
    "condition_occurrence.condition_start_date",
    "measurement.measurement_concept_id",
    "measurement.value_as_number",
    "drug_exposure.drug_concept_id",
)


def derived_signer(seed: str) -> LocalSigner:
    """A deterministic key for tests and benchmarks (never for real data)."""
    return LocalSigner(keccak(f"dul world {seed}".encode()))


@dataclass
class World:
    """One hospital with a gateway, a research institute, a regulator and one OMOP dataset."""

    ledger: Ledger
    operator: Signer
    hospital: bytes = slug_id("hospital-a")
    institute: bytes = slug_id("institute")
    regulator_org: bytes = slug_id("regulator")
    dataset: bytes = slug_id("hospital-a/omop-cdm")
    steward: Signer = field(default_factory=lambda: derived_signer("steward"))
    gateway: Signer = field(default_factory=lambda: derived_signer("gateway"))
    partner_steward: Signer = field(default_factory=lambda: derived_signer("partner-steward"))
    requester: Signer = field(default_factory=lambda: derived_signer("requester"))
    regulator: Signer = field(default_factory=lambda: derived_signer("regulator"))

    def build(self) -> World:
        tx = self.ledger.transact
        m = "Membership"
        tx(self.operator, m, "registerOrganization", self.hospital, OrgKind.HOSPITAL, "Hospital A")
        tx(self.operator, m, "registerOrganization", self.institute, OrgKind.RESEARCH, "Institute")
        tx(
            self.operator,
            m,
            "registerOrganization",
            self.regulator_org,
            OrgKind.REGULATOR,
            "Regulator",
        )
        for org, signer, role in (
            (self.hospital, self.steward, Role.STEWARD),
            (self.hospital, self.gateway, Role.GATEWAY),
            (self.institute, self.partner_steward, Role.STEWARD),
            (self.institute, self.requester, Role.REQUESTER),
            (self.regulator_org, self.regulator, Role.REGULATOR),
        ):
            tx(self.operator, m, "grantMemberRole", org, signer.address, role)
        tx(
            self.steward,
            "DatasetRegistry",
            "registerDataset",
            self.dataset,
            self.hospital,
            keccak(b"OMOP CDM 5.4"),
            list(OMOP_FIELDS),
            Tier.PSEUDONYMIZED,
        )
        return self

    def research_terms(self, *, nonce: int | None = None, quota: int = 1_000_000) -> AgreementTerms:
        now = int(time.time())
        return AgreementTerms(
            holder=self.hospital,
            requester=self.institute,
            datasets=(self.dataset,),
            field_masks=(0b0001_1110,),
            scenario=Scenario.RESEARCH,
            max_tier=Tier.DEIDENTIFIED,
            operations=operations_mask(Operation.QUERY, Operation.EXPORT_RESULT),
            valid_from=now - 60,
            valid_until=now + 86_400,
            quota=quota,
            consent_policy=ConsentPolicy.NONE,
            terms_hash=keccak(b"research agreement terms v1"),
            nonce=time.time_ns() if nonce is None else nonce,
            deadline=now + 3_600,
            duo_codes=(42, 46),
        )

    def activate(self, terms: AgreementTerms) -> bytes:
        """Propose, sign by both parties (keys never leave this process), return the id."""
        self.ledger.transact(self.steward, "AgreementRegistry", "propose", terms.as_abi())
        domain = agreement_domain(
            self.ledger.chain_id, self.ledger.deployment.address("AgreementRegistry")
        )
        digest = terms.digest(domain)
        for signer in (self.steward, self.partner_steward):
            self.ledger.transact(
                signer,
                "AgreementRegistry",
                "sign",
                terms.agreement_id,
                signer.address,
                signer.sign_digest(digest),
            )
        return terms.agreement_id

    def access_record(
        self,
        agreement: bytes,
        decision: Decision = Decision.GRANTED,
        reason: DenyReason = DenyReason.NONE,
        **overrides: Any,
    ) -> AccessRecord:
        """A record of a fresh request signed by `requester`: a de-identified count query on
        fields 1-2, with a 42-subject cohort when granted. `overrides` replace request fields."""
        values: dict[str, Any] = {
            "request_id": keccak(uuid.uuid4().bytes),
            "agreement_id": agreement,
            "dataset_id": self.dataset,
            "field_mask": 0b0110,
            "tier": Tier.DEIDENTIFIED,
            "operation": Operation.QUERY,
            "request_hash": keccak(b"SELECT count(*) FROM condition_occurrence"),
            "deadline": int(time.time()) + 600,
        }
        values.update(overrides)
        request = AccessRequest(**values)
        access_log = self.ledger.deployment.address("AccessLog")
        domain = access_log_domain(self.ledger.chain_id, access_log)
        granted = decision == Decision.GRANTED
        return AccessRecord(
            request,
            self.requester.address,
            request.sign(self.requester, domain),
            decision,
            reason,
            cohort_root=keccak(b"cohort") if granted else bytes(32),
            cohort_size=42 if granted else 0,
        )

    # --- patients (consents and authorization codes) -------------------------------------------

    def cohort_terms(self, *, quota: int = 1_000_000) -> AgreementTerms:
        """Research terms above de-identified: the chain requires COHORT_CONSENT for them."""
        return replace(
            self.research_terms(quota=quota),
            max_tier=Tier.PSEUDONYMIZED,
            consent_policy=ConsentPolicy.COHORT_CONSENT,
        )

    def record_consents(
        self,
        subjects: Sequence[bytes],
        scenarios: Sequence[Scenario] = (Scenario.RESEARCH,),
        *,
        valid_until: int | None = None,
        subject_key: str | None = None,
        duo_codes: Sequence[int] = (42,),
        disease: bytes = bytes(32),
        studies: Sequence[bytes] = (),
        requesters: Sequence[bytes] = (),
    ) -> list[bytes]:
        """Record one consent per subject at the hospital, signed by its steward (in batches
        of 64); the new consent ids, in order. `studies`, `requesters` and `disease` make it
        a specific consent (`dul.consent_terms`)."""
        from dul.consent_terms import ConsentTerms, ascending

        mask = 0
        for scenario in scenarios:
            mask |= 1 << scenario
        until = valid_until or int(time.time()) + 86_400 * 365
        key = subject_key or "0x" + "00" * 20
        ids: list[bytes] = []
        events = self.ledger.contract("ConsentRegistry").events.ConsentRecorded()
        for offset in range(0, len(subjects), 64):
            terms = [
                ConsentTerms(
                    holder=self.hospital, subject=s, scenarios=mask, valid_until=until,
                    duo_codes=tuple(duo_codes), subject_key=key, disease_code=disease,
                    studies=ascending(studies, "study"),
                    requesters=ascending(requesters, "requester"),
                ).as_abi()
                for s in subjects[offset : offset + 64]
            ]  # fmt: skip
            receipt = self.ledger.transact(self.steward, "ConsentRegistry", "recordConsents", terms)
            ids += [bytes(e["args"]["consentId"]) for e in events.process_receipt(receipt)]
        return ids

    def issue_authorization(
        self,
        code_hash: bytes,
        subject: bytes,
        grantee: bytes,
        *,
        dataset: bytes | None = None,
        field_mask: int = 0b1111,
        tier: Tier = Tier.PSEUDONYMIZED,
        expires_at: int | None = None,
        scenario: Scenario = Scenario.INSURANCE_CLAIM,
        multi_use: bool = False,
    ) -> None:
        """Issue an authorization code (by its hash; an INSURANCE_CLAIM one unless `scenario`
        says otherwise; single-use unless `multi_use`), signed by the steward."""
        authorization = (
            self.hospital,
            subject,
            grantee,
            dataset or self.dataset,
            field_mask,
            tier,
            scenario,
            0,
            expires_at or int(time.time()) + 86_400,
            multi_use,
            bytes(32),
        )
        self.ledger.transact(
            self.steward, "ConsentRegistry", "issueAuthorization", code_hash, authorization
        )

    # --- artifacts (federated training) --------------------------------------------------------

    def training_terms(self, *, quota: int = 1_000_000) -> AgreementTerms:
        """AI-training terms with the institute: only trained parameters leave (MODEL_PARAMETERS,
        TRAIN only), so each access may release MODEL_UPDATEs and nothing else."""
        return replace(
            self.research_terms(quota=quota),
            scenario=Scenario.AI_TRAINING,
            max_tier=Tier.MODEL_PARAMETERS,
            operations=operations_mask(Operation.TRAIN),
            consent_policy=ConsentPolicy.NONE,
        )

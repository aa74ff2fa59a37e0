"""Steward and patient flows of the consent registry, through the gateway.

- **consents** — a steward records consents (`recordConsent` / `recordConsents`) and
  withdraws them (`withdrawConsent`) with transactions signed on the steward's machine; the
  gateway checks each is the call its path names, simulates it from the steward's address (a
  refusal — unknown holder, not a steward, overlapping or back-dated consent — answers with the
  contract's custom error as `code`, and nothing is sent) and relays the bytes.
- **patient grants** — a patient's EIP-712 `ConsentGrant` of a consent's terms, signed by the
  key the holder registered for the subject, is simulated from the gateway's address and
  relayed as an outbox CALL of `recordConsentBySubject`, like a withdrawal; the consent's event
  says the patient granted it (`bySubject`). It is in force once mined (the next decision's
  `sync()` reads it).
- **patient withdrawals** — a patient's EIP-712 `ConsentWithdrawal` signature (by the key
  recorded with the consent) is simulated from the gateway's own address, so a forged or expired
  signature is refused before anything is stored, then queued as an outbox CALL of
  `withdrawConsentBySubject`, sent with the gateway's key exactly once.
- **authorization codes** — `issueAuthorization` / `revokeAuthorization` transactions signed by
  the steward (the steward's CLI makes the code and sends only its hash).
- **patient-held authorization** — the patient's own EIP-712 `Authorization` (or
  `AuthorizationRevocation`) signed by the key the holder registered for the subject is
  simulated from the gateway's address and relayed as an outbox CALL of
  `issueAuthorizationBySubject` (`revokeAuthorizationBySubject`), exactly like a withdrawal; a
  steward registers or rotates that key with a signed `registerSubjectKey`.

A withdrawal the gateway relays is in force for the next decision at once, before it is mined
(`ConsentView.mark_withdrawn`); one relayed by anyone else is honoured as soon as it is mined.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal, TypedDict

import structlog
from eth_hash.auto import keccak
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from dul.chain.rpc import RpcError
from dul.consent_terms import ConsentTerms, ScopeError, disease_code, disease_term
from dul.contracts import bindings
from dul.contracts.typed_data import PatientAuthorization
from dul.domain import ConsentStatus, Scenario, Tier, slug_of
from ledger_gateway.callers import Caller
from ledger_gateway.consent_policy import judged_at
from ledger_gateway.consents import ConsentView
from ledger_gateway.errors import BadRequestError, UnavailableError
from ledger_gateway.models import Address, Hex32, Signature, TierName
from ledger_gateway.outbox import NewCall, OperationStatus, OperationView, Outbox
from ledger_gateway.relay import Call, RelayError, function
from ledger_gateway.steward import (
    SignedTransactionIn,
    StewardService,
    TransactionOut,
    _reverted,
    steward_of,
)

log = structlog.get_logger(__name__)

WITHDRAW_BY_SUBJECT = function("ConsentRegistry", "withdrawConsentBySubject")
WITHDRAW_GAS_MIN = 150_000
GRANT_BY_SUBJECT = function("ConsentRegistry", "recordConsentBySubject")
GRANT_GAS_MIN = 250_000
ISSUE_BY_SUBJECT = function("ConsentRegistry", "issueAuthorizationBySubject")
REVOKE_BY_SUBJECT = function("ConsentRegistry", "revokeAuthorizationBySubject")
ISSUE_GAS_MIN = 300_000
REVOKE_GAS_MIN = 120_000
_AUTHORIZATION = bindings.function("ConsentRegistry", "authorization")
ScenarioName = Annotated[
    str, StringConstraints(pattern="^(" + "|".join(s.name for s in Scenario) + ")$")
]
_CONSENT = bindings.function("ConsentRegistry", "consent")


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _b32(value: str) -> bytes:
    return bytes.fromhex(value[2:])


# --------------------------------------------------------------------------- API models


class WithdrawalIn(BaseModel):
    """Either a steward-signed `withdrawConsent(consentId)` transaction, or the patient's own
    EIP-712 `ConsentWithdrawal(consentId, deadline)` signature, which the gateway relays."""

    model_config = ConfigDict(extra="forbid")

    signed_transaction: str | None = Field(
        None,
        pattern=r"^0x(?:[0-9a-fA-F]{2})+$",
        max_length=2 + 2 * 128 * 1024,
        description="a steward's signed withdrawConsent transaction",
    )
    consent_id: Hex32 | None = Field(None, description="the consent the patient withdraws")
    deadline: int | None = Field(None, ge=0, lt=2**64, description="the signature's deadline")
    signature: Signature | None = Field(None, description="the patient's EIP-712 signature")

    @model_validator(mode="after")
    def _one_form(self) -> WithdrawalIn:
        patient = (self.consent_id, self.deadline, self.signature)
        if self.signed_transaction is not None:
            if any(v is not None for v in patient):
                raise ValueError(
                    "give either signed_transaction or consent_id, deadline and signature"
                )
        elif any(v is None for v in patient):
            raise ValueError(
                "give signed_transaction (steward) or consent_id, deadline and signature (patient)"
            )
        return self


class ConsentGrantIn(BaseModel):
    """A consent the patient granted in their own wallet: EIP-712 `ConsentGrant(consentId,
    holder, subject, scenarios, duoCodes, validFrom, validUntil, subjectKey, diseaseCode,
    studies, requesters, deadline)` in the ConsentRegistry's domain, by the key the holder
    registered for the subject. The holder is this gateway's organization; `consent_id` is the
    subject's next consent id (`ConsentRegistry.nextConsentId`)."""

    model_config = ConfigDict(extra="forbid")

    consent_id: Hex32 = Field(description="the id the consent gets: the subject's next")
    subject: Hex32 = Field(description="the subject reference")
    scenarios: list[ScenarioName] = Field(min_length=1, max_length=5)
    duo_codes: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(default=[], max_length=16)
    valid_from: int = Field(0, ge=0, lt=2**64, description="unix time; 0: from the recording")
    valid_until: int = Field(ge=1, lt=2**64, description="unix time")
    subject_key: Address | None = Field(
        None, description="the consent's key: the signing key, or null (the same)"
    )
    disease: str | None = Field(None, max_length=32, description="a CURIE, with DUO:0000007")
    studies: list[Hex32] = Field(default=[], max_length=16, description="agreement ids")
    requesters: list[Hex32] = Field(default=[], max_length=16, description="organization ids")
    deadline: int = Field(ge=0, lt=2**64, description="the signature's deadline")
    signature: Signature = Field(description="the patient's EIP-712 signature")

    def terms(self, holder: bytes) -> ConsentTerms:
        """The signed terms, checked against the registry's scope rules (ScopeError)."""
        mask = 0
        for name in self.scenarios:
            mask |= 1 << Scenario[name]
        return ConsentTerms(
            holder=holder,
            subject=_b32(self.subject),
            scenarios=mask,
            valid_until=self.valid_until,
            duo_codes=tuple(self.duo_codes),
            valid_from=self.valid_from,
            subject_key=self.subject_key or "0x" + "00" * 20,
            disease_code=disease_code(self.disease) if self.disease else bytes(32),
            studies=tuple(_b32(s) for s in self.studies),
            requesters=tuple(_b32(r) for r in self.requesters),
        ).check()


class _Relayed(TypedDict):
    status: Literal["pending", "submitted", "confirmed", "failed"]
    tx_hash: str | None
    block_number: int | None
    operation_id: str
    sender: str
    error: str | None


class ConsentGrantOut(BaseModel):
    """A patient's grant relayed with the gateway's key (an outbox CALL operation); in force
    for the gateway's decisions once mined."""

    consent_id: str
    subject: str
    by: Literal["subject"] = "subject"
    status: Literal["pending", "submitted", "confirmed", "failed"]
    tx_hash: str | None = None
    block_number: int | None = None
    operation_id: str
    sender: str
    error: str | None = None


class WithdrawalOut(BaseModel):
    """A withdrawal relayed: in force for the gateway's decisions from now on."""

    consent_id: str
    subject: str
    by: Literal["steward", "subject"]
    status: Literal["pending", "submitted", "confirmed", "failed"]
    tx_hash: str | None = None
    block_number: int | None = None
    operation_id: str | None = None
    """The outbox operation relaying a patient's signature (the gateway's own transaction)."""
    sender: str | None = None
    error: str | None = None


class PatientAuthorizationIn(BaseModel):
    """An authorization code the patient signed in their own wallet: EIP-712 `Authorization`
    (codeHash, holder, subject, grantee, dataset, fieldMask, tier, scenario, expiresAt,
    multiUse) in the ConsentRegistry's domain, by the key the holder registered for the
    subject. The holder is this gateway's organization; only the code's hash travels."""

    model_config = ConfigDict(extra="forbid")

    code_hash: Hex32 = Field(description="keccak256 of the code's canonical form")
    subject: Hex32 = Field(description="the subject reference")
    grantee: Hex32 = Field(description="the organization id the patient authorizes")
    dataset_id: Hex32
    field_mask: int = Field(ge=1, lt=2**256, description="bit set of the fields it opens")
    tier: TierName
    scenario: ScenarioName
    expires_at: int = Field(ge=0, lt=2**64, description="unix time; also the signature's deadline")
    multi_use: bool = Field(
        False, description="true: every fitting access until expires_at; false: one access"
    )
    signature: Signature = Field(description="the patient's EIP-712 signature")

    def authorization(self, holder: bytes) -> PatientAuthorization:
        return PatientAuthorization(
            code_hash=_b32(self.code_hash),
            holder=holder,
            subject=_b32(self.subject),
            grantee=_b32(self.grantee),
            dataset=_b32(self.dataset_id),
            field_mask=self.field_mask,
            tier=Tier[self.tier],
            scenario=Scenario[self.scenario],
            expires_at=self.expires_at,
            multi_use=self.multi_use,
        )


class PatientRevocationIn(BaseModel):
    """The patient's EIP-712 `AuthorizationRevocation(codeHash, deadline)` signature."""

    model_config = ConfigDict(extra="forbid")

    deadline: int = Field(ge=0, lt=2**64, description="the signature's deadline")
    signature: Signature = Field(description="the patient's EIP-712 signature")


class PatientCallOut(BaseModel):
    """A patient's signature relayed with the gateway's key (an outbox CALL operation)."""

    code_hash: str
    action: Literal["issue", "revoke"]
    by: Literal["subject"] = "subject"
    status: Literal["pending", "submitted", "confirmed", "failed"]
    tx_hash: str | None = None
    block_number: int | None = None
    operation_id: str
    sender: str
    error: str | None = None


class ConsentOut(BaseModel):
    """One consent as recorded on chain and its status now. `studies`, `requesters` and
    `disease` make it specific: it admits its subject only to the named studies (agreement
    ids), of the named requesting organizations, whose agreement carries exactly the disease
    term (an ontology CURIE) — each empty or null when the consent does not limit it."""

    consent_id: str
    holder: str
    subject: str
    scenarios: list[str]
    duo_codes: list[str]
    studies: list[str] = Field(description="agreement ids (0x hex); empty: any study")
    requesters: list[str] = Field(description="requesting organizations; empty: any")
    disease: str | None = Field(
        description="disease term of a disease-specific consent (DUO:0000007), e.g. "
        "MONDO:0007254; null: none"
    )
    status: Literal["GRANTED", "WITHDRAWN"]
    granted_by: Literal["steward", "subject"] = Field(
        "steward", description="subject: the patient granted it with their own key"
    )
    withdrawal_pending: bool
    """Withdrawn through this gateway; the transaction is not mined yet (already in force)."""
    valid_from: int
    valid_until: int
    subject_key: str | None
    in_force: bool
    """Granted and inside its window now."""


class ConsentsOut(BaseModel):
    subject: str
    holder: str
    consents: list[ConsentOut]
    block_number: int
    """The block the gateway's consent view is up to."""


# --------------------------------------------------------------------------- the service


class ConsentService:
    """Consent and authorization-code flows of one gateway (its holder organization)."""

    def __init__(self, steward: StewardService, view: ConsentView, outbox: Outbox) -> None:
        self.steward = steward
        self.view = view
        self.outbox = outbox
        self.registry = steward.deployment.address("ConsentRegistry")

    async def _stored_consent(self, consent_id: bytes) -> tuple[bytes, bytes, ConsentStatus]:
        """(holder, subject, status) of a consent as the chain has it now."""
        raw = await self.steward.rpc.call(self.registry, _CONSENT.encode(consent_id))
        holder, subject, _, status, *_ = _CONSENT.decode_output(raw)[0]
        return bytes(holder), bytes(subject), ConsentStatus(status)

    async def _check_owner(self, consent_id: bytes, subject: bytes, caller: Caller) -> None:
        """The consent must be `subject`'s at this gateway's holder, which is the caller's
        organization (unknown ones are left to the chain, which names them)."""
        holder, owner, status = await self._stored_consent(consent_id)
        if status == ConsentStatus.NONE:
            return
        caller.require_holder([holder], f"consent {_hex(consent_id)}")
        if holder != self.steward.org or owner != subject:
            raise RelayError(
                f"consent {_hex(consent_id)} is not subject {_hex(subject)}'s at "
                f"{slug_of(self.steward.org)}",
                code="wrong_transaction",
            )

    # --- consents ----------------------------------------------------------------------------

    async def record(
        self, body: SignedTransactionIn, caller: Caller, *, wait: bool
    ) -> TransactionOut:
        expected = self.steward.expect_consent(("recordConsent", "recordConsents"))
        return await self.steward.relay(body, expected, caller, wait=wait)

    async def grant_by_subject(
        self, body: ConsentGrantIn, caller: Caller, *, wait: bool
    ) -> ConsentGrantOut:
        """Relay the patient's signed `ConsentGrant` of a consent at this gateway's holder."""
        caller.require_holder([self.steward.org], "the consents this gateway keeps")
        try:
            terms = body.terms(self.steward.org)
        except ScopeError as exc:
            raise BadRequestError(str(exc)) from None
        consent_id = _b32(body.consent_id)
        data = GRANT_BY_SUBJECT.encode(
            consent_id, terms.as_abi(), body.deadline, _b32(body.signature)
        )

        def queued() -> None:
            log.info("consents.granted", consent=_hex(consent_id), by="subject")

        stored = await self._relay_subject_call(
            "recordConsentBySubject",
            data,
            f"the patient's grant of consent {_hex(consent_id)}",
            GRANT_GAS_MIN,
            queued,
        )
        view = await self._settle(stored, wait)
        return ConsentGrantOut(
            consent_id=_hex(consent_id),
            subject=body.subject.lower(),
            **self._relayed(view),
        )

    async def withdraw(
        self, subject: bytes, body: WithdrawalIn, caller: Caller, *, wait: bool
    ) -> WithdrawalOut:
        if body.signed_transaction is not None:
            return await self._withdraw_by_steward(
                subject, body.signed_transaction, caller, wait=wait
            )
        assert body.consent_id is not None
        assert body.deadline is not None
        assert body.signature is not None
        return await self._withdraw_by_subject(
            subject, _b32(body.consent_id), body.deadline, _b32(body.signature), caller, wait=wait
        )

    async def _withdraw_by_steward(
        self, subject: bytes, signed_transaction: str, caller: Caller, *, wait: bool
    ) -> WithdrawalOut:
        async def guard(call: Call) -> None:
            await self._check_owner(call.args["consentId"], subject, caller)

        def sent(call: Call) -> None:
            self.view.mark_withdrawn(call.args["consentId"])

        answer = await self.steward.relay(
            SignedTransactionIn(signed_transaction=signed_transaction),
            self.steward.expect_consent(("withdrawConsent",)),
            caller,
            wait=wait,
            guard=guard,
            sent=sent,
        )
        consent_id = (answer.consent_ids or [""])[0]
        log.info("consents.withdrawn", consent=consent_id, by="steward", tx=answer.tx_hash)
        return WithdrawalOut(
            consent_id=consent_id,
            subject=_hex(subject),
            by="steward",
            status=answer.status,
            tx_hash=answer.tx_hash,
            block_number=answer.block_number,
            sender=answer.sender,
        )

    async def _withdraw_by_subject(
        self,
        subject: bytes,
        consent_id: bytes,
        deadline: int,
        signature: bytes,
        caller: Caller,
        *,
        wait: bool,
    ) -> WithdrawalOut:
        data = WITHDRAW_BY_SUBJECT.encode(consent_id, deadline, signature)
        await self._check_owner(consent_id, subject, caller)  # a replay too: whose is it

        def queued() -> None:
            log.info("consents.withdrawn", consent=_hex(consent_id), by="subject")

        stored = await self._relay_subject_call(
            "withdrawConsentBySubject",
            data,
            f"the withdrawal of consent {_hex(consent_id)}",
            WITHDRAW_GAS_MIN,
            queued,
        )
        self.view.mark_withdrawn(consent_id)
        stored = await self._settle(stored, wait)
        return self._subject_out(consent_id, subject, stored)

    async def _relay_subject_call(
        self, name: str, data: bytes, what: str, gas_min: int, queued: Callable[[], None]
    ) -> OperationView:
        """Queue a patient-signed ConsentRegistry call for the gateway's key, once: keyed by its
        bytes, so the same signature relayed again is the same operation. Simulated first, so a
        forged, expired or refused signature answers with the contract's error and nothing is
        stored."""
        key = keccak(f"ConsentRegistry.{name}".encode() + data[4:])
        stored = await self.outbox.get(key)
        if stored is not None:
            return stored
        try:
            gas = await self.steward.rpc.estimate_gas(
                self.registry, data, sender=self.steward.relayer
            )
        except RpcError as exc:
            raise _reverted(exc, what) from None
        accepted = await self.outbox.add_call(
            NewCall(
                key=key,
                body_hash=hashlib.sha256(_b32(self.registry) + data).digest(),
                org=self.steward.org,
                agreement_id=bytes(32),
                target=_b32(self.registry),
                gas=max(gas_min, gas * 3 // 2),
                data=data,
            )
        )
        queued()
        return accepted.view

    async def _settle(self, stored: OperationView, wait: bool) -> OperationView:
        if wait and stored.status not in (OperationStatus.CONFIRMED, OperationStatus.FAILED):
            return await self.outbox.wait(stored.key, self.steward.wait_timeout_s) or stored
        return stored

    def _relayed(self, view: OperationView) -> _Relayed:
        """Where a call the gateway relayed with its own key stands (the answer's common part)."""
        return {
            "status": view.status.value,
            "tx_hash": None if view.tx_hash is None else _hex(view.tx_hash),
            "block_number": view.block_number,
            "operation_id": _hex(view.key),
            "sender": self.steward.relayer,
            "error": view.error,
        }

    def _subject_out(self, consent_id: bytes, subject: bytes, view: OperationView) -> WithdrawalOut:
        return WithdrawalOut(
            consent_id=_hex(consent_id),
            subject=_hex(subject),
            by="subject",
            **self._relayed(view),
        )

    async def consents_of(self, subject: bytes, now: int, caller: Caller) -> ConsentsOut:
        caller.require_holder([self.steward.org], "the consents this gateway keeps")
        await self.view.sync()
        now = judged_at(now, self.view.head_time)  # as decisions judge them
        out = []
        for c in self.view.consents_of(subject):
            pending = c.consent_id in self.view.withdrawn_pending
            granted = c.status == ConsentStatus.GRANTED
            out.append(
                ConsentOut(
                    consent_id=_hex(c.consent_id),
                    holder=slug_of(c.holder),
                    subject=_hex(c.subject),
                    scenarios=[s.name for s in Scenario if c.scenarios >> s & 1],
                    duo_codes=[f"DUO:{code:07d}" for code in c.duo_codes],
                    studies=[_hex(s) for s in sorted(c.studies)],
                    requesters=[slug_of(r) for r in sorted(c.requesters)],
                    disease=disease_term(c.disease),
                    status="GRANTED" if granted else "WITHDRAWN",
                    granted_by="subject" if c.by_subject else "steward",
                    withdrawal_pending=pending,
                    valid_from=c.valid_from,
                    valid_until=c.valid_until,
                    subject_key=c.subject_key,
                    in_force=granted and c.valid_from <= now <= c.valid_until,
                )
            )
        return ConsentsOut(
            subject=_hex(subject),
            holder=slug_of(self.steward.org),
            consents=out,
            block_number=self.view.last_block,
        )

    # --- authorization codes -----------------------------------------------------------------

    async def issue(
        self, body: SignedTransactionIn, caller: Caller, *, wait: bool
    ) -> TransactionOut:
        expected = self.steward.expect_consent(("issueAuthorization",))
        return await self.steward.relay(body, expected, caller, wait=wait)

    async def revoke(
        self, code_hash: bytes, body: SignedTransactionIn, caller: Caller, *, wait: bool
    ) -> TransactionOut:
        expected = self.steward.expect_consent(("revokeAuthorization",), "codeHash", code_hash)
        return await self.steward.relay(body, expected, caller, wait=wait)

    # --- patient-held authorization ----------------------------------------------------------

    async def issue_by_subject(
        self, body: PatientAuthorizationIn, caller: Caller, *, wait: bool
    ) -> PatientCallOut:
        """Relay the patient's signed `Authorization` for a code of this gateway's holder."""
        caller.require_holder([self.steward.org], "authorization codes of this holder")
        authorization = body.authorization(self.steward.org)
        data = ISSUE_BY_SUBJECT.encode(
            authorization.code_hash, authorization.as_abi(), _b32(body.signature)
        )
        code = authorization.code_hash

        def queued() -> None:
            log.info("authorizations.issued", code_hash=_hex(code), by="subject")

        stored = await self._relay_subject_call(
            "issueAuthorizationBySubject",
            data,
            f"the patient's authorization {_hex(code)}",
            ISSUE_GAS_MIN,
            queued,
        )
        return self._patient_out(code, "issue", await self._settle(stored, wait))

    async def revoke_by_subject(
        self, code_hash: bytes, body: PatientRevocationIn, caller: Caller, *, wait: bool
    ) -> PatientCallOut:
        """Relay the patient's signed `AuthorizationRevocation` of one of their codes here."""
        raw = await self.steward.rpc.call(self.registry, _AUTHORIZATION.encode(code_hash))
        holder = raw[:32]
        # An unknown code is left to the chain, which names it; another holder's is not ours.
        caller.require_holder(
            [self.steward.org] if holder in (b"", bytes(32)) else [holder],
            f"authorization {_hex(code_hash)}",
        )
        data = REVOKE_BY_SUBJECT.encode(code_hash, body.deadline, _b32(body.signature))

        def queued() -> None:
            log.info("authorizations.revoked", code_hash=_hex(code_hash), by="subject")

        stored = await self._relay_subject_call(
            "revokeAuthorizationBySubject",
            data,
            f"the patient's revocation of {_hex(code_hash)}",
            REVOKE_GAS_MIN,
            queued,
        )
        return self._patient_out(code_hash, "revoke", await self._settle(stored, wait))

    def _patient_out(
        self, code_hash: bytes, action: Literal["issue", "revoke"], view: OperationView
    ) -> PatientCallOut:
        return PatientCallOut(
            code_hash=_hex(code_hash),
            action=action,
            **self._relayed(view),
        )

    async def register_key(
        self, subject: bytes, body: SignedTransactionIn, caller: Caller, *, wait: bool
    ) -> TransactionOut:
        """Relay a steward-signed `registerSubjectKey` for this subject (register, rotate,
        or remove with the zero key)."""
        expected = self.steward.expect_consent(("registerSubjectKey",), "subject", subject)
        return await self.steward.relay(body, expected, caller, wait=wait)


def hex32(value: str, what: str) -> bytes:
    if len(value) != 66 or not value.startswith("0x"):
        raise BadRequestError(f"{value!r} is not a 0x-prefixed 32-byte {what}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise BadRequestError(f"{value!r} is not a 0x-prefixed 32-byte {what}") from None


# --------------------------------------------------------------------------- wiring


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Builds the consent service beside the steward service (runs after its lifespan)."""
    context = app.state.context
    view = context.access.consents
    if view is not None:
        app.state.consent_flows = ConsentService(steward_of(app), view, context.outbox)
    yield


def consent_flows_of(app: FastAPI) -> ConsentService:
    service = getattr(app.state, "consent_flows", None)
    if not isinstance(service, ConsentService):
        raise UnavailableError(
            "this ledger has no consent registry deployed", code="consents_unavailable"
        )
    return service

"""API input and output models (the API never returns a table class)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from dul.domain import Decision, DenyReason, Operation, ReleaseKind, Tier

Hex32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Signature = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]
ZERO_HEX32 = "0x" + "00" * 32


MAX_COHORT = 100_000
"""Most subject references one access request may name (and one batch, all requests together)."""

TierName = Annotated[str, StringConstraints(pattern="^(" + "|".join(t.name for t in Tier) + ")$")]
OperationName = Annotated[
    str, StringConstraints(pattern="^(" + "|".join(o.name for o in Operation) + ")$")
]


class SignedRequestIn(BaseModel):
    """The fields of an access request the requester signs (EIP-712 `AccessRequest`)."""

    model_config = ConfigDict(extra="forbid")

    request_id: Hex32 = Field(description="idempotency key; also the access id on chain")
    agreement_id: Hex32
    dataset_id: Hex32
    field_mask: int = Field(ge=1, lt=2**256, description="bit set of requested field indices")
    tier: TierName
    operation: OperationName
    request_hash: Hex32 = Field(description="hash of the query or algorithm to run")
    deadline: int = Field(ge=0, lt=2**64, description="unix time the signature is valid until")
    authorization_ref: Hex32 = Field(
        ZERO_HEX32, description="keccak256 of a patient's authorization code (redemptions)"
    )
    requester: Address
    signature: Signature


class AccessRequestIn(SignedRequestIn):
    """An access request signed by the requester's own key, with the cohort it would use."""

    cohort: list[Hex32] | None = Field(
        None,
        max_length=MAX_COHORT,
        description=(
            "subject references (hospital-keyed hashes of pseudonyms) the access would include; "
            "required under COHORT_CONSENT agreements, where the gateway keeps only subjects "
            "whose consent covers the agreement's scenario now. The gateway records the Merkle "
            "root and size of the admitted subjects; duplicates count once."
        ),
    )


class RedeemIn(SignedRequestIn):
    """An access under a PATIENT_AUTHORIZATION agreement, with the patient's one-time code.

    `authorization_ref` must be keccak256 of the code (what the requester signed); the code
    itself proves the patient handed it over and is never stored or logged."""

    code: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[0-9A-Za-z\- ]+$",
        description="the authorization code as the patient wrote it (case and dashes forgiven)",
        repr=False,
    )


FieldName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
FieldIndex = Annotated[int, Field(ge=0, lt=256)]


class AccessDraftIn(BaseModel):
    """An access request before it is signed: the gateway answers the EIP-712 JSON
    (eth_signTypedData_v4) the requester signs; the signed request then goes to
    `POST /v1/access-requests` with the message's fields, `requester` and `signature`."""

    model_config = ConfigDict(extra="forbid")

    request_id: Hex32 | None = Field(None, description="default: 32 random bytes")
    agreement_id: Hex32
    dataset_id: Hex32
    fields: list[FieldName | FieldIndex] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="requested fields by name (as the dataset registered them) or index",
    )
    field_mask: int | None = Field(
        None, ge=1, lt=2**256, description="instead of `fields`: the bit set of field indices"
    )
    tier: TierName
    operation: OperationName
    request_hash: Hex32 = Field(ZERO_HEX32, description="hash of the query or algorithm to run")
    deadline: int | None = Field(
        None, ge=0, lt=2**64, description="unix time the signature is valid until (default: +300 s)"
    )
    authorization_ref: Hex32 = Field(
        ZERO_HEX32, description="keccak256 of a patient's authorization code (redemptions)"
    )

    @model_validator(mode="after")
    def _one_field_selection(self) -> AccessDraftIn:
        if (self.fields is None) == (self.field_mask is None):
            raise ValueError("give exactly one of fields and field_mask")
        return self


class AccessBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[AccessRequestIn] = Field(min_length=1)


class CohortOut(BaseModel):
    """The cohort an access recorded: run the access over `admitted` and nobody else."""

    root: str | None
    """RFC 9162 Merkle root of the admitted subjects, as recorded on chain (None: no cohort)."""
    size: int
    admitted: list[str]
    """The admitted subject references, ascending (the tree's leaf order)."""
    excluded: int | None = None
    """Named subjects left out: no consent covering the agreement now, or the access was denied
    (None when the named cohort is not known, e.g. to a later GET)."""


class AccessOut(BaseModel):
    access_id: str
    decision: Literal["GRANTED", "DENIED"]
    reasons: list[str]
    status: Literal["pending", "submitted", "confirmed", "failed"]
    tx_hash: str | None = None
    block_number: int | None = None
    error: str | None = None
    cohort: CohortOut | None = None
    authorization_fault: str | None = None
    """For redemptions: why the code could not be redeemed (an AuthorizationFault name)."""


class AccessBatchOut(BaseModel):
    results: list[AccessOut]


class ResultReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    result_hash: Hex32
    kind: Annotated[
        str, StringConstraints(pattern="^(" + "|".join(k.name for k in ReleaseKind) + ")$")
    ]
    size: int = Field(ge=0, lt=2**64, description="bytes that left the hospital")


class ReleaseOut(BaseModel):
    release_id: str
    access_id: str
    status: Literal["pending", "submitted", "confirmed", "failed"]
    tx_hash: str | None = None
    block_number: int | None = None
    error: str | None = None


def decision_name(decision: Decision | None) -> Literal["GRANTED", "DENIED"]:
    return "GRANTED" if decision == Decision.GRANTED else "DENIED"


def reason_names(reasons: tuple[DenyReason, ...]) -> list[str]:
    return [r.name for r in reasons]

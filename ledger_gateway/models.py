"""API input and output models (the API never returns a table class)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dul.domain import Decision, DenyReason, Operation, ReleaseKind, Tier

Hex32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Signature = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]
ZERO_HEX32 = "0x" + "00" * 32


class AccessRequestIn(BaseModel):
    """An access request signed by the requester's own key (EIP-712 `AccessRequest`)."""

    model_config = ConfigDict(extra="forbid")

    request_id: Hex32 = Field(description="idempotency key; also the access id on chain")
    agreement_id: Hex32
    dataset_id: Hex32
    field_mask: int = Field(ge=1, lt=2**256, description="bit set of requested field indices")
    tier: Annotated[str, StringConstraints(pattern="^(" + "|".join(t.name for t in Tier) + ")$")]
    operation: Annotated[
        str, StringConstraints(pattern="^(" + "|".join(o.name for o in Operation) + ")$")
    ]
    request_hash: Hex32 = Field(description="hash of the query or algorithm to run")
    deadline: int = Field(ge=0, lt=2**64, description="unix time the signature is valid until")
    authorization_ref: Hex32 = ZERO_HEX32
    cohort_root: Hex32 = Field(ZERO_HEX32, description="Merkle root of the admitted subjects")
    cohort_size: int = Field(0, ge=0, lt=2**32)
    requester: Address
    signature: Signature


class AccessBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[AccessRequestIn] = Field(min_length=1)


class AccessOut(BaseModel):
    access_id: str
    decision: Literal["GRANTED", "DENIED"]
    reasons: list[str]
    status: Literal["pending", "submitted", "confirmed", "failed"]
    tx_hash: str | None = None
    block_number: int | None = None
    error: str | None = None


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

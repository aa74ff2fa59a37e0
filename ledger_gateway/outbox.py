"""The outbox's contract with the rest of the gateway.

A decision is durable (written to the outbox) before the access service gets its answer; the
submitter then records it on chain exactly once. Operations states follow FireFly:
PENDING (written, not yet in a transaction) -> SUBMITTED (in a signed transaction with a nonce)
-> CONFIRMED (mined, block and tx hash known) | FAILED (the chain refused it; `error` says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

from dul.domain import Decision, DenyReason


class OperationStatus(StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"


class OperationKind(StrEnum):
    ACCESS = "access"
    RELEASE = "release"
    CALL = "call"
    """Any other contract call the gateway relays with its own key (e.g. a steward's
    agreement signature): `payload` is `call_payload(target, gas, data)`."""


@dataclass(frozen=True)
class CohortLeaves:
    """The cohort an access recorded: its tree head and its leaves' subject references.

    Stored in `cohort_leaves` in the same transaction as the access, so an acknowledged
    decision never lacks its leaves (the audit service reads them to answer patients)."""

    root: bytes
    size: int
    subjects: bytes
    """The distinct subject references, ascending, 32 bytes each, back to back."""

    def refs(self) -> list[bytes]:
        return [self.subjects[i : i + 32] for i in range(0, len(self.subjects), 32)]


class NewAccess(NamedTuple):
    """A decided access request, ready to be recorded.

    A named tuple: the gateway makes one per request it decides, and a frozen dataclass of
    eleven fields cost ~1.8 µs (one `object.__setattr__` a field), this ~0.6 µs."""

    request_id: bytes
    body_hash: bytes
    """sha256 of the canonical request body: the same id with another body is a conflict."""
    org: bytes
    agreement_id: bytes
    decision: Decision
    reasons: tuple[DenyReason, ...]
    record: bytes
    """eth_abi encoding of the `AccessRecord` tuple, exactly what goes into `recordAccesses`."""
    cohort: CohortLeaves | None = None
    """The recorded cohort (root and size are also in `record`), written beside the access."""
    authorization_fault: int | None = None
    """Why the access could not redeem its authorization code (an `AuthorizationFault`), for
    redemptions; None otherwise."""
    quota: int | None = None
    """For a GRANTED access: the agreement's quota. The outbox reserves one unit of it in the
    transaction that stores the access, or refuses the grant (`ReservationError`)."""
    chain_used: int = 0
    """The chain's use count of the agreement as last read: where the agreement's counted
    reservation starts when this gateway's store counts it for the first time."""
    code: bytes | None = None
    """For a GRANTED redemption: the authorization code hash it reserves (unique)."""


class ReservationError(Exception):
    """GRANTED accesses whose reservation the store refused: the agreement's quota is used up
    (`quota`) or the code is held by another access (`codes`). Nothing of the call is stored;
    the caller decides those again as denied and stores the call again."""

    def __init__(self, quota: set[bytes], codes: set[bytes]) -> None:
        super().__init__(f"{len(quota)} grants over quota, {len(codes)} codes already reserved")
        self.quota = quota
        self.codes = codes


@dataclass(frozen=True)
class NewRelease:
    """A result release of a granted access, ready to be recorded."""

    release_key: bytes
    """keccak(accessId, resultHash): the idempotency key of a release."""
    body_hash: bytes
    org: bytes
    access_id: bytes
    agreement_id: bytes
    call: bytes
    """eth_abi encoding of `releaseResult`'s arguments."""


@dataclass(frozen=True)
class NewCall:
    """A contract call the gateway relays with its own key (nonce from the same allocator)."""

    key: bytes
    """Idempotency key chosen by the caller (e.g. keccak of agreement, signer, signature)."""
    body_hash: bytes
    org: bytes
    agreement_id: bytes
    """The agreement the call is about (zero when none)."""
    target: bytes
    """20-byte address of the contract called."""
    gas: int
    data: bytes
    """Full calldata, selector included."""


CALL_HEAD = 28
"""A CALL payload starts with the 20-byte target and the 8-byte gas limit."""


def call_payload(target: bytes, gas: int, data: bytes) -> bytes:
    return target + gas.to_bytes(8, "big") + data


def split_call_payload(payload: bytes) -> tuple[bytes, int, bytes]:
    """(target, gas, calldata) of a CALL operation's payload."""
    return payload[:20], int.from_bytes(payload[20:CALL_HEAD], "big"), payload[CALL_HEAD:]


class OperationView(NamedTuple):
    """What the API answers about one recorded (or to-be-recorded) operation.

    Immutable, as a tuple: the outbox makes one per stored decision, and a frozen dataclass of
    fifteen fields cost ~2.2 µs each (one `object.__setattr__` a field), this ~0.5 µs."""

    key: bytes
    kind: OperationKind
    body_hash: bytes
    org: bytes
    agreement_id: bytes
    decision: Decision | None
    reasons: tuple[DenyReason, ...]
    status: OperationStatus
    payload: bytes
    """The encoded record (access), call arguments (release) or `call_payload` (call)."""
    tx_hash: bytes | None
    block_number: int | None
    error: str | None
    created_at: float
    confirmed_at: float | None
    authorization_fault: int | None = None


class Accepted(NamedTuple):
    """The outcome of adding one operation: the stored view, and whether it was new."""

    view: OperationView
    created: bool


class Outbox(Protocol):
    """Durable store of decided operations; implemented by `ledger_gateway.store`."""

    async def add_accesses(self, accesses: Sequence[NewAccess]) -> list[Accepted]:
        """Store new decisions durably (fsync'd) before returning, all in one transaction.

        An id already stored with the same body hash returns the stored view (created=False);
        with another body hash raises `ConflictError` and stores none of `accesses`. A GRANTED
        access reserves its agreement's quota and its code in the same transaction; when one
        cannot, raises `ReservationError` and stores none of `accesses`.
        Raises `UnavailableError(code="outbox_full")` when more than the configured bound of
        operations are not yet confirmed.
        """
        ...

    async def add_release(self, release: NewRelease) -> Accepted: ...

    async def add_call(self, call: NewCall) -> Accepted:
        """Store one CALL operation (same idempotency and bound rules as accesses)."""
        ...

    async def get(self, key: bytes) -> OperationView | None: ...

    async def cohort(self, access_id: bytes) -> CohortLeaves | None:
        """The cohort stored with an access (None: it recorded none)."""
        ...

    async def code_holder(self, code: bytes) -> bytes | None:
        """The access that holds authorization code hash `code` (None: nobody; a reservation
        ends when its access fails on chain)."""
        ...

    async def wait(self, key: bytes, timeout: float) -> OperationView | None:
        """Wait until `key` is CONFIRMED or FAILED (or the timeout passes); the latest view."""
        ...

    async def depth(self) -> int:
        """Operations not yet CONFIRMED or FAILED."""
        ...

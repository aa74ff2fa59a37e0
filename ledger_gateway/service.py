"""The access decision path: authenticate, verify the requester's signature, decide by the
policy core, write the decision to the outbox, answer. The chain records it afterwards."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import structlog
from eth_abi.abi import decode, encode
from eth_hash.auto import keccak
from prometheus_client import Counter

from dul.contracts.typed_data import ACCESS_RECORD_ABI_TYPE, AccessRecord, AccessRequest, Domain
from dul.domain import Decision, Operation, ReleaseKind, Tier
from dul.signing import InvalidSignatureError, recover
from ledger_gateway.chain_view import ChainView
from ledger_gateway.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from ledger_gateway.models import (
    AccessOut,
    AccessRequestIn,
    ReleaseOut,
    decision_name,
    reason_names,
)
from ledger_gateway.outbox import NewAccess, NewRelease, OperationKind, OperationView, Outbox
from ledger_gateway.policy import RequestFacts, decide, releasable
from ledger_gateway.tokens import Token, TokenRole

log = structlog.get_logger(__name__)


def _b32(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def body_hash(body: AccessRequestIn) -> bytes:
    """Canonical hash of a request: same request id with another body is a conflict."""
    return hashlib.sha256(body.model_dump_json().encode()).digest()


def _tier_and_operation(view: OperationView) -> tuple[Tier, Operation]:
    """Tier and operation of a stored access, read back from its encoded record."""
    record = decode([ACCESS_RECORD_ABI_TYPE], view.payload)[0]
    return Tier(record[6]), Operation(record[7])


def access_out(view: OperationView) -> AccessOut:
    return AccessOut(
        access_id="0x" + view.key.hex(),
        decision=decision_name(view.decision),
        reasons=reason_names(view.reasons),
        status=view.status.value,
        tx_hash=None if view.tx_hash is None else "0x" + view.tx_hash.hex(),
        block_number=view.block_number,
        error=view.error,
    )


class AccessService:
    def __init__(
        self,
        *,
        org: bytes,
        view: ChainView,
        outbox: Outbox,
        domain: Domain,
        deadline_margin_s: int,
        decisions: Counter,
    ) -> None:
        self.org = org
        self.view = view
        self.outbox = outbox
        self.domain = domain
        self.deadline_margin_s = deadline_margin_s
        self.decisions = decisions

    def authorize(self, token: Token) -> None:
        if token.role != TokenRole.ACCESS_SERVICE:
            raise ForbiddenError(
                f"token {token.name!r} is a {token.role} token, not an access-service one"
            )
        if token.org.encode().ljust(32, b"\0") != self.org:
            raise ForbiddenError(
                f"token {token.name!r} belongs to {token.org}, not to this gateway's organization"
            )

    async def decide(self, token: Token, bodies: Sequence[AccessRequestIn]) -> list[AccessOut]:
        """Decide every request, store all decisions durably in one write, then answer.

        New ids (the common case) cost no store read: the outbox's insert settles replays
        (same body: the stored answer) and conflicts (another body: 409) itself.
        """
        self.authorize(token)
        now = int(time.time())
        answers: dict[int, AccessOut] = {}
        fresh: list[tuple[int, NewAccess]] = []
        seen: dict[bytes, bytes] = {}
        for index, body in enumerate(bodies):
            request_id = _b32(body.request_id)
            digest = body_hash(body)
            if seen.setdefault(request_id, digest) != digest:
                raise ConflictError(f"request {body.request_id} appears twice, with other bodies")
            try:
                fresh.append((index, await self._decide_one(body, request_id, digest, now)))
            except (BadRequestError, NotFoundError, ForbiddenError) as error:
                # A replay of an answered request gets its answer even if, say, its signature
                # has expired since; anything else gets the error.
                answers[index] = await self._replay(body, request_id, digest, error)
        if fresh:
            accepted = await self.outbox.add_accesses([access for _, access in fresh])
            for (index, access), result in zip(fresh, accepted, strict=True):
                if not result.created and access.decision == Decision.GRANTED:
                    self.view.release(access.agreement_id)  # answered before: not a new grant
                answers[index] = access_out(result.view)
        return [answers[i] for i in range(len(bodies))]

    async def _replay(
        self, body: AccessRequestIn, request_id: bytes, digest: bytes, error: Exception
    ) -> AccessOut:
        stored = await self.outbox.get(request_id)
        if stored is None:
            raise error
        if stored.org != self.org or stored.body_hash != digest:
            raise ConflictError(f"request id {body.request_id} was used before with another body")
        return access_out(stored)

    async def release(
        self, token: Token, access_id: bytes, result_hash: bytes, kind: ReleaseKind, size: int
    ) -> ReleaseOut:
        """Record a result leaving the hospital, if the access allowed it."""
        self.authorize(token)
        access = await self.outbox.get(access_id)
        if access is None or access.org != self.org or access.kind != OperationKind.ACCESS:
            raise NotFoundError(f"no access request 0x{access_id.hex()}")
        tier, operation = _tier_and_operation(access)
        if access.decision != Decision.GRANTED or not releasable(kind, tier, operation):
            raise ConflictError(
                f"access 0x{access_id.hex()} ({access.decision.name if access.decision else '?'}, "
                f"{tier.name}, {operation.name}) does not allow releasing {kind.name}",
                code="release_not_allowed",
            )
        call = encode(
            ["bytes32", "bytes32", "bytes32", "uint8", "uint64"],
            [access_id, access.agreement_id, result_hash, kind, size],
        )
        key = keccak(encode(["bytes32", "bytes32"], [access_id, result_hash]))
        accepted = await self.outbox.add_release(
            NewRelease(
                release_key=key,
                body_hash=hashlib.sha256(call).digest(),
                org=self.org,
                access_id=access_id,
                agreement_id=access.agreement_id,
                call=call,
            )
        )
        view = accepted.view
        return ReleaseOut(
            release_id="0x" + key.hex(),
            access_id="0x" + access_id.hex(),
            status=view.status.value,
            tx_hash=None if view.tx_hash is None else "0x" + view.tx_hash.hex(),
            block_number=view.block_number,
            error=view.error,
        )

    async def _decide_one(
        self, body: AccessRequestIn, request_id: bytes, digest: bytes, now: int
    ) -> NewAccess:
        if body.deadline < now + self.deadline_margin_s:
            raise BadRequestError(
                f"request {body.request_id} is signed valid until {body.deadline}; it must stay "
                f"valid at least {self.deadline_margin_s} s to be recorded",
                code="request_expired",
            )
        request = AccessRequest(
            request_id=request_id,
            agreement_id=_b32(body.agreement_id),
            dataset_id=_b32(body.dataset_id),
            field_mask=body.field_mask,
            tier=Tier[body.tier],
            operation=Operation[body.operation],
            request_hash=_b32(body.request_hash),
            deadline=body.deadline,
            authorization_ref=_b32(body.authorization_ref),
        )
        signature = bytes.fromhex(body.signature[2:])
        try:
            signer = recover(request.digest(self.domain), signature)
        except InvalidSignatureError as exc:
            raise BadRequestError(
                f"request {body.request_id}: {exc}", code="bad_signature"
            ) from None
        if signer.lower() != body.requester.lower():
            raise BadRequestError(
                f"request {body.request_id} is not signed by {body.requester}", code="bad_signature"
            )
        agreement = await self.view.agreement(request.agreement_id, request.dataset_id)
        if agreement is None:
            raise NotFoundError(f"no agreement {body.agreement_id}", code="unknown_agreement")
        if agreement.holder != self.org:
            raise ForbiddenError(f"agreement {body.agreement_id} is another holder's")
        facts = RequestFacts(
            dataset_id=request.dataset_id,
            field_mask=request.field_mask,
            tier=request.tier,
            operation=request.operation,
            deadline=request.deadline,
            requester_is_member=await self.view.is_requester(signer, agreement.requester),
            cohort_size=body.cohort_size,
            cohort_root=_b32(body.cohort_root),
            authorization_ref=request.authorization_ref,
        )
        outcome = decide(agreement, facts, now=now, used=self.view.used(request.agreement_id))
        if outcome.granted:
            self.view.reserve(request.agreement_id)
        self.decisions.labels(decision=outcome.decision.name, reason=outcome.reason.name).inc()
        record = AccessRecord(
            request=request,
            requester=signer,
            signature=signature,
            decision=outcome.decision,
            reason=outcome.reason,
            cohort_root=facts.cohort_root,
            cohort_size=facts.cohort_size,
        )
        return NewAccess(
            request_id=request_id,
            body_hash=digest,
            org=self.org,
            agreement_id=request.agreement_id,
            decision=outcome.decision,
            reasons=outcome.reasons,
            record=record.encode(),
        )

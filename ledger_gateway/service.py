"""The access decision path: authenticate, verify the requester's signature, decide by the
policy core, write the decision to the outbox, answer. The chain records it afterwards.

What patients permit enters here: under a COHORT_CONSENT agreement the named cohort is filtered
down to the subjects whose consent covers the agreement now (the consent view is brought up to
the chain head first, so a withdrawal mined before the request is honoured), and the tree head
of the admitted subjects goes on chain while the leaves go to `cohort_leaves` in the same
durable write. Under a PATIENT_AUTHORIZATION agreement the access redeems a patient's one-time
code (`redeem`): the code is checked against the request's `authorization_ref`, decided by
`consent_policy.authorization_fault`, and reserved for the access with no await between the
check and the reservation, so of two concurrent redemptions exactly one is GRANTED. Where the
agreement allows break-glass, an access request whose signed `authorization_ref` is a
break-glass reference (`dul.domain.break_glass_ref`) and that names one patient is decided
without a code; the chain flags it for the holder steward's review.

Nothing is reserved in memory: a GRANTED decision reserves its agreement's quota unit and its
code in the outbox's own transaction (shared by every worker process). When the store refuses
the reservation, the decision is taken again as the chain would take it then (quota used up,
code already held) and the call is stored again, so what is acknowledged is what was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import structlog
from eth_abi.abi import decode
from eth_typing import ChecksumAddress
from prometheus_client import Counter

from dul.cohort import leaf_hash
from dul.contracts.bindings import function
from dul.contracts.typed_data import (
    ACCESS_RECORD_ABI_TYPE,
    AccessRequest,
    Domain,
    encode_access_record,
    signed_access_request,
)
from dul.domain import (
    AuthorizationFault,
    ConsentPolicy,
    Decision,
    DenyReason,
    Operation,
    ReleaseKind,
    Role,
    Tier,
    is_break_glass,
)
from dul.keccak import keccak
from dul.recovery import holding_gil
from dul.signing import InvalidSignatureError, recover
from dul.subjects import SubjectError, code_hash
from ledger_gateway.answers import Answer, access_out
from ledger_gateway.chain_view import ChainView
from ledger_gateway.consent_policy import (
    RedemptionFacts,
    authorization_fault,
    judged_at,
    tree_root,
)
from ledger_gateway.consents import ConsentView
from ledger_gateway.errors import (
    BadRequestError,
    CodeMismatchError,
    ConflictError,
    ForbiddenError,
    GatewayError,
    NotFoundError,
    UnavailableError,
)
from ledger_gateway.models import (
    MAX_COHORT,
    AccessOut,
    AccessRequestIn,
    RedeemIn,
    ReleaseOut,
    SignedRequestIn,
)
from ledger_gateway.outbox import (
    Accepted,
    CohortLeaves,
    NewAccess,
    NewRelease,
    OperationKind,
    OperationView,
    Outbox,
    ReservationError,
)
from ledger_gateway.policy import AgreementState, PolicyDecision, RequestFacts, decide, releasable
from ledger_gateway.tokens import Token, TokenRole

log = structlog.get_logger(__name__)

RELEASE_RESULT = function("AccessLog", "releaseResult")

ZERO32 = bytes(32)


def _b32(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def body_hash(body: SignedRequestIn) -> bytes:
    """Canonical hash of a request: same request id with another body is a conflict.

    A cohort is hashed as its references joined (10,000 of them: ~0.3 ms, where dumping them
    through pydantic takes ~6). A redemption's hash leaves the code out (it is checked against
    `authorization_ref`, which is in) and is domain-separated, so a plain request can never
    replay a redemption's answer."""
    if isinstance(body, RedeemIn):
        text = body.model_dump_json(exclude={"code"})
        return hashlib.sha256(b"redeem\0" + text.encode()).digest()
    if type(body) is AccessRequestIn:
        digest = hashlib.sha256(signed_json(body).encode())
        if body.cohort is not None:
            digest.update(b"\0cohort\0" + ",".join(body.cohort).encode())
        return digest.digest()
    return hashlib.sha256(body.model_dump_json(exclude={"cohort"}).encode()).digest()


def signed_json(body: SignedRequestIn) -> str:
    """The signed fields as `model_dump_json` writes them, from one f-string (~0.6 µs, where
    pydantic's took ~4 with its Python wrapper and the `exclude` set, and a `%` format string
    ~1.3: it parsed its format at every call): every string field was validated as hex or a
    name, so none needs escaping. A test holds the two equal.

    The values are read from the model's `__dict__` (a pydantic model's `__getattr__` sends
    every attribute read through a slower path)."""
    f = body.__dict__
    return (
        f'{{"request_id":"{f["request_id"]}","agreement_id":"{f["agreement_id"]}",'
        f'"dataset_id":"{f["dataset_id"]}","field_mask":{f["field_mask"]:d},'
        f'"tier":"{f["tier"]}","operation":"{f["operation"]}",'
        f'"request_hash":"{f["request_hash"]}","deadline":{f["deadline"]:d},'
        f'"authorization_ref":"{f["authorization_ref"]}","requester":"{f["requester"]}",'
        f'"signature":"{f["signature"]}"}}'
    )


def subject_refs(cohort: Sequence[str]) -> list[bytes]:
    """32-byte subject references of validated 0x-hex strings (one hex decode for all)."""
    raw = bytes.fromhex("".join([ref[2:] for ref in cohort]))
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def _tier_and_operation(view: OperationView) -> tuple[Tier, Operation]:
    """Tier and operation of a stored access, read back from its encoded record."""
    record = decode([ACCESS_RECORD_ABI_TYPE], view.payload)[0]
    return Tier(record[6]), Operation(record[7])


Verified = tuple[AccessRequest, bytes, ChecksumAddress]
"""A request whose signature was checked: the request, its signature, its signer."""
_TIERS: dict[str, Tier] = dict(Tier.__members__)
_OPERATIONS: dict[str, Operation] = dict(Operation.__members__)
"""Names to members without the enum metaclass's `__getitem__` (a Python call per request)."""

YIELD_EVERY = 64
"""Requests of one call decided between two turns of the event loop. A 500-request batch decided
in one go held the loop for tens of milliseconds, and each of the submitter's steps (~10 a round
of transactions: read, sign, store, send, receipts) waited out such a stall behind it: traced in
the batch bench on a loaded machine, stalls over 10 ms added up to 4.5-5.5 s of a 5.8-7.2 s
decision phase, and the rounds reached the node late (the confirm tail). A turn costs ~1 µs."""
VERIFY_THREADS = 1
"""Signature-check threads. One, not two: with the recovery's one GIL release per access
(`dul.recovery`), a second thread only added a contender for the GIL on two cores the node
shares. Reduced `dul bench gateway` (40,000 batch requests), medians of 8 alternating runs, two
threads -> one: the verifier threads' context switches 0.24 -> 0.13 per access and their CPU
66 -> 57 µs, the whole gateway's switches 0.68 -> 0.53 per access, batch events/s no lower."""
VERIFY_PARALLEL_MIN = 16
"""Requests in one call from which their signatures are checked on the verifier threads."""
_VERIFIER: list[ThreadPoolExecutor] = []
HOP_MIN = 8
"""Checks coalesced in one turn of the event loop from which they go to a verifier thread;
fewer are done on the loop (GIL kept, ~40 µs each). In one process, alternating rounds of a
turn's first check and K later ones, hop against loop: the turn's checks delivered at a median
of 367 -> 206 µs (K = 2), 359 -> 243 (4), 571 -> 380 (7), p90 3.3-5.5 ms -> 0.3-0.5 ms on a
loaded machine, two context switches per round -> none: the hop waited for the verifier
thread to get a core and the GIL, and for the loop to be woken again."""


def _verifier() -> ThreadPoolExecutor:
    """The process's signature-check threads (made on first use, shared by every service)."""
    if not _VERIFIER:
        _VERIFIER.append(ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="verify"))
    return _VERIFIER[0]


class _Coalesced:
    """Signature checks of small calls (single requests, mostly) that reach this point in the
    same turn of the event loop.

    The first check of a turn is done at once, on the loop (a few hundred requests a second
    arrive one at a time): a hop cost more than the check (the executor's hand-over, the
    verifier thread's wake-up and its wait for the GIL, the loop's wake-up), ~200 µs of the
    process's CPU per request against the check's ~50, and that CPU is what the event loop then
    waits for; and waiting for the next turn to see whether others join cost the request that
    turn (under load every request parsed meanwhile). The later checks of the turn are done in
    the next one: on the loop when fewer than `HOP_MIN`, else together in one hop to a verifier
    thread (a turn that parsed many requests: one executor job and one wake-up of the loop for
    all of them, whose recoveries, ~60-70 µs each, then run on the other core while the loop
    parses, decides and answers others; at 1,000+ requests a second they were a sixth of the
    loop's time). A check on the loop keeps the GIL through the recovery
    (`dul.recovery.holding_gil`): released, it went to the outbox writer or the verifier
    whenever one waited for it, and the loop, with every request not answered yet, waited to
    take it back — the place the loop was most often found stalled in the reduced bench (a
    loop-lag probe sampling its stack during stalls over 4 ms)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], Verified | GatewayError], asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked_this_turn = False

    def check(self, fn: Callable[[], Verified | GatewayError]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if loop is not self._loop:  # another event loop (a test's): the last one's hop is gone
            self._waiting, self._loop, self._checked_this_turn = [], loop, False
        if not self._checked_this_turn and not self._waiting:
            self._checked_this_turn = True
            loop.call_soon(self._next_turn)
            with holding_gil():  # on the loop's thread, which would wait to take it back
                try:
                    future.set_result(fn())
                except Exception as exc:  # not a refusal (those are returned): a failure
                    future.set_exception(exc)
            return future
        self._waiting.append((fn, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._hop, loop)
        return future

    def _next_turn(self) -> None:
        self._checked_this_turn = False

    def _hop(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting, []

        def deliver(results: list[tuple[bool, Any]]) -> None:
            for (_, future), (ok, value) in zip(batch, results, strict=True):
                if future.done():  # its request went away meanwhile
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        def checked() -> list[tuple[bool, Any]]:
            results: list[tuple[bool, Any]] = []
            for fn, _ in batch:
                try:
                    results.append((True, fn()))
                except Exception as exc:  # not a refusal (those are returned): a failure
                    results.append((False, exc))
            return results

        def run() -> None:
            results = checked()
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(deliver, results)

        if len(batch) < HOP_MIN:
            with holding_gil():  # on the loop's thread, which would wait to take it back
                results = checked()
            deliver(results)
            return
        try:
            _verifier().submit(run)
        except RuntimeError as exc:  # the executor shut down (interpreter exit)
            deliver([(False, exc)] * len(batch))


class _Decided(NamedTuple):
    """A decision not yet stored (a named tuple: one per request decided)."""

    access: NewAccess
    named: int | None
    """Distinct subjects the request named (None: no cohort named)."""
    again: Callable[[bool], NewAccess] | None = None
    """For a grant: the decision taken again when the store refused its reservation, with the
    quota used up (False) or the code held by another access (True)."""

    def refused(self, refusal: ReservationError) -> _Decided:
        key = self.access.request_id
        if self.again is None or (key not in refusal.quota and key not in refusal.codes):
            return self
        return _Decided(self.again(key in refusal.codes), self.named)


def _labels(view: OperationView) -> tuple[Decision | None, DenyReason]:
    """A stored decision's metric labels: the decision and its first reason."""
    return view.decision, view.reasons[0] if view.reasons else _NO_REASON


_NO_REASON = DenyReason.NONE
_REQUESTER = Role.REQUESTER
"""Read once (on Python 3.11 every `Enum.MEMBER` read goes through `EnumType.__getattr__`'s
slow hook, ~0.1 µs; see `ledger_gateway.policy`)."""


async def _store(outbox: Outbox, decided: list[_Decided]) -> list[Accepted]:
    """Store the decisions; grants the store cannot reserve are denied and stored instead
    (each round turns at least one grant into a denial, so this ends)."""
    while True:
        try:
            return await outbox.add_accesses([d.access for d in decided])
        except ReservationError as refusal:
            decided[:] = [d.refused(refusal) for d in decided]


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
        consents: ConsentView | None = None,
        max_request_lifetime_s: int = 86_400,
    ) -> None:
        self.org = org
        self.view = view
        self.outbox = outbox
        self.domain = domain
        self.deadline_margin_s = deadline_margin_s
        self.max_request_lifetime_s = max_request_lifetime_s
        self.decisions = decisions
        self._counters: dict[tuple[Decision | None, DenyReason], Counter] = {}
        self.consents = consents
        self._coalesced = _Coalesced()

    def authorize(self, token: Token) -> None:
        if token.role != TokenRole.ACCESS_SERVICE:
            raise ForbiddenError(
                f"token {token.name!r} is a {token.role} token, not an access-service one"
            )
        if token.org.encode().ljust(32, b"\0") != self.org:
            raise ForbiddenError(
                f"token {token.name!r} belongs to {token.org}, not to this gateway's organization"
            )

    def _consents(self) -> ConsentView:
        if self.consents is None:
            raise UnavailableError(
                "this ledger has no consent registry deployed; consent-bound agreements cannot "
                "be decided",
                code="consents_unavailable",
            )
        return self.consents

    # --- access requests ---------------------------------------------------------------------

    async def decide(self, token: Token, bodies: Sequence[AccessRequestIn]) -> list[AccessOut]:
        """`answers` as the API's models."""
        return [answer.model() for answer in await self.answers(token, bodies)]

    async def answers(self, token: Token, bodies: Sequence[AccessRequestIn]) -> list[Answer]:
        """Decide every request, store all decisions durably in one write, then answer.

        New ids (the common case) cost no store read: the outbox's insert settles replays
        (same body: the stored answer) and conflicts (another body: 409) itself.
        """
        self.authorize(token)
        named_total = 0
        for body in bodies:
            if body.cohort:
                named_total += len(body.cohort)
        if named_total > MAX_COHORT:
            raise BadRequestError(
                f"the requests name {named_total} subjects together; at most {MAX_COHORT} per call",
                code="batch_too_large",
            )
        now = int(time.time())
        answers: dict[int, Answer] = {}
        fresh: list[tuple[int, AccessRequestIn, _Decided]] = []
        seen: dict[bytes, bytes] = {}
        # One consent catch-up serves every request of the call; it starts now, so its round
        # trip overlaps the signature checks (awaited only where a consent cohort is decided).
        catch_up = None
        if self.consents is not None and named_total:
            catch_up = asyncio.ensure_future(self.consents.sync())
            catch_up.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            checks = await self._verify_all(bodies, now)
            for index, body in enumerate(bodies):
                if index % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # the loop's other tasks run between runs of requests
                checked = checks[index] if checks else None
                # A checked request's id was decoded with its other hex fields (`_verify`).
                request_id = (
                    checked[0].request_id if type(checked) is tuple else _b32(body.request_id)
                )
                digest = body_hash(body)
                if seen.setdefault(request_id, digest) != digest:
                    raise ConflictError(
                        f"request {body.request_id} appears twice, with other bodies"
                    )
                try:
                    decided = self._decide_known(body, digest, now, checked)
                    if decided is None:
                        decided = await self._decide_one(
                            body, request_id, digest, now, catch_up, checked
                        )
                    fresh.append((index, body, decided))
                except (BadRequestError, NotFoundError, ForbiddenError) as error:
                    # A replay of an answered request gets its answer even if, say, its
                    # signature has expired since; anything else gets the error.
                    answers[index] = await self._replay(body, request_id, digest, error)
        finally:
            if catch_up is not None and not catch_up.done():
                catch_up.cancel()  # no consent cohort needed it (the shared catch-up goes on)
        if fresh:
            stored = [decided for _, _, decided in fresh]
            accepted = await _store(self.outbox, stored)
            # Counted once per label pair and call (a counter's `inc` per access was ~1 µs).
            counts: dict[tuple[Decision | None, DenyReason], int] = {}
            # `stored`, not `fresh`: a grant the store refused was decided again (a denial,
            # no cohort) and its answer is that decision's.
            for (index, _, _), decided, result in zip(fresh, stored, accepted, strict=True):
                view = result.view
                if result.created:
                    key = _labels(view)
                    counts[key] = counts.get(key, 0) + 1
                    answers[index] = Answer(view, decided.access.cohort, decided.named)
            for (decision, reason), count in counts.items():
                self._count(decision, reason, count)
            for (index, body, _), result in zip(fresh, accepted, strict=True):
                if not result.created:  # answered before: the stored answer stands
                    answers[index] = await self._stored_answer(result.view, body)
        return [answers[i] for i in range(len(bodies))]

    async def _verify_all(
        self, bodies: Sequence[SignedRequestIn], now: int
    ) -> list[Verified | GatewayError]:
        """The calls' signature checks, off the event loop: a batch's on the verifier
        thread(s) (`VERIFY_THREADS`), a small call's coalesced with the others of this turn of
        the loop (`_Coalesced`). Recovery is ~60% of a decision's CPU and libsecp256k1 releases
        the GIL, so recoveries run on another core while the event loop serves others."""
        if len(bodies) < VERIFY_PARALLEL_MIN:
            futures = [
                self._coalesced.check(functools.partial(self._verify_or_refusal, body, now))
                for body in bodies
            ]
            return [await future for future in futures]

        def check(part: Sequence[SignedRequestIn]) -> list[Verified | GatewayError]:
            return [self._verify_or_refusal(body, now) for body in part]

        loop = asyncio.get_running_loop()
        size = -(-len(bodies) // VERIFY_THREADS)
        parts = [bodies[i : i + size] for i in range(0, len(bodies), size)]
        done = await asyncio.gather(
            *(loop.run_in_executor(_verifier(), check, part) for part in parts)
        )
        return [checked for part in done for checked in part]

    def _verify_or_refusal(self, body: SignedRequestIn, now: int) -> Verified | GatewayError:
        try:
            return self._verify(body, now)
        except GatewayError as error:  # raised where the request is decided
            return error

    def _count(self, decision: Decision | None, reason: DenyReason, count: int = 1) -> None:
        key = (decision, reason)
        child = self._counters.get(key)
        if child is None:  # `labels` costs more than the count: one child per pair, kept
            name = decision.name if decision is not None else "?"
            child = self._counters[key] = self.decisions.labels(decision=name, reason=reason.name)
        child.inc(count)

    @staticmethod
    def _named(body: SignedRequestIn) -> int | None:
        if isinstance(body, AccessRequestIn) and body.cohort is not None:
            return len(set(body.cohort))
        return None

    async def _stored_answer(self, view: OperationView, body: SignedRequestIn) -> Answer:
        leaves = await self.outbox.cohort(view.key)
        named = leaves.size if isinstance(body, RedeemIn) and leaves else self._named(body)
        return Answer(view, leaves, named)

    async def answer(self, view: OperationView) -> AccessOut:
        """A stored access as `GET /v1/access-requests/{id}` shows it (with its cohort)."""
        leaves = await self.outbox.cohort(view.key)
        redemption = view.authorization_fault is not None
        return access_out(view, leaves, leaves.size if redemption and leaves else None)

    async def _replay(
        self, body: SignedRequestIn, request_id: bytes, digest: bytes, error: Exception
    ) -> Answer:
        stored = await self.outbox.get(request_id)
        if stored is None:
            raise error
        if stored.org != self.org or stored.body_hash != digest:
            raise ConflictError(f"request id {body.request_id} was used before with another body")
        return await self._stored_answer(stored, body)

    def _verify(self, body: SignedRequestIn, now: int) -> Verified:
        """The signed request, its signature and its signer, checked."""
        if body.deadline < now + self.deadline_margin_s:
            raise BadRequestError(
                f"request {body.request_id} is signed valid until {body.deadline}; it must stay "
                f"valid at least {self.deadline_margin_s} s to be recorded",
                code="request_expired",
            )
        if body.deadline > now + self.max_request_lifetime_s:
            raise BadRequestError(
                f"request {body.request_id} is signed valid until {body.deadline}, more than "
                f"{self.max_request_lifetime_s} s from now; sign a nearer deadline",
                code="deadline_too_far",
            )
        # The six hex fields decoded at once (validated as 0x-hex of their sizes): one call
        # where there were six, each a slice and a decode, on the verifier threads' Python.
        raw = bytes.fromhex(
            body.request_id[2:] + body.agreement_id[2:] + body.dataset_id[2:]
            + body.request_hash[2:] + body.authorization_ref[2:] + body.signature[2:]
        )  # fmt: skip
        request, digest = signed_access_request(
            raw[:160], body.field_mask, _TIERS[body.tier], _OPERATIONS[body.operation],
            body.deadline, self.domain,
        )  # fmt: skip
        signature = raw[160:]
        try:
            signer = recover(digest, signature)
        except InvalidSignatureError as exc:
            raise BadRequestError(
                f"request {body.request_id}: {exc}", code="bad_signature"
            ) from None
        if signer.lower() != body.requester.lower():
            raise BadRequestError(
                f"request {body.request_id} is not signed by {body.requester}", code="bad_signature"
            )
        return request, signature, signer

    async def _agreement(self, body: SignedRequestIn, request: AccessRequest) -> AgreementState:
        agreement = await self.view.agreement(request.agreement_id, request.dataset_id)
        if agreement is None:
            raise NotFoundError(f"no agreement {body.agreement_id}", code="unknown_agreement")
        self._check_holder(body, agreement)
        return agreement

    def _check_holder(self, body: SignedRequestIn, agreement: AgreementState) -> None:
        if agreement.holder != self.org:
            raise ForbiddenError(f"agreement {body.agreement_id} is another holder's")

    async def _decide_one(
        self,
        body: AccessRequestIn,
        request_id: bytes,
        digest: bytes,
        now: int,
        catch_up: asyncio.Future[None] | None,
        checked: Verified | GatewayError | None = None,
    ) -> _Decided:
        if checked is None:
            checked = self._verify(body, now)
        elif isinstance(checked, GatewayError):
            raise checked
        request, _, signer = checked
        agreement = await self._agreement(body, request)
        named = None if body.cohort is None else subject_refs(body.cohort)
        policy = agreement.consent_policy
        admitted: list[bytes] = []
        root = ZERO32
        distinct = None if named is None else 0  # distinct subjects named
        if named and is_break_glass(request.authorization_ref):
            # Break-glass: no code, the patient named is recorded (`decide` and the chain
            # hold it to one patient under an agreement that allows it) and flagged for review.
            admitted = sorted(set(named))
            distinct = len(admitted)
            root = tree_root([leaf_hash(s) for s in admitted])
        elif named and policy == ConsentPolicy.COHORT_CONSENT:
            consents = self._consents()
            assert catch_up is not None  # started for every call that names a cohort
            await asyncio.shield(catch_up)  # the view is at the head as of this call's arrival
            study = consents.study(request.agreement_id, agreement.requester)
            at = judged_at(now, consents.head_time)  # no earlier than the chain's head
            admitted, excluded = consents.admit(named, agreement.scenario, at, study)
            distinct = len(admitted) + excluded
            if admitted:
                root = consents.root(admitted)
        elif named and policy == ConsentPolicy.NONE:
            admitted = sorted(set(named))  # no consent needed: recorded for transparency
            distinct = len(admitted)
            root = tree_root([leaf_hash(s) for s in admitted])
        elif named:  # PATIENT_AUTHORIZATION: a code must be presented (`redeem`); nobody admitted
            distinct = len(set(named))
        member = await self.view.is_requester(signer, agreement.requester)
        return self._outcome(checked, agreement, member, admitted, root, distinct, digest, now)

    def _decide_known(
        self,
        body: AccessRequestIn,
        digest: bytes,
        now: int,
        checked: Verified | GatewayError | None,
    ) -> _Decided | None:
        """`_decide_one` without a coroutine where it would not wait: a request that names no
        cohort, whose agreement and requester membership the chain view holds (every request
        of a busy agreement after the first). None: `_decide_one` decides it.

        Each await on the view was a coroutine made and run (four per request, ~1.5 µs)."""
        if body.cohort is not None or checked is None:
            return None
        if isinstance(checked, GatewayError):
            raise checked
        request, _, signer = checked
        agreement = self.view.known_agreement(request.agreement_id, request.dataset_id)
        if agreement is None:
            return None
        self._check_holder(body, agreement)
        member = self.view.known_role(signer, agreement.requester, _REQUESTER)
        if member is None:
            return None
        return self._outcome(checked, agreement, member, [], ZERO32, None, digest, now)

    def _outcome(
        self,
        checked: Verified,
        agreement: AgreementState,
        member: bool,
        admitted: list[bytes],
        root: bytes,
        distinct: int | None,
        digest: bytes,
        now: int,
    ) -> _Decided:
        """The policy's decision on a checked request, with the cohort `admitted` (tree head
        `root`) of `distinct` subjects named, as the outbox will store it."""
        request, signature, signer = checked
        facts = RequestFacts.of(
            request,
            requester_is_member=member,
            cohort_size=len(admitted),
            cohort_root=root,
            authorization_ref=request.authorization_ref,
        )
        # The quota is the store's to count: decided here as if units were left, and taken
        # again as used up if the store cannot reserve one.
        outcome = decide(agreement, facts, now=now, used=0)
        # Only a granted access includes anybody: a denial records no cohort.
        leaves = None
        granted = outcome.granted
        if granted and admitted:
            leaves = CohortLeaves(root, len(admitted), b"".join(admitted))
        if not granted:
            return _Decided(
                self._stored(request, signer, signature, outcome, leaves, digest), distinct
            )
        access = self._stored(
            request, signer, signature, outcome, leaves, digest,
            quota=agreement.quota, chain_used=self.view.chain_used(request.agreement_id),
        )  # fmt: skip
        # A partial, not a closure: a closure made a cell for each of the eight names it
        # reads on every call, ten objects per request for the collector to walk.
        again = functools.partial(self._exhausted, checked, agreement, facts, digest, now)
        return _Decided(access, distinct, again)

    def _exhausted(
        self,
        checked: Verified,
        agreement: AgreementState,
        facts: RequestFacts,
        digest: bytes,
        now: int,
        _code_held: bool,
    ) -> NewAccess:
        """A grant decided again with the agreement's quota used up (the store refused it)."""
        request, signature, signer = checked
        exhausted = decide(agreement, facts, now=now, used=agreement.quota)
        return self._stored(request, signer, signature, exhausted, None, digest)

    # --- authorization codes -----------------------------------------------------------------

    async def redeem(self, token: Token, body: RedeemIn) -> AccessOut:
        """Decide an access that redeems a patient's authorization code, store it, answer."""
        self.authorize(token)
        ref = _b32(body.authorization_ref)
        try:
            matches = code_hash(body.code) == ref
        except SubjectError:
            matches = False
        if not matches:
            raise CodeMismatchError(
                f"the code given is not the one whose hash the request names "
                f"(authorization_ref {body.authorization_ref}); nothing was recorded"
            )
        request_id = _b32(body.request_id)
        digest = body_hash(body)
        now = int(time.time())
        try:
            decided = await self._decide_redemption(body, request_id, digest, now)
        except (BadRequestError, NotFoundError, ForbiddenError) as error:
            return (await self._replay(body, request_id, digest, error)).model()
        stored = [decided]
        [result] = await _store(self.outbox, stored)
        if not result.created:
            return (await self._stored_answer(result.view, body)).model()
        view = result.view
        self._count(*_labels(view))
        access = stored[0].access
        log.info(
            "access.redemption",
            access=body.request_id,
            decision=result.view.decision.name if result.view.decision else "?",
            fault=AuthorizationFault(access.authorization_fault or 0).name,
        )
        leaves = access.cohort
        return access_out(result.view, leaves, None if leaves is None else leaves.size)

    async def _decide_redemption(
        self, body: RedeemIn, request_id: bytes, digest: bytes, now: int
    ) -> _Decided:
        request, signature, signer = self._verify(body, now)
        agreement = await self._agreement(body, request)
        if agreement.consent_policy != ConsentPolicy.PATIENT_AUTHORIZATION:
            raise BadRequestError(
                f"agreement {body.agreement_id} is a {agreement.consent_policy.name} agreement; "
                "only PATIENT_AUTHORIZATION agreements redeem codes",
                code="not_an_authorization_agreement",
            )
        is_member = await self.view.is_requester(signer, agreement.requester)
        consents = self._consents()
        await consents.sync()
        at = judged_at(now, consents.head_time)  # the code's expiry: no earlier than the head
        code = request.authorization_ref
        found = consents.authorization(code)
        root = ZERO32 if found is None else leaf_hash(found.subject)
        redemption = RedemptionFacts(
            holder=agreement.holder,
            grantee=agreement.requester,
            dataset_id=request.dataset_id,
            field_mask=request.field_mask,
            tier=request.tier,
            cohort_root=root,
            scenario=agreement.scenario,
        )
        # Held by another access: the store's unique reservation per code is what decides
        # between concurrent redemptions (this read only spares a refused write).
        # A multi-use code is never reserved: every fitting access until its expiry redeems it.
        multi_use = found is not None and found.multi_use
        held = not multi_use and await self.outbox.code_holder(code) not in (None, request_id)

        def decided(reserved: bool, used: int) -> tuple[NewAccess, bool]:
            fault = authorization_fault(found, reserved, redemption, at)
            facts = RequestFacts.of(
                request,
                requester_is_member=is_member,
                cohort_size=1,
                cohort_root=root,
                authorization_ref=code,
                authorization_fault=fault,
            )
            outcome = decide(agreement, facts, now=now, used=used)
            leaves = None
            if outcome.granted:
                assert found is not None  # a GRANTED redemption found its authorization
                leaves = CohortLeaves(root, 1, found.subject)
            access = self._stored(request, signer, signature, outcome, leaves, digest, fault)
            return access, outcome.granted

        access, granted = decided(held, 0)
        if not granted:
            return _Decided(access, None)
        access = access._replace(
            quota=agreement.quota,
            chain_used=self.view.chain_used(request.agreement_id),
            code=None if multi_use else code,
        )

        def again(code_held: bool) -> NewAccess:
            return decided(code_held, 0 if code_held else agreement.quota)[0]

        return _Decided(access, None, again)

    def _stored(
        self,
        request: AccessRequest,
        signer: ChecksumAddress,
        signature: bytes,
        outcome: PolicyDecision,
        leaves: CohortLeaves | None,
        digest: bytes,
        fault: AuthorizationFault | None = None,
        *,
        quota: int | None = None,
        chain_used: int = 0,
    ) -> NewAccess:
        """The decision as the outbox keeps it: the record for the chain (with the admitted
        cohort's tree head) and, beside it, the cohort's leaves for the hospital's store."""
        record = encode_access_record(
            request, signer, signature, outcome.decision, outcome.reason,
            ZERO32 if leaves is None else leaves.root, 0 if leaves is None else leaves.size,
        )  # fmt: skip
        # By position (a test holds the fields): a named tuple made with keywords builds a
        # dict of them for its `__new__` first (0.85 -> 0.24 µs).
        return NewAccess(
            request.request_id, digest, self.org, request.agreement_id, outcome.decision,
            outcome.reasons, record, leaves, None if fault is None else int(fault), quota,
            chain_used,
        )  # fmt: skip

    # --- result releases ---------------------------------------------------------------------

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
        call = RELEASE_RESULT.encode_args(access_id, access.agreement_id, result_hash, kind, size)
        key = keccak(access_id + result_hash)  # both 32 bytes: their ABI encoding, as before
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

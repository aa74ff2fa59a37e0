"""What patients permit, decided in pure Python: which subjects of a cohort are admitted, and
whether an access may redeem a patient's authorization code.

No web3, HTTP or database here (like `ledger_gateway.policy`), so every rule is tested
exhaustively in microseconds:

- `admits` / `admit_cohort` extend `ConsentRegistry.hasConsent`: a subject is admitted iff it
  has a GRANTED consent at the agreement's holder whose scenarios contain the agreement's
  scenario, whose window `validFrom <= now <= validUntil` holds, and whose scope covers the
  study (`in_scope`): a specific consent names the study's agreement id among its studies (when
  it names any), its requesting organization among its requesters (when it names any), and —
  with DUO:0000007 — exactly the agreement's disease term. A withdrawal the gateway has
  relayed but not yet seen mined counts as withdrawn already (`withdrawn_pending`).
- `authorization_fault` mirrors `ConsentRegistry._faultOf` rule for rule and in the same order,
  so a fault named here is the one `AccessLogAuthorizationRefused` would carry; a single-use
  code the gateway has reserved for an access still in its outbox counts as REDEEMED (a
  multi-use code is never reserved: every fitting access until its expiry redeems it).
- `judged_at`: the time both are judged at, this machine's clock or the latest block's time
  where the chain's clock runs ahead of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from hashlib import sha256

from dul.cohort import leaf_hash
from dul.consent_terms import scope_covers
from dul.domain import AuthorizationFault, AuthorizationStatus, ConsentStatus, Scenario, Tier

ZERO32 = bytes(32)


@dataclass(frozen=True)
class ConsentState:
    """One consent as the registry recorded it (and its status since)."""

    consent_id: bytes
    holder: bytes
    subject: bytes
    scenarios: int
    """Bit set `1 << Scenario`."""
    status: ConsentStatus
    valid_from: int
    valid_until: int
    subject_key: str | None = None
    """The patient's own key, which may sign a withdrawal (None: the steward withdraws)."""
    duo_codes: tuple[int, ...] = ()
    disease: bytes = ZERO32
    """The disease term of a disease-specific consent (`dul.consent_terms`; zero: none)."""
    studies: frozenset[bytes] = frozenset()
    """Agreement ids the consent is limited to (empty: any)."""
    requesters: frozenset[bytes] = frozenset()
    """Requesting organizations the consent is limited to (empty: any)."""
    by_subject: bool = False
    """The patient granted it with their own key (EIP-712 `ConsentGrant`), not a steward."""

    @property
    def specific(self) -> bool:
        return bool(self.studies or self.requesters or self.disease != ZERO32)


@dataclass(frozen=True)
class Study:
    """What a specific consent is matched against: the agreement an access is under."""

    agreement_id: bytes
    requester: bytes
    disease: bytes = ZERO32
    """The agreement's disease term (its signed `diseaseCode`; zero: none)."""


def in_scope(consent: ConsentState, study: Study | None) -> bool:
    """Whether the consent's scope covers `study` (an unrestricted consent covers any; a
    specific one no unnamed study): the audit service's rule (`dul.consent_terms.scope_covers`)."""
    return scope_covers(
        consent.studies,
        consent.requesters,
        consent.disease,
        None if study is None else (study.agreement_id, study.requester, study.disease),
        no_disease=ZERO32,
    )


@dataclass(frozen=True)
class AuthorizationState:
    """One authorization code as the registry keeps it, keyed by the code's hash."""

    code_hash: bytes
    holder: bytes
    subject: bytes
    grantee: bytes
    dataset: bytes
    field_mask: int
    tier: Tier
    scenario: Scenario
    status: AuthorizationStatus
    expires_at: int
    redeemed_by: bytes = ZERO32
    multi_use: bool = False
    """Opens every fitting access until it expires (stays ISSUED); else one access."""


@dataclass(frozen=True)
class RedemptionFacts:
    """What an access would redeem an authorization with (the arguments of
    `ConsentRegistry.redeemAuthorization` that AccessLog passes)."""

    holder: bytes
    """The agreement's holder."""
    grantee: bytes
    """The agreement's requesting organization."""
    dataset_id: bytes
    field_mask: int
    tier: Tier
    cohort_root: bytes
    scenario: Scenario
    """The agreement's scenario: a code opens only the scenario the patient named."""


def covers(
    consent: ConsentState,
    holder: bytes,
    scenario: Scenario,
    now: int,
    study: Study | None = None,
) -> bool:
    """Whether this one consent admits its subject for `scenario` at `holder` at time `now`
    to `study`."""
    return (
        consent.status == ConsentStatus.GRANTED
        and consent.holder == holder
        and bool(consent.scenarios >> scenario & 1)
        and consent.valid_from <= now <= consent.valid_until
        and in_scope(consent, study)
    )


def admits(
    consents: Iterable[ConsentState],
    holder: bytes,
    scenario: Scenario,
    now: int,
    withdrawn_pending: Collection[bytes] = (),
    study: Study | None = None,
) -> bool:
    """Whether a subject with `consents` is admitted to `study` (pending withdrawals count)."""
    return any(
        covers(c, holder, scenario, now, study) and c.consent_id not in withdrawn_pending
        for c in consents
    )


def admit_cohort(
    subjects: Iterable[bytes],
    consents_by_subject: Mapping[bytes, Sequence[ConsentState]],
    holder: bytes,
    scenario: Scenario,
    now: int,
    withdrawn_pending: Collection[bytes] = (),
    study: Study | None = None,
) -> tuple[list[bytes], int]:
    """The admitted subjects (distinct, ascending: the cohort tree's leaf order) and how many
    distinct named subjects were left out. A dict lookup per subject: 10,000 take ~2 ms."""
    named = set(subjects)
    admitted = []
    for subject in named:
        found = consents_by_subject.get(subject)
        if found and admits(found, holder, scenario, now, withdrawn_pending, study):
            admitted.append(subject)
    admitted.sort()
    return admitted, len(named) - len(admitted)


def judged_at(wall: int, chain_time: int | None) -> int:
    """The time a consent's window and a code's expiry are judged at: this machine's clock,
    or the latest block's time seen (None: none yet) where that is later.

    The chain judges an access by its own block's time, which is never before the latest
    block's: a consent read from a block of time T is in force on chain from T, and a node
    whose clock runs ahead of this machine's (validators differ by seconds; Hardhat's node
    after `evm_revert`) must not make it look not yet in force. A code's expiry and a
    consent's end judged at the later time are the cautious side."""
    return wall if chain_time is None else max(wall, chain_time)


def authorization_fault(
    authorization: AuthorizationState | None,
    reserved: bool,
    request: RedemptionFacts,
    now: int,
) -> AuthorizationFault:
    """The first reason `request` may not redeem `authorization`, in `_faultOf`'s order
    (NONE: it may). `reserved`: another access the gateway granted holds the code already."""
    a = authorization
    if a is None or a.status == AuthorizationStatus.NONE:
        return AuthorizationFault.UNKNOWN
    if a.status == AuthorizationStatus.REDEEMED or (reserved and not a.multi_use):
        return AuthorizationFault.REDEEMED
    if a.status == AuthorizationStatus.REVOKED:
        return AuthorizationFault.REVOKED
    if now > a.expires_at:
        return AuthorizationFault.EXPIRED
    if a.holder != request.holder:
        return AuthorizationFault.WRONG_HOLDER
    if a.grantee != request.grantee:
        return AuthorizationFault.WRONG_GRANTEE
    if a.dataset != request.dataset_id:
        return AuthorizationFault.DATASET_NOT_IN_SCOPE
    if request.field_mask == 0 or request.field_mask & ~a.field_mask:
        return AuthorizationFault.FIELDS_NOT_IN_SCOPE
    if request.tier > a.tier:
        return AuthorizationFault.TIER_ABOVE_SCOPE
    if request.cohort_root != leaf_hash(a.subject):
        return AuthorizationFault.WRONG_SUBJECT
    if a.scenario != request.scenario:
        return AuthorizationFault.WRONG_SCENARIO
    return AuthorizationFault.NONE


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 9162 root over leaf hashes already in leaf order: `CohortTree.build(subjects)
    .root` when `leaves` are their `leaf_hash`es, ascending by subject (a test checks it). Kept
    leaf hashes halve the hashing of a 10,000-subject decision."""
    if not leaves:
        raise ValueError("a cohort tree needs at least one subject")
    level = list(leaves)
    while len(level) > 1:
        n = len(level)
        pairs = zip(level[0 : n - 1 : 2], level[1::2], strict=True)
        paired = [sha256(b"\x01" + left + right).digest() for left, right in pairs]
        if len(level) & 1:
            paired.append(level[-1])  # a lone right-most node moves up unchanged
        level = paired
    return level[0]


class _Windows:
    """The validity windows of one scenario's granted consents, by subject, and the set of
    subjects they cover for every `now` in [start, boundary) — kept up to date as consents come
    and go, so admitting a cohort is one set intersection (C speed)."""

    def __init__(self) -> None:
        self.by_subject: dict[bytes, list[tuple[int, int, bytes]]] = {}
        self.covered: set[bytes] | None = None
        self.start = 0
        self.boundary = 0

    def _account(self, subject: bytes, window: tuple[int, int, bytes]) -> None:
        assert self.covered is not None
        first, last, _ = window
        if first <= self.start <= last:  # covers the whole range up to `last`
            self.covered.add(subject)
            self.boundary = min(self.boundary, last + 1)
        elif first > self.start:  # opens inside the range: the range must end there
            self.boundary = min(self.boundary, first)

    def add(self, subject: bytes, window: tuple[int, int, bytes]) -> None:
        self.by_subject.setdefault(subject, []).append(window)
        if self.covered is not None:
            self._account(subject, window)

    def remove(self, subject: bytes, consent_id: bytes) -> None:
        found = self.by_subject.get(subject)
        if found is None:
            return
        kept = [w for w in found if w[2] != consent_id]
        if kept:
            self.by_subject[subject] = kept
        else:
            del self.by_subject[subject]
        if self.covered is not None and subject in self.covered:
            self.covered.discard(subject)
            for window in kept:  # still covered by another window?
                self._account(subject, window)

    def covered_at(self, now: int) -> set[bytes]:
        if self.covered is None or not self.start <= now < self.boundary:
            self.covered, self.start, self.boundary = set(), now, 2**64
            for subject, windows in self.by_subject.items():
                for window in windows:
                    self._account(subject, window)
        return self.covered


class ConsentIndex:
    """One holder's consents, indexed so that admitting a cohort is a set intersection and a
    sort (10,000 named subjects: ~2 ms), with `admit_cohort`'s meaning; the leaf hashes of
    consented subjects are kept for the cohort tree.

    Per scenario it keeps the windows of the GRANTED unrestricted consents covering it (the
    registry refuses overlapping ones, so usually one per subject). Specific consents (naming
    studies, requesters or a disease) are kept apart, by subject: only named subjects that no
    unrestricted consent covers are looked up there. A withdrawal the gateway relayed
    (`mark_withdrawn`) closes the consent's windows at once, before it is mined."""

    def __init__(self, holder: bytes) -> None:
        self.holder = holder
        self.consents: dict[bytes, ConsentState] = {}
        self.by_subject: dict[bytes, list[ConsentState]] = {}
        self.withdrawn_pending: set[bytes] = set()
        self.leaves: dict[bytes, bytes] = {}
        """Subject -> `leaf_hash(subject)`, for every subject that has had a granted consent."""
        self._windows = tuple(_Windows() for _ in Scenario)
        self._specific: dict[bytes, list[ConsentState]] = {}
        """Subject -> its live specific consents."""

    def _open(self, c: ConsentState) -> None:
        if c.subject not in self.leaves:
            self.leaves[c.subject] = leaf_hash(c.subject)
        if c.specific:
            self._specific.setdefault(c.subject, []).append(c)
            return
        for scenario in Scenario:
            if c.scenarios >> scenario & 1:
                self._windows[scenario].add(c.subject, (c.valid_from, c.valid_until, c.consent_id))

    def _close(self, c: ConsentState) -> None:
        if c.specific:
            kept = [s for s in self._specific.get(c.subject, ()) if s.consent_id != c.consent_id]
            if kept:
                self._specific[c.subject] = kept
            else:
                self._specific.pop(c.subject, None)
            return
        for scenario in Scenario:
            if c.scenarios >> scenario & 1:
                self._windows[scenario].remove(c.subject, c.consent_id)

    def add(self, c: ConsentState) -> None:
        """A recorded consent (another holder's is ignored)."""
        if c.holder != self.holder or c.consent_id in self.consents:
            return
        self.consents[c.consent_id] = c
        self.by_subject.setdefault(c.subject, []).append(c)
        if c.status == ConsentStatus.GRANTED and c.consent_id not in self.withdrawn_pending:
            self._open(c)

    def set_status(self, consent_id: bytes, status: ConsentStatus) -> None:
        """The chain changed a consent's status (a withdrawal mined)."""
        old = self.consents.get(consent_id)
        if old is None:
            return
        new = replace(old, status=status)
        self.consents[consent_id] = new
        self.by_subject[old.subject] = [
            new if c.consent_id == consent_id else c for c in self.by_subject[old.subject]
        ]
        live = old.status == ConsentStatus.GRANTED and consent_id not in self.withdrawn_pending
        if live and status != ConsentStatus.GRANTED:
            self._close(old)
        self.withdrawn_pending.discard(consent_id)

    def mark_withdrawn(self, consent_id: bytes) -> None:
        """A withdrawal relayed and not yet mined: in force from now on."""
        if consent_id in self.withdrawn_pending:
            return
        found = self.consents.get(consent_id)
        if found is not None and found.status != ConsentStatus.GRANTED:
            return  # already withdrawn on chain
        self.withdrawn_pending.add(consent_id)
        if found is not None:
            self._close(found)

    def consents_of(self, subject: bytes) -> list[ConsentState]:
        """The subject's consents, oldest first (a pending withdrawal shows as WITHDRAWN)."""
        return [
            replace(c, status=ConsentStatus.WITHDRAWN) if c.consent_id in self.withdrawn_pending
            else c
            for c in self.by_subject.get(subject, ())
        ]  # fmt: skip

    def admit(
        self, named: Iterable[bytes], scenario: Scenario, now: int, study: Study | None = None
    ) -> tuple[list[bytes], int]:
        """`admit_cohort` over the indexed consents."""
        distinct = named if isinstance(named, set | frozenset) else set(named)
        covered = distinct & self._windows[scenario].covered_at(now)
        if self._specific:  # only subjects holding a specific consent are looked at again
            extra = [
                subject
                for subject in self._specific.keys() & distinct
                if subject not in covered
                and any(
                    covers(c, self.holder, scenario, now, study) for c in self._specific[subject]
                )
            ]
            if extra:
                covered = covered.union(extra)
        admitted = sorted(covered)
        return admitted, len(distinct) - len(admitted)

    def root(self, admitted: Sequence[bytes]) -> bytes:
        """The cohort tree root of admitted subjects (ascending), from the kept leaf hashes."""
        leaves = self.leaves
        return tree_root([leaves.get(s) or leaf_hash(s) for s in admitted])

"""Cohorts: which subjects an access admitted, from the hospital's store, checked against the chain.

An access under a consent-requiring agreement records only the RFC 9162 tree head (root, size)
of its admitted subjects (`dul.cohort`); the leaves stay in the hospital. Each hospital's
gateway keeps them in its store's `cohort_leaves` table (access_id, root, size, leaves: the
sorted 32-byte subject references, concatenated). The indexer reads that table through a
`CohortSource` — plain SQL, read-only — for every granted access with a cohort, rebuilds the
tree, and keeps the result per access (`cohort`, a `CohortStatus`) and, when the tree head
equals the chain's, one `cohort_member` row per subject with its inclusion proof precomputed:

    verified            the leaves were found and their tree head is the one on chain
    leaves_unavailable  no configured source has the access (yet: retried while following)
    root_mismatch       a source has leaves, but they do not hash to the root on chain

A patient-authorization access (a cohort of one, the authorization's subject, whose root the
chain itself compared with the code's subject when it redeemed it) needs no hospital store:
the indexer takes the subject from the indexed `AuthorizationIssued` (`authorization_cohorts`).

Cost: one batched query per page to each source for the page's cohort accesses, then ~3 us per
subject (tree, proofs, rows); a 10,000-subject cohort takes ~40 ms, off the writer's thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog
from sqlalchemy import Engine, bindparam, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from audit.events import DecodedEvent
from audit.uints import SQLITE_CONNECT_ARGS, install
from dul.cohort import CohortTree, leaf_hash
from dul.domain import Decision

log = structlog.get_logger("audit.cohorts")

ZERO32 = "0x" + "00" * 32
SUBJECT_BYTES = 32
AUTHORIZATION_SOURCE = "authorization"
"""`cohort.source` of a cohort of one taken from the indexed authorization."""


class CohortStatus(StrEnum):
    VERIFIED = "verified"
    LEAVES_UNAVAILABLE = "leaves_unavailable"
    ROOT_MISMATCH = "root_mismatch"


Leaves = tuple[bytes, int, list[bytes]]
"""(root, size, subject references) as a hospital's cohort store holds them."""


@runtime_checkable
class CohortSource(Protocol):
    """Where the leaves of an access's cohort are kept (a hospital gateway's store)."""

    name: str

    def leaves(self, access_id: bytes) -> Leaves | None:
        """The cohort of `access_id`, or None when this source does not hold it."""
        ...


def split_leaves(blob: bytes) -> list[bytes]:
    """The subject references of a `cohort_leaves.leaves` value (32 bytes each)."""
    if len(blob) % SUBJECT_BYTES:
        raise ValueError(f"{len(blob)} bytes of leaves is not a whole number of subjects")
    return [blob[i : i + SUBJECT_BYTES] for i in range(0, len(blob), SUBJECT_BYTES)]


def read_only_engine(url: str, *, connect_timeout: int = 3) -> Engine:
    """An engine that cannot write: SQLite opened `mode=ro` (a missing file is an error, not
    a new empty store), PostgreSQL with a short connect timeout so an outage is answered
    quickly instead of hanging. The audit store is read this way by the API and the CLI, a
    hospital's store by `SqlCohortSource` (whose role needs SELECT on `cohort_leaves` only)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            return create_engine(url, connect_args=SQLITE_CONNECT_ARGS)
        path = Path(database).resolve()
        engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true",
            connect_args={"timeout": 5, **SQLITE_CONNECT_ARGS},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA query_only=1")
            cursor.close()

        return engine
    postgres = parsed.get_backend_name() == "postgresql"
    connect_args = {"connect_timeout": connect_timeout} if postgres else {}
    return install(create_engine(url, pool_pre_ping=True, connect_args=connect_args))


_ONE = text("SELECT root, size, leaves FROM cohort_leaves WHERE access_id = :id")
_MANY = text(
    "SELECT access_id, root, size, leaves FROM cohort_leaves WHERE access_id IN :ids"
).bindparams(bindparam("ids", expanding=True))


class SqlCohortSource:
    """A gateway store's `cohort_leaves` table, by SQLAlchemy URL, read with plain SQL.

    A store that cannot be read (down, not created yet, no table yet) holds nothing for now:
    the access is `leaves_unavailable` and retried later, the indexer goes on. The warning is
    logged once per outage, not once per page.
    """

    BATCH = 500

    def __init__(self, url: str, name: str | None = None) -> None:
        self.url = url
        self.name = name or make_url(url).render_as_string(hide_password=True)
        self._engine: Engine | None = None
        self._failing = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = read_only_engine(self.url, connect_timeout=5)
        return self._engine

    def _failed(self, exc: SQLAlchemyError) -> None:
        if not self._failing:
            detail = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
            log.warning("audit.cohort_source_unavailable", source=self.name, error=detail)
        self._failing = True
        if self._engine is not None:  # a file created since is opened afresh next time
            self._engine.dispose()
            self._engine = None

    def _recovered(self) -> None:
        if self._failing:
            log.info("audit.cohort_source_back", source=self.name)
        self._failing = False

    def leaves(self, access_id: bytes) -> Leaves | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(_ONE, {"id": access_id}).first()
        except SQLAlchemyError as exc:
            self._failed(exc)
            return None
        self._recovered()
        if row is None:
            return None
        return bytes(row[0]), int(row[1]), split_leaves(bytes(row[2]))

    def leaves_many(self, access_ids: Sequence[bytes]) -> dict[bytes, Leaves]:
        """Several cohorts in one query per `BATCH` ids (what a page of accesses asks)."""
        found: dict[bytes, Leaves] = {}
        if not access_ids:
            return found
        try:
            with self.engine.connect() as conn:
                for at in range(0, len(access_ids), self.BATCH):
                    chunk = list(access_ids[at : at + self.BATCH])
                    for access_id, root, size, leaves in conn.execute(_MANY, {"ids": chunk}):
                        found[bytes(access_id)] = (
                            bytes(root), int(size), split_leaves(bytes(leaves))
                        )  # fmt: skip
        except SQLAlchemyError as exc:
            self._failed(exc)
            return {}
        except ValueError as exc:  # a leaves value of a broken length: the whole batch is off
            log.warning("audit.cohort_source_malformed", source=self.name, error=str(exc))
            return found
        self._recovered()
        return found

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def open_sources(urls: Iterable[str]) -> list[CohortSource]:
    return [SqlCohortSource(url) for url in urls]


def close_sources(sources: Iterable[CohortSource]) -> None:
    for source in sources:
        close = getattr(source, "close", None)
        if close is not None:
            close()


# --- rows -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CohortAccess:
    """A granted access with a cohort, as the chain recorded it."""

    block_number: int
    tx_index: int
    log_index: int
    access_id: str
    root: str
    size: int
    authorization_ref: str = ZERO32

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.block_number, self.tx_index, self.log_index)


def cohort_accesses(events: Iterable[DecodedEvent]) -> list[CohortAccess]:
    """The granted accesses with a cohort among a page's events."""
    out: list[CohortAccess] = []
    for ev in events:
        if ev.name != "AccessRecorded":
            continue
        record = ev.args["record"]
        if (
            record["decision"] == Decision.GRANTED
            and record["cohortSize"] > 0
            and record["cohortRoot"] != ZERO32
        ):
            out.append(
                CohortAccess(
                    ev.block_number, ev.tx_index, ev.log_index, ev.args["accessId"],
                    record["cohortRoot"], int(record["cohortSize"]), record["authorizationRef"],
                )
            )  # fmt: skip
    return out


def authorization_accesses(events: Iterable[DecodedEvent]) -> list[CohortAccess]:
    """The granted accesses of a page that redeemed a code with a cohort of one (cheap to
    ask of every page: most accesses carry no code)."""
    out: list[CohortAccess] = []
    for ev in events:
        if ev.name != "AccessRecorded":
            continue
        record = ev.args["record"]
        if record["authorizationRef"] != ZERO32 and record["cohortSize"] == 1:
            out.extend(cohort_accesses((ev,)))
    return out


Position = tuple[int, int, int]
"""An access's event position (block, tx index, log index): its one unique key in the store.
A request id is not: the same id under two agreements is two accesses."""


@dataclass
class CohortRows:
    """`cohort` rows by their access's position and `cohort_member` rows, in `COHORT_COLUMNS`
    order."""

    cohorts: dict[Position, tuple[Any, ...]] = field(default_factory=dict)
    members: list[tuple[Any, ...]] = field(default_factory=list)

    def status(self, position: Position) -> str | None:
        row = self.cohorts.get(position)
        return None if row is None else str(row[4])

    def add(self, other: CohortRows) -> None:
        self.cohorts.update(other.cohorts)
        self.members.extend(other.members)

    def only(self, positions: set[Position]) -> CohortRows:
        """The rows of these accesses (the others' events were not written)."""
        return CohortRows(
            {p: row for p, row in self.cohorts.items() if p in positions},
            [m for m in self.members if (m[0], m[1], m[2]) in positions],
        )


def cohort_rows(access: CohortAccess, subjects: Sequence[bytes], source: str) -> CohortRows:
    """The rows of one access's cohort from its leaves: members with their proofs when the
    tree head is the chain's, a `root_mismatch` status (and no member) otherwise."""
    b, t, i = access.position
    rows = CohortRows()
    try:
        tree = CohortTree.build(subjects)
    except ValueError:  # no subject at all
        rows.cohorts[b, t, i] = (
            b, t, i, access.access_id, CohortStatus.ROOT_MISMATCH.value, source, 0, None, None
        )  # fmt: skip
        return rows
    root = "0x" + tree.root.hex()
    if root != access.root or tree.size != access.size:
        rows.cohorts[b, t, i] = (
            b, t, i, access.access_id, CohortStatus.ROOT_MISMATCH.value, source, tree.size, root,
            None,
        )  # fmt: skip
        return rows
    rows.cohorts[b, t, i] = (
        b, t, i, access.access_id, CohortStatus.VERIFIED.value, source, tree.size, root, None
    )  # fmt: skip
    access_id = access.access_id
    proofs = audit_paths(tree)
    rows.members = [
        (b, t, i, index, "0x" + subject.hex(), access_id, proof)
        for index, (subject, proof) in enumerate(zip(tree.subjects, proofs, strict=True))
    ]
    return rows


def audit_paths(tree: CohortTree) -> list[bytes]:
    """Every leaf's RFC 9162 audit path, concatenated bottom up: `tree.proof(i)` for all i.

    Built top down: a node's path is its sibling (none for a lone right-most node, which
    moves up unchanged) followed by its parent's path, so the whole tree costs one
    concatenation per node (~2n) instead of one per leaf and level (n log n)."""
    paths = [b""]
    for level in reversed(tree.levels[:-1]):
        width = len(level)
        paths = [(level[j ^ 1] if j ^ 1 < width else b"") + paths[j >> 1] for j in range(width)]
    return paths


def unavailable_rows(accesses: Iterable[CohortAccess]) -> CohortRows:
    rows = CohortRows()
    for access in accesses:
        b, t, i = access.position
        rows.cohorts[b, t, i] = (
            b, t, i, access.access_id, CohortStatus.LEAVES_UNAVAILABLE.value, None, 0, None, None
        )  # fmt: skip
    return rows


def fetch_leaves(
    sources: Sequence[CohortSource],
    access_ids: Sequence[bytes],
    roots: Mapping[bytes, set[bytes]] | None = None,
) -> dict[bytes, tuple[Leaves, str]]:
    """The leaves of each access id some source holds (the first source that has it wins).

    A request id names one access per agreement, so two hospitals' stores may both hold an
    id: given `roots` (the tree heads the chain recorded under each id), a hit whose root is
    none of them does not settle the id, and later sources are asked too (the first hit
    stays, should none match)."""
    found: dict[bytes, tuple[Leaves, str]] = {}
    settled: set[bytes] = set()
    missing = list(access_ids)
    for source in sources:
        if not missing:
            break
        many = getattr(source, "leaves_many", None)
        if many is not None:
            batch: Mapping[bytes, Leaves] = many(missing)
        else:
            batch = {}
            for access_id in missing:
                got = source.leaves(access_id)
                if got is not None:
                    batch[access_id] = got
        for access_id, leaves in batch.items():
            wanted = None if roots is None else roots.get(access_id)
            if wanted is None or leaves[0] in wanted:
                found[access_id] = (leaves, source.name)
                settled.add(access_id)
            else:
                found.setdefault(access_id, (leaves, source.name))
        missing = [a for a in missing if a not in settled]
    return found


def resolve(sources: Sequence[CohortSource], accesses: Sequence[CohortAccess]) -> CohortRows:
    """The rows of these accesses' cohorts from the sources: verified, mismatched, or
    `leaves_unavailable` when no source holds them (nothing at all without sources)."""
    rows = CohortRows()
    if not sources or not accesses:
        return rows
    ids = [bytes.fromhex(a.access_id[2:]) for a in accesses]
    roots: dict[bytes, set[bytes]] = {}
    for access_id, access in zip(ids, accesses, strict=True):
        roots.setdefault(access_id, set()).add(bytes.fromhex(access.root[2:]))
    found = fetch_leaves(sources, list(dict.fromkeys(ids)), roots)
    for access_id, access in zip(ids, accesses, strict=True):
        hits = [found[access_id]] if access_id in found else []
        if len(roots[access_id]) > 1:  # one id, two agreements in this page: each its own
            hits = fetch_each(sources, access_id, bytes.fromhex(access.root[2:])) or hits
        if not hits:
            rows.add(unavailable_rows([access]))
            continue
        (_root, _size, subjects), name = hits[0]
        rows.add(cohort_rows(access, subjects, name))
    return rows


def fetch_each(
    sources: Sequence[CohortSource], access_id: bytes, root: bytes
) -> list[tuple[Leaves, str]]:
    """The hit of the source whose leaves of `access_id` have tree head `root` (none: [])."""
    for source in sources:
        got = source.leaves(access_id)
        if got is not None and got[0] == root:
            return [(got, source.name)]
    return []


def authorization_rows(access: CohortAccess, subject: str) -> CohortRows | None:
    """The cohort of one of a patient-authorization access, when `subject` (the authorization's)
    is the leaf its root names; None otherwise."""
    if access.size != 1 or "0x" + leaf_hash(bytes.fromhex(subject[2:])).hex() != access.root:
        return None
    b, t, i = access.position
    rows = CohortRows()
    rows.cohorts[b, t, i] = (
        b, t, i, access.access_id, CohortStatus.VERIFIED.value, AUTHORIZATION_SOURCE, 1,
        access.root, None,
    )  # fmt: skip
    rows.members.append((b, t, i, 0, subject, access.access_id, b""))
    return rows


def split_proof(blob: bytes) -> list[str]:
    """A stored `cohort_member.proof` as 0x hex siblings, bottom up."""
    text = blob.hex()
    return ["0x" + text[i : i + 64] for i in range(0, len(text), 64)]

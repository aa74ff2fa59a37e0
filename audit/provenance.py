"""Provenance graphs over the audit store, with W3C PROV meanings on the edges.

A regulator asks about one thing (an agreement, a dataset, an access, a released result, an
organization, a patient reference) and gets the graph around it:

- **up**: what it was derived from and under what — an access `used` its agreement and
  dataset, `wasAssociatedWith` the requester and the recording gateway, who `actedOnBehalfOf`
  their organizations; an agreement `wasDerivedFrom` its previous version and its datasets'
  scope, `wasAttributedTo` both parties, and is shown with the signatures that made it binding.
- **down**: what came of it — the accesses under an agreement, the results they generated
  (`wasGeneratedBy`), the later versions, the members of an organization and what they did.

Every node and edge carries the chain reference of the event that states it (block, tx hash,
tx index, log index), so each answer can be checked against the chain (`audit.verify`).

Patients: an access with a cohort `used` its cohort (one node: root, size, whether the
hospital's leaves were found and verified, how many admitted subjects had consented — never
10,000 subject nodes); an access that redeemed a patient's authorization code `used` it. A
*subject* query (a subject reference: nothing else about the patient exists here) answers the
subject's consents and authorization codes (`wasAttributedTo` the subject), every access whose
verified cohort held it (`used` the subject, with the leaf index) and the consent that covered
each (`used` the consent, by the rule of `audit.consents`), and — upward — what those accesses
were under (agreements, requesters and their organizations).

Artifacts (ArtifactRegistry): a registered artifact `wasDerivedFrom` the artifacts and the
released results it names and `wasAttributedTo` its owner organization and its registrant; a
released result `wasGeneratedBy` the access that released it. So the upward graph of a federated
model reaches every update, access, agreement (with its signatures and parties), dataset,
hospital, requester and cohort behind it, and the downward graph of an access or a result every
artifact made from it. A registered MODEL is a node of type `model`, any other artifact (a
registered RESULT or MODEL_UPDATE, or a released result not registered) of type `artifact`;
`attributes.kind` says which (a released result's kind is its release kind).

PROV types: agreements, datasets, results, artifacts, consents, authorizations and cohorts are
entities; accesses and signatures are activities; organizations, member accounts and subjects (the
patients, by reference) are agents.

Queries are index look-ups bounded by `limit` neighbours per node and `max_nodes` per graph
(an agreement with a million accesses answers with the first `limit` and says so in
`truncated`), which is what keeps a query in milliseconds at a million indexed events.

Errors (each maps to RFC 9457 problem JSON in `audit.app`):

    AuditQueryError           audit_error        500 (never raised on purpose)
    ├── MalformedIdError      malformed_id       422 an id that cannot be one of this kind
    ├── NotFoundError         <kind>_not_found   404 a well-formed id the store does not hold
    ├── ForbiddenError        out_of_scope       403 an id the caller's role may not see
    ├── AmbiguousIdError      ambiguous_access   409 a request id naming accesses under several
    │                                                agreements (ask for `id@agreement`)
    └── StoreUnavailableError store_unavailable  503 the store cannot be reached or read

An access is its request id and its agreement (as on chain): its node is `access:{id}@{agreement}`
and its cohort's `cohort:{id}@{agreement}`. `access/{id}` takes the request id alone while it
names one access the caller may see, or `{id}@{agreement}`.

Who sees what (`audit.scope`): a query takes a `Visibility`; a node it does not allow is left
out with its edges, and the node it would have been reached from is listed in `cut`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import structlog
from eth_utils.address import to_checksum_address
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, TextClause, bindparam, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from audit.consents import CONSENT_FACTS_SQL, ConsentFacts, consent_facts, covering
from dul.consent_terms import disease_term
from dul.domain import (
    AgreementStatus,
    ArtifactKind,
    AuthorizationStatus,
    BreakGlassOutcome,
    ConsentStatus,
    Decision,
    DenyReason,
    Operation,
    OrgKind,
    OrgStatus,
    ReleaseKind,
    Role,
    Scenario,
    Tier,
    break_glass_reason,
    is_break_glass,
    slug_id,
)
from dul.errors import DulError

log = structlog.get_logger("audit.provenance")


# --- errors -----------------------------------------------------------------------------------


class AuditQueryError(DulError):
    code = "audit_error"
    status = 500


class MalformedIdError(AuditQueryError):
    code = "malformed_id"
    status = 422


class NotFoundError(AuditQueryError):
    code = "not_found"
    status = 404


class StoreUnavailableError(AuditQueryError):
    code = "store_unavailable"
    status = 503


class ForbiddenError(AuditQueryError):
    code = "out_of_scope"
    status = 403


class AmbiguousIdError(AuditQueryError):
    code = "ambiguous_access"
    status = 409


class Visibility(Protocol):
    """What a caller may see of the graph (`audit.scope.Scope`)."""

    def allows(self, conn: Connection, node_id: str) -> bool:
        """May this node (`<type>:<id>`) appear in a graph?"""
        ...

    def check_root(self, conn: Connection, node_id: str) -> None:
        """Raises ForbiddenError (or NotFoundError where existence must not leak) unless a
        query may start at this node."""
        ...


@contextmanager
def store_errors() -> Iterator[None]:
    """Turns a database that cannot be reached or read (missing file, refused connection, no
    tables yet) into StoreUnavailableError: the caller answers 503, never a traceback."""
    try:
        yield
    except (OperationalError, ProgrammingError, DBAPIError) as exc:
        log.warning("audit.store_unavailable", error=str(exc.orig)[:300])
        raise StoreUnavailableError(
            f"the audit store cannot be read: {str(exc.orig).splitlines()[0][:200]}"
        ) from None


# --- ids --------------------------------------------------------------------------------------


class Kind(StrEnum):
    """What a provenance query can start from (SPEC §3, fixed)."""

    AGREEMENT = "agreement"
    DATASET = "dataset"
    ACCESS = "access"
    ARTIFACT = "artifact"
    SUBJECT = "subject"
    ORGANIZATION = "organization"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    BOTH = "both"


_HEX32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ACCESS_KEY = re.compile(r"^0x[0-9a-fA-F]{64}@0x[0-9a-fA-F]{64}$")


def access_key(access_id: str, agreement_id: str) -> str:
    """An access's key in the graph (`access:` and `cohort:` node ids): its request id `@` its
    agreement id. On chain an access is named by the pair — a request id is unique within its
    agreement, and the same id under another agreement (another hospital's) is another access."""
    return f"{access_id}@{agreement_id}"


def split_access_key(key: str) -> tuple[str, str]:
    """(request id, agreement id) of an `access_key`."""
    access_id, _, agreement_id = key.partition("@")
    return access_id, agreement_id


_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,31}$")


def parse_id(kind: Kind, raw: str) -> str:
    """The canonical store spelling (lowercase 0x hex of 32 bytes) of an id of `kind`.

    Datasets and organizations also take the readable slug their bytes32 id was made from
    (`hospital-a`, `hospital-a/omop-cdm`); everything else is a 32-byte hash.
    """
    if _HEX32.match(raw):
        return raw.lower()
    if kind == Kind.ACCESS and _ACCESS_KEY.match(raw):
        return raw.lower()
    if kind in (Kind.DATASET, Kind.ORGANIZATION) and _SLUG.match(raw):
        return "0x" + slug_id(raw).hex()
    expected = "0x + 64 hex digits" + (
        " or a slug of 1-32 characters [A-Za-z0-9._/-]"
        if kind in (Kind.DATASET, Kind.ORGANIZATION)
        else " (the request id), optionally @ the agreement id"
        if kind == Kind.ACCESS
        else ""
    )
    raise MalformedIdError(f"{raw[:80]!r} is not a valid {kind.value} id ({expected})")


@functools.lru_cache(maxsize=4096)
def readable(hex_id: str) -> str:
    """The slug inside a slug-made bytes32 id, or the hex itself."""
    raw = bytes.fromhex(hex_id[2:]).rstrip(b"\0")
    try:
        decoded = raw.decode()
    except UnicodeDecodeError:
        return hex_id
    return decoded if decoded and decoded.isprintable() and _SLUG.match(decoded) else hex_id


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def _checksummed(address: str) -> str:
    """An address as wallets print it (EIP-55); the node id keeps the stored lower case."""
    try:
        return to_checksum_address(address)
    except ValueError:
        return address


def iso_time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def indexed_time(conn: Connection) -> int | None:
    """The block time of the newest indexed block: the moment the store speaks for."""
    row = conn.execute(
        text("SELECT timestamp FROM block WHERE timestamp IS NOT NULL ORDER BY number DESC LIMIT 1")
    ).first()
    return None if row is None else int(row[0])


def effective_status(stored: int, valid_until: int, now: int | None) -> tuple[str, str | None]:
    """As the chain's `AgreementRegistry.status`: ACTIVE or SUSPENDED past the window's end is
    EXPIRED without a transaction. `now` is the newest indexed block time; returns the status
    name and, when expired, the ISO moment the window ended."""
    if (
        now is not None
        and stored in (AgreementStatus.ACTIVE, AgreementStatus.SUSPENDED)
        and now > valid_until
    ):
        return AgreementStatus.EXPIRED.name, iso_time(valid_until)
    return _enum_name(AgreementStatus, stored), None


# --- the graph --------------------------------------------------------------------------------


class ChainRef(BaseModel):
    """Where on the chain a node or an edge is stated: the event's position and transaction."""

    block: int
    tx_index: int
    log_index: int
    tx_hash: str

    @property
    def position(self) -> str:
        return f"{self.block}/{self.tx_index}/{self.log_index}"


class Node(BaseModel):
    id: str = Field(description="`<type>:<id>`, e.g. `access:0x…`")
    type: str = Field(
        description="agreement | dataset | access | artifact (a released result, a registered "
        "RESULT or MODEL_UPDATE) | model (a registered MODEL) | organization | account | "
        "signature | consent | authorization | cohort | subject"
    )
    prov: str = Field(description="entity | activity | agent")
    label: str
    chain: ChainRef | None
    attributes: dict[str, Any] = Field(default_factory=dict)


class Edge(BaseModel):
    relation: str = Field(
        description="used | wasGeneratedBy | wasDerivedFrom | wasAssociatedWith | "
        "actedOnBehalfOf | wasAttributedTo"
    )
    source: str
    target: str
    chain: ChainRef
    attributes: dict[str, Any] = Field(default_factory=dict)


class Graph(BaseModel):
    root: str
    direction: Direction
    nodes: list[Node]
    edges: list[Edge]
    truncated: list[str] = Field(
        default_factory=list,
        description="nodes with more neighbours than `limit` (the rest were not expanded)",
    )
    cut: list[str] = Field(
        default_factory=list,
        description="nodes with neighbours the caller's role may not see (left out, unnamed)",
    )
    limit: int

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


def _ref(row: Any, tx_hash_key: str = "tx_hash") -> ChainRef:
    return ChainRef.model_construct(
        block=int(row["block_number"]),
        tx_index=int(row["tx_index"]),
        log_index=int(row["log_index"]),
        tx_hash=str(row[tx_hash_key]),
    )


def _disease(code: Any) -> str | None:
    """The disease term (a CURIE) of a stored bytes32 disease code; None for none."""
    return disease_term(bytes.fromhex(str(code)[2:])) if code else None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=256)
def _text(sql: str) -> TextClause:
    """Parsed once per statement: parsing the bind parameters of `text()` costs more than a
    primary-key look-up on SQLite."""
    return text(sql)


_RELEASES_OF_ONE = (
    "SELECT * FROM result_release WHERE access_id = :k AND agreement_id = :g "
    "ORDER BY block_number, tx_index, log_index"
)
_RELEASES_OF_MANY = text(
    "SELECT * FROM result_release WHERE access_id IN :ids "
    "ORDER BY block_number, tx_index, log_index"
).bindparams(bindparam("ids", expanding=True))


_ARTIFACT_RELEASES = text(
    "SELECT * FROM result_release WHERE result_hash IN :ks "
    "ORDER BY block_number, tx_index, log_index"
).bindparams(bindparam("ks", expanding=True))
_ARTIFACTS = text("SELECT * FROM artifact WHERE artifact_id IN :ks").bindparams(
    bindparam("ks", expanding=True)
)
_ARTIFACT_PARENT_COUNTS = text(
    "SELECT artifact_id, 'r' AS parent, count(*) AS n FROM artifact_release_parent "
    "WHERE artifact_id IN :ks GROUP BY artifact_id "
    "UNION ALL SELECT artifact_id, 'p', count(*) FROM artifact_parent "
    "WHERE artifact_id IN :ks GROUP BY artifact_id"
).bindparams(bindparam("ks", expanding=True))

_DERIVED_FROM_ANY = text(
    "SELECT d.derived_from, a.* FROM artifact a JOIN ("
    "SELECT artifact_id, derived_from, ROW_NUMBER() OVER (PARTITION BY derived_from "
    "ORDER BY block_number, tx_index, log_index) AS nth FROM ("
    "SELECT p.artifact_id, p.parent_id AS derived_from FROM artifact_parent p "
    "WHERE p.parent_id IN :ks UNION "
    "SELECT r.artifact_id, r.result_hash FROM artifact_release_parent r "
    "WHERE r.result_hash IN :ks AND r.artifact_id <> r.result_hash) u "
    "JOIN artifact USING (artifact_id)) d ON a.artifact_id = d.artifact_id "
    "WHERE d.nth <= :n ORDER BY a.block_number, a.tx_index, a.log_index"
).bindparams(bindparam("ks", expanding=True))

_Step = tuple[Edge, str]
"""An edge and the id of the node at its other end."""


class _Builder:
    """Loads nodes and their neighbours, one indexed query each, on one connection (the
    releases of a page of accesses, and the artifacts they released, a few queries each)."""

    def __init__(
        self,
        conn: Connection,
        limit: int,
        max_nodes: int,
        consent_lag: float = 60.0,
        visibility: Visibility | None = None,
    ) -> None:
        self.conn = conn
        self.visibility = visibility
        self.cut: list[str] = []
        self.limit = limit
        self.max_nodes = max_nodes
        self.consent_lag = consent_lag
        self.cohort_nodes = True
        """An access links its cohort node (not in a subject's graph: the subject is the point)."""
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str, str, str, Any, Any], Edge] = {}
        self.truncated: list[str] = []
        self.release_cache: dict[str, list[Any]] = {}
        """Releases by access key (`access_key`)."""
        self.artifact_cache: dict[str, tuple[Any, Any, tuple[int, int]]] = {}
        """What `_node_artifact` reads, by artifact key, read for a page of releases at once."""
        self.derivation_cache: dict[str, list[Any]] = {}
        """The first `limit` + 1 artifacts derived from each of those (`_derivation_down`)."""

    def rows(self, sql: str, **params: Any) -> list[Any]:
        return list(self.conn.execute(_text(sql), params).mappings())

    def one(self, sql: str, **params: Any) -> Any:
        return self.conn.execute(_text(sql), params).mappings().first()

    def releases_of(self, node_id: str, key: str) -> list[Any]:
        """Releases of the access `key` (an `access_key`), from the batch read with its
        siblings when there was one."""
        cached = self.release_cache.pop(key, None)
        if cached is not None:
            return cached
        access_id, agreement_id = split_access_key(key)
        return self.limited(node_id, _RELEASES_OF_ONE, k=access_id, g=agreement_id)

    def prefetch_releases(self, accesses: list[Any]) -> None:
        """One query for the releases of a page of access rows instead of one per access (a
        downward walk from an agreement expands `limit` accesses at once)."""
        if not accesses:
            return
        for row in accesses:
            self.release_cache[access_key(str(row["access_id"]), str(row["agreement_id"]))] = []
        ids = sorted({str(row["access_id"]) for row in accesses})
        results: set[str] = set()
        for row in self.conn.execute(_RELEASES_OF_MANY, {"ids": ids}).mappings():
            cached = self.release_cache.get(access_key(row["access_id"], row["agreement_id"]))
            if cached is not None:  # the same id under an agreement not in this page: not ours
                cached.append(row)
                results.add(str(row["result_hash"]))
        self.prefetch_artifacts(sorted(results - self.artifact_cache.keys()))

    def prefetch_artifacts(self, keys: list[str]) -> None:
        """What `_node_artifact` reads for each of `keys`, in three queries instead of three
        per artifact (the results released by a page of accesses are the next level of a
        downward walk). Nodes are still made only when the walk reaches them."""
        if not keys:
            return
        releases: dict[str, Any] = {}
        for row in self.conn.execute(_ARTIFACT_RELEASES, {"ks": keys}).mappings():
            releases.setdefault(str(row["result_hash"]), row)  # the first, as `LIMIT 1`
        registered = {
            str(row["artifact_id"]): row
            for row in self.conn.execute(_ARTIFACTS, {"ks": keys}).mappings()
        }
        counts: dict[str, dict[str, int]] = {}
        if registered:
            for artifact, parent, n in self.conn.execute(
                _ARTIFACT_PARENT_COUNTS, {"ks": sorted(registered)}
            ):
                counts.setdefault(str(artifact), {})[str(parent)] = int(n)
        derived: dict[str, list[Any]] = {key: [] for key in keys}
        for child in self.conn.execute(_DERIVED_FROM_ANY, {"ks": keys, "n": self.limit + 1}):
            derived[str(child[0])].append(child._mapping)
        self.derivation_cache.update(derived)
        for key in keys:
            found = counts.get(key, {})
            self.artifact_cache[key] = (
                releases.get(key),
                registered.get(key),
                (found.get("r", 0), found.get("p", 0)),
            )

    def limited(self, node_id: str, sql: str, **params: Any) -> list[Any]:
        found = self.rows(sql + " LIMIT :limit", limit=self.limit + 1, **params)
        if len(found) > self.limit:
            self.truncated.append(node_id)
            found = found[: self.limit]
        return found

    # nodes

    def load(self, node_id: str) -> Node | None:
        if node_id in self.nodes:
            return self.nodes[node_id]
        type_, _, key = node_id.partition(":")
        loader: Callable[[str], Node | None] | None = getattr(self, f"_node_{type_}", None)
        node = loader(key) if loader is not None else None
        if node is not None:
            self.nodes[node_id] = node
        return node

    def _node_agreement(self, key: str) -> Node | None:
        row = self.one("SELECT * FROM agreement WHERE agreement_id = :k", k=key)
        if row is None:
            return None
        history = self.rows(
            "SELECT block_number, tx_index, log_index, tx_hash, event, status, by_account, reason "
            "FROM agreement_status_change WHERE agreement_id = :k "
            "ORDER BY block_number, tx_index, log_index",
            k=key,
        )
        status, expired_at = effective_status(
            int(row["status"]), int(row["valid_until"]), indexed_time(self.conn)
        )
        return Node.model_construct(
            id=f"agreement:{key}",
            type="agreement",
            prov="entity",
            label=f"agreement v{row['version']} ({_enum_name(Scenario, row['scenario'])})"
            + (" expired" if expired_at else ""),
            chain=_ref(row),
            attributes={
                "agreement_id": key,
                "version": row["version"],
                "previous_id": row["previous_id"],
                "status": status,
                "expired_at": expired_at,
                "scenario": _enum_name(Scenario, row["scenario"]),
                "duo_codes": [f"DUO:{int(c):07d}" for c in _json(row["duo_codes"])],
                "disease": _disease(row["disease_code"]),
                "max_tier": _enum_name(Tier, row["max_tier"]),
                "operations": [o.name for o in Operation if row["operations"] >> o & 1],
                "valid_from": row["valid_from"],
                "valid_until": row["valid_until"],
                "quota": row["quota"],
                "terms_hash": row["terms_hash"],
                "digest": row["digest"],
                "status_history": [
                    {
                        "event": h["event"],
                        "status": _enum_name(AgreementStatus, h["status"]),
                        "by": h["by_account"],
                        "reason": h["reason"],
                        "chain": _ref(h).model_dump(),
                    }
                    for h in history
                ],
            },
        )

    def _node_dataset(self, key: str) -> Node | None:
        row = self.one("SELECT * FROM dataset WHERE dataset_id = :k", k=key)
        if row is None:
            return None
        return Node.model_construct(
            id=f"dataset:{key}",
            type="dataset",
            prov="entity",
            label=readable(key),
            chain=_ref(row),
            attributes={
                "dataset_id": key,
                "schema_ref": row["schema_ref"],
                "max_tier": _enum_name(Tier, row["max_tier"]),
                "fields": _json(row["fields"]),
            },
        )

    def _node_access(self, key: str) -> Node | None:
        row = self._access_row(key)
        return None if row is None else self.access_node(row)

    def _access_row(self, key: str) -> Any:
        access_id, agreement_id = split_access_key(key)
        return self.one(
            "SELECT * FROM access_event WHERE access_id = :k AND agreement_id = :g",
            k=access_id,
            g=agreement_id,
        )

    def access_node(self, row: Any) -> Node:
        """The node of an access row already read (a downward walk reads hundreds at once)."""
        key = str(row["access_id"])
        node_id = f"access:{access_key(key, str(row['agreement_id']))}"
        if node_id in self.nodes:
            return self.nodes[node_id]
        granted = row["decision"] == Decision.GRANTED
        node = Node.model_construct(
            id=node_id,
            type="access",
            prov="activity",
            label=f"access {_enum_name(Decision, row['decision']).lower()}"
            + ("" if granted else f" ({_enum_name(DenyReason, row['reason'])})"),
            chain=_ref(row),
            attributes={
                "access_id": key,
                "agreement_id": row["agreement_id"],
                "decision": _enum_name(Decision, row["decision"]),
                "reason": _enum_name(DenyReason, row["reason"]),
                "tier": _enum_name(Tier, row["tier"]),
                "operation": _enum_name(Operation, row["operation"]),
                "field_mask": row["field_mask"],
                "request_hash": row["request_hash"],
                "cohort_root": row["cohort_root"],
                "cohort_size": row["cohort_size"],
                "authorization_ref": row["authorization_ref"],
                "requester_signature": row["sig_r"] + row["sig_s"][2:] + f"{row['sig_v']:02x}",
                **self._break_glass(row),
            },
        )
        self.nodes[node_id] = node
        return node

    def _break_glass(self, row: Any) -> dict[str, Any]:
        """A break-glass access's reason, review deadline and review (none for others)."""
        ref = bytes.fromhex(str(row["authorization_ref"])[2:])
        if not is_break_glass(ref) or row["decision"] != Decision.GRANTED:
            return {}
        found = self.one(
            "SELECT x.review_due, r.outcome, r.reviewer FROM break_glass_access x "
            "LEFT JOIN break_glass_review r ON r.access_id = x.access_id "
            "AND r.agreement_id = x.agreement_id "
            "WHERE x.access_id = :k AND x.agreement_id = :g",
            k=str(row["access_id"]),
            g=str(row["agreement_id"]),
        )
        return {
            "break_glass_reason": break_glass_reason(ref).name,
            "break_glass_review_due": None if found is None else int(found["review_due"]),
            "break_glass_review": "UNREVIEWED" if found is None or found["outcome"] is None
            else _enum_name(BreakGlassOutcome, found["outcome"]),
            "break_glass_reviewer": None if found is None else found["reviewer"],
        }  # fmt: skip

    def _node_artifact(self, key: str) -> Node | None:
        """A registered artifact (type `model` for a MODEL, else `artifact`, its kind RESULT,
        MODEL_UPDATE or MODEL) or a released result (type `artifact`, its kind the release
        kind); a model update registered under its release's result hash is both."""
        prefetched = self.artifact_cache.pop(key, None)
        if prefetched is None:
            release = self.one(
                "SELECT * FROM result_release WHERE result_hash = :k "
                "ORDER BY block_number, tx_index, log_index LIMIT 1",
                k=key,
            )
            registered = self.one("SELECT * FROM artifact WHERE artifact_id = :k", k=key)
            parents = (0, 0)
            if registered is not None:
                counts = self.one(
                    "SELECT (SELECT count(*) FROM artifact_release_parent "
                    "WHERE artifact_id = :k) AS r, "
                    "(SELECT count(*) FROM artifact_parent WHERE artifact_id = :k) AS p",
                    k=key,
                )
                parents = (int(counts["r"]), int(counts["p"])) if counts else (0, 0)
        else:
            release, registered, parents = prefetched
        if registered is None:
            if release is None:
                return None
            return Node.model_construct(
                id=f"artifact:{key}",
                type="artifact",
                prov="entity",
                label=f"released {_enum_name(ReleaseKind, release['kind']).lower()}",
                chain=_ref(release),
                attributes={
                    "result_hash": key,
                    "kind": _enum_name(ReleaseKind, release["kind"]),
                    "size": release["size"],
                    "registered": False,
                },
            )
        kind = _enum_name(ArtifactKind, registered["kind"])
        attributes: dict[str, Any] = {
            "artifact_id": key,
            "kind": kind,
            "owner_org": registered["owner_org"],
            "owner": readable(str(registered["owner_org"])),
            "registrant": registered["registrant"],
            "metadata_hash": registered["metadata_hash"],
            "registered": True,
            "derived_from_releases": parents[0],
            "derived_from_artifacts": parents[1],
        }
        if release is not None:
            attributes["result_hash"] = key
            attributes["release_kind"] = _enum_name(ReleaseKind, release["kind"])
            attributes["size"] = release["size"]
        return Node.model_construct(
            id=f"artifact:{key}",
            type="model" if registered["kind"] == ArtifactKind.MODEL else "artifact",
            prov="entity",
            label=f"{kind.lower().replace('_', ' ')} of {readable(str(registered['owner_org']))}",
            chain=_ref(registered),
            attributes=attributes,
        )

    def _node_organization(self, key: str) -> Node | None:
        row = self.one("SELECT * FROM organization WHERE org_id = :k", k=key)
        if row is None:
            return None
        return Node.model_construct(
            id=f"organization:{key}",
            type="organization",
            prov="agent",
            label=str(row["name"]),
            chain=_ref(row),
            attributes={
                "org_id": key,
                "slug": readable(key),
                "kind": _enum_name(OrgKind, row["kind"]),
                "status": _enum_name(OrgStatus, row["status"]),
            },
        )

    def _node_account(self, key: str) -> Node | None:
        roles = self.rows(
            "SELECT * FROM member_role WHERE account = :k ORDER BY block_number, tx_index, "
            "log_index",
            k=key,
        )
        held: dict[int, bool] = {}
        for r in roles:
            held[int(r["role"])] = bool(r["granted"])
        return Node.model_construct(
            id=f"account:{key}",
            type="account",
            prov="agent",
            label=_checksummed(key),
            chain=_ref(roles[0]) if roles else None,
            attributes={
                "address": _checksummed(key),
                "roles": [_enum_name(Role, role) for role, on in sorted(held.items()) if on],
                "member_of": roles[0]["org_id"] if roles else None,
            },
        )

    def _node_subject(self, key: str) -> Node | None:
        counts = self.one(
            "SELECT (SELECT count(*) FROM consent WHERE subject = :k) AS consents, "
            "(SELECT count(*) FROM patient_authorization WHERE subject = :k) AS authorizations, "
            "(SELECT count(*) FROM cohort_member WHERE subject_ref = :k) AS accesses",
            k=key,
        )
        if counts is None or not any(int(v) for v in counts.values()):
            return None
        return Node.model_construct(
            id=f"subject:{key}",
            type="subject",
            prov="agent",
            label=f"subject {key[:10]}…",
            chain=None,
            attributes={
                "subject_ref": key,
                "consents": int(counts["consents"]),
                "authorizations": int(counts["authorizations"]),
                "accesses": int(counts["accesses"]),
            },
        )

    def _node_consent(self, key: str) -> Node | None:
        row = self.one(
            "SELECT c.*, w.block_number AS w_block, w.tx_index AS w_tx, w.log_index AS w_log, "
            "w.tx_hash AS w_hash, w.by_account AS w_by, w.by_subject AS w_self FROM consent c "
            "LEFT JOIN consent_withdrawal w ON w.consent_id = c.consent_id "
            "WHERE c.consent_id = :k",
            k=key,
        )
        if row is None:
            return None
        scenarios = [s.name for s in Scenario if int(row["scenarios"]) >> s & 1]
        status = _enum_name(ConsentStatus, row["status"])
        by_patient = bool(row["by_subject"])
        history = [{"event": "recorded", "by": row["recorder"], "by_subject": by_patient,
                    "chain": _ref(row).model_dump()}]  # fmt: skip
        if row["w_block"] is not None:
            history.append({
                "event": "withdrawn", "by": row["w_by"], "by_subject": bool(row["w_self"]),
                "chain": _prefixed_ref(row, "w_").model_dump(),
            })  # fmt: skip
        return Node.model_construct(
            id=f"consent:{key}",
            type="consent",
            prov="entity",
            label=f"consent {status.lower()} ({', '.join(scenarios)})",
            chain=_ref(row),
            attributes={
                "consent_id": key,
                "subject_ref": row["subject"],
                "holder_org": row["holder_org"],
                "status": status,
                "scenarios": scenarios,
                "duo_codes": [f"DUO:{int(c):07d}" for c in _json(row["duo_codes"])],
                # specific consent: what it is limited to (empty / None: not limited)
                "studies": str(row["studies"]).split(),
                "requesters": str(row["requesters"]).split(),
                "disease": _disease(row["disease_code"]),
                "valid_from": row["valid_from"],
                "valid_until": row["valid_until"],
                "withdrawable_by_subject": int(row["subject_key"], 16) != 0,
                # who gave it: the patient with their own key, or a steward on their behalf
                "granted_by": "patient" if by_patient else "steward",
                "history": history,
            },
        )

    def _node_authorization(self, key: str) -> Node | None:
        row = self.one(
            "SELECT p.*, r.block_number AS r_block, r.tx_index AS r_tx, r.log_index AS r_log, "
            "r.tx_hash AS r_hash, r.access_id AS r_access, v.block_number AS v_block, "
            "v.tx_index AS v_tx, v.log_index AS v_log, v.tx_hash AS v_hash, v.by_account AS v_by, "
            "v.by_subject AS v_self "
            "FROM patient_authorization p "
            "LEFT JOIN authorization_redemption r ON r.code_hash = p.code_hash "
            "LEFT JOIN authorization_revocation v ON v.code_hash = p.code_hash "
            "WHERE p.code_hash = :k",
            k=key,
        )
        if row is None:
            return None
        status = _enum_name(AuthorizationStatus, row["status"])
        by_patient = bool(row["issued_by_subject"])
        history = [{"event": "issued", "by": row["issuer"], "by_subject": by_patient,
                    "chain": _ref(row).model_dump()}]  # fmt: skip
        if row["v_block"] is not None:
            history.append({"event": "revoked", "by": row["v_by"],
                            "by_subject": bool(row["v_self"]),
                            "chain": _prefixed_ref(row, "v_").model_dump()})  # fmt: skip
        # every use (a multi-use code has one per access), oldest first
        last_use, last_agreement, uses = None, None, 0
        # its access is the next log of the same transaction (the access log redeems, then
        # records): its agreement names it where the request id names accesses elsewhere too
        for use in self.rows(
            "SELECT r.block_number AS r_block, r.tx_index AS r_tx, r.log_index AS r_log, "
            "r.tx_hash AS r_hash, r.access_id AS r_access, a.agreement_id AS r_agreement "
            "FROM authorization_redemption r LEFT JOIN access_event a "
            "ON a.block_number = r.block_number AND a.tx_index = r.tx_index "
            "AND a.log_index = r.log_index + 1 "
            "WHERE r.code_hash = :k ORDER BY r.block_number, r.tx_index, r.log_index",
            k=key,
        ):
            history.append({"event": "redeemed", "access_id": use["r_access"],
                            "agreement_id": use["r_agreement"],
                            "chain": _prefixed_ref(use, "r_").model_dump()})  # fmt: skip
            last_use, last_agreement, uses = use["r_access"], use["r_agreement"], uses + 1
        return Node.model_construct(
            id=f"authorization:{key}",
            type="authorization",
            prov="entity",
            label=f"authorization code {status.lower()} ({_enum_name(Scenario, row['scenario'])})",
            chain=_ref(row),
            attributes={
                "code_hash": key,
                "subject_ref": row["subject"],
                "holder_org": row["holder_org"],
                "grantee_org": row["grantee_org"],
                "dataset_id": row["dataset_id"],
                "field_mask": row["field_mask"],
                "tier": _enum_name(Tier, row["tier"]),
                "scenario": _enum_name(Scenario, row["scenario"]),
                "expires_at": row["expires_at"],
                "issued_by": "patient" if by_patient else "steward",
                "multi_use": bool(row["multi_use"]),
                "uses": uses,
                "status": status,
                "redeemed_by_access": last_use,
                # a request id names one access per agreement: its agreement names the access
                "redeemed_by_agreement": last_agreement,
                "history": history,
            },
        )

    def _node_cohort(self, key: str) -> Node | None:
        """The cohort of access `key` (an `access_key`): its tree head on chain and what the
        store made of it."""
        access_id, agreement_id = split_access_key(key)
        row = self.one(
            "SELECT a.block_number, a.tx_index, a.log_index, a.tx_hash, a.cohort_root, "
            "a.cohort_size, a.agreement_id, c.status AS cohort_status, c.source, c.leaves, "
            "c.found_root, c.consented FROM access_event a "
            "LEFT JOIN cohort c ON c.block_number = a.block_number "
            "AND c.tx_index = a.tx_index AND c.log_index = a.log_index "
            "WHERE a.access_id = :k AND a.agreement_id = :g",
            k=access_id,
            g=agreement_id,
        )
        if row is None or not int(row["cohort_size"]) or int(row["cohort_root"], 16) == 0:
            return None
        status = row["cohort_status"] or "leaves_unavailable"
        consented = row["consented"]
        return Node.model_construct(
            id=f"cohort:{key}",
            type="cohort",
            prov="entity",
            label=f"cohort of {row['cohort_size']} ({status.replace('_', ' ')})",
            chain=_ref(row),
            attributes={
                "access_id": access_id,
                "agreement_id": agreement_id,
                "root": row["cohort_root"],
                "size": int(row["cohort_size"]),
                "status": status,
                "source": row["source"],
                "leaves_found": None if row["leaves"] is None else int(row["leaves"]),
                "found_root": row["found_root"] if status == "root_mismatch" else None,
                "consented_members": None if consented is None else int(consented),
            },
        )

    def _node_signature(self, key: str) -> Node | None:
        block, tx, log_index = (int(p) for p in key.split("/"))
        row = self.one(
            "SELECT * FROM agreement_signature WHERE block_number = :b AND tx_index = :t "
            "AND log_index = :i",
            b=block,
            t=tx,
            i=log_index,
        )
        if row is None:
            return None
        return Node.model_construct(
            id=f"signature:{key}",
            type="signature",
            prov="activity",
            label=f"signature of party {row['party']}",
            chain=_ref(row),
            attributes={
                "agreement_id": row["agreement_id"],
                "signer": row["signer"],
                "party": row["party"],
                "signature": row["signature"],
            },
        )

    # edges

    def _edge(self, relation: str, source: str, target: str, row: Any, **attributes: Any) -> Edge:
        return Edge.model_construct(
            relation=relation, source=source, target=target, chain=_ref(row), attributes=attributes
        )

    def up(self, node_id: str) -> list[_Step]:
        """Edges from this node to what it came from (it is their PROV subject)."""
        type_, _, key = node_id.partition(":")
        out: list[_Step] = []
        if type_ == "access":
            row = self._access_row(key)
            if row is None:
                return out
            for target, relation, role in (
                (f"agreement:{row['agreement_id']}", "used", "agreement"),
                (f"dataset:{row['dataset_id']}", "used", "dataset"),
                (f"account:{row['requester']}", "wasAssociatedWith", "requester"),
                (f"account:{row['recorder']}", "wasAssociatedWith", "recorder"),
            ):
                out.append((self._edge(relation, node_id, target, row, role=role), target))
            out.extend(self._patient_steps(node_id, row))
        elif type_ in ("consent", "authorization"):
            row = self.one(
                f"SELECT * FROM {_PATIENT_TABLES[type_]} "  # noqa: S608 - fixed names
                f"WHERE {_PATIENT_KEYS[type_]} = :k",
                k=key,
            )
            if row is None:
                return out
            for target, role in (
                (f"subject:{row['subject']}", "subject"),
                (f"organization:{row['holder_org']}", "holder"),
            ):
                out.append((self._edge("wasAttributedTo", node_id, target, row, role=role), target))
        elif type_ == "artifact":
            for row in self.limited(
                node_id,
                "SELECT * FROM result_release WHERE result_hash = :k "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            ):
                target = f"access:{access_key(row['access_id'], row['agreement_id'])}"
                edge = self._edge(
                    "wasGeneratedBy", node_id, target, row,
                    kind=_enum_name(ReleaseKind, row["kind"]), size=row["size"],
                    recorder=row["recorder"],
                )  # fmt: skip
                out.append((edge, target))
            out.extend(self._derivation_up(node_id, key))
        elif type_ == "agreement":
            row = self.one("SELECT * FROM agreement WHERE agreement_id = :k", k=key)
            if row is None:
                return out
            if row["previous_id"]:
                target = f"agreement:{row['previous_id']}"
                out.append((self._edge("wasDerivedFrom", node_id, target, row,
                                       role="amends"), target))  # fmt: skip
            for org, role in ((row["holder_org"], "holder"), (row["requester_org"], "requester")):
                target = f"organization:{org}"
                out.append((self._edge("wasAttributedTo", node_id, target, row, role=role), target))
            for scope in self.rows(
                "SELECT dataset_id, field_mask FROM agreement_dataset WHERE agreement_id = :k "
                "ORDER BY dataset_id",
                k=key,
            ):
                target = f"dataset:{scope['dataset_id']}"
                edge = self._edge(
                    "wasDerivedFrom", node_id, target, row, role="scope",
                    field_mask=scope["field_mask"],
                )  # fmt: skip
                out.append((edge, target))
            # The signatures point at the agreement, but they are what made it binding: an
            # upward query ("under what?") shows them and who signed.
            for sig in self.rows(
                "SELECT * FROM agreement_signature WHERE agreement_id = :k "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            ):
                out.append((self._signature_edge(sig), self._signature_id(sig)))
        elif type_ == "signature":
            node = self.load(node_id)
            if node is not None:
                signer = f"account:{node.attributes['signer']}"
                assert node.chain is not None
                edge = Edge.model_construct(
                    relation="wasAssociatedWith", source=node_id, target=signer,
                    chain=node.chain, attributes={"role": "signer"},
                )  # fmt: skip
                out.append((edge, signer))
        elif type_ == "dataset":
            row = self.one("SELECT * FROM dataset WHERE dataset_id = :k", k=key)
            if row is not None:
                target = f"organization:{row['holder_org']}"
                out.append((self._edge("wasAttributedTo", node_id, target, row,
                                       role="holder"), target))  # fmt: skip
        elif type_ == "account":
            for row in self.rows(
                "SELECT * FROM member_role WHERE account = :k AND granted = :g "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
                g=True,
            ):
                target = f"organization:{row['org_id']}"
                edge = self._edge("actedOnBehalfOf", node_id, target, row,
                                  role=_enum_name(Role, row["role"]))  # fmt: skip
                out.append((edge, target))
        return out

    def _derivation_up(self, node_id: str, key: str) -> list[_Step]:
        """A registered artifact: who registered it for whom, the artifacts and the released
        results it was derived from (a release whose result hash is the artifact's own id is
        the artifact itself: its access is already linked by `wasGeneratedBy`)."""
        row = self.one("SELECT * FROM artifact WHERE artifact_id = :k", k=key)
        if row is None:
            return []
        out: list[_Step] = []
        for target, role in (
            (f"organization:{row['owner_org']}", "owner"),
            (f"account:{row['registrant']}", "registrant"),
        ):
            out.append((self._edge("wasAttributedTo", node_id, target, row, role=role), target))
        for parent in self.limited(
            node_id,
            "SELECT p.parent_id, a.block_number, a.tx_index, a.log_index, a.tx_hash "
            "FROM artifact_parent p JOIN artifact a ON a.artifact_id = p.artifact_id "
            "WHERE p.artifact_id = :k ORDER BY p.parent_id",
            k=key,
        ):
            target = f"artifact:{parent['parent_id']}"
            edge = self._edge("wasDerivedFrom", node_id, target, parent, role="parent")
            out.append((edge, target))
        for ref in self.limited(
            node_id,
            "SELECT r.access_id, r.agreement_id, r.result_hash, a.block_number, a.tx_index, "
            "a.log_index, a.tx_hash FROM artifact_release_parent r "
            "JOIN artifact a ON a.artifact_id = r.artifact_id WHERE r.artifact_id = :k "
            "ORDER BY r.agreement_id, r.access_id, r.result_hash",  # the registry's order
            k=key,
        ):
            if ref["result_hash"] == key:
                continue
            target = f"artifact:{ref['result_hash']}"
            edge = self._edge(
                "wasDerivedFrom", node_id, target, ref, role="release",
                access_id=ref["access_id"], agreement_id=ref["agreement_id"],
            )  # fmt: skip
            out.append((edge, target))
        return out

    def _derivation_down(self, node_id: str, key: str) -> list[_Step]:
        """The artifacts derived from this artifact or released result."""
        out: list[_Step] = []
        derived = self.derivation_cache.pop(key, None)
        if derived is None:
            derived = self.limited(
                node_id,
                "SELECT a.* FROM artifact a WHERE a.artifact_id IN ("
                "SELECT artifact_id FROM artifact_parent WHERE parent_id = :k UNION "
                "SELECT artifact_id FROM artifact_release_parent WHERE result_hash = :k "
                "AND artifact_id <> :k) ORDER BY a.block_number, a.tx_index, a.log_index",
                k=key,
            )
        elif len(derived) > self.limit:  # as `limited` says it
            self.truncated.append(node_id)
            derived = derived[: self.limit]
        for row in derived:
            source = f"artifact:{row['artifact_id']}"
            out.append((self._edge("wasDerivedFrom", source, node_id, row,
                                   role="derived"), source))  # fmt: skip
        return out

    def _patient_steps(self, node_id: str, row: Any) -> list[_Step]:
        """An access's cohort node and the authorization code it redeemed."""
        out: list[_Step] = []
        key = str(row["access_id"])
        if self.cohort_nodes and int(row["cohort_size"]) and int(row["cohort_root"], 16):
            target = f"cohort:{access_key(key, str(row['agreement_id']))}"
            out.append((self._edge("used", node_id, target, row, role="cohort"), target))
        code = str(row["authorization_ref"])
        if int(code, 16) and not is_break_glass(bytes.fromhex(code[2:])):
            # The redemption is the log just before its access's, in the same transaction (the
            # access log redeems, then records): exact where a request id names two accesses.
            redemption = self.one(
                "SELECT * FROM authorization_redemption WHERE block_number = :b "
                "AND tx_index = :t AND log_index = :i AND access_id = :k",
                b=int(row["block_number"]), t=int(row["tx_index"]),
                i=int(row["log_index"]) - 1, k=key,
            )  # fmt: skip
            target = f"authorization:{code}"
            edge = self._edge("used", node_id, target, redemption or row, role="authorization",
                              redeemed=redemption is not None)  # fmt: skip
            out.append((edge, target))
        return out

    def _subject_steps(self, node_id: str, key: str) -> list[_Step]:
        """A subject's consents and codes, the accesses that admitted it, the consent that
        covered each."""
        out: list[_Step] = []
        for table, kind in (("consent", "consent"), ("patient_authorization", "authorization")):
            for row in self.limited(
                node_id,
                f"SELECT * FROM {table} WHERE subject = :k "  # noqa: S608 - fixed names
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            ):
                source = f"{kind}:{row[_PATIENT_KEYS[kind]]}"
                out.append((self._edge("wasAttributedTo", source, node_id, row,
                                       role="subject"), source))  # fmt: skip
        accesses = self.limited(
            node_id,
            "SELECT a.*, m.leaf_index, c.source AS cohort_source, g.holder_org AS g_holder, "
            "g.scenario AS g_scenario, b.timestamp AS block_time FROM cohort_member m "
            "JOIN access_event a ON a.block_number = m.block_number "
            "AND a.tx_index = m.tx_index AND a.log_index = m.log_index "
            "LEFT JOIN cohort c ON c.block_number = m.block_number "
            "AND c.tx_index = m.tx_index AND c.log_index = m.log_index "
            "LEFT JOIN agreement g ON g.agreement_id = a.agreement_id "
            "LEFT JOIN block b ON b.number = a.block_number "
            "WHERE m.subject_ref = :k ORDER BY m.block_number, m.tx_index, m.log_index",
            k=key,
        )
        self.prefetch_releases(accesses)
        consents = [
            facts
            for _, facts in (
                consent_facts(r)
                for r in self.rows(
                    CONSENT_FACTS_SQL + " WHERE c.subject = :k "
                    "ORDER BY c.block_number, c.tx_index, c.log_index",
                    k=key,
                )
            )
        ]
        for row in accesses:
            source = self.access_node(row).id
            admitted = "authorization" if row["cohort_source"] == "authorization" else "cohort"
            edge = self._edge("used", source, node_id, row, role="cohort member",
                              leaf_index=int(row["leaf_index"]), admitted_by=admitted)  # fmt: skip
            out.append((edge, source))
            out.extend(self._patient_steps(source, row))
            found = self._covering(consents, row)
            if found is not None:
                consent = f"consent:{found.consent_id}"
                out.append((self._edge("used", source, consent, row, role="consent"), consent))
        return out

    def _covering(self, consents: list[ConsentFacts], row: Any) -> ConsentFacts | None:
        if row["g_holder"] is None:
            return None
        return covering(
            consents,
            holder=str(row["g_holder"]),
            scenario=int(row["g_scenario"]),
            position=(int(row["block_number"]), int(row["tx_index"]), int(row["log_index"])),
            timestamp=None if row["block_time"] is None else int(row["block_time"]),
            lag=self.consent_lag,
        )

    def _signature_id(self, sig: Any) -> str:
        return f"signature:{sig['block_number']}/{sig['tx_index']}/{sig['log_index']}"

    def _signature_edge(self, sig: Any) -> Edge:
        return self._edge(
            "used", self._signature_id(sig), f"agreement:{sig['agreement_id']}", sig,
            role="signed terms", party=sig["party"],
        )  # fmt: skip

    def down(self, node_id: str) -> list[_Step]:
        """Edges from what came of this node to it (this node is their PROV object)."""
        type_, _, key = node_id.partition(":")
        out: list[_Step] = []
        if type_ == "agreement":
            accesses = self.limited(
                node_id,
                "SELECT * FROM access_event WHERE agreement_id = :k "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            )
            self.prefetch_releases(accesses)
            for row in accesses:
                source = self.access_node(row).id
                out.append((self._edge("used", source, node_id, row, role="agreement"), source))
            for row in self.rows("SELECT * FROM agreement WHERE previous_id = :k", k=key):
                source = f"agreement:{row['agreement_id']}"
                out.append((self._edge("wasDerivedFrom", source, node_id, row,
                                       role="amends"), source))  # fmt: skip
            for sig in self.rows(
                "SELECT * FROM agreement_signature WHERE agreement_id = :k "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            ):
                out.append((self._signature_edge(sig), self._signature_id(sig)))
        elif type_ == "access":
            for row in self.releases_of(node_id, key):
                source = f"artifact:{row['result_hash']}"
                edge = self._edge(
                    "wasGeneratedBy", source, node_id, row,
                    kind=_enum_name(ReleaseKind, row["kind"]), size=row["size"],
                    recorder=row["recorder"],
                )  # fmt: skip
                out.append((edge, source))
        elif type_ == "artifact":
            out.extend(self._derivation_down(node_id, key))
        elif type_ == "dataset":
            accesses = self.limited(
                node_id,
                "SELECT * FROM access_event WHERE dataset_id = :k "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            )
            self.prefetch_releases(accesses)
            for row in accesses:
                source = self.access_node(row).id
                out.append((self._edge("used", source, node_id, row, role="dataset"), source))
            for scope in self.rows(
                "SELECT a.*, s.field_mask AS scope_mask FROM agreement_dataset s "
                "JOIN agreement a ON a.agreement_id = s.agreement_id WHERE s.dataset_id = :k",
                k=key,
            ):
                source = f"agreement:{scope['agreement_id']}"
                edge = self._edge("wasDerivedFrom", source, node_id, scope, role="scope",
                                  field_mask=scope["scope_mask"])  # fmt: skip
                out.append((edge, source))
        elif type_ == "organization":
            for row in self.limited(
                node_id,
                "SELECT * FROM member_role WHERE org_id = :k AND granted = :g "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
                g=True,
            ):
                source = f"account:{row['account']}"
                edge = self._edge("actedOnBehalfOf", source, node_id, row,
                                  role=_enum_name(Role, row["role"]))  # fmt: skip
                out.append((edge, source))
            for column, role in (("holder_org", "holder"), ("requester_org", "requester")):
                for row in self.limited(
                    node_id,
                    f"SELECT * FROM agreement WHERE {column} = :k ORDER BY block_number",  # noqa: S608 - fixed names
                    k=key,
                ):
                    source = f"agreement:{row['agreement_id']}"
                    out.append((self._edge("wasAttributedTo", source, node_id, row,
                                           role=role), source))  # fmt: skip
            for row in self.rows("SELECT * FROM dataset WHERE holder_org = :k", k=key):
                source = f"dataset:{row['dataset_id']}"
                out.append((self._edge("wasAttributedTo", source, node_id, row,
                                       role="holder"), source))  # fmt: skip
            for row in self.limited(
                node_id,
                "SELECT * FROM artifact WHERE owner_org = :k "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            ):
                source = f"artifact:{row['artifact_id']}"
                out.append((self._edge("wasAttributedTo", source, node_id, row,
                                       role="owner"), source))  # fmt: skip
        elif type_ == "subject":
            out.extend(self._subject_steps(node_id, key))
        elif type_ == "account":
            # A requester's accesses (indexed); a gateway's are found through its organization's
            # agreements (no index on the recorder column: it would slow every insert).
            for row in self.limited(
                node_id,
                "SELECT * FROM access_event WHERE requester = :k "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            ):
                source = self.access_node(row).id
                out.append((self._edge("wasAssociatedWith", source, node_id, row,
                                       role="requester"), source))  # fmt: skip
            for sig in self.rows(
                "SELECT * FROM agreement_signature WHERE signer = :k "
                "ORDER BY block_number, tx_index, log_index",
                k=key,
            ):
                sig_id = self._signature_id(sig)
                edge = self._edge("wasAssociatedWith", sig_id, node_id, sig, role="signer")
                out.append((edge, sig_id))
        return out

    # traversal

    def visible(self, node_id: str) -> bool:
        return self.visibility is None or self.visibility.allows(self.conn, node_id)

    def walk(self, root: str | list[str], step: Callable[[str], list[_Step]]) -> None:
        """Breadth-first closure of `step` from `root` (or several), bounded by `max_nodes`."""
        frontier = [root] if isinstance(root, str) else list(root)
        seen = set(frontier)
        while frontier:
            following: list[str] = []
            for node_id in frontier:
                for edge, other in step(node_id):
                    if other not in seen and len(self.nodes) >= self.max_nodes:
                        if node_id not in self.truncated:
                            self.truncated.append(node_id)
                        continue
                    if not self.visible(other):
                        if node_id not in self.cut:
                            self.cut.append(node_id)
                        continue
                    if other not in self.nodes and self.load(other) is None:
                        continue  # e.g. an account that never held a role: no node
                    # an artifact's releases are edges of one event to one result node when
                    # it was released from several accesses: each is its own edge
                    a = edge.attributes
                    key = (edge.relation, edge.source, edge.target, edge.chain.position,
                           a.get("access_id"), a.get("agreement_id"))  # fmt: skip
                    self.edges.setdefault(key, edge)
                    if other not in seen:
                        seen.add(other)
                        following.append(other)
            frontier = following


_NODE_TYPE = {
    Kind.AGREEMENT: "agreement",
    Kind.DATASET: "dataset",
    Kind.ACCESS: "access",
    Kind.ARTIFACT: "artifact",
    Kind.ORGANIZATION: "organization",
    Kind.SUBJECT: "subject",
}
_PATIENT_TABLES = {"consent": "consent", "authorization": "patient_authorization"}
_PATIENT_KEYS = {"consent": "consent_id", "authorization": "code_hash"}


def _prefixed_ref(row: Any, prefix: str) -> ChainRef:
    return ChainRef.model_construct(
        block=int(row[f"{prefix}block"]),
        tx_index=int(row[f"{prefix}tx"]),
        log_index=int(row[f"{prefix}log"]),
        tx_hash=str(row[f"{prefix}hash"]),
    )


def _one_access(builder: _Builder, access_id: str) -> str:
    """The access key of request id `access_id`: the one access under it the caller may see
    (one that none may see: its key, so the root check says so; none at all: the bare id,
    not found). Raises AmbiguousIdError when the caller sees it under several agreements."""
    keys = [
        access_key(access_id, str(row["agreement_id"]))
        for row in builder.rows(
            "SELECT agreement_id FROM access_event WHERE access_id = :k "
            "ORDER BY block_number, tx_index, log_index LIMIT 64",
            k=access_id,
        )
    ]
    seen = [k for k in keys if builder.visible(f"access:{k}")]
    if len(seen) > 1:
        raise AmbiguousIdError(
            f"request id {access_id} names {len(seen)} accesses, one per agreement: "
            + ", ".join(seen)
            + "; ask for one as access/{id}@{agreement}"
        )
    return (seen or keys or [access_id])[0]


def provenance(
    engine: Engine,
    kind: Kind,
    raw_id: str,
    *,
    direction: Direction = Direction.BOTH,
    limit: int = 100,
    max_nodes: int = 2_000,
    consent_lag: float = 60.0,
    visibility: Visibility | None = None,
) -> Graph:
    """The provenance graph around one thing. Raises MalformedIdError, NotFoundError,
    StoreUnavailableError.

    A subject (a patient, by reference) has nothing upward of its own: its graph is always
    its consents, codes and accesses (down), and with `up` or `both` also what those accesses
    were under. `consent_lag` is verify's `consent_lag_s` (which consent covered an access).
    With `visibility`, the graph is cut at what it allows (ForbiddenError for a root it does not
    allow)."""
    key = parse_id(kind, raw_id)
    with store_errors(), engine.connect() as conn:
        conn.execute(text("SELECT block_number FROM checkpoint")).first()
        builder = _Builder(conn, limit, max_nodes, consent_lag, visibility)
        if kind == Kind.ACCESS and "@" not in key:
            key = _one_access(builder, key)
        root = f"{_NODE_TYPE[kind]}:{key}"
        if builder.load(root) is None:
            raise NotFoundError(
                f"the store holds no {kind.value} {raw_id}", code=f"{kind}_not_found"
            )
        if visibility is not None:
            visibility.check_root(conn, root)
        if kind == Kind.SUBJECT:
            builder.cohort_nodes = False
            builder.walk(root, builder.down)
            if direction in (Direction.UP, Direction.BOTH):
                accesses = [n for n in builder.nodes if n.startswith("access:")]
                builder.walk([n for n in accesses if builder.visible(n)], builder.up)
        else:
            if direction in (Direction.UP, Direction.BOTH):
                builder.walk(root, builder.up)
            if direction in (Direction.DOWN, Direction.BOTH):
                builder.walk(root, builder.down)
        # Walks load some nodes before they are checked (an agreement's accesses, read in one
        # page): only what the caller may see leaves.
        nodes = [n for n in builder.nodes.values() if n.id == root or builder.visible(n.id)]
    return Graph(
        root=root,
        direction=direction,
        nodes=nodes,
        edges=list(builder.edges.values()),
        truncated=builder.truncated,
        cut=builder.cut,
        limit=limit,
    )

"""Artifacts: what a requester made from the results released to it, registered on chain.

(Not to be confused with `dul.contracts.artifacts`, the packaged compiler output.)

A requester (an AI company, a research institute) registers each artifact in the
`ArtifactRegistry` with its own key: a MODEL_UPDATE a hospital released to it, a MODEL aggregated
from updates, a RESULT computed from released results. Each names what it derives from —
releases its organization received (`ReleaseRef`) and/or artifacts registered before — so a
federated model traces back to every hospital, agreement and access behind it.

Content ids are the SHA-256 of the artifact's bytes (`content_id`, `file_content_id`): the digest
that `sha256sum`, OCI registries and model hubs already show, so anyone holding the file can
check it without Ethereum tooling. An access service reports a model update through the
gateway's `POST /v1/access-requests/{id}/results` under `result_hash = content_id(update)`, which
makes the update's artifact id equal to its release's result hash.

The registry wants releases and parents as sets in ascending order (a release by its agreement,
access and result hash: `ReleaseRef.key`); `register_artifact` sorts them and refuses a repeated
one locally (`ValueError`). The transaction is simulated first
(`dul.contracts.ledger.send`): a refusal costs nothing and raises `TransactionError` whose `code`
is the registry's custom error (e.g. `ArtifactRegistryReleaseNotReceived`) and whose
`details["error_args"]` are its arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from hexbytes import HexBytes

from dul.contracts.ledger import Ledger, send
from dul.domain import ArtifactKind
from dul.signing import Signer

__all__ = [
    "ZERO_HASH",
    "Artifact",
    "Registration",
    "ReleaseRef",
    "content_id",
    "file_content_id",
    "get_artifact",
    "register_artifact",
]

CONTRACT = "ArtifactRegistry"
ZERO_HASH = bytes(32)
_CHUNK = 1 << 20


def content_id(data: bytes) -> bytes:
    """The artifact id of `data`: its SHA-256 digest (32 bytes)."""
    return hashlib.sha256(data).digest()


def file_content_id(path: Path) -> bytes:
    """`content_id` of a file's bytes, read in 1 MiB chunks (models can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


@dataclass(frozen=True)
class ReleaseRef:
    """A result released to the registrant's organization: `result_hash` released from access
    `access_id` under `agreement_id` (AccessLog `ResultReleased`)."""

    access_id: bytes
    agreement_id: bytes
    result_hash: bytes

    def __post_init__(self) -> None:
        for name in ("access_id", "agreement_id", "result_hash"):
            _check32(name, getattr(self, name))

    def as_abi(self) -> tuple[bytes, bytes, bytes]:
        return (self.access_id, self.agreement_id, self.result_hash)

    def key(self) -> tuple[bytes, bytes, bytes]:
        """The registry's order and identity of a release: agreement, access, result hash. An
        access is named by its agreement and request id, so one request id and one result
        under two agreements (a federated round at two hospitals) are two releases."""
        return (self.agreement_id, self.access_id, self.result_hash)


@dataclass(frozen=True)
class Registration:
    """A registration as the chain recorded it (from the `ArtifactRegistered` event)."""

    artifact_id: bytes
    owner: bytes
    kind: ArtifactKind
    releases: tuple[ReleaseRef, ...]
    parents: tuple[bytes, ...]
    metadata_hash: bytes
    registrant: str
    tx_hash: str
    block_number: int


@dataclass(frozen=True)
class Artifact:
    """An artifact as the registry keeps it; its parents are in its registration event."""

    owner: bytes
    kind: ArtifactKind
    registrant: str
    registered_at: int
    release_count: int
    parent_count: int


def register_artifact(
    ledger: Ledger,
    signer: Signer,
    artifact_id: bytes,
    kind: ArtifactKind,
    releases: Iterable[ReleaseRef] = (),
    parents: Iterable[bytes] = (),
    metadata_hash: bytes = ZERO_HASH,
    *,
    timeout: float = 60.0,
) -> Registration:
    """Register `artifact_id` for `signer`'s organization (the signer must be an active REQUESTER
    member), derived from `releases` its organization received and/or registered `parents`.

    Raises `ValueError` for a malformed id or a release or parent named twice, and
    `TransactionError` (code = the registry's custom error) when the chain refuses."""
    _check32("artifact_id", artifact_id)
    _check32("metadata_hash", metadata_hash)
    ordered_releases = sorted(releases, key=ReleaseRef.key)
    ordered_parents = sorted(parents)
    for parent in ordered_parents:
        _check32("parent", parent)
    for before, after in pairwise(ordered_releases):
        if before.key() == after.key():
            raise ValueError(
                f"release 0x{after.result_hash.hex()} of 0x{after.access_id.hex()} under "
                f"agreement 0x{after.agreement_id.hex()} is named twice"
            )
    for before_id, after_id in pairwise(ordered_parents):
        if before_id == after_id:
            raise ValueError(f"parent 0x{after_id.hex()} is named twice")

    registry = ledger.contract(CONTRACT)
    call = registry.functions.registerArtifact(
        artifact_id,
        int(kind),
        [r.as_abi() for r in ordered_releases],
        ordered_parents,
        metadata_hash,
    )
    receipt = send(
        ledger.w3,
        signer,
        {"to": ledger.deployment.address(CONTRACT), "data": call._encode_transaction_data()},
        timeout=timeout,
        label=f"{CONTRACT}.registerArtifact",
    )
    (event,) = registry.events.ArtifactRegistered().process_receipt(receipt)
    args = event["args"]
    return Registration(
        artifact_id=bytes(args["artifactId"]),
        owner=bytes(args["owner"]),
        kind=ArtifactKind(args["kind"]),
        releases=tuple(
            ReleaseRef(bytes(r["accessId"]), bytes(r["agreementId"]), bytes(r["resultHash"]))
            for r in args["releases"]
        ),
        parents=tuple(bytes(p) for p in args["parents"]),
        metadata_hash=bytes(args["metadataHash"]),
        registrant=str(args["registrant"]),
        tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
        block_number=int(receipt["blockNumber"]),
    )


def get_artifact(ledger: Ledger, artifact_id: bytes) -> Artifact | None:
    """The artifact registered under `artifact_id`, or None."""
    owner, kind, registrant, registered_at, releases, parents = ledger.call(
        CONTRACT, "artifact", artifact_id
    )
    if bytes(owner) == ZERO_HASH:
        return None
    return Artifact(
        owner=bytes(owner),
        kind=ArtifactKind(kind),
        registrant=str(registrant),
        registered_at=int(registered_at),
        release_count=int(releases),
        parent_count=int(parents),
    )


def _check32(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes")

"""A consent's terms as `ConsentRegistry.recordConsent` takes them, and the disease terms of
specific consent.

Specific consent: a consent may name studies (agreement ids) and requesting organizations,
and — with the disease-specific DUO code DUO:0000007 — a disease term. A disease term is an
ontology CURIE (`MONDO:0007254`, `ICD10:C50`, …) kept on chain as its UTF-8 bytes,
left-aligned and zero-padded to 32 bytes (Solidity's `bytes32("MONDO:0007254")`), so anyone
reading the chain reads the term itself. Matching is exact: a consent's disease term admits a
subject only to studies whose agreement carries the same term, byte for byte (no ontology
descendants, no case folding).

The bounds and rules here are the contract's (`MAX_SCOPE_ENTRIES`, `MAX_DUO_CODES`,
`ConsentRegistryScopeNotAscending`, `ConsentRegistryDiseaseCodeMismatch`); checking them
here gives the CLI a clear error before anything is signed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

ZERO32 = bytes(32)
ZERO_ADDRESS = "0x" + "00" * 20
MAX_SCOPE_ENTRIES = 16
"""Studies, and requesting organizations, one consent may name (`ConsentRegistry`)."""
MAX_DUO_CODES = 16
DUO_DISEASE_SPECIFIC = 7
"""GA4GH DUO:0000007, disease-specific research."""

_CURIE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*:[A-Za-z0-9._-]+$")


K = TypeVar("K")
"""An id as one side holds it: bytes in the gateway, 0x hex in the audit store."""


def scope_covers(
    studies: Collection[K],
    requesters: Collection[K],
    disease: K,
    study: tuple[K, K, K] | None,
    *,
    no_disease: K,
) -> bool:
    """Whether a consent's scope (the studies, requesting organizations and disease term it is
    limited to; none, and `no_disease`: unrestricted) covers `study` (its agreement id,
    requesting organization and disease term; None: no study named). The one rule the gateway
    admits subjects by and the audit service judges admissions by: an unrestricted consent
    covers any study, a specific one no unnamed study; named studies must hold the agreement,
    named requesters its requester, and a disease term must be exactly the agreement's."""
    if not (studies or requesters or disease != no_disease):
        return True
    if study is None:
        return False
    agreement_id, requester, study_disease = study
    if studies and agreement_id not in studies:
        return False
    if requesters and requester not in requesters:
        return False
    return disease in (no_disease, study_disease)


class ScopeError(ValueError):
    """A specific consent's terms the registry would refuse."""


def disease_code(term: str) -> bytes:
    """The 32-byte on-chain form of a disease term (a CURIE of at most 32 characters)."""
    if not _CURIE.match(term) or len(term) > 32:
        raise ScopeError(
            f"{term!r} is not a disease term: give an ontology CURIE of at most 32 characters, "
            "e.g. MONDO:0007254 or ICD10:C50"
        )
    return term.encode().ljust(32, b"\0")


def disease_term(code: bytes) -> str | None:
    """The CURIE a disease code spells (None for zero); a code that spells none is shown as
    0x hex."""
    if code == ZERO32:
        return None
    text = code.rstrip(b"\0")
    try:
        term = text.decode()
    except UnicodeDecodeError:
        return "0x" + code.hex()
    return term if _CURIE.match(term) and b"\0" not in text else "0x" + code.hex()


def ascending(values: Iterable[bytes], what: str) -> tuple[bytes, ...]:
    """`values` sorted, distinct and non-zero, as the registry wants them; ScopeError naming a
    zero or repeated entry."""
    out = sorted(values)
    for previous, value in zip([ZERO32, *out], out, strict=False):
        if value == ZERO32:
            raise ScopeError(f"a {what} of zero is not a {what}")
        if value == previous:
            raise ScopeError(f"{what} 0x{value.hex()} is named twice")
    return tuple(out)


@dataclass(frozen=True)
class ConsentTerms:
    """`ConsentTerms` of `DataUse.sol`: one patient's consent at one holder."""

    holder: bytes
    subject: bytes
    scenarios: int
    """Bit set `1 << Scenario`."""
    valid_until: int
    duo_codes: tuple[int, ...] = ()
    valid_from: int = 0
    """Zero: from the recording block."""
    subject_key: str = ZERO_ADDRESS
    disease_code: bytes = ZERO32
    studies: tuple[bytes, ...] = field(default=())
    """Agreement ids, ascending (empty: any study)."""
    requesters: tuple[bytes, ...] = field(default=())
    """Requesting organization ids, ascending (empty: any)."""

    def check(self) -> ConsentTerms:
        """The registry's scope rules, as ScopeError; the terms themselves when they hold."""
        if len(self.duo_codes) > MAX_DUO_CODES:
            raise ScopeError(
                f"{len(self.duo_codes)} DUO codes; a consent carries at most {MAX_DUO_CODES}"
            )
        for what, values in (("study", self.studies), ("requester", self.requesters)):
            if len(values) > MAX_SCOPE_ENTRIES:
                raise ScopeError(
                    f"{len(values)} {what} entries; a consent names at most {MAX_SCOPE_ENTRIES}"
                )
            if tuple(ascending(values, what)) != tuple(values):
                raise ScopeError(f"the {what} entries must be in ascending order")
        specific = DUO_DISEASE_SPECIFIC in self.duo_codes
        if specific != (self.disease_code != ZERO32):
            raise ScopeError(
                "a disease term goes with DUO:0000007 (disease-specific research) and "
                "DUO:0000007 with a disease term: give both or neither"
            )
        return self

    @property
    def specific(self) -> bool:
        return bool(self.studies or self.requesters or self.disease_code != ZERO32)

    def as_abi(self) -> tuple[Any, ...]:
        return (
            self.holder,
            self.subject,
            self.scenarios,
            list(self.duo_codes),
            self.valid_from,
            self.valid_until,
            self.subject_key,
            self.disease_code,
            list(self.studies),
            list(self.requesters),
        )

    @classmethod
    def from_abi(cls, value: Sequence[Any]) -> ConsentTerms:
        holder, subject, scenarios, duo, start, end, key, disease, studies, requesters = value
        return cls(
            holder=bytes(holder),
            subject=bytes(subject),
            scenarios=int(scenarios),
            duo_codes=tuple(int(c) for c in duo),
            valid_from=int(start),
            valid_until=int(end),
            subject_key=str(key),
            disease_code=bytes(disease),
            studies=tuple(bytes(s) for s in studies),
            requesters=tuple(bytes(r) for r in requesters),
        )

"""Hashes the contracts compute on chain, computed the same way off chain (one place, so a
record's layout is known in `dul.contracts` only)."""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi.abi import encode

from dul.keccak import keccak

_CONSENT_SCOPE = ("bytes32", "bytes32[]", "bytes32[]")


def consent_scope(disease: bytes, studies: Sequence[bytes], requesters: Sequence[bytes]) -> bytes:
    """`ConsentRegistry.consentScope`: keccak256(abi.encode(diseaseCode, studies, requesters))
    of a specific consent (IConsentRegistry)."""
    return keccak(encode(list(_CONSENT_SCOPE), [disease, list(studies), list(requesters)]))

"""Patient tokens: what lets a patient read their own transparency report at the regulator's
audit service without the service ever learning who they are or sharing a secret with the
hospital.

A hospital, once it has authenticated its patient, signs the EIP-712 typed data

    PatientToken(bytes32 subject, bytes32 holder, uint64 issuedAt, uint64 expiresAt)

in the domain {name "DataUseLedger.PatientToken", version "1", chainId, verifyingContract: the
Membership contract} with a STEWARD key of the holder (`dul steward patient-token`; any wallet's
eth_signTypedData_v4 makes the same signature). The token is the message and the signature,
fixed-width, base64url without padding, after a prefix:

    dulpt_ base64url( subject 32 | holder 32 | issuedAt 8 | expiresAt 8 | r s v 65 )   (145 bytes)

The audit service recovers the signer and asks the chain whether it is an active steward of the
holder. The token names one subject reference and lives at most `MAX_LIFETIME_S`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress

from dul.contracts.typed_data import Domain
from dul.signing import Signer, recover, struct_hasher, typed_data_json, typed_digest

PREFIX = "dulpt_"
DOMAIN_NAME = "DataUseLedger.PatientToken"
MAX_LIFETIME_S = 86_400
"""No patient token lives longer than a day, whatever a service allows."""
TYPES: dict[str, list[dict[str, str]]] = {
    "PatientToken": [
        {"name": "subject", "type": "bytes32"},
        {"name": "holder", "type": "bytes32"},
        {"name": "issuedAt", "type": "uint64"},
        {"name": "expiresAt", "type": "uint64"},
    ]
}
_hash = struct_hasher("PatientToken", TYPES)
_SIZE = 32 + 32 + 8 + 8 + 65
_ENCODED = (_SIZE * 4 + 2) // 3  # base64url characters without padding


class PatientTokenError(ValueError):
    """A string that is not a well-formed patient token."""


def patient_token_domain(chain_id: int, membership: ChecksumAddress) -> Domain:
    return Domain(DOMAIN_NAME, chain_id, membership)


@dataclass(frozen=True)
class PatientToken:
    subject: bytes
    holder: bytes
    issued_at: int
    expires_at: int
    signature: bytes = b""

    def message(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "holder": self.holder,
            "issuedAt": self.issued_at,
            "expiresAt": self.expires_at,
        }

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain.separator, _hash(self.message()))

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The EIP-712 JSON a wallet signs."""
        return typed_data_json(domain.as_json(), TYPES, "PatientToken", self.message())

    def signed(self, signer: Signer, domain: Domain) -> PatientToken:
        return PatientToken(
            self.subject, self.holder, self.issued_at, self.expires_at,
            signer.sign_digest(self.digest(domain)),
        )  # fmt: skip

    def signer(self, domain: Domain) -> ChecksumAddress:
        """The recovered signer; raises InvalidSignatureError."""
        return recover(self.digest(domain), self.signature)

    def encode(self) -> str:
        if len(self.signature) != 65:
            raise PatientTokenError("an unsigned patient token cannot be encoded")
        raw = (
            self.subject + self.holder + self.issued_at.to_bytes(8, "big")
            + self.expires_at.to_bytes(8, "big") + self.signature
        )  # fmt: skip
        return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, token: str) -> PatientToken:
        if not token.startswith(PREFIX) or len(token) != len(PREFIX) + _ENCODED:
            raise PatientTokenError(
                f"a patient token is {PREFIX} and {_ENCODED} characters "
                f"({len(PREFIX) + _ENCODED} in all)"
            )
        body = token[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise PatientTokenError("a patient token is base64url") from None
        if len(raw) != _SIZE:
            raise PatientTokenError("a patient token holds 145 bytes")
        return cls(
            subject=raw[:32],
            holder=raw[32:64],
            issued_at=int.from_bytes(raw[64:72], "big"),
            expires_at=int.from_bytes(raw[72:80], "big"),
            signature=raw[80:],
        )

"""What parties sign: the EIP-712 `Agreement`, `AccessRequest`, and the patient's
`ConsentGrant`, `ConsentWithdrawal`, `Authorization` and `AuthorizationRevocation`, and their
on-chain tuples.

The type strings here and in `solidity/contracts/libraries/TypedData.sol` are one public
interface; the Hardhat cross-language vector and `tests/unit/test_typed_data.py` keep them equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_typing import ChecksumAddress

from dul.consent_terms import ConsentTerms
from dul.domain import ConsentPolicy, Decision, DenyReason, Operation, Scenario, Tier, agreement_id
from dul.keccak import keccak
from dul.signing import (
    Signer,
    TypedDataError,
    domain_separator,
    recover,
    struct_hasher,
    typed_data_json,
    typed_digest,
)

AGREEMENT_DOMAIN_NAME = "DataUseLedger.AgreementRegistry"
ACCESS_LOG_DOMAIN_NAME = "DataUseLedger.AccessLog"
CONSENT_REGISTRY_DOMAIN_NAME = "DataUseLedger.ConsentRegistry"
DOMAIN_VERSION = "1"
ZERO32 = bytes(32)

AGREEMENT_TYPES: dict[str, list[dict[str, str]]] = {
    "Agreement": [
        {"name": "id", "type": "bytes32"},
        {"name": "version", "type": "uint64"},
        {"name": "previous", "type": "bytes32"},
        {"name": "holder", "type": "bytes32"},
        {"name": "requester", "type": "bytes32"},
        {"name": "datasets", "type": "bytes32[]"},
        {"name": "fieldMasks", "type": "uint256[]"},
        {"name": "scenario", "type": "uint8"},
        {"name": "duoCodes", "type": "uint32[]"},
        {"name": "diseaseCode", "type": "bytes32"},
        {"name": "ethicsApproval", "type": "bytes32"},
        {"name": "maxTier", "type": "uint8"},
        {"name": "operations", "type": "uint8"},
        {"name": "validFrom", "type": "uint64"},
        {"name": "validUntil", "type": "uint64"},
        {"name": "quota", "type": "uint64"},
        {"name": "consentPolicy", "type": "uint8"},
        {"name": "termsHash", "type": "bytes32"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint64"},
        {"name": "breakGlassReviewHours", "type": "uint16"},
    ]
}

ACCESS_RECORD_ABI_TYPE = (
    "(bytes32,bytes32,bytes32,address,uint8,uint8,uint8,uint8,uint256,"
    "bytes32,bytes32,uint32,bytes32,uint64,bytes32,bytes32,uint8)"
)
"""`AccessRecord` of DataUse.sol as an eth_abi tuple type."""

ACCESS_REQUEST_TYPES: dict[str, list[dict[str, str]]] = {
    "AccessRequest": [
        {"name": "requestId", "type": "bytes32"},
        {"name": "agreementId", "type": "bytes32"},
        {"name": "datasetId", "type": "bytes32"},
        {"name": "fieldMask", "type": "uint256"},
        {"name": "tier", "type": "uint8"},
        {"name": "operation", "type": "uint8"},
        {"name": "requestHash", "type": "bytes32"},
        {"name": "authorizationRef", "type": "bytes32"},
        {"name": "deadline", "type": "uint64"},
    ]
}

CONSENT_WITHDRAWAL_TYPES: dict[str, list[dict[str, str]]] = {
    "ConsentWithdrawal": [
        {"name": "consentId", "type": "bytes32"},
        {"name": "deadline", "type": "uint64"},
    ]
}

CONSENT_GRANT_TYPES: dict[str, list[dict[str, str]]] = {
    "ConsentGrant": [
        {"name": "consentId", "type": "bytes32"},
        {"name": "holder", "type": "bytes32"},
        {"name": "subject", "type": "bytes32"},
        {"name": "scenarios", "type": "uint8"},
        {"name": "duoCodes", "type": "uint32[]"},
        {"name": "validFrom", "type": "uint64"},
        {"name": "validUntil", "type": "uint64"},
        {"name": "subjectKey", "type": "address"},
        {"name": "diseaseCode", "type": "bytes32"},
        {"name": "studies", "type": "bytes32[]"},
        {"name": "requesters", "type": "bytes32[]"},
        {"name": "deadline", "type": "uint64"},
    ]
}

AUTHORIZATION_TYPES: dict[str, list[dict[str, str]]] = {
    "Authorization": [
        {"name": "codeHash", "type": "bytes32"},
        {"name": "holder", "type": "bytes32"},
        {"name": "subject", "type": "bytes32"},
        {"name": "grantee", "type": "bytes32"},
        {"name": "dataset", "type": "bytes32"},
        {"name": "fieldMask", "type": "uint256"},
        {"name": "tier", "type": "uint8"},
        {"name": "scenario", "type": "uint8"},
        {"name": "expiresAt", "type": "uint64"},
        {"name": "multiUse", "type": "bool"},
    ]
}

AUTHORIZATION_REVOCATION_TYPES: dict[str, list[dict[str, str]]] = {
    "AuthorizationRevocation": [
        {"name": "codeHash", "type": "bytes32"},
        {"name": "deadline", "type": "uint64"},
    ]
}

_hash_agreement = struct_hasher("Agreement", AGREEMENT_TYPES)
_hash_access_request = struct_hasher("AccessRequest", ACCESS_REQUEST_TYPES)
_ACCESS_REQUEST_TYPEHASH = keccak(
    (
        "AccessRequest("
        + ",".join(f"{f['type']} {f['name']}" for f in ACCESS_REQUEST_TYPES["AccessRequest"])
        + ")"
    ).encode()
)
_UINT8, _UINT64, _UINT256 = 1 << 8, 1 << 64, 1 << 256
_UINT8_WORDS = tuple(value.to_bytes(32, "big") for value in range(_UINT8))
_hash_consent_withdrawal = struct_hasher("ConsentWithdrawal", CONSENT_WITHDRAWAL_TYPES)
_hash_consent_grant = struct_hasher("ConsentGrant", CONSENT_GRANT_TYPES)
_hash_authorization = struct_hasher("Authorization", AUTHORIZATION_TYPES)
_hash_authorization_revocation = struct_hasher(
    "AuthorizationRevocation", AUTHORIZATION_REVOCATION_TYPES
)


@dataclass(frozen=True)
class Domain:
    """One contract's EIP-712 domain; chain id and address rule out cross-chain replay."""

    name: str
    chain_id: int
    verifying_contract: ChecksumAddress
    version: str = DOMAIN_VERSION
    separator: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "separator",
            domain_separator(self.name, self.version, self.chain_id, self.verifying_contract),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def agreement_domain(chain_id: int, registry: ChecksumAddress) -> Domain:
    return Domain(AGREEMENT_DOMAIN_NAME, chain_id, registry)


def access_log_domain(chain_id: int, access_log: ChecksumAddress) -> Domain:
    return Domain(ACCESS_LOG_DOMAIN_NAME, chain_id, access_log)


def consent_domain(chain_id: int, registry: ChecksumAddress) -> Domain:
    """The `ConsentRegistry` domain patients sign withdrawals in."""
    return Domain(CONSENT_REGISTRY_DOMAIN_NAME, chain_id, registry)


consent_registry_domain = consent_domain
"""The same as `consent_domain`."""


def consent_withdrawal_digest(domain: Domain, consent_id: bytes, deadline: int) -> bytes:
    """What a patient signs (with the key recorded in the consent) to withdraw it:
    EIP-712 `ConsentWithdrawal(bytes32 consentId,uint64 deadline)` in the registry's domain."""
    return ConsentWithdrawal(consent_id, deadline).digest(domain)


@dataclass(frozen=True)
class ConsentWithdrawal:
    """A patient's withdrawal of one consent, signed by the consent's subject key; anyone may
    relay it to `withdrawConsentBySubject(consentId, deadline, signature)` until `deadline`.
    Consent ids are never reused, so it cannot reach a consent granted again later."""

    consent_id: bytes
    deadline: int

    def message(self) -> dict[str, Any]:
        return {"consentId": self.consent_id, "deadline": self.deadline}

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain.separator, _hash_consent_withdrawal(self.message()))

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The EIP-712 JSON a patient's wallet signs."""
        return typed_data_json(
            domain.as_json(), CONSENT_WITHDRAWAL_TYPES, "ConsentWithdrawal", self.message()
        )

    def sign(self, signer: Signer, domain: Domain) -> bytes:
        return signer.sign_digest(self.digest(domain))

    def signer_of(self, signature: bytes, domain: Domain) -> ChecksumAddress:
        return recover(self.digest(domain), signature)


@dataclass(frozen=True)
class ConsentGrant:
    """A consent the patient grants in their own wallet: EIP-712 `ConsentGrant` of `terms` as
    consent `consent_id` (the subject's next id at the holder, `nextConsentId`), signed by the
    key the holder registered for the subject (`subjectKeyOf`); anyone may relay it to
    `recordConsentBySubject(consentId, terms, deadline, signature)` until `deadline`. The id
    makes it single-use: once recorded (or overtaken by another consent) it is stale."""

    consent_id: bytes
    terms: ConsentTerms
    deadline: int

    def message(self) -> dict[str, Any]:
        t = self.terms
        return {
            "consentId": self.consent_id,
            "holder": t.holder,
            "subject": t.subject,
            "scenarios": t.scenarios,
            "duoCodes": list(t.duo_codes),
            "validFrom": t.valid_from,
            "validUntil": t.valid_until,
            "subjectKey": t.subject_key,
            "diseaseCode": t.disease_code,
            "studies": list(t.studies),
            "requesters": list(t.requesters),
            "deadline": self.deadline,
        }

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain.separator, _hash_consent_grant(self.message()))

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The EIP-712 JSON (eth_signTypedData_v4) the patient's wallet signs; ethers v6
        `signTypedData` wants `types` without its `EIP712Domain` entry."""
        return typed_data_json(domain.as_json(), CONSENT_GRANT_TYPES, "ConsentGrant",
                               self.message())  # fmt: skip

    def sign(self, signer: Signer, domain: Domain) -> bytes:
        return signer.sign_digest(self.digest(domain))

    def signer_of(self, signature: bytes, domain: Domain) -> ChecksumAddress:
        return recover(self.digest(domain), signature)


@dataclass(frozen=True)
class PatientAuthorization:
    """An authorization code the patient issues in their own wallet: EIP-712 `Authorization`
    signed by the key the holder registered for the subject (ConsentRegistry `subjectKeyOf`),
    relayed by anyone to `issueAuthorizationBySubject` until `expires_at`, its expiry. Only the
    code's hash is in it; the code hash makes the signature single-use. The code opens one
    access, or (`multi_use`) every fitting access of the grantee until it expires."""

    code_hash: bytes
    holder: bytes
    subject: bytes
    grantee: bytes
    dataset: bytes
    field_mask: int
    tier: Tier
    scenario: Scenario
    expires_at: int
    multi_use: bool = False

    def message(self) -> dict[str, Any]:
        return {
            "codeHash": self.code_hash,
            "holder": self.holder,
            "subject": self.subject,
            "grantee": self.grantee,
            "dataset": self.dataset,
            "fieldMask": self.field_mask,
            "tier": int(self.tier),
            "scenario": int(self.scenario),
            "expiresAt": self.expires_at,
            "multiUse": self.multi_use,
        }

    def as_abi(self) -> tuple[Any, ...]:
        """The `Authorization` struct `issueAuthorization(BySubject)` takes (status and
        redemption are ignored by the contract)."""
        return (
            self.holder,
            self.subject,
            self.grantee,
            self.dataset,
            self.field_mask,
            int(self.tier),
            int(self.scenario),
            0,
            self.expires_at,
            self.multi_use,
            ZERO32,
        )

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain.separator, _hash_authorization(self.message()))

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The EIP-712 JSON (eth_signTypedData_v4) the patient's wallet signs."""
        return typed_data_json(
            domain.as_json(), AUTHORIZATION_TYPES, "Authorization", self.message()
        )

    def sign(self, signer: Signer, domain: Domain) -> bytes:
        return signer.sign_digest(self.digest(domain))

    def signer_of(self, signature: bytes, domain: Domain) -> ChecksumAddress:
        return recover(self.digest(domain), signature)


@dataclass(frozen=True)
class AuthorizationRevocation:
    """The patient's revocation of one of their unredeemed codes, signed by the subject's key;
    anyone may relay it to `revokeAuthorizationBySubject(codeHash, deadline, signature)`."""

    code_hash: bytes
    deadline: int

    def message(self) -> dict[str, Any]:
        return {"codeHash": self.code_hash, "deadline": self.deadline}

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain.separator, _hash_authorization_revocation(self.message()))

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        return typed_data_json(
            domain.as_json(),
            AUTHORIZATION_REVOCATION_TYPES,
            "AuthorizationRevocation",
            self.message(),
        )

    def sign(self, signer: Signer, domain: Domain) -> bytes:
        return signer.sign_digest(self.digest(domain))

    def signer_of(self, signature: bytes, domain: Domain) -> ChecksumAddress:
        return recover(self.digest(domain), signature)


@dataclass(frozen=True)
class AgreementTerms:
    """`AgreementTerms` of DataUse.sol; `field_masks[i]` allows fields of `datasets[i]`."""

    holder: bytes
    requester: bytes
    datasets: tuple[bytes, ...]
    field_masks: tuple[int, ...]
    scenario: Scenario
    max_tier: Tier
    operations: int
    valid_from: int
    valid_until: int
    quota: int
    consent_policy: ConsentPolicy
    terms_hash: bytes
    nonce: int
    deadline: int
    duo_codes: tuple[int, ...] = ()
    disease_code: bytes = ZERO32
    ethics_approval: bytes = ZERO32
    break_glass_review_hours: int = 0
    """0: no break-glass; else the hours a holder steward has to review each one."""

    @property
    def agreement_id(self) -> bytes:
        return agreement_id(self.holder, self.requester, self.nonce)

    def as_abi(self) -> tuple[Any, ...]:
        """The tuple `propose` and `amend` take, in struct order."""
        return (
            self.holder,
            self.requester,
            list(self.datasets),
            list(self.field_masks),
            int(self.scenario),
            list(self.duo_codes),
            self.disease_code,
            self.ethics_approval,
            int(self.max_tier),
            self.operations,
            self.valid_from,
            self.valid_until,
            self.quota,
            int(self.consent_policy),
            self.terms_hash,
            self.nonce,
            self.deadline,
            self.break_glass_review_hours,
        )

    @classmethod
    def from_abi(cls, value: tuple[Any, ...]) -> AgreementTerms:
        return cls(
            holder=bytes(value[0]),
            requester=bytes(value[1]),
            datasets=tuple(bytes(d) for d in value[2]),
            field_masks=tuple(int(m) for m in value[3]),
            scenario=Scenario(value[4]),
            duo_codes=tuple(int(c) for c in value[5]),
            disease_code=bytes(value[6]),
            ethics_approval=bytes(value[7]),
            max_tier=Tier(value[8]),
            operations=int(value[9]),
            valid_from=int(value[10]),
            valid_until=int(value[11]),
            quota=int(value[12]),
            consent_policy=ConsentPolicy(value[13]),
            terms_hash=bytes(value[14]),
            nonce=int(value[15]),
            deadline=int(value[16]),
            break_glass_review_hours=int(value[17]),
        )

    def message(self, version: int = 1, previous: bytes = ZERO32) -> dict[str, Any]:
        """The EIP-712 `Agreement` message of this version."""
        return {
            "id": self.agreement_id,
            "version": version,
            "previous": previous,
            "holder": self.holder,
            "requester": self.requester,
            "datasets": list(self.datasets),
            "fieldMasks": list(self.field_masks),
            "scenario": int(self.scenario),
            "duoCodes": list(self.duo_codes),
            "diseaseCode": self.disease_code,
            "ethicsApproval": self.ethics_approval,
            "maxTier": int(self.max_tier),
            "operations": self.operations,
            "validFrom": self.valid_from,
            "validUntil": self.valid_until,
            "quota": self.quota,
            "consentPolicy": int(self.consent_policy),
            "termsHash": self.terms_hash,
            "nonce": self.nonce,
            "deadline": self.deadline,
            "breakGlassReviewHours": self.break_glass_review_hours,
        }

    def digest(self, domain: Domain, version: int = 1, previous: bytes = ZERO32) -> bytes:
        return typed_digest(domain.separator, _hash_agreement(self.message(version, previous)))

    def typed_data(
        self, domain: Domain, version: int = 1, previous: bytes = ZERO32
    ) -> dict[str, Any]:
        """The EIP-712 JSON a wallet or keystore signs."""
        return typed_data_json(
            domain.as_json(), AGREEMENT_TYPES, "Agreement", self.message(version, previous)
        )


@dataclass(frozen=True)
class AccessRequest:
    """What a requester signs before each access (non-repudiation)."""

    request_id: bytes
    agreement_id: bytes
    dataset_id: bytes
    field_mask: int
    tier: Tier
    operation: Operation
    request_hash: bytes
    deadline: int
    authorization_ref: bytes = ZERO32

    def message(self) -> Mapping[str, Any]:
        return {
            "requestId": self.request_id,
            "agreementId": self.agreement_id,
            "datasetId": self.dataset_id,
            "fieldMask": self.field_mask,
            "tier": int(self.tier),
            "operation": int(self.operation),
            "requestHash": self.request_hash,
            "authorizationRef": self.authorization_ref,
            "deadline": self.deadline,
        }

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain.separator, self.struct_hash())

    def struct_hash(self) -> bytes:
        """EIP-712 hashStruct of the request. Every field is static, so the encoding is the type
        hash and nine 32-byte words: built directly (~2 µs), where the generic encoder walks a
        message dict (~10 µs; every request the gateway decides is hashed once). Anything the
        direct path does not take as is (a value out of range, a bytes field not 32 bytes, a
        non-int number) goes to the generic encoder, which refuses it as before; a test holds
        the two equal."""
        rid, aid, did, rh, ar = (self.request_id, self.agreement_id, self.dataset_id,
                                 self.request_hash, self.authorization_ref)  # fmt: skip
        mask, tier, operation, deadline = self.field_mask, self.tier, self.operation, self.deadline
        if (  # spelled out: generators over the fields cost a third of the hash
            type(rid) is bytes and type(aid) is bytes and type(did) is bytes
            and type(rh) is bytes and type(ar) is bytes
            and len(rid) == 32 and len(aid) == 32 and len(did) == 32
            and len(rh) == 32 and len(ar) == 32
            and isinstance(mask, int) and isinstance(tier, int)
            and isinstance(operation, int) and isinstance(deadline, int)
            and not isinstance(mask, bool) and not isinstance(tier, bool)
            and not isinstance(operation, bool) and not isinstance(deadline, bool)
            and 0 <= mask < _UINT256 and 0 <= tier < _UINT8
            and 0 <= operation < _UINT8 and 0 <= deadline < _UINT64
        ):  # fmt: skip
            return keccak(
                b"".join(
                    (
                        _ACCESS_REQUEST_TYPEHASH,
                        rid,
                        aid,
                        did,
                        mask.to_bytes(32, "big"),
                        int(tier).to_bytes(32, "big"),
                        int(operation).to_bytes(32, "big"),
                        rh,
                        ar,
                        deadline.to_bytes(32, "big"),
                    )
                )
            )
        return _hash_access_request(self.message())

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The EIP-712 JSON (eth_signTypedData_v4) a requester's wallet or HSM signs."""
        return typed_data_json(
            domain.as_json(), ACCESS_REQUEST_TYPES, "AccessRequest", self.message()
        )

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> AccessRequest:
        """The request a typed-data JSON `message` holds (0x-hex bytes, decimal or int numbers)."""

        def b32(name: str) -> bytes:
            value = message[name]
            raw = (
                value if isinstance(value, bytes) else bytes.fromhex(str(value).removeprefix("0x"))
            )
            if len(raw) != 32:
                raise ValueError(f"{name} is not 32 bytes")
            return raw

        return cls(
            request_id=b32("requestId"),
            agreement_id=b32("agreementId"),
            dataset_id=b32("datasetId"),
            field_mask=int(message["fieldMask"]),
            tier=Tier(int(message["tier"])),
            operation=Operation(int(message["operation"])),
            request_hash=b32("requestHash"),
            deadline=int(message["deadline"]),
            authorization_ref=b32("authorizationRef"),
        )

    def sign(self, signer: Signer, domain: Domain) -> bytes:
        return signer.sign_digest(self.digest(domain))

    def signer_of(self, signature: bytes, domain: Domain) -> ChecksumAddress:
        return recover(self.digest(domain), signature)


def signed_access_request(
    ids: bytes, field_mask: int, tier: Tier, operation: Operation, deadline: int, domain: Domain
) -> tuple[AccessRequest, bytes]:
    """The request whose bytes32 fields are `ids` (requestId || agreementId || datasetId ||
    requestHash || authorizationRef, 160 bytes: what the gateway decodes a request's hex into)
    and its EIP-712 digest in `domain`.

    The digest is hashed from that layout, one keccak per level: the gateway's verifier threads
    digest every request, and the checks of `AccessRequest.struct_hash` (made for a request from
    anywhere) were a third of the digest's Python (callgrind, the gateway's `_verify` of 500
    requests, with its enum lookups by dict: 77k -> 62k instructions of CPython per access). A
    number the layout does not take as it is goes through `AccessRequest.digest`, which refuses
    it as before; a test holds the two equal."""
    if len(ids) != 160:
        raise TypedDataError(f"a request's five bytes32 fields are 160 bytes, not {len(ids)}")
    request = AccessRequest(
        ids[:32], ids[32:64], ids[64:96], field_mask, tier, operation, ids[96:128], deadline,
        ids[128:160],
    )  # fmt: skip
    if (
        type(tier) is Tier and type(operation) is Operation
        and type(field_mask) is int and type(deadline) is int
        and 0 <= field_mask < _UINT256 and 0 <= deadline < _UINT64
    ):  # fmt: skip
        words = (
            _ACCESS_REQUEST_TYPEHASH + ids[:96] + field_mask.to_bytes(32, "big")
            + _UINT8_WORDS[tier] + _UINT8_WORDS[operation] + ids[96:]
            + deadline.to_bytes(32, "big")
        )  # fmt: skip
        return request, keccak(b"\x19\x01" + domain.separator + keccak(words))
    return request, request.digest(domain)


@dataclass(frozen=True)
class AccessRecord:
    """`AccessRecord` of DataUse.sol: a decision on a signed request, as the gateway records it."""

    request: AccessRequest
    requester: ChecksumAddress
    signature: bytes
    decision: Decision
    reason: DenyReason = DenyReason.NONE
    cohort_root: bytes = ZERO32
    cohort_size: int = 0

    def encode(self) -> bytes:
        """ABI encoding of the tuple (`encode_access_record`)."""
        return encode_access_record(
            self.request, self.requester, self.signature, self.decision, self.reason,
            self.cohort_root, self.cohort_size,
        )  # fmt: skip

    def as_abi(self) -> tuple[Any, ...]:
        r = self.request
        sig = self.signature
        return (
            r.request_id,
            r.agreement_id,
            r.dataset_id,
            self.requester,
            int(self.decision),
            int(self.reason),
            int(r.tier),
            int(r.operation),
            r.field_mask,
            r.request_hash,
            self.cohort_root,
            self.cohort_size,
            r.authorization_ref,
            r.deadline,
            sig[:32],
            sig[32:64],
            sig[64],
        )


def encode_access_record(
    r: AccessRequest,
    requester_address: ChecksumAddress,
    sig: bytes,
    decision: Decision,
    reason: DenyReason = DenyReason.NONE,
    cohort_root: bytes = ZERO32,
    cohort_size: int = 0,
) -> bytes:
    """ABI encoding of an `AccessRecord` tuple: all seventeen fields are static, so it is
    seventeen 32-byte words in order. ~10x cheaper than eth_abi on the gateway's hot path; a
    test checks it against eth_abi. A function, so the gateway encodes each decision without
    building the record (a frozen dataclass of seven fields: ~0.6 µs per decision).

    The small numbers' words (decision, reason, tier, operation, v, a cohort's size) are looked
    up, not made: six `to_bytes` calls of the eight were half the encoding's time."""
    requester = bytes.fromhex(requester_address[2:])
    # The byte strings are checked here, in one chained comparison (a generator over the
    # seventeen words took as long as the encoding itself); a number no word is kept for is
    # sized by `to_bytes` (OverflowError is a ValueError).
    if not (
        len(r.request_id) == len(r.agreement_id) == len(r.dataset_id) == len(r.request_hash)
        == len(cohort_root) == len(r.authorization_ref) == 32
        and len(requester) == 20
        and len(sig) == 65
    ):  # fmt: skip
        raise ValueError("an AccessRecord field does not fit its ABI type")
    words = _SMALL_WORDS
    return b"".join(
        (
            r.request_id,
            r.agreement_id,
            r.dataset_id,
            _PAD12,
            requester,
            words.get(decision) or int(decision).to_bytes(32, "big"),
            words.get(reason) or int(reason).to_bytes(32, "big"),
            words.get(r.tier) or int(r.tier).to_bytes(32, "big"),
            words.get(r.operation) or int(r.operation).to_bytes(32, "big"),
            r.field_mask.to_bytes(32, "big"),
            r.request_hash,
            cohort_root,
            words.get(cohort_size) or cohort_size.to_bytes(32, "big"),
            r.authorization_ref,
            r.deadline.to_bytes(32, "big"),
            sig[:64],
            words[sig[64]],
        )
    )


_PAD12 = bytes(12)
_SMALL_WORDS: dict[int, bytes] = dict(enumerate(_UINT8_WORDS))
"""0..255 -> its 32-byte word: the record's uint8 fields and v (a dict, so a number out of
that range is not found, where a tuple would take a negative one from its end)."""

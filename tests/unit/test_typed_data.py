"""Typed data built in Python matches eth-account's reference EIP-712 implementation."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_typing import HexStr

from dul.contracts.typed_data import (
    AccessRecord,
    AccessRequest,
    AgreementTerms,
    ConsentWithdrawal,
    access_log_domain,
    agreement_domain,
    consent_domain,
    consent_withdrawal_digest,
    signed_access_request,
)
from dul.domain import (
    ConsentPolicy,
    Decision,
    DenyReason,
    Operation,
    Scenario,
    Tier,
    agreement_id,
    operations_mask,
    slug_id,
)
from dul.signing import LocalSigner

KEY = HexStr("0x" + "11" * 32)
REGISTRY = Account.from_key("0x" + "22" * 32).address


def terms() -> AgreementTerms:
    return AgreementTerms(
        holder=slug_id("charite"),
        requester=slug_id("institute"),
        datasets=(slug_id("omop-cdm"),),
        field_masks=(0b1011,),
        scenario=Scenario.RESEARCH,
        max_tier=Tier.PSEUDONYMIZED,
        operations=operations_mask(Operation.QUERY),
        valid_from=1_700_000_000,
        valid_until=1_800_000_000,
        quota=100,
        consent_policy=ConsentPolicy.COHORT_CONSENT,
        terms_hash=b"\x07" * 32,
        nonce=42,
        deadline=1_750_000_000,
        duo_codes=(42, 46),
    )


def test_agreement_digest_equals_eth_account_and_signature_recovers() -> None:
    domain = agreement_domain(31337, REGISTRY)
    t = terms()
    reference = encode_typed_data(
        full_message=t.typed_data(domain, version=2, previous=b"\x01" * 32)
    )
    signed = Account.sign_message(reference, KEY)
    assert t.digest(domain, version=2, previous=b"\x01" * 32) == signed.message_hash
    signer = LocalSigner(KEY)
    assert signer.sign_digest(signed.message_hash) == bytes(signed.signature)


def test_agreement_id_is_derived_from_parties_and_nonce() -> None:
    t = terms()
    assert t.agreement_id == agreement_id(t.holder, t.requester, 42)
    assert t.message()["id"] == t.agreement_id


def test_terms_round_trip_through_abi_tuple() -> None:
    t = terms()
    assert AgreementTerms.from_abi(t.as_abi()) == t


def test_access_request_signature_recovers_and_another_chain_does_not() -> None:
    signer = LocalSigner(KEY)
    request = AccessRequest(
        request_id=b"\x05" * 32,
        agreement_id=terms().agreement_id,
        dataset_id=slug_id("omop-cdm"),
        field_mask=0b11,
        tier=Tier.DEIDENTIFIED,
        operation=Operation.QUERY,
        request_hash=b"\x09" * 32,
        deadline=1_750_000_000,
    )
    domain = access_log_domain(31337, REGISTRY)
    signature = request.sign(signer, domain)
    assert request.signer_of(signature, domain) == signer.address
    assert request.signer_of(signature, access_log_domain(1, REGISTRY)) != signer.address
    record = AccessRecord(request, signer.address, signature, Decision.GRANTED).as_abi()
    assert record[14] + record[15] + bytes([record[16]]) == signature


def test_access_request_digest_equals_eth_account_and_its_direct_path_refuses_as_before() -> None:
    from dul.contracts.typed_data import _hash_access_request
    from dul.signing import TypedDataError

    domain = access_log_domain(31337, REGISTRY)
    edges = [
        AccessRequest(b"\x00" * 32, b"\x01" * 32, b"\x02" * 32, 0, Tier.AGGREGATE,
                      Operation.QUERY, b"\x03" * 32, 0),
        AccessRequest(b"\xff" * 32, b"\xfe" * 32, b"\xfd" * 32, 2**256 - 1, Tier.IDENTIFIED,
                      Operation.EXPORT_RESULT, b"\xfc" * 32, 2**64 - 1, b"\xfb" * 32),
    ]  # fmt: skip
    for request in edges:
        reference = encode_typed_data(full_message=request.typed_data(domain))
        signed = Account.sign_message(reference, KEY)
        assert request.digest(domain) == signed.message_hash
        assert request.struct_hash() == _hash_access_request(request.message())
    # what the direct path does not take goes to the generic encoder, which refuses it
    bad = [
        AccessRequest(b"\x00" * 31, b"\x01" * 32, b"\x02" * 32, 0, Tier.AGGREGATE,
                      Operation.QUERY, b"\x03" * 32, 0),
        AccessRequest(b"\x00" * 32, b"\x01" * 32, b"\x02" * 32, 2**256, Tier.AGGREGATE,
                      Operation.QUERY, b"\x03" * 32, 0),
        AccessRequest(b"\x00" * 32, b"\x01" * 32, b"\x02" * 32, -1, Tier.AGGREGATE,
                      Operation.QUERY, b"\x03" * 32, 0),
        AccessRequest(b"\x00" * 32, b"\x01" * 32, b"\x02" * 32, 0, Tier.AGGREGATE,
                      Operation.QUERY, b"\x03" * 32, 2**64),
        AccessRequest(b"\x00" * 32, b"\x01" * 32, b"\x02" * 32, True, Tier.AGGREGATE,
                      Operation.QUERY, b"\x03" * 32, 0),
    ]  # fmt: skip
    for request in bad:
        with pytest.raises(TypedDataError):
            request.digest(domain)


def test_signed_access_request_from_fixed_layout_equals_the_request_and_its_digest() -> None:
    import random

    from dul.signing import TypedDataError

    rng = random.Random(160)
    domain = access_log_domain(31337, REGISTRY)
    cases = [(bytes(160), 0, 0), (b"\xff" * 160, 2**256 - 1, 2**64 - 1)]
    cases += [(rng.randbytes(160), rng.randrange(2**256), rng.randrange(2**64)) for _ in range(50)]
    for index, (ids, mask, deadline) in enumerate(cases):
        tier, operation = list(Tier)[index % len(Tier)], list(Operation)[index % len(Operation)]
        request, digest = signed_access_request(ids, mask, tier, operation, deadline, domain)
        expected = AccessRequest(ids[:32], ids[32:64], ids[64:96], mask, tier, operation,
                                 ids[96:128], deadline, ids[128:])  # fmt: skip
        assert request == expected
        assert digest == expected.digest(domain)
    reference = encode_typed_data(full_message=request.typed_data(domain))
    assert digest == Account.sign_message(reference, KEY).message_hash
    # what the layout does not take goes through AccessRequest.digest, which refuses it
    for ids, mask, deadline in [
        (bytes(159), 1, 1),
        (bytes(161), 1, 1),
        (bytes(160), 2**256, 1),
        (bytes(160), -1, 1),
        (bytes(160), 1, 2**64),
        (bytes(160), True, 1),
    ]:
        with pytest.raises(TypedDataError):
            signed_access_request(ids, mask, Tier.AGGREGATE, Operation.QUERY, deadline, domain)


def test_record_encoding_matches_eth_abi_and_the_contract_abi() -> None:
    from eth_abi.abi import encode

    from dul.contracts.typed_data import ACCESS_RECORD_ABI_TYPE
    from ledger_gateway.submitter import ACCESS_RECORD_TYPE

    signer = LocalSigner(KEY)
    request = AccessRequest(
        request_id=b"\x05" * 32,
        agreement_id=b"\x06" * 32,
        dataset_id=slug_id("omop-cdm"),
        field_mask=2**255 + 3,
        tier=Tier.IDENTIFIED,
        operation=Operation.EXPORT_RESULT,
        request_hash=b"\x09" * 32,
        deadline=2**64 - 1,
        authorization_ref=b"\x0a" * 32,
    )
    domain = access_log_domain(31337, REGISTRY)
    record = AccessRecord(
        request,
        signer.address,
        request.sign(signer, domain),
        Decision.DENIED,
        DenyReason.QUOTA_EXHAUSTED,
        cohort_root=b"\x0b" * 32,
        cohort_size=2**32 - 1,
    )
    assert ACCESS_RECORD_ABI_TYPE == ACCESS_RECORD_TYPE
    assert record.encode() == encode([ACCESS_RECORD_ABI_TYPE], [record.as_abi()])


def test_consent_withdrawal_equals_eth_account_and_binds_consent_chain_and_registry() -> None:
    signer = LocalSigner(KEY)
    withdrawal = ConsentWithdrawal(consent_id=b"\x0c" * 32, deadline=1_750_000_000)
    domain = consent_domain(31337, REGISTRY)
    reference = encode_typed_data(full_message=withdrawal.typed_data(domain))
    signed = Account.sign_message(reference, KEY)
    assert withdrawal.digest(domain) == signed.message_hash
    assert consent_withdrawal_digest(domain, b"\x0c" * 32, 1_750_000_000) == signed.message_hash
    signature = withdrawal.sign(signer, domain)
    assert signature == bytes(signed.signature)
    assert withdrawal.signer_of(signature, domain) == signer.address
    other_registry = Account.from_key("0x" + "33" * 32).address
    for elsewhere in (consent_domain(1, REGISTRY), consent_domain(31337, other_registry)):
        assert withdrawal.signer_of(signature, elsewhere) != signer.address
    another = ConsentWithdrawal(consent_id=b"\x0d" * 32, deadline=1_750_000_000)
    assert another.signer_of(signature, domain) != signer.address

"""Patient tokens: the EIP-712 typed data a wallet signs gives the same signature as the steward
CLI, the compact encoding round-trips, and malformed tokens are refused before any check."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from eth_typing import HexStr

from dul.patient_tokens import PREFIX, PatientToken, PatientTokenError, patient_token_domain
from dul.signing import LocalSigner

KEY = keccak(b"patient token unit test key")
DOMAIN = patient_token_domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")  # type: ignore[arg-type]


def token() -> PatientToken:
    return PatientToken(keccak(b"subject"), b"hospital-a".ljust(32, b"\0"), 1_700_000_000,
                        1_700_000_900)  # fmt: skip


def test_a_wallet_signs_what_the_steward_cli_signs() -> None:
    signer = LocalSigner(HexStr("0x" + KEY.hex()))
    ours = token().signed(signer, DOMAIN)
    wallet = Account.sign_message(encode_typed_data(full_message=token().typed_data(DOMAIN)), KEY)
    assert bytes(wallet.signature) == ours.signature
    assert ours.signer(DOMAIN) == signer.address


def test_the_encoding_round_trips() -> None:
    signed = token().signed(LocalSigner(HexStr("0x" + KEY.hex())), DOMAIN)
    text = signed.encode()
    assert text.startswith(PREFIX)
    assert len(text) == len(PREFIX) + 194
    assert PatientToken.decode(text) == signed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "dulpt_",
        "dulau_" + "A" * 194,
        PREFIX + "A" * 193,
        PREFIX + "!" * 194,
        PREFIX + "A" * 195,
    ],
)
def test_malformed_tokens_are_refused(text: str) -> None:
    with pytest.raises(PatientTokenError):
        PatientToken.decode(text)


def test_an_unsigned_token_cannot_be_encoded() -> None:
    with pytest.raises(PatientTokenError):
        token().encode()

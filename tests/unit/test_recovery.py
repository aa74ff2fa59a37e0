"""The direct libsecp256k1 recovery must name the signer coincurve's own recovery names, on any
thread, and refuse what `dul.signing.recover` refused before it existed."""

from __future__ import annotations

import ctypes
import os
import random
from concurrent.futures import ThreadPoolExecutor

import coincurve
import pytest
from coincurve import _libsecp256k1
from coincurve._libsecp256k1 import ffi, lib
from eth_typing import ChecksumAddress

from dul import recovery
from dul.keccak import keccak
from dul.signing import SECP256K1_N, InvalidSignatureError, checksum_address, recover


def _coincurve_signer(digest: bytes, signature: bytes) -> ChecksumAddress:
    """The address coincurve's classes recover (what `recover` called before)."""
    public = coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    return checksum_address(keccak(public.format(False)[1:])[-20:])


def _signed(rng: random.Random) -> tuple[bytes, bytes]:
    key = coincurve.PrivateKey(rng.randbytes(32))
    digest = rng.randbytes(32)
    return digest, key.sign_recoverable(digest, hasher=None)


def test_random_keys_recover_as_coincurve_recovers_them() -> None:
    rng = random.Random(712)
    ids = set()
    for _ in range(200):
        digest, signature = _signed(rng)
        ids.add(signature[64])
        assert recovery.signer_address(digest, signature[:64], signature[64]) == (
            _coincurve_signer(digest, signature)
        )
        # Through the public entry point, as Ethereum spells v.
        assert recover(digest, signature[:64] + bytes((signature[64] + 27,))) == (
            _coincurve_signer(digest, signature)
        )
    assert ids == {0, 1}


def test_the_other_recovery_id_names_another_signer() -> None:
    digest, signature = _signed(random.Random(1))
    flipped = 1 - signature[64]
    other = recovery.signer_address(digest, signature[:64], flipped)
    assert other is not None
    assert other == _coincurve_signer(digest, signature[:64] + bytes((flipped,)))
    assert other != _coincurve_signer(digest, signature)


def test_a_key_seen_before_is_named_from_the_map_and_the_map_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recovery, "ADDRESSES_KEPT", 3)
    monkeypatch.setattr(recovery, "_addresses", {})
    rng = random.Random(2)
    keys = [coincurve.PrivateKey(rng.randbytes(32)) for _ in range(5)]
    for round_ in range(3):
        for key in keys:
            digest = rng.randbytes(32)
            signature = key.sign_recoverable(digest, hasher=None)
            assert recovery.signer_address(digest, signature[:64], signature[64]) == (
                _coincurve_signer(digest, signature)
            ), round_
            assert len(recovery._addresses) <= 3


def test_threads_recover_with_their_own_structs() -> None:
    rng = random.Random(3)
    cases = [_signed(rng) for _ in range(400)]
    expected = [_coincurve_signer(d, s) for d, s in cases]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: recovery.signer_address(c[0], c[1][:64], c[1][64]), cases))
    assert got == expected


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux process maps")
def test_the_parse_is_coincurves_own_library_function() -> None:
    """ctypes' handle is the library coincurve loaded (mapped once): the very same code."""
    address = ctypes.cast(recovery._PARSE, ctypes.c_void_p).value
    assert address is not None
    path = os.path.realpath(_libsecp256k1.__file__)
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and os.path.realpath(fields[5]) == path:
                start, end = (int(part, 16) for part in fields[0].split("-"))
                ranges.append((start, end, fields[4]))
    assert ranges
    assert len({inode for _, _, inode in ranges}) == 1
    assert any(start <= address < end for start, end, _ in ranges)


def test_r_that_is_no_points_x_recovers_nobody() -> None:
    digest = os.urandom(32)
    s = (12345).to_bytes(32)
    for x in range(1, 200):  # about half of all x have no point on the curve
        r = x.to_bytes(32)
        if lib.secp256k1_ec_pubkey_parse(
            coincurve.context.GLOBAL_CONTEXT.ctx, ffi.new("secp256k1_pubkey *"), b"\x02" + r, 33
        ):
            continue
        assert recovery.signer_address(digest, r + s, 0) is None
        with pytest.raises(InvalidSignatureError, match="does not recover") as err:
            recover(digest, r + s + b"\x1b")
        assert err.value.code == "signature_invalid"
        with pytest.raises(ValueError, match="recover"):  # coincurve refuses it too
            coincurve.PublicKey.from_signature_and_message(r + s + b"\x00", digest, hasher=None)
        return
    pytest.fail("no x without a point below 200")


def test_overflowing_r_or_s_parse_to_nobody() -> None:
    """What the caller refuses first (r or s not below n) the library refuses too."""
    digest, signature = _signed(random.Random(4))
    high = SECP256K1_N.to_bytes(32)
    assert recovery.signer_address(digest, high + signature[32:64], signature[64]) is None
    assert recovery.signer_address(digest, signature[:32] + high, signature[64]) is None


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        (b"\x01" * 64, "signature_invalid_length"),
        (b"\x01" * 64 + b"\x1d", "signature_invalid_v"),
        (b"\x01" * 32 + (SECP256K1_N // 2 + 1).to_bytes(32) + b"\x1b", "signature_invalid_s"),
        (b"\x01" * 32 + b"\xff" * 32 + b"\x1c", "signature_invalid_s"),
        (bytes(32) + b"\x01" * 32 + b"\x1b", "signature_invalid"),
        (b"\x01" * 32 + bytes(32) + b"\x1b", "signature_invalid"),
        (SECP256K1_N.to_bytes(32) + b"\x01" * 32 + b"\x1b", "signature_invalid"),
        (b"\xff" * 32 + b"\x01" * 32 + b"\x1b", "signature_invalid"),
    ],
)
def test_each_refusal_keeps_its_code(signature: bytes, code: str) -> None:
    with pytest.raises(InvalidSignatureError) as err:
        recover(bytes(32), signature)
    assert err.value.code == code


def test_holding_the_gil_recovers_the_same_signers_through_the_gil_keeping_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(35)
    cases = [_signed(rng) for _ in range(50)]
    structs = recovery._structs
    assert structs.holding.func is recovery._RECOVER_HOLDING_GIL  # ctypes' PyDLL: GIL kept
    calls = 0
    keeping = structs.holding

    def counted(digest: bytes) -> int:
        nonlocal calls
        calls += 1
        return int(keeping(digest))

    monkeypatch.setattr(structs, "holding", counted)
    with recovery.holding_gil():
        held = [recovery.signer_address(d, s[:64], s[64]) for d, s in cases]
    released = [recovery.signer_address(d, s[:64], s[64]) for d, s in cases]
    assert held == released == [_coincurve_signer(d, s) for d, s in cases]
    assert calls == len(cases)  # and none once out of `holding_gil`

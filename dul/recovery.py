"""The signer's address of a secp256k1 signature: libsecp256k1 (coincurve's bundled build, the
same library coincurve's classes call) driven directly through its cffi `lib`.

The gateway recovers one requester per access on its verifier threads. The library's recovery is
~476k instructions; coincurve's wrappers around it (`PublicKey.from_signature_and_message`, then
`format`) built a `PublicKey`, four `ffi.new` structs and slices, and made three library calls,
each of which releases the GIL and takes it back: a hand-off to the event loop whenever it waits
for the GIL, then a wait for the verifier thread to get it back. Here the structs are allocated
once per thread and the caller has checked the signature's ranges (`dul.signing.recover`); a
public key seen before is looked up by its 64 bytes (a few requesters sign many requests), so
its serialization, keccak and EIP-55 checksum run once per key. Callgrind, the gateway's
`_verify` of 500 requests by 4 signers: 617k -> 586k instructions per access, and one GIL
release per access where there were three.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator

from coincurve import _libsecp256k1
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from eth_typing import ChecksumAddress

from dul.keccak import keccak

__all__ = ["ADDRESSES_KEPT", "holding_gil", "signer_address"]

ADDRESSES_KEPT = 4096
"""Public keys whose address is kept (the map is emptied when full: bounded memory)."""

_CONTEXT = GLOBAL_CONTEXT.ctx
_UNCOMPRESSED = lib.SECP256K1_EC_UNCOMPRESSED
_addresses: dict[bytes, ChecksumAddress] = {}

# cffi releases the GIL around every call. Parsing 64 bytes takes ~0.3 µs, but a release while
# the event loop waits for the GIL hands it over, and the verifier thread then waits for it back
# (up to the 5 ms switch interval): through ctypes' PyDLL (which keeps the GIL) on the same
# mapped library, the recovery (~35 µs) is the one release per access.
_LIBRARY = ctypes.PyDLL(_libsecp256k1.__file__)
_PARSE = _LIBRARY.secp256k1_ecdsa_recoverable_signature_parse_compact
_PARSE.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
_PARSE.restype = ctypes.c_int
_RECOVER_HOLDING_GIL = _LIBRARY.secp256k1_ecdsa_recover
"""The recovery itself without releasing the GIL, for a thread that would only wait to take
it back (`holding_gil`)."""
_RECOVER_HOLDING_GIL.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)
_RECOVER_HOLDING_GIL.restype = ctypes.c_int
_CONTEXT_ADDRESS = int(ffi.cast("uintptr_t", _CONTEXT))


class _Structs(threading.local):
    """One thread's library structs, reused by every recovery on that thread."""

    def __init__(self) -> None:
        self.signature = ffi.new("secp256k1_ecdsa_recoverable_signature *")
        self.signature_address = int(ffi.cast("uintptr_t", self.signature))
        self.public = ffi.new("secp256k1_pubkey *")
        self.public_address = int(ffi.cast("uintptr_t", self.public))
        self.key = ffi.buffer(self.public)
        self.serialized = ffi.new("unsigned char[65]")
        self.length = ffi.new("size_t *")
        self.releasing = functools.partial(
            lib.secp256k1_ecdsa_recover, _CONTEXT, self.public, self.signature
        )
        self.holding = functools.partial(
            _RECOVER_HOLDING_GIL, _CONTEXT_ADDRESS, self.public_address, self.signature_address
        )
        self.recover = self.releasing
        """The recovery of a digest into `public`: `holding` within `holding_gil()`, bound
        once (one attribute read per recovery, as the call it replaced made)."""


_structs = _Structs()


@contextlib.contextmanager
def holding_gil() -> Iterator[None]:
    """Recoveries on this thread keep the GIL meanwhile (~35 µs each).

    For the event loop's thread: a recovery that releases the GIL there hands it to whichever
    thread waits for it (the outbox writer, a verifier), and the loop then waits to take it
    back (up to the switch interval, longer when that thread is preempted holding it) with
    every request it has not answered yet. A verifier thread releases it: the loop runs
    meanwhile."""
    structs = _structs
    before, structs.recover = structs.recover, structs.holding
    try:
        yield
    finally:
        structs.recover = before


def signer_address(digest: bytes, rs: bytes, recovery_id: int) -> ChecksumAddress | None:
    """The checksummed address whose key signed the 32-byte `digest` with the 64-byte r || s
    and recovery id 0 or 1, or None when no public key recovers (r is not a point's x)."""
    structs = _structs
    if not _PARSE(_CONTEXT_ADDRESS, structs.signature_address, rs, recovery_id):
        return None  # r or s not below the group order (the caller refuses those first)
    if not structs.recover(digest):
        return None
    key = structs.key[:]
    address = _addresses.get(key)
    if address is None:
        address = _address_of(structs)
        if len(_addresses) >= ADDRESSES_KEPT:
            _addresses.clear()
        _addresses[key] = address
    return address


def _address_of(structs: _Structs) -> ChecksumAddress:
    from dul.signing import checksum_address  # signing imports this module

    structs.length[0] = 65
    lib.secp256k1_ec_pubkey_serialize(
        _CONTEXT, structs.serialized, structs.length, structs.public, _UNCOMPRESSED
    )
    return checksum_address(keccak(ffi.buffer(structs.serialized, 65)[1:])[-20:])

"""Patients without identities: subject references and one-time authorization codes.

A *subject reference* is HMAC-SHA256, under a secret only the hospital holds, of a
hospital-internal pseudonym. It is what consents, cohorts and transparency reports name; without
the secret nobody can link it back to the pseudonym or test a guess, and the pseudonym itself
never leaves the hospital's steward tools.

An *authorization code* is 100 random bits written as 20 Crockford base32 characters in four
groups (`7K3QF-ZC0XH-M4N2P-9TRVW`). The patient hands it to a third party; the chain stores only
its keccak256 hash, so seeing the chain never reveals a usable code.
"""

from __future__ import annotations

import hmac
import os
import secrets
from hashlib import sha256
from pathlib import Path

from eth_hash.auto import keccak

SUBJECT_KEY_BYTES = 32
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
CODE_LENGTH = 20


class SubjectError(ValueError):
    """A pseudonym, subject key or authorization code that cannot be used."""


def subject_ref(subject_key: bytes, pseudonym: str) -> bytes:
    """The subject reference of `pseudonym` under the hospital's `subject_key` (32 bytes)."""
    if len(subject_key) < SUBJECT_KEY_BYTES:
        raise SubjectError(f"a subject key needs at least {SUBJECT_KEY_BYTES} bytes")
    text = pseudonym.strip()
    if not text:
        raise SubjectError("the pseudonym is empty")
    return hmac.new(subject_key, text.encode(), sha256).digest()


def new_subject_key(path: Path) -> bytes:
    """Create a hospital's subject key file (mode 0600); refuse to overwrite one."""
    key = secrets.token_bytes(SUBJECT_KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SubjectError(f"{path} exists: a subject key is never replaced") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


def load_subject_key(path: Path) -> bytes:
    """Read a subject key written by `new_subject_key`."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise SubjectError(f"no subject key at {path}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SubjectError(f"{path} does not hold a hex subject key") from None
    if len(key) < SUBJECT_KEY_BYTES:
        raise SubjectError(f"{path} holds a key shorter than {SUBJECT_KEY_BYTES} bytes")
    return key


def new_authorization_code() -> str:
    """A fresh one-time code, grouped for reading aloud."""
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 5] for i in range(0, CODE_LENGTH, 5))


def normalize_code(code: str) -> str:
    """The canonical form of a code as typed: case, separators and look-alikes forgiven."""
    text = code.upper().replace("-", "").replace(" ", "").translate(_ALIASES)
    if len(text) != CODE_LENGTH or any(ch not in _ALPHABET for ch in text):
        raise SubjectError(f"an authorization code has {CODE_LENGTH} base32 characters")
    return text


def code_hash(code: str) -> bytes:
    """What the chain stores for a code: keccak256 of its canonical form."""
    return keccak(normalize_code(code).encode())

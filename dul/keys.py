"""Encrypted key files: one eth-account (Web3 Secret Storage v3, scrypt) keystore per name.

Keystores live in `Home.keys_dir/<name>.json` (directory 700, files 600). Listing and showing read
only the public `address` field, so they need no passphrase; unlocking decrypts once per process
and hands back a `Signer`. The passphrase comes from the environment, never from a command-line
argument (which `ps` would show):

    DUL_KEY_PASSPHRASE        the passphrase itself, or
    DUL_KEY_PASSPHRASE_FILE   a file holding it (one trailing newline is ignored)
    DUL_KEY_SCRYPT_N          scrypt cost for new keystores (power of two, default 2**18 ≈ 1 s);
                              tests use 2**14

Errors are `KeyStoreError` with codes: invalid_key_name, key_not_found, key_exists,
passphrase_missing, wrong_passphrase, invalid_private_key, keystore_corrupt; a bad
`DUL_KEY_SCRYPT_N` is a `ConfigError` (invalid_scrypt_n). No message ever contains key material.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any, NamedTuple

import coincurve
import structlog
from eth_typing import ChecksumAddress, HexStr

from dul.errors import ConfigError, KeyStoreError
from dul.home import Home
from dul.signing import InvalidPrivateKeyError, LocalSigner, Signer, checksum_address

__all__ = [
    "DEFAULT_SCRYPT_N",
    "KeyInfo",
    "KeyStore",
    "passphrase_from_env",
    "scrypt_n_from_env",
    "validate_name",
]

log = structlog.get_logger(__name__)

DEFAULT_SCRYPT_N = 1 << 18
PASSPHRASE_ENV = "DUL_KEY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
PASSPHRASE_FILE_ENV = "DUL_KEY_PASSPHRASE_FILE"  # noqa: S105 - a variable name
SCRYPT_N_ENV = "DUL_KEY_SCRYPT_N"

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

# Unlocked signers of this process: (keystore path, ciphertext, mac, passphrase tag) -> signer.
# The passphrase tag is a keyed hash with a per-process key, so a cached key is only handed out
# to a caller who holds the same passphrase, and nothing stored here reveals the passphrase.
_UNLOCKED: dict[tuple[str, str, str, bytes], LocalSigner] = {}
_UNLOCKED_LOCK = threading.Lock()
_TAG_KEY = secrets.token_bytes(32)


class KeyInfo(NamedTuple):
    name: str
    address: ChecksumAddress
    path: Path


def validate_name(name: str) -> str:
    """A key name is also a file name: lower-case, no path separators, at most 64 characters."""
    if not _NAME.fullmatch(name):
        raise KeyStoreError(
            f"invalid key name {name!r}: use 1-64 characters a-z 0-9 . _ - "
            "starting with a letter or digit",
            code="invalid_key_name",
        )
    return name


def passphrase_from_env() -> str:
    """The keystore passphrase from DUL_KEY_PASSPHRASE, else the file DUL_KEY_PASSPHRASE_FILE."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    file_name = os.environ.get(PASSPHRASE_FILE_ENV)
    if file_name:
        try:
            text = Path(file_name).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyStoreError(
                f"cannot read the passphrase file {file_name} ({exc.strerror or exc})",
                code="passphrase_missing",
            ) from None
        text = text.removesuffix("\n").removesuffix("\r")
        if text:
            return text
        raise KeyStoreError(f"the passphrase file {file_name} is empty", code="passphrase_missing")
    raise KeyStoreError(
        f"no keystore passphrase: set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV}",
        code="passphrase_missing",
    )


def scrypt_n_from_env() -> int:
    raw = os.environ.get(SCRYPT_N_ENV)
    if raw is None or raw == "":
        return DEFAULT_SCRYPT_N
    try:
        n = int(raw, 0)
    except ValueError:
        n = 0
    if n < 2 or n & (n - 1):
        raise ConfigError(
            f"{SCRYPT_N_ENV} must be a power of two (e.g. 16384 or 262144), got {raw!r}",
            code="invalid_scrypt_n",
        )
    return n


def _passphrase_tag(passphrase: str) -> bytes:
    return hashlib.blake2b(passphrase.encode("utf-8"), key=_TAG_KEY, digest_size=16).digest()


class KeyStore:
    """The named keystores of one data directory.

    `passphrase` and `scrypt_n` override the environment (services pass settings in); by
    default both are read from the environment when first needed, so listing needs neither.
    """

    def __init__(
        self, home: Home, *, passphrase: str | None = None, scrypt_n: int | None = None
    ) -> None:
        self.home = home
        self._passphrase = passphrase
        self._scrypt_n = scrypt_n

    @property
    def directory(self) -> Path:
        return self.home.keys_dir

    def path(self, name: str) -> Path:
        return self.directory / f"{validate_name(name)}.json"

    # ------------------------------------------------------------------ public API

    def new(self, name: str) -> ChecksumAddress:
        """Create a key from the OS's CSPRNG (through libsecp256k1's range check)."""
        return self._store(name, coincurve.PrivateKey().secret)

    def import_key(self, name: str, private_key: bytes | str) -> ChecksumAddress:
        """Store an existing private key (32 bytes, or 64 hex digits with or without 0x)."""
        if isinstance(private_key, str):
            text = private_key.strip().removeprefix("0x").removeprefix("0X")
            try:
                raw = bytes.fromhex(text) if len(text) == 64 else b""
            except ValueError:
                raw = b""
        else:
            raw = bytes(private_key)
        return self._store(name, raw)

    def list(self) -> list[tuple[str, ChecksumAddress]]:
        """(name, address) of every keystore, by name; reads no secret."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            name = path.stem
            if _NAME.fullmatch(name):
                found.append((name, self._address_of(path)))
        return found

    def show(self, name: str) -> KeyInfo:
        path = self._existing(name)
        return KeyInfo(name, self._address_of(path), path)

    def unlock(self, name: str) -> Signer:
        """Decrypt a keystore (scrypt: slow on purpose), once per process and passphrase."""
        path = self._existing(name)
        data = self._read(path)
        passphrase = self._get_passphrase()
        try:
            crypto = data.get("crypto") or data["Crypto"]
            ciphertext, mac = str(crypto["ciphertext"]), str(crypto["mac"])
        except (KeyError, TypeError):
            raise self._corrupt(path, "has no crypto section") from None
        cache_key = (str(path), ciphertext, mac, _passphrase_tag(passphrase))
        with _UNLOCKED_LOCK:
            cached = _UNLOCKED.get(cache_key)
        if cached is not None:
            return cached
        from eth_account import Account  # ~0.6 s to import: only to unlock

        try:
            secret = bytes(Account.decrypt(data, passphrase))
        except ValueError as exc:
            if "MAC mismatch" in str(exc):
                raise KeyStoreError(
                    f"wrong passphrase for key {name!r}", code="wrong_passphrase"
                ) from None
            raise self._corrupt(path, "cannot be decrypted") from None
        try:
            signer = LocalSigner(secret)
        except InvalidPrivateKeyError:
            raise self._corrupt(path, "holds an invalid private key") from None
        if signer.address != self._address_of(path):
            raise self._corrupt(path, "address field does not match the key")
        with _UNLOCKED_LOCK:
            _UNLOCKED[cache_key] = signer
        log.info("key_unlocked", key=name, address=signer.address)
        return signer

    @staticmethod
    def forget_unlocked() -> None:
        """Drop every decrypted key this process holds (tests, or after a key rotation)."""
        with _UNLOCKED_LOCK:
            _UNLOCKED.clear()

    # ------------------------------------------------------------------ internals

    def _get_passphrase(self) -> str:
        if self._passphrase is not None:
            if not self._passphrase:
                raise KeyStoreError("the keystore passphrase is empty", code="passphrase_missing")
            return self._passphrase
        return passphrase_from_env()

    def _store(self, name: str, secret: bytes) -> ChecksumAddress:
        path = self.path(name)
        if path.exists():
            raise KeyStoreError(f"key {name!r} already exists ({path})", code="key_exists")
        try:
            signer = LocalSigner(secret)
        except InvalidPrivateKeyError as exc:
            raise KeyStoreError(exc.message, code="invalid_private_key") from None
        passphrase = self._get_passphrase()
        n = self._scrypt_n if self._scrypt_n is not None else scrypt_n_from_env()
        from eth_account import Account  # ~0.6 s to import: only to create

        keystore = Account.encrypt(secret, passphrase, kdf="scrypt", iterations=n)
        self._write_new(path, json.dumps(keystore, indent=2) + "\n")
        log.info("key_created", key=name, address=signer.address)
        return signer.address

    def _write_new(self, path: Path, text: str) -> None:
        """Write 600 to a temporary file, then hard-link it into place: no partial keystore is
        ever visible, and two processes creating the same name cannot both win."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeyStoreError(
                    f"key {path.stem!r} already exists ({path})", code="key_exists"
                ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _existing(self, name: str) -> Path:
        path = self.path(name)
        if not path.is_file():
            raise KeyStoreError(f"no key named {name!r} in {self.directory}", code="key_not_found")
        return path

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise self._corrupt(path, "is not readable JSON") from None
        if not isinstance(data, dict):
            raise self._corrupt(path, "is not a JSON object")
        return data

    def _address_of(self, path: Path) -> ChecksumAddress:
        raw = self._read(path).get("address")
        if not isinstance(raw, str):
            raise self._corrupt(path, "has no address field")
        try:
            body = bytes.fromhex(HexStr(raw).removeprefix("0x"))
        except ValueError:
            body = b""
        if len(body) != 20:
            raise self._corrupt(path, "has a malformed address field")
        return checksum_address(body)

    @staticmethod
    def _corrupt(path: Path, problem: str) -> KeyStoreError:
        return KeyStoreError(f"keystore {path} {problem}", code="keystore_corrupt")

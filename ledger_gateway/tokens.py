"""API tokens of access services and stewards: bound to one organization and one role,
stored only as SHA-256 hashes, shown once at creation, revocable (`dul admin token …`)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from ledger_gateway.errors import UnauthorizedError

TOKEN_PREFIX = "dulgw_"  # noqa: S105 - a public marker that lets secret scanners spot tokens


class TokenRole(StrEnum):
    ACCESS_SERVICE = "access-service"
    """Asks before each access and reports results (query engine, FL node, enclave)."""
    STEWARD = "steward"
    """Registers datasets, relays agreement signatures and lifecycle steps."""


@dataclass(frozen=True)
class Token:
    name: str
    org: str
    role: TokenRole
    created_at: float
    revoked_at: float | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """A small JSON file (mode 600); reloaded when it changes so revocation needs no restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._tokens: dict[str, Token] = {}

    def _load(self) -> dict[str, Token]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._tokens, self._mtime = {}, None
            return self._tokens
        if mtime != self._mtime:
            raw = json.loads(self.path.read_text())
            self._tokens = {h: Token(**{**t, "role": TokenRole(t["role"])}) for h, t in raw.items()}
            self._mtime = mtime
        return self._tokens

    def _save(self, tokens: dict[str, Token]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({h: asdict(t) for h, t in tokens.items()}, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        self._mtime = None

    def create(self, name: str, org: str, role: TokenRole) -> str:
        """A new token; the secret is returned once and never stored."""
        tokens = dict(self._load())
        if any(t.name == name and t.revoked_at is None for t in tokens.values()):
            raise ValueError(f"an active token named {name!r} exists")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        tokens[_hash(secret)] = Token(name=name, org=org, role=role, created_at=time.time())
        self._save(tokens)
        return secret

    def revoke(self, name: str) -> bool:
        tokens = dict(self._load())
        found = False
        for digest, token in tokens.items():
            if token.name == name and token.revoked_at is None:
                tokens[digest] = Token(**{**asdict(token), "revoked_at": time.time()})
                found = True
        if found:
            self._save(tokens)
        return found

    def list(self) -> list[Token]:
        return sorted(self._load().values(), key=lambda t: t.created_at)

    def authenticate(self, secret: str | None) -> Token:
        if not secret:
            raise UnauthorizedError("missing bearer token")
        token = self._load().get(_hash(secret))
        if token is None or token.revoked_at is not None:
            raise UnauthorizedError("unknown or revoked token")
        return token

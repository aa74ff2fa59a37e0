"""API tokens: bound to one organization and one role, stored only as SHA-256 hashes, shown once
at creation, revocable at once, optionally expiring (`dul admin token …`).

`HashedTokenStore` is the store, generic over the role vocabulary; the gateway's tokens are a
`TokenStore` (roles `access-service` and `steward`), the audit service's use the same store with
its own roles and prefix (`audit.auth`)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

from ledger_gateway.errors import UnauthorizedError

TOKEN_PREFIX = "dulgw_"  # noqa: S105 - a public marker that lets secret scanners spot tokens


class TokenRole(StrEnum):
    ACCESS_SERVICE = "access-service"
    """Asks before each access and reports results (query engine, FL node, enclave)."""
    STEWARD = "steward"
    """Registers datasets, relays agreement signatures and lifecycle steps."""


R = TypeVar("R", bound=StrEnum)


@dataclass(frozen=True)
class StoredToken(Generic[R]):
    name: str
    org: str
    role: R
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or time.time())


Token = StoredToken[TokenRole]
"""A gateway token."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class HashedTokenStore(Generic[R]):
    """A small JSON file (mode 600); reloaded when it changes so revocation needs no restart."""

    def __init__(self, path: Path, roles: type[R], prefix: str) -> None:
        self.path = path
        self.roles = roles
        self.prefix = prefix
        self._mtime: float | None = None
        self._tokens: dict[str, StoredToken[R]] = {}

    def _token(self, raw: dict[str, Any]) -> StoredToken[R]:
        return StoredToken(**{**raw, "role": self.roles(raw["role"])})

    def _load(self) -> dict[str, StoredToken[R]]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._tokens, self._mtime = {}, None
            return self._tokens
        if mtime != self._mtime:
            raw = json.loads(self.path.read_text())
            self._tokens = {h: self._token(t) for h, t in raw.items()}
            self._mtime = mtime
        return self._tokens

    def _save(self, tokens: dict[str, StoredToken[R]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({h: asdict(t) for h, t in tokens.items()}, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        self._mtime = None

    def create(self, name: str, org: str, role: R, *, expires_at: float | None = None) -> str:
        """A new token; the secret is returned once and never stored."""
        tokens = dict(self._load())
        if any(t.name == name and t.revoked_at is None for t in tokens.values()):
            raise ValueError(f"an active token named {name!r} exists")
        secret = self.prefix + secrets.token_urlsafe(32)
        tokens[_hash(secret)] = StoredToken(
            name=name, org=org, role=role, created_at=time.time(), expires_at=expires_at
        )
        self._save(tokens)
        return secret

    def revoke(self, name: str) -> bool:
        tokens = dict(self._load())
        found = False
        for digest, token in tokens.items():
            if token.name == name and token.revoked_at is None:
                tokens[digest] = StoredToken(**{**asdict(token), "revoked_at": time.time()})
                found = True
        if found:
            self._save(tokens)
        return found

    def list(self) -> list[StoredToken[R]]:
        return sorted(self._load().values(), key=lambda t: t.created_at)

    def lookup(self, secret: str) -> StoredToken[R] | None:
        """The token of `secret` as stored (revoked and expired ones too), or None."""
        return self._load().get(_hash(secret))

    def authenticate(self, secret: str | None) -> StoredToken[R]:
        if not secret:
            raise UnauthorizedError("missing bearer token")
        token = self.lookup(secret)
        if token is None or token.revoked_at is not None:
            raise UnauthorizedError("unknown or revoked token")
        if token.expired():
            raise UnauthorizedError("expired token")
        return token


class TokenStore(HashedTokenStore[TokenRole]):
    """The gateway's tokens (`DUL_HOME/gateway/tokens.json`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, TokenRole, TOKEN_PREFIX)

"""Who may use the public RPC: bearer JWTs as Hyperledger Besu checks them in JWT public-key mode.

Besu (`--rpc-http-authentication-enabled`, `--rpc-http-authentication-jwt-public-key-file`,
`--rpc-http-authentication-jwt-algorithm`) accepts a token signed by the operator's key in
RS256/384/512 or ES256/384/512 that carries an `exp` and a `permissions` claim of
`namespace:method` entries (`eth:getLogs`, `eth:*`, `*:*`). The embedded proxy checks the same
tokens the same way, so a token made here works against a Besu node given the public key.

Operator side: `signing_key(path)` makes or loads the RSA key (PEM, 0600) and `issue_token`
signs tokens with it. Proxy side: `TokenVerifier` checks them (401: no token, bad signature,
expired; 403: a method outside the permissions). Client side: `rpc_token()` finds the token a
process should present (`DUL_RPC_TOKEN`, `DUL_RPC_TOKEN_FILE`, or, for the holder of this data
directory's signing key, one made on the spot) and `bearer_headers` turns it into a header.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dul.chain.rpc_filter import READ_METHODS, SEND_METHODS
from dul.errors import ConfigError

#: Besu's default for `--rpc-http-authentication-jwt-algorithm`.
ALGORITHM: Final = "RS256"
#: Besu's JSON-RPC error for a refused token or method ("Unauthorized").
UNAUTHORIZED_CODE: Final = -40100
KEY_FILE: Final = "rpc-jwt.pem"
PUBLIC_KEY_FILE: Final = "rpc-jwt-public.pem"
RSA_BITS: Final = 2048

#: Everything a member's tooling or a service that sends needs.
MEMBER_PERMISSIONS: Final = ("eth:*", "net:*", "web3:*")
#: Reads only (an audit indexer, a regulator's dashboard): no eth:sendRawTransaction.
READ_PERMISSIONS: Final = tuple(sorted(m.replace("_", ":", 1) for m in READ_METHODS))
#: The operator's own tools.
OPERATOR_PERMISSIONS: Final = ("*:*",)

MIN_TTL_SECONDS: Final = 60
MAX_TTL_SECONDS: Final = 366 * 24 * 3600
LOCAL_TTL_SECONDS: Final = 30 * 24 * 3600  # tokens the key holder's own processes make

_PERMISSION = re.compile(r"^(\*|[a-z][a-z0-9]*):(\*|[A-Za-z][A-Za-z0-9_]*)$")


class RpcAuthError(Exception):
    """A request the proxy refuses: `status` 401 (who are you?) or 403 (not for you)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- permissions ---------------------------------------------------------------------------


def permission_error(permission: str) -> str | None:
    """Why `permission` is not Besu's `namespace:method` form (None when it is)."""
    if not _PERMISSION.match(permission):
        return f"permission {permission!r} must look like eth:getLogs, eth:* or *:*"
    return None


def permitted(permissions: Iterable[str], method: str) -> bool:
    """Besu's rule: a method `ns_name` is allowed by `*:*`, `ns:*` or `ns:name`."""
    namespace, _, name = method.partition("_")
    allowed = {"*:*", f"{namespace}:*", f"{namespace}:{name}"} if name else {"*:*"}
    return not allowed.isdisjoint(permissions)


def is_send(method: str) -> bool:
    return method in SEND_METHODS


# --- the operator's key and tokens ---------------------------------------------------------


def signing_key(path: Path, *, create: bool) -> Any:
    """The RSA private key at `path`; made (0600) when absent and `create`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if path.exists():
        try:
            return serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the RPC signing key {path}: {exc}") from exc
    if not create:
        raise ConfigError(f"no RPC signing key at {path}: start the chain with `dul chain up`")
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    from dul.home import private_dir, write_private

    private_dir(path.parent)
    write_private(path, pem.decode())
    return key


def public_pem(key: Any) -> bytes:
    """The SubjectPublicKeyInfo PEM Besu's `--rpc-http-authentication-jwt-public-key-file` reads."""
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def issue_token(
    key: Any,
    subject: str,
    permissions: Sequence[str],
    ttl_seconds: int,
    *,
    now: float | None = None,
) -> str:
    """A token for `subject` (an account address or a service name) valid `ttl_seconds`."""
    import jwt

    for permission in permissions:
        problem = permission_error(permission)
        if problem is not None:
            raise ConfigError(problem)
    if not permissions:
        raise ConfigError("a token needs at least one permission")
    if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ConfigError(
            f"a token lives between {MIN_TTL_SECONDS} s and {MAX_TTL_SECONDS // 86400} days"
        )
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "permissions": list(permissions),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


# --- the proxy's check ---------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    subject: str
    permissions: frozenset[str]
    expires: int


class TokenVerifier:
    """Checks bearer tokens against the operator's public key, remembering good ones."""

    def __init__(self, public_key_pem: bytes, *, cache_size: int = 1024) -> None:
        from cryptography.hazmat.primitives import serialization

        self._key = serialization.load_pem_public_key(public_key_pem)
        self._cache: OrderedDict[str, Caller] = OrderedDict()
        self._cache_size = cache_size

    @classmethod
    def from_file(cls, path: Path) -> TokenVerifier:
        return cls(path.read_bytes())

    def caller(self, authorization: str | None, *, now: float | None = None) -> Caller:
        """The caller behind an `Authorization` header value, or `RpcAuthError` 401."""
        if not authorization:
            raise RpcAuthError(401, "Unauthorized: send Authorization: Bearer <token>")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise RpcAuthError(401, "Unauthorized: the Authorization header must be Bearer")
        moment = time.time() if now is None else now
        cached = self._cache.get(token)
        if cached is None:
            cached = self._verify(token)
            self._cache[token] = cached
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if cached.expires <= moment:
            raise RpcAuthError(401, "Unauthorized: the token has expired")
        return cached

    def _verify(self, token: str) -> Caller:
        import jwt

        if len(token) > 8192:
            raise RpcAuthError(401, "Unauthorized: the token is too long")
        try:
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=[ALGORITHM],
                options={"require": ["exp"], "verify_exp": False},  # expiry checked per call
            )
        except jwt.InvalidTokenError as exc:
            raise RpcAuthError(401, f"Unauthorized: invalid token ({exc})") from exc
        permissions = claims.get("permissions")
        expires = claims.get("exp")
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise RpcAuthError(401, "Unauthorized: the token has no permissions claim")
        if not isinstance(expires, int):
            raise RpcAuthError(401, "Unauthorized: the token's exp is not a number")
        return Caller(str(claims.get("sub", "")), frozenset(permissions), expires)


def check_method(caller: Caller, method: str) -> None:
    """`RpcAuthError` 403 when `method` is outside the caller's permissions."""
    if not permitted(caller.permissions, method):
        raise RpcAuthError(
            403, f"Unauthorized: the token does not permit {method.replace('_', ':', 1)}"
        )


# --- the client's token --------------------------------------------------------------------


def default_key_path() -> Path:
    """`DUL_CHAIN_RPC_AUTH_KEY`, else `DUL_HOME/keys/rpc-jwt.pem`."""
    explicit = os.environ.get("DUL_CHAIN_RPC_AUTH_KEY")
    if explicit:
        return Path(explicit).expanduser()
    from dul.home import Home

    return Home.from_env().keys_dir / KEY_FILE


def rpc_token() -> str | None:
    """The token this process presents to the RPC, first found of:

    1. `DUL_RPC_TOKEN` (the token itself),
    2. `DUL_RPC_TOKEN_FILE` (a file holding it; `dul up` gives each service one),
    3. for whoever can read this data directory's signing key (the operator of the local
       chain): a member-level token made on the spot.
    None when there is none (a node without authentication needs none).
    """
    token = os.environ.get("DUL_RPC_TOKEN", "").strip()
    if token:
        return token
    token_file = os.environ.get("DUL_RPC_TOKEN_FILE", "").strip()
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read DUL_RPC_TOKEN_FILE {token_file}: {exc}") from exc
        if not token:
            raise ConfigError(f"DUL_RPC_TOKEN_FILE {token_file} is empty")
        return token
    return _local_token()


_local: dict[Path, str] = {}


def _local_token() -> str | None:
    path = default_key_path()
    if not os.access(path, os.R_OK):
        return None
    if path not in _local:
        key = signing_key(path, create=False)
        _local[path] = issue_token(key, "local-operator", OPERATOR_PERMISSIONS, LOCAL_TTL_SECONDS)
    return _local[path]


def bearer_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}

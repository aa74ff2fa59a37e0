"""Who is asking the audit service: every `/v1` request carries `Authorization: Bearer …`, one of

- an **API token** (`dulau_…`, `dul admin token create NAME --service audit --role regulator|
  organization [--org ORG]`): stored hashed in the same kind of file as the gateway's tokens
  (`ledger_gateway.tokens`), re-read on change, so a revocation holds at the next request;
- an **OpenID Connect access token** (a JWT) from the configured issuer: signature against its
  JWKS (a URL, keys cached, or a file), `iss`, `aud`, `exp`; the role from a configurable claim
  (`DUL_AUDIT_OIDC_ROLES_CLAIM`), the organization from another (`DUL_AUDIT_OIDC_ORG_CLAIM`);
- a **patient token** (`dulpt_…`, `dul.patient_tokens`): one subject reference, signed by a
  STEWARD key of the holder; the chain is asked (Membership.hasOrgRole, eth_call) whether the
  signer is an active steward of that holder, and the answer is kept `steward_cache_s`.

None calls back its issuer per request. Failures are 401 problem JSON (`credential_missing`,
`credential_invalid`, `credential_expired`, `credential_revoked`); a credential without a role
the service knows is 403 `role_missing`; an identity provider or node that cannot be reached to
check one is 503.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import jwt
import structlog
from eth_typing import ChecksumAddress

from audit.provenance import (
    AuditQueryError,
    ForbiddenError,
    Kind,
    MalformedIdError,
    StoreUnavailableError,
    parse_id,
)
from audit.scope import Caller, CallerRole
from audit.settings import AuditSettings
from dul.chain.rpc import NodeUnavailableError, RpcClient
from dul.contracts.bindings import function
from dul.contracts.typed_data import Domain
from dul.domain import Role
from dul.errors import ConfigError, DulError
from dul.patient_tokens import PREFIX as PATIENT_PREFIX
from dul.patient_tokens import PatientToken, PatientTokenError, patient_token_domain
from dul.signing import InvalidSignatureError
from ledger_gateway.tokens import HashedTokenStore

log = structlog.get_logger("audit.auth")

AUDIT_TOKEN_PREFIX = "dulau_"  # noqa: S105 - a public marker that lets secret scanners spot tokens
MAX_CREDENTIAL = 8192
"""Longest bearer credential read (a JWT with many claims fits; anything longer is refused)."""


class AuditRole(StrEnum):
    """Roles of audit API tokens."""

    REGULATOR = "regulator"
    ORGANIZATION = "organization"


def audit_tokens(path: Path) -> HashedTokenStore[AuditRole]:
    """The audit service's API tokens (`DUL_HOME/audit/tokens.json` by default)."""
    return HashedTokenStore(path, AuditRole, AUDIT_TOKEN_PREFIX)


class UnauthenticatedError(AuditQueryError):
    code = "credential_invalid"
    status = 401


class IdentityProviderUnavailableError(AuditQueryError):
    code = "identity_provider_unavailable"
    status = 503


def _org_id(value: object, what: str) -> str:
    """The 0x id of an organization named by slug or id."""
    try:
        return parse_id(Kind.ORGANIZATION, str(value))
    except MalformedIdError:
        raise UnauthenticatedError(f"{what} names no valid organization") from None


# --- OpenID Connect ----------------------------------------------------------------------------


class _JwksFile:
    """Keys from a JWKS file, re-read when it changes (key rotation without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: int | None = None
        self._keys: jwt.PyJWKSet | None = None
        self._lock = threading.Lock()

    def key_for(self, token: str) -> jwt.PyJWK:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
                if self._keys is None or mtime != self._mtime:
                    self._keys = jwt.PyJWKSet.from_json(self.path.read_text())
                    self._mtime = mtime
            except (OSError, ValueError, jwt.PyJWKSetError) as exc:
                raise IdentityProviderUnavailableError(
                    f"the JWKS file {self.path} cannot be read: {exc}"
                ) from None
            keys = self._keys
        kid = jwt.get_unverified_header(token).get("kid")
        for key in keys.keys:
            if kid is None or key.key_id == kid:
                return key
        raise UnauthenticatedError("no key of the identity provider matches the token's kid")


class OidcVerifier:
    """Access tokens of one issuer."""

    def __init__(self, settings: AuditSettings) -> None:
        if not settings.oidc_audience:
            raise ConfigError("DUL_AUDIT_OIDC_ISSUER is set without DUL_AUDIT_OIDC_AUDIENCE")
        self.settings = settings
        self._url_keys: jwt.PyJWKClient | None = None
        self._file_keys: _JwksFile | None = None
        if settings.oidc_jwks_path is not None:
            self._file_keys = _JwksFile(settings.oidc_jwks_path)
        elif settings.oidc_jwks_url:
            self._url_keys = jwt.PyJWKClient(
                settings.oidc_jwks_url, cache_jwk_set=True, lifespan=300,
                timeout=settings.request_timeout,
            )  # fmt: skip
        else:
            raise ConfigError(
                "DUL_AUDIT_OIDC_ISSUER is set without DUL_AUDIT_OIDC_JWKS_URL or _JWKS_PATH"
            )

    def _key(self, token: str) -> jwt.PyJWK:
        if self._file_keys is not None:
            return self._file_keys.key_for(token)
        assert self._url_keys is not None
        try:
            return self._url_keys.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise IdentityProviderUnavailableError(
                f"the identity provider's keys cannot be fetched: {exc}"
            ) from None
        except jwt.PyJWKClientError as exc:
            raise UnauthenticatedError(f"no key of the identity provider fits: {exc}") from None

    def verify(self, token: str) -> Caller:
        s = self.settings
        try:
            key = self._key(token)
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=s.oidc_algorithms, audience=s.oidc_audience,
                issuer=s.oidc_issuer, leeway=s.oidc_leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("the access token has expired",
                                       code="credential_expired") from None  # fmt: skip
        except (jwt.PyJWTError, ValueError) as exc:
            raise UnauthenticatedError(f"the access token is not valid: {exc}") from None
        roles = self._claim(claims, s.oidc_roles_claim)
        if isinstance(roles, str):
            roles = roles.split()
        roles = roles if isinstance(roles, list) else []
        name = str(claims.get("sub", "?"))[:200]
        if s.oidc_regulator_role in roles:
            return Caller(CallerRole.REGULATOR, via="oidc", name=name)
        if s.oidc_organization_role in roles:
            org = self._claim(claims, s.oidc_org_claim)
            if not org:
                raise ForbiddenError(
                    f"the access token has the organization role but no {s.oidc_org_claim!r} claim",
                    code="role_missing",
                )
            return Caller(CallerRole.ORGANIZATION, via="oidc", name=name,
                          org=_org_id(org, f"the {s.oidc_org_claim!r} claim"))  # fmt: skip
        raise ForbiddenError(
            f"the access token's {s.oidc_roles_claim!r} claim has neither "
            f"{s.oidc_regulator_role!r} nor {s.oidc_organization_role!r}",
            code="role_missing",
        )

    @staticmethod
    def _claim(claims: dict[str, Any], path: str) -> Any:
        value: Any = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value


# --- patient tokens ----------------------------------------------------------------------------

_HAS_ORG_ROLE = function("Membership", "hasOrgRole")


class PatientTokenSettings(Protocol):
    """What checking patient tokens needs: the audit service's settings, or the patient
    page's (`ledger_gateway.patient_page`), which checks the same tokens the same way."""

    @property
    def patient_token_max_s(self) -> int: ...
    @property
    def steward_cache_s(self) -> float: ...
    @property
    def request_timeout(self) -> float: ...
    def resolved_rpc_url(self) -> str: ...
    def resolved_deployment_path(self) -> Path: ...


class PatientVerifier:
    """Patient tokens: signature, lifetime, and the signer a steward of the holder on chain."""

    def __init__(self, settings: PatientTokenSettings) -> None:
        self.settings = settings
        self._domain: tuple[Domain, ChecksumAddress] | None = None
        self._stewards: OrderedDict[tuple[str, bytes], tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def _deployment(self) -> tuple[Domain, ChecksumAddress]:
        if self._domain is None:
            from dul.contracts.deployment import Deployment

            try:
                deployment = Deployment.load(self.settings.resolved_deployment_path())
                membership = deployment.address("Membership")
            except (DulError, OSError, ValueError, KeyError) as exc:
                raise NodeUnavailableError(
                    f"patient tokens cannot be checked without the deployment manifest: {exc}"
                ) from None
            self._domain = (patient_token_domain(deployment.chain_id, membership), membership)
        return self._domain

    def verify(self, raw: str) -> Caller:
        try:
            token = PatientToken.decode(raw)
        except PatientTokenError as exc:
            raise UnauthenticatedError(str(exc)) from None
        now = time.time()
        leeway = 60
        if token.expires_at <= now:
            raise UnauthenticatedError("the patient token has expired", code="credential_expired")
        if token.issued_at > now + leeway or token.expires_at <= token.issued_at:
            raise UnauthenticatedError("the patient token's times are not valid")
        if token.expires_at - token.issued_at > self.settings.patient_token_max_s:
            raise UnauthenticatedError(
                f"the patient token lives longer than {self.settings.patient_token_max_s} s"
            )
        domain, membership = self._deployment()
        try:
            signer = token.signer(domain)
        except InvalidSignatureError as exc:
            raise UnauthenticatedError(f"the patient token's signature: {exc}") from None
        if not self._is_steward(membership, signer, token.holder):
            raise UnauthenticatedError(
                "the patient token is not signed by an active steward of its holder"
            )
        return Caller(
            CallerRole.PATIENT, via="patient", name=signer,
            org="0x" + token.holder.hex(), subject="0x" + token.subject.hex(),
        )  # fmt: skip

    def _is_steward(self, membership: ChecksumAddress, signer: str, holder: bytes) -> bool:
        key = (signer, holder)
        now = time.monotonic()
        with self._lock:
            cached = self._stewards.get(key)
            if cached is not None and now - cached[0] < self.settings.steward_cache_s:
                return cached[1]
        data = _HAS_ORG_ROLE.encode(signer, holder, int(Role.STEWARD))
        rpc = RpcClient(self.settings.resolved_rpc_url(), timeout=self.settings.request_timeout)
        try:
            result = rpc.request(
                "eth_call", {"to": membership, "data": "0x" + data.hex()}, "latest"
            )
        except DulError as exc:
            raise NodeUnavailableError(f"the steward check: {exc.message}") from None
        finally:
            rpc.close()
        try:
            answer = int(str(result), 16) == 1
        except ValueError:
            raise NodeUnavailableError(f"the steward check got {str(result)[:80]!r}") from None
        with self._lock:
            self._stewards[key] = (now, answer)
            self._stewards.move_to_end(key)
            while len(self._stewards) > 4096:
                self._stewards.popitem(last=False)
        return answer


# --- all of them -------------------------------------------------------------------------------


class Authenticator:
    """Turns an Authorization header into a Caller, or raises."""

    def __init__(self, settings: AuditSettings) -> None:
        self.tokens = audit_tokens(settings.resolved_tokens_path())
        self.oidc = OidcVerifier(settings) if settings.oidc_issuer else None
        self.patients = PatientVerifier(settings)

    def authenticate(self, authorization: str | None) -> Caller:
        if not authorization:
            raise UnauthenticatedError(
                "this path needs Authorization: Bearer <API token, OpenID Connect access token "
                "or patient token>",
                code="credential_missing",
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise UnauthenticatedError("the Authorization header is not `Bearer <credential>`")
        if len(credential) > MAX_CREDENTIAL:
            raise UnauthenticatedError(f"a credential is at most {MAX_CREDENTIAL} characters")
        if credential.startswith(AUDIT_TOKEN_PREFIX):
            return self._api_token(credential)
        if credential.startswith(PATIENT_PREFIX):
            return self.patients.verify(credential)
        if credential.count(".") == 2:
            if self.oidc is None:
                raise UnauthenticatedError("this service accepts no OpenID Connect tokens")
            return self.oidc.verify(credential)
        raise UnauthenticatedError(
            f"not a credential of this service (an API token starts {AUDIT_TOKEN_PREFIX}, a "
            f"patient token {PATIENT_PREFIX}; an OpenID Connect token is a JWT)"
        )

    def _api_token(self, secret: str) -> Caller:
        try:
            token = self.tokens.lookup(secret)
        except (OSError, ValueError) as exc:
            log.warning("audit.tokens_unreadable", error=str(exc)[:200])
            raise StoreUnavailableError(
                "the API token file cannot be read", code="token_store_unavailable"
            ) from None
        if token is None:
            raise UnauthenticatedError("unknown API token")
        if token.revoked_at is not None:
            raise UnauthenticatedError(f"token {token.name!r} was revoked",
                                       code="credential_revoked")  # fmt: skip
        if token.expired():
            raise UnauthenticatedError(f"token {token.name!r} has expired",
                                       code="credential_expired")  # fmt: skip
        if token.role == AuditRole.REGULATOR:
            org = _org_id(token.org, "the token") if token.org else None
            return Caller(CallerRole.REGULATOR, via="token", name=token.name, org=org)
        return Caller(CallerRole.ORGANIZATION, via="token", name=token.name,
                      org=_org_id(token.org, "the token"))  # fmt: skip

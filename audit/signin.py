"""What the web console needs to sign in, beside the `/v1` API:

    GET  /auth/config   open: whether an OpenID Connect provider is configured, and where the
                        browser goes to sign in there (authorization code + PKCE, RFC 7636)
    GET  /auth/me       who the bearer credential is (role, organization, subject): the console
                        shows what that role may see
    POST /auth/token    redeems the provider's authorization code with the browser's PKCE
                        verifier at the provider's token endpoint, and answers its access token
                        once this service accepts it; the page itself connects to nothing but
                        this service (its CSP: connect-src 'self')

The console keeps the credential in sessionStorage only. Nothing here stores anything.
"""

# No `from __future__ import annotations`: the routes' dependencies are closures, which
# FastAPI can only see in annotations evaluated where the routes are defined.
import re
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from audit.auth import IdentityProviderUnavailableError, UnauthenticatedError
from audit.provenance import readable
from audit.scope import Caller

_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1


class OidcConfig(BaseModel):
    issuer: str
    authorization_endpoint: str
    client_id: str
    scope: str = "openid"


class AuthConfig(BaseModel):
    oidc: OidcConfig | None = Field(
        None, description="present when the console can sign in with an identity provider"
    )


class Me(BaseModel):
    role: str = Field(description="regulator | organization | patient")
    via: str = Field(description="token | oidc | patient")
    name: str
    org: str | None = Field(None, description="the organization's 0x id")
    org_slug: str | None = None
    subject: str | None = Field(None, description="a patient token's subject reference")


class CodeIn(BaseModel):
    code: str = Field(min_length=1, max_length=4096)
    code_verifier: str = Field(min_length=43, max_length=128, pattern=_VERIFIER.pattern)
    redirect_uri: str = Field(min_length=8, max_length=2048, pattern=r"^https?://")


class TokenOut(BaseModel):
    access_token: str
    expires_in: int | None = None
    me: Me


def me_of(caller: Caller) -> Me:
    return Me(
        role=caller.role.value,
        via=caller.via,
        name=caller.name,
        org=caller.org,
        org_slug=readable(caller.org) if caller.org else None,
        subject=caller.subject,
    )


def signin_router(state_dep: Any, caller_dep: Any) -> APIRouter:
    """The `/auth` routes, given the app's state and caller dependencies."""
    router = APIRouter(prefix="/auth", tags=["sign-in"])
    State = Annotated[Any, Depends(state_dep)]  # noqa: N806 - audit.app.AuditState

    @router.get("/config", response_model=AuthConfig)
    def config(state: State) -> AuthConfig:
        s = state.settings
        if not (s.oidc_issuer and s.oidc_client_id and s.oidc_authorization_endpoint):
            return AuthConfig()
        return AuthConfig(
            oidc=OidcConfig(
                issuer=s.oidc_issuer,
                authorization_endpoint=s.oidc_authorization_endpoint,
                client_id=s.oidc_client_id,
            )
        )

    @router.get("/me", response_model=Me)
    def me(caller: Annotated[Caller, Depends(caller_dep)]) -> Me:
        """Who the bearer credential is."""
        return me_of(caller)

    @router.post("/token", response_model=TokenOut)
    def token(state: State, body: CodeIn) -> TokenOut:
        """The identity provider's access token for an authorization code (PKCE)."""
        s = state.settings
        oidc = state.auth.oidc
        if oidc is None or not (s.oidc_token_endpoint and s.oidc_client_id):
            raise UnauthenticatedError(
                "no identity provider is configured for sign-in (DUL_AUDIT_OIDC_TOKEN_ENDPOINT, "
                "_CLIENT_ID)",
                code="oidc_not_configured",
            )
        form = {
            "grant_type": "authorization_code",
            "code": body.code,
            "redirect_uri": body.redirect_uri,
            "client_id": s.oidc_client_id,
            "code_verifier": body.code_verifier,
        }
        try:
            answer = httpx.post(s.oidc_token_endpoint, data=form, timeout=s.request_timeout)
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailableError(
                f"the identity provider's token endpoint: {exc!r}"
            ) from None
        try:
            reply = answer.json()
        except ValueError:
            reply = {}
        if not isinstance(reply, dict):
            reply = {}
        if answer.status_code >= 500:
            raise IdentityProviderUnavailableError(
                f"the identity provider's token endpoint answered HTTP {answer.status_code}"
            )
        access = reply.get("access_token")
        if answer.status_code != 200 or not isinstance(access, str):
            error = str(reply.get("error_description") or reply.get("error") or "no token")
            raise UnauthenticatedError(f"the identity provider refused the code: {error[:200]}")
        caller = oidc.verify(access)
        expires = reply.get("expires_in")
        return TokenOut(
            access_token=access,
            expires_in=int(expires) if isinstance(expires, int | float) else None,
            me=me_of(caller),
        )

    return router

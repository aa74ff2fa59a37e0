"""Settings of the audit service (`DUL_AUDIT_…`); defaults fit the embedded stack under DUL_HOME."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dul.home import Home


class AuditSettings(BaseSettings):
    """Where the audit store lives, which node to read and how the indexer pages through it."""

    model_config = SettingsConfigDict(env_prefix="DUL_AUDIT_", extra="ignore")

    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite in DUL_HOME/audit/audit.db"
    )
    rpc_url: str | None = Field(
        None, description="JSON-RPC endpoint; default DUL_RPC_URL or the running chain's"
    )
    deployment_path: Path | None = Field(
        None, description="deployment manifest; default DUL_HOME/deployment.json"
    )
    confirmations: int = Field(
        0, ge=0, description="blocks to stay behind the head (0 on a QBFT chain: final at once)"
    )
    page_size: int = Field(
        10,
        ge=1,
        description="blocks of the first eth_getLogs page; later ones adapt (a wide blind "
        "first page on a dense chain is refused after the node has read it all)",
    )
    max_page_size: int = Field(50_000, ge=1, description="pages grow back up to this many blocks")
    max_logs_per_page: int = Field(
        5_000, ge=1, description="pages shrink when a page returns more logs (memory bound)"
    )
    max_page_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="a longer eth_getLogs reply halves the page"
    )
    fetch_workers: int = Field(
        2,
        ge=0,
        le=16,
        description="processes fetching and decoding pages beside the writer (0: one thread "
        "of the indexer's own process)",
    )
    commit_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        description="a catch-up commits the pages it wrote at least this often (and every "
        "20,000 events): readers see its progress, a crash loses at most this much of it",
    )
    poll_interval: float = Field(0.5, gt=0, description="seconds between head polls when idle")
    request_timeout: float = Field(60.0, gt=0)
    node_timeout: float = Field(
        60.0, gt=0, description="--once gives up after the node is unreachable this long"
    )
    cohort_sources: list[str] = Field(
        default_factory=list,
        description="SQLAlchemy URLs of hospital gateway stores whose `cohort_leaves` table "
        "holds the subjects of each access's cohort (read-only; JSON list in the environment)",
    )
    cohort_retry_s: float = Field(
        30.0, gt=0, description="seconds between retries of cohorts no source held yet"
    )
    consent_lag_s: float = Field(
        60.0,
        ge=0,
        description="verify: a consent withdrawal mined less than this before an access that "
        "admitted its subject is not a violation (the gateway decided before it saw it)",
    )

    index_behind_blocks: int = Field(
        50,
        ge=0,
        le=10_000_000,
        description="verify, /readyz: a checkpoint more blocks than this behind the chain head "
        "is `index_behind`",
    )
    index_behind_s: float = Field(
        60.0,
        ge=0,
        le=31_536_000,
        description="verify, /readyz: … or more seconds of chain time than this behind the head",
    )

    # --- who may read (audit.auth) ---
    tokens_path: Path | None = Field(
        None,
        description="API tokens (hashed; `dul admin token --service audit`); default "
        "DUL_HOME/audit/tokens.json",
    )
    oidc_issuer: str | None = Field(
        None, description="OpenID Connect issuer whose access tokens are accepted (`iss`)"
    )
    oidc_audience: str | None = Field(None, description="required `aud` of those tokens")
    oidc_jwks_url: str | None = Field(None, description="the issuer's JWKS URL (keys cached)")
    oidc_jwks_path: Path | None = Field(None, description="or a JWKS file (re-read on change)")
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256"],
        description="accepted signature algorithms (asymmetric only)",
    )
    oidc_roles_claim: str = Field(
        "roles", description="claim holding the roles; dotted for nested, e.g. realm_access.roles"
    )
    oidc_org_claim: str = Field("org", description="claim holding the organization (slug or id)")
    oidc_regulator_role: str = Field("regulator", description="role value of a regulator")
    oidc_organization_role: str = Field(
        "organization", description="role value of an organization's staff"
    )
    oidc_leeway_s: float = Field(30.0, ge=0, le=300, description="clock skew allowed")
    oidc_client_id: str | None = Field(
        None, description="the console's OIDC client id (authorization code + PKCE sign-in)"
    )
    oidc_authorization_endpoint: str | None = Field(
        None, description="where the console sends a browser to sign in"
    )
    oidc_token_endpoint: str | None = Field(
        None, description="where the service redeems the console's authorization code"
    )
    patient_token_max_s: int = Field(
        3600, ge=60, le=86_400, description="longest lifetime of a patient token accepted"
    )
    steward_cache_s: float = Field(
        30.0, ge=0, le=600, description="how long a patient token's on-chain steward check holds"
    )

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                   "ES512", "EdDSA"}  # fmt: skip
        bad = [a for a in value if a not in allowed]
        if bad or not value:
            raise ValueError(f"oidc_algorithms: {bad or 'none'}; one or more of {sorted(allowed)}")
        return value

    def resolved_tokens_path(self, home: Home | None = None) -> Path:
        return self.tokens_path or (home or self.home()).root / "audit" / "tokens.json"

    def home(self) -> Home:
        return Home.from_env()

    def resolved_database_url(self, home: Home | None = None) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(home or self.home()).root / 'audit' / 'audit.db'}"

    def resolved_rpc_url(self, home: Home | None = None) -> str:
        if self.rpc_url:
            return self.rpc_url
        from dul.chain.node import rpc_url  # the chain module is only needed to find the node

        return rpc_url(home or self.home())

    def resolved_deployment_path(self, home: Home | None = None) -> Path:
        return self.deployment_path or (home or self.home()).deployment

"""Settings of the audit service (`DUL_AUDIT_…`); defaults fit the embedded stack under DUL_HOME."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
        100, ge=1, description="blocks of the first eth_getLogs page; later ones adapt"
    )
    max_page_size: int = Field(50_000, ge=1, description="pages grow back up to this many blocks")
    max_logs_per_page: int = Field(
        5_000, ge=1, description="pages shrink when a page returns more logs (memory bound)"
    )
    max_page_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="a longer eth_getLogs reply halves the page"
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

"""Gateway settings (`DUL_GATEWAY_…`). Nothing is read at import time: `create_app` takes them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from dul.home import Home

MAX_REQUEST_LIFETIME_S = 90 * 86_400
"""AccessLog.MAX_REQUEST_LIFETIME: the chain refuses a request signed to live longer."""


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUL_GATEWAY_", extra="ignore")

    home: Path = Field(default_factory=lambda: Home.from_env().root)
    org: str = Field("hospital-a", description="the holder organization this gateway serves")
    key: str = Field("hospital-a.gateway", description="keystore of the GATEWAY member that signs")
    key_passphrase: SecretStr | None = Field(
        None, description="default: DUL_KEY_PASSPHRASE or DUL_KEY_PASSPHRASE_FILE"
    )
    rpc_url: str | None = Field(None, description="default: the running embedded chain")
    state_dir: Path | None = Field(
        None, description="outbox, tokens and logs of this gateway; default DUL_HOME/gateway"
    )
    database_url: str | None = Field(None, description="default: SQLite in the state directory")
    host: str = "127.0.0.1"
    port: int = Field(8700, ge=1, le=65535)
    workers: int = Field(
        1,
        ge=1,
        le=32,
        description="API worker processes sharing the outbox (one of them runs the submitter)",
    )
    lease_check_s: float = Field(
        1.0,
        ge=0.05,
        le=60,
        description="how often a waiting worker tries the submitter lease, and its holder "
        "re-checks it",
    )
    batch_max: int = Field(256, ge=1, le=256, description="records per recordAccesses transaction")
    batch_latency_ms: int = Field(50, ge=0, description="longest wait to fill a batch")
    max_batch_request: int = Field(1000, ge=1, le=10_000, description="items per POST …/batch")
    max_body_bytes: int = Field(
        16 * 2**20, ge=2**16, le=2**28, description="largest request body (413 past it)"
    )
    outbox_limit: int = Field(100_000, ge=1, description="unconfirmed operations before 503")
    deadline_margin_s: int = Field(
        30, ge=0, description="a request must stay signed-valid this long to be recorded"
    )
    max_request_lifetime_s: int = Field(
        86_400,
        ge=60,
        le=MAX_REQUEST_LIFETIME_S,
        description="a request signed valid for longer than this from now is refused "
        "(`deadline_too_far`); at most AccessLog's own ceiling",
    )
    refresh_interval_s: float = Field(0.25, gt=0, description="chain event poll for cache updates")
    chain_check_interval_s: float = Field(
        5.0, gt=0, le=3600, description="re-check of the contracts' code and our key's role"
    )
    wait_timeout_s: float = Field(30.0, gt=0, description="longest ?wait=confirmed")
    reconfirm_window_s: float = Field(
        600.0,
        ge=0,
        le=86_400,
        description="confirmations younger than this are re-checked on chain (0: never)",
    )
    reconfirm_interval_s: float = Field(
        2.0, ge=0.05, le=3_600, description="seconds between re-checks of recent confirmations"
    )
    unrecorded_alarm_s: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="readiness is degraded while an answered operation sent to the chain is "
        "still not mined this long after its answer",
    )

    @property
    def dul_home(self) -> Home:
        return Home(self.home)

    @property
    def data_dir(self) -> Path:
        return self.state_dir or self.home / "gateway"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gateway.db'}"

    @property
    def tokens_path(self) -> Path:
        return self.data_dir / "tokens.json"

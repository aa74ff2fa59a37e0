"""Patient page settings (`DUL_PATIENT_…`). Nothing is read at import time: `create_app` takes
them."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from dul.endpoints import audit_port, gateway_url
from dul.errors import ConfigError
from dul.home import Home

PATIENT_PAGE_PORT = 8640
MAX_CODE_LIFETIME_S = 30 * 86_400
"""A code a patient issues on the page expires within 30 days."""
GRANTABLE_SCENARIOS = ("RESEARCH", "AI_TRAINING", "TEACHING")
"""The purposes a patient may consent to on the page: secondary uses (care and insurance claims
go through one-time codes)."""
MAX_CONSENT_YEARS = 10
"""The longest a consent given on the page lasts."""
GRANT_SIGNATURE_S = 600
"""How long a consent the page served for signing may be relayed."""


class PatientPageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUL_PATIENT_", extra="ignore")

    home: Path = Field(default_factory=lambda: Home.from_env().root)
    org: str = Field("hospital-a", description="the holder organization whose patients sign in")
    host: str = "127.0.0.1"
    port: int = Field(PATIENT_PAGE_PORT, ge=1, le=65535)
    gateway_url: str = Field(default_factory=gateway_url, description="the holder's gateway")
    gateway_token: SecretStr | None = Field(
        None, description="a STEWARD token of the holder's gateway (or gateway_token_file)"
    )
    gateway_token_file: Path | None = None
    audit_url: str = Field(
        default_factory=lambda: f"http://127.0.0.1:{audit_port()}",
        description="the audit service the transparency report is read from",
    )
    rpc_url: str | None = Field(None, description="default: the running embedded chain")
    deployment_path: Path | None = Field(None, description="default: DUL_HOME/deployment.json")
    agreements: list[str] = Field(
        default_factory=list,
        description="agreement ids (0x…) under which patients may issue one-time codes",
    )
    agreements_file: Path | None = Field(
        None, description="a JSON list of such agreement ids, re-read on every request"
    )
    patient_token_max_s: int = Field(
        3600, ge=60, le=86_400, description="longest lifetime of a patient token accepted"
    )
    steward_cache_s: float = Field(
        30.0, ge=0, le=600, description="how long a patient token's on-chain steward check holds"
    )
    request_timeout: float = Field(30.0, gt=0, le=600)
    signin_failures: int = Field(
        10, ge=1, le=10_000, description="failed sign-ins per client address per window"
    )
    signin_window_s: float = Field(300.0, ge=1, le=86_400)
    codes_per_token: int = Field(
        10, ge=1, le=10_000, description="codes one patient token may ask for per window"
    )
    codes_per_client: int = Field(
        30, ge=1, le=100_000, description="codes one client address may ask for per window"
    )
    codes_window_s: float = Field(3600.0, ge=1, le=86_400)
    writes_per_token: int = Field(
        20, ge=1, le=10_000,
        description="consents given or withdrawn and codes cancelled (each relayed to the chain) "
        "one patient token may ask for per window",
    )  # fmt: skip
    writes_window_s: float = Field(3600.0, ge=1, le=86_400)

    def resolved_rpc_url(self, home: Home | None = None) -> str:
        if self.rpc_url:
            return self.rpc_url
        from dul.chain.node import rpc_url

        return rpc_url(home or Home(self.home))

    def resolved_deployment_path(self, home: Home | None = None) -> Path:
        return self.deployment_path or (home or Home(self.home)).deployment

    def resolved_gateway_token(self) -> str:
        if self.gateway_token is not None and self.gateway_token.get_secret_value().strip():
            return self.gateway_token.get_secret_value().strip()
        if self.gateway_token_file is not None:
            try:
                token = self.gateway_token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"DUL_PATIENT_GATEWAY_TOKEN_FILE: {exc}") from None
            if token:
                return token
        raise ConfigError(
            "the patient page needs a STEWARD token of the holder's gateway: set "
            "DUL_PATIENT_GATEWAY_TOKEN or DUL_PATIENT_GATEWAY_TOKEN_FILE"
        )

    def offered_agreements(self) -> list[str]:
        """The configured agreement ids, then the file's (read now), without duplicates."""
        ids = list(self.agreements)
        if self.agreements_file is not None and self.agreements_file.exists():
            try:
                listed = json.loads(self.agreements_file.read_text() or "[]")
            except (OSError, ValueError) as exc:
                raise ConfigError(f"DUL_PATIENT_AGREEMENTS_FILE: {exc}") from None
            if not isinstance(listed, list) or not all(isinstance(i, str) for i in listed):
                raise ConfigError("DUL_PATIENT_AGREEMENTS_FILE must hold a JSON list of ids")
            ids += listed
        return list(dict.fromkeys(i.lower() for i in ids))

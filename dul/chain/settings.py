"""Settings of the embedded chain (`DUL_CHAIN_…`) and of the permissioned RPC proxy.

Defaults are the embedded development stack; every value can be set by env or CLI option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8545
NODE_PORT_OFFSET = 1000  # in the loopback fallback anvil listens on public port + this

#: How the node is kept out of reach: `netns` (its own network namespace, reached only over its
#: IPC socket), `loopback` (an internal 127.0.0.1 port any local user can reach), or `auto`
#: (netns where `unshare` works, else loopback with a warning).
Isolation = Literal["auto", "netns", "loopback"]


class ChainSettings(BaseSettings):
    """How `dul chain up` starts anvil and the proxy in front of it."""

    model_config = SettingsConfigDict(env_prefix="DUL_CHAIN_", extra="ignore")

    host: str = Field("127.0.0.1", description="interface the public RPC proxy listens on")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="public (permissioned) RPC port")
    node_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="anvil's internal port in the loopback fallback (default: port + 1000)",
    )
    isolation: Isolation = Field(
        "auto", description="netns | loopback | auto (netns when available, else loopback)"
    )
    chain_id: int = Field(31337, ge=1)
    # Fractional block times work with anvil 1.7.1; 0.5 s halves confirmation latency
    # against 1 s at the cost of more (empty) blocks in the state file.
    block_time: float = Field(0.5, gt=0)
    gas_limit: int = Field(1_000_000_000, ge=30_000_000)
    state_interval: int = Field(1, ge=1, description="seconds between state-file dumps")
    start_timeout: float = Field(30.0, gt=0)
    stop_timeout: float = Field(10.0, gt=0)
    anvil_bin: Path | None = Field(
        None, validation_alias=AliasChoices("DUL_ANVIL_BIN", "DUL_CHAIN_ANVIL_BIN", "anvil_bin")
    )
    operator_address: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "DUL_OPERATOR_ADDRESS", "DUL_CHAIN_OPERATOR_ADDRESS", "operator_address"
        ),
        description="may send before any deployment manifest names an operator",
    )
    rpc_auth_key: Path | None = Field(
        None,
        validation_alias=AliasChoices("DUL_CHAIN_RPC_AUTH_KEY", "rpc_auth_key"),
        description="the operator's RPC token signing key (PEM; made on first start); "
        "default DUL_HOME/keys/rpc-jwt.pem",
    )
    proxy_log_level: str = "INFO"

    @property
    def effective_node_port(self) -> int:
        return self.node_port if self.node_port is not None else self.port + NODE_PORT_OFFSET


class ProxySettings(BaseSettings):
    """The permissioned JSON-RPC endpoint (`python -m dul.rpc_proxy`)."""

    model_config = SettingsConfigDict(env_prefix="DUL_PROXY_", extra="ignore")

    upstream_url: str = Field(
        "http://127.0.0.1:9545", description="the node: its IPC socket path or an http(s) URL"
    )
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    deployment_path: Path | None = Field(
        None, description="deployment manifest: `operator` and `contracts.Membership.address`"
    )
    operator_address: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "DUL_OPERATOR_ADDRESS", "DUL_PROXY_OPERATOR_ADDRESS", "operator_address"
        ),
    )
    membership_ttl: float = Field(2.0, ge=0, description="seconds a membership answer is cached")
    jwt_public_key_path: Path | None = Field(
        None,
        description="require `Authorization: Bearer` JWTs signed by this key (RS256, Besu's "
        "JWT public-key mode); none: no authentication",
    )
    # anvil's default request-body limit is 2 MB; larger bodies would be refused there anyway.
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    upstream_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(256, ge=1)
    max_log_range: int = Field(
        0,
        ge=0,
        le=10**9,
        description="refuse eth_getLogs spanning more blocks, as Besu; 0: no limit",
    )
    log_level: str = "INFO"

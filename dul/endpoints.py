"""Where the local services listen, from one place: every command reads the same settings.

DUL_GATEWAY_URL   the gateway's base URL (else http://127.0.0.1:$DUL_GATEWAY_PORT, 8700)
DUL_AUDIT_URL     the audit service's base URL (else http://127.0.0.1:$DUL_AUDIT_PORT, 8600)
DUL_RPC_URL       the chain's RPC URL (see `dul.chain.node.rpc_url`)

Who answers there: each local service names itself on `GET /healthz` (`service_identity`):
its kind and the instance id `dul up` gave the process it started (DUL_SERVICE_INSTANCE), so
`dul up` never takes another process listening on the port for the service.
"""

from __future__ import annotations

import os

from dul.errors import ConfigError

GATEWAY_PORT = 8700
AUDIT_PORT = 8600
INSTANCE_ENV = "DUL_SERVICE_INSTANCE"


def port(variable: str, default: int) -> int:
    """A TCP port from the environment, checked (1-65535)."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise ConfigError(f"{variable} must be a port number 1-65535, got {raw!r}",
                          code="invalid_port")  # fmt: skip
    return value


def gateway_port() -> int:
    return port("DUL_GATEWAY_PORT", GATEWAY_PORT)


def audit_port() -> int:
    return port("DUL_AUDIT_PORT", AUDIT_PORT)


def gateway_url() -> str:
    return os.environ.get("DUL_GATEWAY_URL") or f"http://127.0.0.1:{gateway_port()}"


def audit_url() -> str:
    return os.environ.get("DUL_AUDIT_URL") or f"http://127.0.0.1:{audit_port()}"


def service_identity(service: str) -> dict[str, str | None]:
    """What a service says about itself on /healthz: `service` (gateway, audit, patient-page)
    and `instance`, the id `dul up` gave the process it started (None when started by hand).
    Read once, when the app is made."""
    return {"service": service, "instance": os.environ.get(INSTANCE_ENV) or None}

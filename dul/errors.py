"""Errors of the shared core. Every error has a stable `code` that the CLI prints and the
services map to RFC 9457 problem JSON.

    DulError
    ├── ConfigError            settings, data directory, missing tools
    ├── ChainError             node unreachable, port taken, binary missing
    │   └── TransactionError  a transaction reverted (decoded custom error in `code`)
    ├── KeyStoreError          unknown key, wrong passphrase, duplicate name
    ├── BuildError             compiler missing or compilation failed
    └── DeploymentError        no deployment, or code at the recorded address differs
"""

from __future__ import annotations

from typing import Any


class DulError(Exception):
    code = "dul_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(DulError):
    code = "config_error"


class ChainError(DulError):
    code = "chain_error"


class TransactionError(ChainError):
    code = "transaction_failed"


class KeyStoreError(DulError):
    code = "keystore_error"


class BuildError(DulError):
    code = "build_error"


class DeploymentError(DulError):
    code = "deployment_error"

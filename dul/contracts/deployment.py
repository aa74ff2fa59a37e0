"""The deployment manifest: which contracts, at which addresses, on which chain.

Its own module, free of web3, so that the services that only read the manifest start without
importing web3 (~1 s of CPU on this machine's slow hours)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from dul.errors import DeploymentError

CONTRACT_NAMES = (
    "Membership",
    "DatasetRegistry",
    "AgreementRegistry",
    "ConsentRegistry",
    "AccessLog",
    "ArtifactRegistry",
)


@dataclass(frozen=True)
class Deployment:
    """The deployment manifest: where the contracts live on which chain."""

    chain_id: int
    operator: ChecksumAddress
    addresses: dict[str, ChecksumAddress]
    raw: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DeploymentError(
                f"no deployment at {path}; run `dul contracts deploy`", code="not_deployed"
            ) from None
        except ValueError as exc:
            raise DeploymentError(f"deployment manifest {path} is unreadable: {exc}") from exc
        return cls(
            chain_id=int(raw["chain_id"]),
            operator=to_checksum_address(raw["operator"]),
            addresses={
                name: to_checksum_address(entry["address"])
                for name, entry in raw["contracts"].items()
            },
            raw=raw,
        )

    def address(self, name: str) -> ChecksumAddress:
        try:
            return self.addresses[name]
        except KeyError:
            raise DeploymentError(f"{name} is not in the deployment manifest") from None

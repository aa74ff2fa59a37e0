"""Where the page's signing library comes from: npm `ethers` (pinned in package-lock.json) in
the repository's node_modules, served by the page's own server; nothing is fetched from
anywhere else at run time."""

from __future__ import annotations

import os
from pathlib import Path

from audit.console import _roots

ETHERS = Path("node_modules/ethers/dist/ethers.min.js")
ETHERS_ENV = "DUL_PATIENT_ETHERS"


def find_ethers() -> Path | None:
    """The ethers ES module: `DUL_PATIENT_ETHERS`, else the first node_modules copy."""
    explicit = os.environ.get(ETHERS_ENV)
    if explicit:
        path = Path(explicit)
        return path if path.is_file() else None
    for root in _roots():
        candidate = root / ETHERS
        if candidate.is_file():
            return candidate
    return None

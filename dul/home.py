"""The data directory: every piece of local state lives under one `DUL_HOME`.

Two stacks with different homes never share a file, and a reset is one `rm -r`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_home() -> Path:
    return Path(os.environ.get("DUL_HOME", Path.home() / ".dul")).expanduser()


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def from_env(cls) -> Home:
        return cls(default_home())

    @property
    def chain_dir(self) -> Path:
        return self.root / "chain"

    @property
    def chain_state(self) -> Path:
        return self.chain_dir / "state.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def deployment(self) -> Path:
        return self.root / "deployment.json"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> Home:
        for path in (self.root, self.chain_dir, self.keys_dir, self.run_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        return self

"""Test support for the CLI: a shell that runs this checkout's `dul` as a reader types it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dul.chain.testing import free_port

CHECKOUT = Path(__file__).resolve().parents[2]


def dul_shell_env(work: Path, home: Path, **values: str) -> dict[str, str]:
    """The environment of a shell whose `dul` is this checkout's, whatever is installed: a shim
    in `work`/bin first on PATH, no inherited DUL_* setting, `home` as DUL_HOME, cheap key
    derivation, a free chain port, 0.2 s blocks; `values` add or override (DUL_… names)."""
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "dul"
    shim.write_text(
        "#!/bin/sh\n"
        f"exec '{sys.executable}' -c 'import sys; sys.argv[0] = \"dul\"; "
        'from dul.cli.main import app; app()\' "$@"\n'
    )
    shim.chmod(0o755)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DUL_")},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(CHECKOUT),
        "DUL_HOME": str(home),
        "DUL_KEY_SCRYPT_N": "1024",
        "DUL_CHAIN_PORT": str(free_port()),
        "DUL_CHAIN_BLOCK_TIME": "0.2",
        **values,
    }

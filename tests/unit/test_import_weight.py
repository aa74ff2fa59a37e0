"""The services and the everyday commands start without importing web3 or eth-account.

Those two cost ~1 s of CPU to import (more in the machine's slow hours), and every service
start, every `dul` command and every test that spawns one paid it. They are needed only to
deploy, to send through `dul.contracts.ledger`, and to unlock or create a keystore: each is
imported there, when used. Each case runs in a fresh interpreter, as a service starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("web3", "eth_account", "py_ecc")

LIGHT_MODULES = (
    "audit.app",
    "audit.indexer",
    "ledger_gateway.app",
    "ledger_gateway.patient_page.app",
    "dul.cli.main",
    "dul.cli.keys",
    "dul.cli.chain",
    "dul.cli.access",
    "dul.cli.rpc_tokens",
    "dul.cli.admin",
    "dul.rpc_proxy",
)


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_module_imports_without_web3_or_eth_account(module: str) -> None:
    loaded = _run(f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))")
    heavy = [name for name in json.loads(loaded) if name.split(".")[0] in HEAVY]
    assert heavy == [], f"{module} imports {heavy[:5]}"


def test_keystore_and_transactions_still_work_where_eth_account_is_imported_late(
    tmp_path: Path,
) -> None:
    """A fresh process creates a keystore, unlocks it and signs an EIP-1559 transaction: the
    late imports are reached and work."""
    code = f"""
from pathlib import Path
from dul.home import Home
from dul.keys import KeyStore
store = KeyStore(Home(Path({str(tmp_path)!r})), passphrase="pw", scrypt_n=2)
address = store.new("k")
signer = store.unlock("k")
assert signer.address == address
raw = signer.sign_transaction({{"to": address, "value": 0, "gas": 21000, "nonce": 0,
    "chainId": 31337, "maxFeePerGas": 1, "maxPriorityFeePerGas": 1, "data": b""}})
print(raw[:1].hex())
"""
    assert _run(code) == "02"

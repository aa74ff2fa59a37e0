"""README command sequences outside the walkthrough, run as a newcomer types them (in bash, with
this checkout's `dul`), each checked for what the text says it does:

- revoking every JSON-RPC token: "replace the key (delete it, `dul chain down && dul chain up`)" —
  a token made before (taken with `$(dul admin rpc-token create …)`, and written to a file for
  `DUL_RPC_TOKEN_FILE`) no longer opens the RPC, one made after does, and the ledger is kept;
- an organization's own JSON-RPC signing key for Besu, made with the README's `openssl`
  commands: `DUL_CHAIN_RPC_AUTH_KEY=rpc_jwt_private.pem dul admin rpc-token create …` signs a
  token (RS256) that the public half `openssl pkey -pubout` wrote verifies, with `exp` and
  Besu's `permissions`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jwt
import pytest

from dul.cli.testing import dul_shell_env

pytestmark = pytest.mark.integration


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(shutil.which("bash")), "-c", "set -e -o pipefail\n" + script],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    return dul_shell_env(tmp_path, tmp_path / "home", DUL_KEY_PASSPHRASE="readme sequences")


CHAIN_ID = """curl -s -o /dev/null -w '%{http_code}\\n' -H "Authorization: Bearer $1" \\
  -H 'Content-Type: application/json' http://127.0.0.1:$DUL_CHAIN_PORT \\
  -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_replacing_the_key_revokes_every_rpc_token(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    script = f"""
status() {{ {CHAIN_ID}; }}
dul keys new operator >/dev/null
dul chain up >/dev/null
BEFORE=$(dul admin rpc-token create --service reader --preset read)
echo "before: $(status $BEFORE)"
dul admin rpc-token create --service reader --preset read > reader.jwt
echo "file: $(status "$(cat reader.jwt)")"
dul chain status --json > before.json
rm $DUL_HOME/keys/rpc-jwt.pem
dul chain down && dul chain up >/dev/null
AFTER=$(dul admin rpc-token create --service reader --preset read)
echo "old token: $(status $BEFORE)"
echo "new token: $(status $AFTER)"
dul chain status --json > after.json
"""
    try:
        run = bash(script, tmp_path, shell_env)
    finally:
        bash("dul chain down", tmp_path, shell_env)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines() if ": " in line)
    assert lines["before"] == "200", run.stdout
    assert lines["file"] == "200", run.stdout
    assert lines["old token"] == "401", run.stdout
    assert lines["new token"] == "200", run.stdout
    before, after = (json.loads((tmp_path / f).read_text()) for f in ("before.json", "after.json"))
    assert after["block"] >= before["block"] > 0  # the ledger is kept
    key = Path(shell_env["DUL_HOME"]) / "keys" / "rpc-jwt.pem"
    assert key.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_an_organizations_own_rpc_key_made_with_openssl_signs_its_tokens(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    script = """
mkdir -p nodes/hospital-a
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rpc_jwt_private.pem 2>/dev/null
openssl pkey -in rpc_jwt_private.pem -pubout -out nodes/hospital-a/rpc_jwt_public_key.pem
DUL_CHAIN_RPC_AUTH_KEY=rpc_jwt_private.pem dul admin rpc-token create --service indexer \\
  --permission eth:getLogs --permission eth:blockNumber --ttl 30d
"""
    run = bash(script, tmp_path, shell_env)
    assert run.returncode == 0, run.stdout + run.stderr
    token = run.stdout.strip().splitlines()[-1]
    public = (tmp_path / "nodes/hospital-a/rpc_jwt_public_key.pem").read_text()
    claims = jwt.decode(token, public, algorithms=["RS256"])
    assert claims["permissions"] == ["eth:getLogs", "eth:blockNumber"]
    assert 29 * 86_400 < claims["exp"] - claims["iat"] <= 30 * 86_400
    assert json.loads(jwt.utils.base64url_decode(token.split(".")[0]))["alg"] == "RS256"

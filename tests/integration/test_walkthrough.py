"""The README's "Your own data space" runs as written: its bash blocks, in order, in one shell,
from an empty DUL_HOME to a granted access, a released result and a clean verify, then the same
data space brought up again as one stack by `dul up --detach --json` and stopped by `dul down`;
its Python block (the access service's SDK) runs too, right after the access service's step,
against the gateway of the walkthrough. Only the environment differs (free ports, fast
keystores, 0.2 s blocks; the Python block's gateway URL takes the free port), so the walkthrough
cannot rot."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dul.chain.testing import free_port
from dul.cli.testing import dul_shell_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Your own data space"


def walkthrough_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def python_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return str(block)


def as_shell(block: str) -> str:
    """The Python block as a shell step: its names bound from the walkthrough's variables, the
    gateway's URL on this run's port, the answer printed."""
    assert '"http://127.0.0.1:8700"' in block  # the README's default port
    code = (
        "import os\naccess_token = os.environ['ACCESS_TOKEN']\n"
        "agreement_id = os.environ['AGREEMENT']\n"
        + block.replace('"http://127.0.0.1:8700"',
                        'f"http://127.0.0.1:{os.environ[\'DUL_GATEWAY_PORT\']}"')
        + "print('python-sdk', answer.decision, answer.status)\n"
    )  # fmt: skip
    return (
        f"ACCESS_TOKEN=$ACCESS_TOKEN AGREEMENT=$AGREEMENT '{sys.executable}' - <<'PY'\n{code}PY\n"
    )


def test_the_readme_has_the_walkthrough() -> None:
    commands = "\n".join(walkthrough_blocks())
    for step in ("dul chain up", "dul contracts deploy", "dul access request", "dul audit verify",
                 "dul up --detach --json", "dul down"):  # fmt: skip
        assert step in commands
    assert "request_access(" in python_block()


@pytest.mark.timeout(960)  # ~40 CLI processes: a minute or two when quiet, far more under load
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = dul_shell_env(
        tmp_path,
        tmp_path / "my-data-space",
        DUL_GATEWAY_PORT=str(free_port()),
        DUL_AUDIT_PORT=str(free_port()),
        DUL_PATIENT_PORT=str(free_port()),
        # verify calls an index more than 60 s of chain time behind stale; on a loaded test
        # machine one CLI start can take that long
        DUL_AUDIT_INDEX_BEHIND_S="600",
        DUL_AUDIT_INDEX_BEHIND_BLOCKS="100000",
    )
    # Whatever happens, nothing outlives the test (the README's last step stops both itself).
    cleanup = (
        "trap 'kill ${GATEWAY_PID:-} 2>/dev/null || true; dul down >/dev/null 2>&1 || true; "
        "dul chain down >/dev/null 2>&1 || true' EXIT\n"
    )
    blocks = walkthrough_blocks()
    access_step = next(i for i, b in enumerate(blocks) if "dul access release" in b)
    blocks.insert(access_step + 1, as_shell(python_block()))
    script = "set -e -o pipefail\n" + cleanup + "\n".join(blocks)
    shell = subprocess.Popen(
        [str(shutil.which("bash")), "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops the gateway too
    )
    try:
        stdout, stderr = shell.communicate(timeout=900)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.communicate()
        for stop in (["down"], ["chain", "down"]):
            subprocess.run([str(tmp_path / "bin" / "dul"), *stop], env=env, capture_output=True,
                           timeout=120, check=False)  # fmt: skip
    run = subprocess.CompletedProcess(shell.args, shell.returncode, stdout, stderr)
    out = run.stdout
    assert run.returncode == 0, f"stdout:\n{out}\nstderr:\n{run.stderr}"
    assert re.search(r"^GRANTED access_id=0x[0-9a-f]{64} status=confirmed", out, re.M), out
    assert re.search(r"release_id=0x[0-9a-f]{64} .*status=confirmed", out), out
    assert "agreement_status=ACTIVE" in out
    assert "hospital-a/omop: year_of_birth, gender_concept_id" in out  # the sign prompt, named
    assert "OK: the store is the chain's and every rule held" in out
    assert re.search(r"^chain stopped", out, re.M), out
    assert re.search(r"^python-sdk GRANTED confirmed$", out, re.M), out
    # `dul up` brought the same data space back: every service on its port, the access still
    # known to the gateway, everything stopped by `dul down`
    stack = json.loads((work / "stack.json").read_text())
    for name, port in (
        ("rpc_url", "DUL_CHAIN_PORT"),
        ("gateway_url", "DUL_GATEWAY_PORT"),
        ("audit_url", "DUL_AUDIT_PORT"),
        ("patient_url", "DUL_PATIENT_PORT"),
    ):
        assert stack[name] == f"http://127.0.0.1:{env[port]}", (name, stack)  # fmt: skip
    assert stack["gateway_skipped"] == {}, stack
    assert len(re.findall(r"^GRANTED access_id=0x[0-9a-f]{64} status=confirmed", out, re.M)) == 2
    assert re.search(r"^stack stopped", out, re.M), out

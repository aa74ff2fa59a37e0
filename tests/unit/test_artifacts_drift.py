"""The packaged artifacts (dul/contracts/artifacts/) are what the sources compile to today.

Editing a .sol file without running `dul contracts build` fails here, not at deploy time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dul.cli.main import app
from dul.contracts import artifacts
from dul.contracts.build import MANIFEST_NAME, Project, compiler_available

REBUILD = "solidity sources changed: run `dul contracts build` and commit dul/contracts/artifacts/"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The artifact files `dul contracts build` writes for today's sources, built through the
    CLI in a copy of the checkout whose artifacts directory starts empty."""
    project = Project.default()
    if not project.sources_dir.is_dir():
        pytest.skip("no solidity/ directory: not a source checkout")
    if not compiler_available(project):
        pytest.skip("no Solidity compiler: run `npm ci` (npm solc) or set SOLC_BINARY")
    copy = Project(tmp_path_factory.mktemp("checkout"))
    shutil.copytree(project.root / "solidity", copy.root / "solidity")
    shutil.copytree(project.root / "scripts", copy.root / "scripts")
    (copy.root / "node_modules").symlink_to(project.node_modules)
    copy.artifacts_dir.mkdir(parents=True)
    result = CliRunner().invoke(app, ["contracts", "build", "--root", str(copy.root), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    files = {path.name: path.read_bytes() for path in copy.artifacts_dir.glob("*.json")}
    assert sorted(Path(p).name for p in summary["written"]) == sorted(files)
    return files


def _packaged() -> dict[str, dict[str, object]]:
    directory = Project.default().artifacts_dir
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.json"))
    }


def test_packaged_contracts_are_the_compiled_contracts(fresh: dict[str, bytes]) -> None:
    packaged = {name for name in _packaged() if name != MANIFEST_NAME}
    expected = {name for name in fresh if name != MANIFEST_NAME}
    assert packaged == expected, REBUILD


def test_packaged_bytecode_and_abi_match_a_fresh_compile(fresh: dict[str, bytes]) -> None:
    packaged = _packaged()
    for file_name, content in fresh.items():
        if file_name == MANIFEST_NAME:
            continue
        want = json.loads(content)
        have = packaged.get(file_name)
        assert have is not None, f"{file_name} missing; {REBUILD}"
        for key in ("abi", "bytecode", "deployedBytecode"):
            assert have[key] == want[key], f"{want['contractName']}.{key} differs; {REBUILD}"


def test_packaged_files_are_byte_identical_to_a_rebuild(fresh: dict[str, bytes]) -> None:
    directory = Project.default().artifacts_dir
    for file_name, content in fresh.items():
        path = directory / file_name
        assert path.is_file(), f"{file_name} missing; {REBUILD}"
        assert path.read_bytes() == content, f"{file_name} is stale; {REBUILD}"


def test_artifacts_module_loads_every_packaged_contract() -> None:
    manifest = artifacts.manifest()
    for name in artifacts.names():
        artifact = artifacts.load(name)
        assert artifact.name == name
        assert artifact.bytecode.startswith("0x")
        assert len(artifact.bytecode) > 2
        assert artifact.source_name == manifest.contracts[name].source_name
        assert artifact.runtime_code_matches(bytes.fromhex(artifact.deployed_bytecode[2:]))

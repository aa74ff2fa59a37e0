"""Hardhat (contract tests) and py-solc-x (packaged artifacts) produce identical bytecode.

scripts/test runs `npx hardhat test` first, which leaves Hardhat's artifacts in artifacts/;
if they are missing or older than the sources, this test compiles with Hardhat itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dul.contracts import artifacts
from dul.contracts.build import Project

PROJECT = Project.default()
HARDHAT_ARTIFACTS = PROJECT.root / "artifacts"
HARDHAT_CACHE = PROJECT.root / "cache" / "solidity-files-cache.json"


def _hardhat_is_stale() -> bool:
    if not HARDHAT_CACHE.is_file():
        return True
    compiled_at = HARDHAT_CACHE.stat().st_mtime
    return any(p.stat().st_mtime > compiled_at for p in PROJECT.sources_dir.rglob("*.sol")) or (
        PROJECT.compiler_config.stat().st_mtime > compiled_at
    )


@pytest.fixture(scope="module")
def hardhat_artifacts() -> Path:
    if not (PROJECT.node_modules / "hardhat").is_dir() or shutil.which("node") is None:
        pytest.skip("Hardhat is not installed: run `npm ci`")
    if _hardhat_is_stale():
        npx = shutil.which("npx")
        assert npx is not None
        subprocess.run([npx, "hardhat", "compile", "--quiet"], cwd=PROJECT.root, check=True)
    return HARDHAT_ARTIFACTS


@pytest.mark.parametrize("name", artifacts.names())
def test_hardhat_bytecode_equals_packaged_bytecode(hardhat_artifacts: Path, name: str) -> None:
    packaged = artifacts.load(name)
    path = hardhat_artifacts / packaged.source_name / f"{name}.json"
    assert path.is_file(), f"Hardhat produced no artifact for {name} at {path}"
    hardhat = json.loads(path.read_text(encoding="utf-8"))
    assert hardhat["bytecode"] == packaged.bytecode, f"{name}: creation code differs"
    assert hardhat["deployedBytecode"] == packaged.deployed_bytecode, f"{name}: runtime differs"
    assert hardhat["abi"] == packaged.abi


def test_hardhat_and_packaged_use_the_same_compiler() -> None:
    config = json.loads(PROJECT.compiler_config.read_text(encoding="utf-8"))
    manifest = artifacts.manifest()
    assert manifest.compiler_version.split("+")[0] == config["version"]
    assert manifest.compiler_settings == config["settings"]

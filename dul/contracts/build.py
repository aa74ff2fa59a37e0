"""Compile `solidity/contracts` through py-solc-x and write the packaged artifacts.

Hardhat compiles the same sources for the contract tests; to get byte-identical output this
module hands solc exactly what Hardhat hands it: every source inline under the same source
unit names (`solidity/contracts/X.sol`, `@openzeppelin/contracts/...`), the settings of
`solidity/compiler.json` and no remappings. Only `outputSelection` differs, which does not
change bytecode. `tests/integration/test_hardhat_parity.py` holds both sides to it.

Build-time only (needs a checkout with `solidity/` and `node_modules/`); at run time the
services read the packaged JSON through `dul.contracts.artifacts`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from eth_utils.crypto import keccak

from dul.errors import BuildError

log = structlog.get_logger(__name__)

ARTIFACT_FORMAT = "dul-contract-artifact-1"
MANIFEST_FORMAT = "dul-contracts-manifest-1"
MANIFEST_NAME = "manifest.json"

_OUTPUT_SELECTION = {
    "*": {
        "*": [
            "abi",
            "evm.bytecode.object",
            "evm.bytecode.linkReferences",
            "evm.deployedBytecode.object",
            "evm.deployedBytecode.linkReferences",
            "evm.deployedBytecode.immutableReferences",
        ],
        "": ["ast"],
    }
}

# Comments, string literals, identifiers, whitespace, anything else: enough of Solidity's
# lexical grammar to find import paths without being fooled by comments or strings.
_TOKEN = re.compile(
    r"""//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|[A-Za-z_$][\w$]*|\s+|.""",
    re.DOTALL,
)


@dataclass(frozen=True)
class Project:
    """Where the sources, the compiler settings and the packaged artifacts live."""

    root: Path

    @classmethod
    def default(cls) -> Project:
        # dul/contracts/build.py -> repository root (an editable install or a checkout).
        return cls(Path(__file__).resolve().parents[2])

    @property
    def sources_dir(self) -> Path:
        return self.root / "solidity" / "contracts"

    @property
    def compiler_config(self) -> Path:
        return self.root / "solidity" / "compiler.json"

    @property
    def node_modules(self) -> Path:
        return self.root / "node_modules"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "dul" / "contracts" / "artifacts"

    @property
    def solc_wrapper(self) -> Path:
        return self.root / "scripts" / "solc"

    def source_name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def is_packaged_source(self, source_name: str) -> bool:
        """Project sources whose contracts ship as artifacts (test-only mocks do not)."""
        prefix = self.source_name(self.sources_dir) + "/"
        return source_name.startswith(prefix) and not source_name.startswith(prefix + "mocks/")


@dataclass(frozen=True)
class CompilerConfig:
    version: str
    settings: dict[str, Any]

    @classmethod
    def load(cls, project: Project) -> CompilerConfig:
        try:
            raw = json.loads(project.compiler_config.read_text(encoding="utf-8"))
            return cls(version=str(raw["version"]), settings=dict(raw["settings"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BuildError(
                f"cannot read {project.compiler_config}: {exc}", code="compiler_config_invalid"
            ) from exc


@dataclass(frozen=True)
class BuildResult:
    """The rendered artifact files (name -> exact bytes to write) and what they describe."""

    files: dict[str, bytes]
    contracts: list[str]
    compiler_version: str
    input_hash: str
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WriteReport:
    written: list[str]
    unchanged: list[str]
    removed: list[str]


def solc_binary(project: Project) -> Path:
    """`SOLC_BINARY` (a native solc) if set, else the solcjs wrapper `scripts/solc`."""
    override = os.environ.get("SOLC_BINARY")
    if override:
        binary = Path(override).expanduser()
        if not binary.is_file():
            raise BuildError(f"SOLC_BINARY={override} is not a file", code="compiler_missing")
        return binary
    if not (project.node_modules / "solc" / "soljson.js").is_file():
        raise BuildError(
            "no Solidity compiler: run `npm ci` (npm `solc`) or set SOLC_BINARY to a native solc",
            code="compiler_missing",
        )
    return project.solc_wrapper


def compiler_available(project: Project) -> bool:
    try:
        solc_binary(project)
    except BuildError:
        return False
    return True


def _read_source(path: Path) -> str:
    # Bytes, not text mode: newline translation would change the content hash solc embeds
    # in the metadata, and with it the bytecode.
    return path.read_bytes().decode("utf-8")


def _imports(content: str) -> Iterator[str]:
    pending = False
    for match in _TOKEN.finditer(content):
        lexeme = match.group()
        if lexeme == "import":
            pending = True
        elif lexeme == ";":
            pending = False
        elif pending and lexeme[0] in "\"'":
            yield lexeme[1:-1]
            pending = False


def _resolve_import(importer: str, path: str) -> str:
    if path.startswith(("./", "../")):
        return posixpath.normpath(posixpath.join(posixpath.dirname(importer), path))
    return posixpath.normpath(path)


def _locate(project: Project, source_name: str) -> Path:
    """Hardhat's rule: a name that exists in the project is local, otherwise an npm package."""
    for base in (project.root, project.node_modules):
        candidate = base / source_name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(source_name)


def collect_sources(project: Project, *, packaged_only: bool = False) -> dict[str, str]:
    """Every `.sol` under solidity/contracts (mocks included, as Hardhat compiles them, unless
    `packaged_only`) and everything they import, keyed by source unit name."""
    pending = [
        name
        for name in (project.source_name(p) for p in sorted(project.sources_dir.rglob("*.sol")))
        if not packaged_only or project.is_packaged_source(name)
    ]
    sources: dict[str, str] = {}
    importers: dict[str, str] = {}
    while pending:
        name = pending.pop()
        if name in sources:
            continue
        try:
            content = _read_source(_locate(project, name))
        except FileNotFoundError:
            importer = importers.get(name, "?")
            raise BuildError(
                f"{importer}: cannot resolve import {name!r} in the project or node_modules",
                code="import_not_found",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BuildError(f"cannot read {name}: {exc}", code="source_unreadable") from exc
        sources[name] = content
        for imported in _imports(content):
            target = _resolve_import(name, imported)
            importers.setdefault(target, name)
            pending.append(target)
    return dict(sorted(sources.items()))


def standard_input(project: Project, config: CompilerConfig) -> dict[str, Any]:
    sources = collect_sources(project)
    return {
        "language": "Solidity",
        "sources": {name: {"content": content} for name, content in sources.items()},
        "settings": {**config.settings, "outputSelection": _OUTPUT_SELECTION},
    }


def _hex_keccak(data: bytes) -> str:
    return "0x" + keccak(data).hex()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _render(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _compiler_version(binary: Path, config: CompilerConfig) -> str:
    # Build-time only: keep py-solc-x out of the run-time import graph.
    from solcx.exceptions import SolcError
    from solcx.wrapper import get_solc_version

    try:
        version = str(get_solc_version(binary, with_commit_hash=True))
    except (OSError, subprocess.CalledProcessError, SolcError) as exc:
        raise BuildError(f"{binary} --version failed: {exc}", code="compiler_missing") from exc
    if version.split("+")[0] != config.version:
        raise BuildError(
            f"{binary} is solc {version} but solidity/compiler.json pins {config.version}",
            code="compiler_version_mismatch",
        )
    return version


def _run_solc(binary: Path, project: Project, data: dict[str, Any]) -> dict[str, Any]:
    import solcx

    try:
        output: dict[str, Any] = solcx.compile_standard(
            data, solc_binary=binary, base_path=project.root, allow_paths=[project.root]
        )
    except solcx.exceptions.SolcError as exc:
        # compile_standard puts solc's formatted messages of every error in `message`.
        raise BuildError(f"compilation failed:\n{exc.message}", code="compilation_failed") from exc
    except (OSError, ValueError) as exc:
        raise BuildError(f"{binary} failed: {exc}", code="compiler_failed") from exc
    return output


def _deployable_contracts(output: Mapping[str, Any], project: Project) -> Iterator[tuple[str, str]]:
    """(source name, contract name) of each non-abstract `contract` in a packaged source."""
    for source_name, source in sorted(output.get("sources", {}).items()):
        if not project.is_packaged_source(source_name):
            continue
        for node in source["ast"]["nodes"]:
            if (
                node.get("nodeType") == "ContractDefinition"
                and node.get("contractKind") == "contract"
                and not node.get("abstract", False)
            ):
                yield source_name, node["name"]


def compile_artifacts(project: Project | None = None) -> BuildResult:
    """Compile and render the artifact files in memory; nothing is written."""
    project = project or Project.default()
    config = CompilerConfig.load(project)
    binary = solc_binary(project)
    version = _compiler_version(binary, config)
    data = standard_input(project, config)
    # What the packaged contracts are built from; test-only mocks are left out so editing a
    # mock does not call for a rebuild.
    input_hash = _hex_keccak(
        _canonical(
            {
                "compiler": version,
                "settings": config.settings,
                "sources": {
                    name: _hex_keccak(content.encode())
                    for name, content in collect_sources(project, packaged_only=True).items()
                },
            }
        )
    )

    output: dict[str, Any] = {"contracts": {}, "sources": {}}
    if data["sources"]:  # solc rejects an empty input; an empty tree has no artifacts
        output = _run_solc(binary, project, data)
    warnings = [
        str(e.get("formattedMessage", e.get("message", "")))
        for e in output.get("errors", [])
        if e.get("severity") != "error"
    ]

    files: dict[str, bytes] = {}
    manifest_contracts: dict[str, Any] = {}
    for source_name, name in _deployable_contracts(output, project):
        if name in manifest_contracts:
            raise BuildError(
                f"contract name {name} is defined in both {manifest_contracts[name]['sourceName']}"
                f" and {source_name}; artifacts are keyed by name",
                code="duplicate_contract_name",
            )
        compiled = output["contracts"][source_name][name]
        evm = compiled["evm"]
        deployed = "0x" + evm["deployedBytecode"]["object"]
        source_hash = _hex_keccak(data["sources"][source_name]["content"].encode())
        artifact = {
            "format": ARTIFACT_FORMAT,
            "contractName": name,
            "sourceName": source_name,
            "abi": compiled["abi"],
            "bytecode": "0x" + evm["bytecode"]["object"],
            "deployedBytecode": deployed,
            "linkReferences": evm["bytecode"].get("linkReferences", {}),
            "deployedLinkReferences": evm["deployedBytecode"].get("linkReferences", {}),
            "immutableReferences": evm["deployedBytecode"].get("immutableReferences", {}),
            "compiler": {"version": version, "settings": config.settings},
            "sourceHash": source_hash,
        }
        files[f"{name}.json"] = _render(artifact)
        manifest_contracts[name] = {
            "sourceName": source_name,
            "sourceHash": source_hash,
            "deployedBytecodeHash": _hex_keccak(bytes.fromhex(deployed[2:])),
        }

    files[MANIFEST_NAME] = _render(
        {
            "format": MANIFEST_FORMAT,
            "compiler": {"version": version, "settings": config.settings},
            "inputHash": input_hash,
            "contracts": manifest_contracts,
        }
    )
    return BuildResult(
        files=files,
        contracts=sorted(manifest_contracts),
        compiler_version=version,
        input_hash=input_hash,
        warnings=warnings,
    )


def write_artifacts(result: BuildResult, directory: Path) -> WriteReport:
    """Write changed files only and drop artifacts of contracts that no longer exist, so a
    rebuild without source changes leaves the tree (and git) untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    unchanged: list[str] = []
    for name, content in sorted(result.files.items()):
        path = directory / name
        if path.is_file() and path.read_bytes() == content:
            unchanged.append(name)
            continue
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
        written.append(name)
    removed = sorted(p.name for p in directory.glob("*.json") if p.name not in result.files)
    for name in removed:
        (directory / name).unlink()
    return WriteReport(written=written, unchanged=unchanged, removed=removed)


def build(project: Project | None = None) -> tuple[BuildResult, WriteReport]:
    """`dul contracts build`: compile and write `dul/contracts/artifacts/`."""
    project = project or Project.default()
    started = time.perf_counter()
    result = compile_artifacts(project)
    report = write_artifacts(result, project.artifacts_dir)
    for warning in result.warnings:
        log.warning("contracts.build.compiler_warning", message=warning)
    log.info(
        "contracts.build",
        contracts=len(result.contracts),
        written=len(report.written),
        removed=len(report.removed),
        compiler=result.compiler_version,
        duration_s=round(time.perf_counter() - started, 3),
    )
    return result, report

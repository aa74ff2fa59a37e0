"""Layers point one way: `dul.chain` (the transport: node, guard, JSON-RPC client, tokens) sits
under `dul.contracts` (the bindings), which sits under the services and the CLI. A module of
`dul.chain` importing from above would make the transport know a contract."""

from __future__ import annotations

import ast
from pathlib import Path

import dul.chain

CHAIN = Path(dul.chain.__file__).parent
#: What `dul.chain` may import from the `dul` package: itself and the shared leaves.
BELOW = (
    "dul.chain",
    "dul.errors",
    "dul.home",
    "dul.log",
    "dul.signing",
    "dul.keccak",
    "dul.json_depth",
)


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_the_chain_package_imports_nothing_from_above_it() -> None:
    upward = [
        f"{path.relative_to(CHAIN.parents[1])}:{line}: {module}"
        for path in sorted(CHAIN.rglob("*.py"))
        for line, module in _imports(path)
        if (module == "dul" or module.startswith("dul."))
        and not any(module == b or module.startswith(b + ".") for b in BELOW)
    ]
    assert not upward, "dul.chain imports from a layer above it:\n" + "\n".join(upward)

"""`dul contracts …` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dul.cli.common import cli_errors, console, emit_json, home

app = typer.Typer(help="Compile and deploy the ledger's contracts.", no_args_is_help=True)


@app.command("build")
@cli_errors
def build_command(
    root: Annotated[
        Path | None,
        typer.Option(help="Repository root holding solidity/ (default: this checkout)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Compile solidity/contracts with the pinned solc and write dul/contracts/artifacts/.

    Uses SOLC_BINARY (a native solc) if set, else scripts/solc (npm solcjs).
    """
    from dul import log
    from dul.contracts.build import Project, build

    log.configure()
    project = Project(root.resolve()) if root else Project.default()
    result, report = build(project)
    if json_output:
        emit_json(
            {
                "compiler_version": result.compiler_version,
                "contracts": result.contracts,
                "input_hash": result.input_hash,
                "written": report.written,
                "removed": report.removed,
                "artifacts_dir": str(project.artifacts_dir),
            }
        )
        return
    changed = len(report.written) + len(report.removed)
    console.print(
        f"built {len(result.contracts)} contracts with solc {result.compiler_version}: "
        f"{changed} artifact files changed in {project.artifacts_dir}",
        highlight=False,
    )


@app.command("deploy")
@cli_errors
def deploy_command(
    key: Annotated[str, typer.Option("--key", help="Keystore of the operator.")] = "operator",
    admin_delay: Annotated[
        int, typer.Option(help="Seconds an operator hand-over must wait (first deploy only).")
    ] = 86_400,
    json_output: Annotated[bool, typer.Option("--json", help="Print the deployment.")] = False,
) -> None:
    """Deploy and wire the contracts, or verify the recorded deployment and change nothing."""
    import time

    from dul.chain.node import rpc_url
    from dul.contracts.deploy import deploy
    from dul.contracts.ledger import connect
    from dul.contracts.session import unlock

    h = home()
    started = time.perf_counter()
    deployment, new = deploy(
        connect(rpc_url(h)), unlock(h, key), h.deployment, admin_delay=admin_delay
    )
    seconds = time.perf_counter() - started
    if json_output:
        emit_json({**deployment.raw, "new": new, "seconds": round(seconds, 3)})
        return
    verb = "deployed" if new else "verified existing deployment"
    console.print(
        f"{verb} on chain {deployment.chain_id} in {seconds:.2f}s ({h.deployment})",
        highlight=False,
    )
    for name, address in deployment.addresses.items():
        console.print(f"  {name:<18} {address}", highlight=False)

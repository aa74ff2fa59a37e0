"""`dul chain up|down|status`: the embedded permissioned chain."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dul import log
from dul.chain.node import ChainNode, ChainStatus
from dul.chain.settings import ChainSettings
from dul.cli.common import cli_errors, console, emit_json, err_console, home, load_settings
from dul.errors import KeyStoreError
from dul.home import Home
from dul.keys import KeyStore

app = typer.Typer(
    help="The embedded permissioned chain (anvil behind the member-only RPC proxy).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@app.callback()
def _configure_logging() -> None:
    # Unconfigured structlog prints to stdout and would corrupt `--json` output; the
    # commands print their own summary, so only warnings are logged unless asked.
    log.configure(os.environ.get("DUL_LOG_LEVEL", "WARNING"))


def _settings(**options: Any) -> ChainSettings:
    """Env (`DUL_CHAIN_…`, `DUL_ANVIL_BIN`, `DUL_OPERATOR_ADDRESS`) overridden by given options."""
    return load_settings(ChainSettings, "DUL_CHAIN_", **options)


def _print(
    status: ChainStatus, as_json: bool, headline: str, extra: dict[str, Any] | None = None
) -> None:
    if status.warning is not None:  # on stderr, so `--json` output stays one object
        err_console.print(f"[bold red]WARNING[/bold red] {escape(status.warning)}", highlight=False)
    if as_json:
        emit_json({**status.to_json(), **(extra or {})})
        return
    console.print(headline, highlight=False)
    if status.running:
        reach = "IPC socket in its own network namespace" if status.warning is None else "TCP"
        console.print(
            f"  rpc_url   {status.rpc_url}\n  chain_id  {status.chain_id}\n"
            f"  block     {status.block}\n"
            f"  node      {status.node_url} (internal, {reach})\n"
            f"  isolation {status.isolation}\n"
            f"  auth      bearer JWT signed by the key whose public half is {status.rpc_public_key}"
            " (tokens: dul admin rpc-token create)\n"
            f"  pids      anvil {status.anvil_pid}, rpc-proxy {status.proxy_pid}",
            highlight=False,
        )


def _keystore_operator(h: Home) -> str | None:
    """The address of this data directory's `operator` keystore, if there is one."""
    try:
        return KeyStore(h).show("operator").address
    except KeyStoreError:
        return None


@app.command()
@cli_errors
def up(
    port: Annotated[
        int | None, typer.Option(help="Public RPC port (env DUL_CHAIN_PORT, default 8545).")
    ] = None,
    node_port: Annotated[
        int | None,
        typer.Option(help="Internal anvil port in the loopback fallback (default: port + 1000)."),
    ] = None,
    isolation: Annotated[
        str | None,
        typer.Option(
            help="netns (refuse to start without a network namespace), loopback (the "
            "unisolated fallback) or auto (netns when available); env DUL_CHAIN_ISOLATION.",
        ),
    ] = None,
    chain_id: Annotated[int | None, typer.Option(help="Chain id (default 31337).")] = None,
    block_time: Annotated[
        float | None, typer.Option(help="Seconds between blocks (default 0.5).")
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option(
            help="Operator address that may send before any deployment (env "
            "DUL_OPERATOR_ADDRESS; default: the `operator` keystore of DUL_HOME, as dul up)."
        ),
    ] = None,
    anvil_bin: Annotated[
        Path | None, typer.Option(help="anvil binary (env DUL_ANVIL_BIN).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the chain detached and print its RPC URL (does nothing if it already runs)."""
    h = home()
    settings = _settings(
        port=port,
        node_port=node_port,
        isolation=isolation,
        chain_id=chain_id,
        block_time=block_time,
        operator_address=operator,
        anvil_bin=anvil_bin,
    )
    if settings.operator_address is None:  # trust the operator keystore, as `dul up` does
        settings = settings.model_copy(update={"operator_address": _keystore_operator(h)})
    status = ChainNode(h, settings).start()
    if settings.operator_address is None and not h.deployment.exists():
        err_console.print(
            "note: no operator is trusted yet, so `dul contracts deploy` will be refused; create "
            "the operator key first (dul keys new operator) and restart, or pass --operator",
            highlight=False,
        )
    headline = (
        f"chain already running at {status.rpc_url}"
        if status.already_running
        else f"chain up at {status.rpc_url} in {status.start_seconds:.2f}s"
    )
    _print(status, as_json, headline)


@app.command()
@cli_errors
def down(as_json: JsonOpt = False) -> None:
    """Stop the chain (its state is kept); not an error when it is not running."""
    stopped = ChainNode(home(), _settings()).stop()
    if as_json:
        emit_json({"stopped": stopped})
    else:
        console.print("chain stopped" if stopped else "chain was not running")


@app.command()
@cli_errors
def status(as_json: JsonOpt = False) -> None:
    """Show whether the chain runs, its URL, chain id and block; exit 1 when it is not running."""
    from audit.health import describe, local_health

    current = ChainNode(home(), _settings()).status()
    indexer = local_health(home(), current.rpc_url) if current.running else None
    extra = {"audit_indexer": None if indexer is None else indexer.model_dump()}
    _print(current, as_json, "chain running" if current.running else "chain not running", extra)
    if indexer is not None and not as_json:
        colour = "green" if indexer.status == "ok" else "bold red"
        console.print(f"  indexer   [{colour}]{escape(describe(indexer))}[/{colour}]",
                      highlight=False)  # fmt: skip
    if not current.running:
        raise typer.Exit(1)

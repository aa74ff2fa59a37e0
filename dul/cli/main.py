"""The `dul` command line: one Typer app, one module per command group."""

from __future__ import annotations

import os

import typer

from audit import cli as audit_cli
from dul import log
from dul.cli import access, admin, bench, chain, contracts, demo, keys, network, stack, steward
from dul.home import private_umask
from ledger_gateway import cli as gateway_cli

app = typer.Typer(
    name="dul",
    help="Data-Use Ledger: data-use agreements and audit trails on a permissioned chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("up")(stack.up)
app.command("down")(stack.down)
app.command("bench")(bench.bench)
app.command("demo")(demo.demo)
app.add_typer(chain.app, name="chain")
app.add_typer(network.app, name="network")
app.add_typer(contracts.app, name="contracts")
app.add_typer(keys.app, name="keys")
app.add_typer(admin.app, name="admin")
app.add_typer(steward.app, name="steward")
app.add_typer(access.app, name="access")
app.add_typer(gateway_cli.app, name="gateway")
app.add_typer(audit_cli.app, name="audit")


@app.callback()
def main() -> None:
    """Logs go to stderr (JSON when not on a terminal), so `--json` output stays clean;
    commands print their own summary, so only warnings are logged unless DUL_LOG_LEVEL says."""
    private_umask()  # what the commands and the services they start create is the user's only
    log.configure(os.environ.get("DUL_LOG_LEVEL", "WARNING"))

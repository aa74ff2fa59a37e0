"""The `dul` command line: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from dul.cli import admin, chain, contracts, keys

app = typer.Typer(
    name="dul",
    help="Data-Use Ledger: data-use agreements and audit trails on a permissioned chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(chain.app, name="chain")
app.add_typer(contracts.app, name="contracts")
app.add_typer(keys.app, name="keys")
app.add_typer(admin.app, name="admin")

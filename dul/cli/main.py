"""The `dul` command line: one Typer app, one module per command group.

Groups are imported when first used, so `dul keys new` does not load web3, FastAPI or the
audit service (each command starts in a fraction of the time)."""

from __future__ import annotations

import importlib
import os
from typing import Any

import typer
from typer.core import TyperGroup

from dul import log
from dul.home import private_umask

# name -> (module, attribute): a Typer sub-app, or a function that is one command
LAZY: dict[str, tuple[str, str]] = {
    "up": ("dul.cli.stack", "up"),
    "down": ("dul.cli.stack", "down"),
    "bench": ("dul.cli.bench", "bench"),
    "demo": ("dul.cli.demo", "demo"),
    "chain": ("dul.cli.chain", "app"),
    "network": ("dul.cli.network", "app"),
    "contracts": ("dul.cli.contracts", "app"),
    "keys": ("dul.cli.keys", "app"),
    "admin": ("dul.cli.admin", "app"),
    "steward": ("dul.cli.steward", "app"),
    "access": ("dul.cli.access", "app"),
    "gateway": ("ledger_gateway.cli", "app"),
    "audit": ("audit.cli", "app"),
    "patient": ("dul.cli.patient", "app"),
}


class LazyGroup(TyperGroup):
    """The root group: each sub-command is built from its module on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in LAZY:
            module, attribute = LAZY[cmd_name]
            target = getattr(importlib.import_module(module), attribute)
            if not isinstance(target, typer.Typer):
                single = typer.Typer(add_completion=False)
                single.command(cmd_name)(target)
                target = single
            target._add_completion = False  # a sub-command: completion belongs to the root
            command = typer.main.get_command(target)
            command.name = cmd_name
            self.commands[cmd_name] = command
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="dul",
    cls=LazyGroup,
    help="Data-Use Ledger: data-use agreements and audit trails on a permissioned chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Logs go to stderr (JSON when not on a terminal), so `--json` output stays clean;
    commands print their own summary, so only warnings are logged unless DUL_LOG_LEVEL says."""
    private_umask()  # what the commands and the services they start create is the user's only
    log.configure(os.environ.get("DUL_LOG_LEVEL", "WARNING"))

"""`dul admin …` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="admin", no_args_is_help=True)

"""`dul chain …` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="chain", no_args_is_help=True)

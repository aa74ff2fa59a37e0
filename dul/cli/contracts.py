"""`dul contracts …` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="contracts", no_args_is_help=True)

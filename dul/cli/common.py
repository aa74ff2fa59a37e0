"""Helpers every command group shares: one-line errors, JSON output, the data directory."""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from dul.errors import ConfigError, DulError
from dul.home import Home

P = ParamSpec("P")
R = TypeVar("R")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

GatewayOption = Annotated[
    str | None,
    typer.Option(
        "--gateway",
        help="Gateway base URL (default: env DUL_GATEWAY_URL, else 127.0.0.1:DUL_GATEWAY_PORT).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def home() -> Home:
    return Home.from_env().ensure()


S = TypeVar("S")


def load_settings(cls: Callable[..., S], env: str, **options: Any) -> S:
    """Settings from the environment (`env`…), overridden by the options given; a value out
    of range is one ConfigError line naming each field, never a pydantic traceback."""
    from pydantic import ValidationError

    try:
        return cls(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings ({env}…): {problems}") from None


def exit_on_sigterm() -> None:
    """SIGTERM ends this command as Ctrl-C does: its `finally` blocks and context managers run,
    so the chain, gateway and measuring processes it started stop with it (the default action
    ended the process at once and left them running: a 2.7 GB node after an interrupted
    `dul bench`). The exit status is the usual 128 + 15."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a DulError into one clear line on stderr and exit code 1 (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except DulError as exc:
            err_console.print(
                f"[red]error[/red] {escape(f'[{exc.code}]')} {escape(exc.message)}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper

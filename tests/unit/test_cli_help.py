"""Every command's --help renders (no markup eats what it says), and names its environment."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import typer
from typer.main import get_command
from typer.testing import CliRunner

from dul.cli.main import app


def leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not hasattr(command, "list_commands"):
        return [path]
    context = typer.Context(command)
    return [
        leaf
        for name in command.list_commands(context)
        for leaf in leaves(command.get_command(context, name), (*path, name))
    ]


def test_every_help_renders() -> None:
    runner = CliRunner()
    for path in leaves(get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_env_names_survive_rich_markup() -> None:
    shown = CliRunner().invoke(app, ["gateway", "serve", "--help"], env={"COLUMNS": "200"})
    for name in ("DUL_GATEWAY_ORG", "DUL_GATEWAY_KEY", "DUL_GATEWAY_PORT"):
        assert name in shown.output
    chain = CliRunner().invoke(app, ["chain", "up", "--help"], env={"COLUMNS": "200"})
    assert "operator" in chain.output


def test_a_group_loads_only_its_own_module() -> None:
    probe = (
        "import sys; from dul.cli.main import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['keys', '--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('web3', 'fastapi', 'audit.cli', 'sqlalchemy') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_a_setting_out_of_range_is_one_line_for_every_service() -> None:
    for env, command in (
        ({"DUL_GATEWAY_MAX_REQUEST_LIFETIME_S": "-5"}, ["gateway", "serve"]),
        ({"DUL_CHAIN_BLOCK_TIME": "-1"}, ["chain", "status"]),
    ):
        result = CliRunner().invoke(app, command, env=env)
        assert result.exit_code != 0, (command, result.output)
        assert "error [config_error]" in result.output, (command, result.output)
        assert "Traceback" not in result.output
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), result.exception

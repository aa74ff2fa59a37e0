"""Every command's --help renders (no markup eats what it says), and names its environment."""

from __future__ import annotations

from typer.main import get_command
from typer.testing import CliRunner

from dul.cli.main import app


def leaves(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return [path]
    return [leaf for name, sub in subcommands.items() for leaf in leaves(sub, (*path, name))]


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

"""What the README tells a newcomer to type exists: every `dul …` command it names — in the
Commands block, in its bash blocks and in running text — is a command of the CLI, and every
`--option` it gives such a command is one of that command's options (for `a|b` alternatives,
of at least one of them). And a command that needs something the README has not made yet says
how to make it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.main import get_command
from typer.testing import CliRunner

from dul.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-q)\b")


def resolve(words: list[str]) -> Any:
    """The click command the words name (extra words are its arguments), or None."""
    command: Any = get_command(app)
    for word in words:
        if not hasattr(command, "list_commands"):
            return command
        command = command.get_command(typer.Context(command), word)
        if command is None:
            return None
    return command


def options(command: Any) -> set[str]:
    if hasattr(command, "list_commands"):
        context = typer.Context(command)
        return {o for name in command.list_commands(context)
                for o in options(command.get_command(context, name))}  # fmt: skip
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)}


def invocations(readme: str) -> Iterator[str]:
    """Each `dul …` the README shows: code spans, and lines of code blocks (one command each,
    split at `&&`, `;`, `$(`)."""
    spans = re.findall(r"`(dul [^`]+)`", readme.replace("\n", " "))
    lines = re.findall(r"^\s*(?:[A-Z_]+=\S+ )*(dul [^\n]+)$", readme, flags=re.M)
    lines += re.findall(r"\$\((dul [^)]+)\)", readme)
    for text in dict.fromkeys([*spans, *lines]):
        for part in re.split(r"&&|\|\||;|\$\(|\)|#", text):
            found = re.search(r"(?:^|\s)(dul \w.*)", part)
            if found:
                yield found.group(1).strip()


def commands_of(invocation: str) -> list[Any] | None:
    """The commands an invocation names (one per `a|b` alternative); None if any is unknown."""
    words: list[str] = []
    for word in invocation.split()[1:]:
        if (
            word.startswith(("-", "[", "<", "$", "…", '"'))
            or word.isupper()
            or "…" in word
            or word == "..."
        ):
            break
        words.append(word.strip(",.:"))
    alternatives: list[list[str]] = [[]]
    for word in words:
        alternatives = [[*a, w] for a in alternatives for w in word.split("|")]
    found = [resolve(a) for a in alternatives]
    return None if any(c is None for c in found) else found


def test_every_command_and_option_the_readme_names_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    wrong: list[str] = []
    seen = 0
    for invocation in invocations(readme):
        seen += 1
        commands = commands_of(invocation)
        if commands is None:
            wrong.append(f"{invocation!r}: no such command")
            continue
        named = set().union(*(options(c) for c in commands))
        wrong += [f"{invocation!r}: no option {o}" for o in OPTION.findall(invocation)
                  if o not in named]  # fmt: skip
    assert seen > 100  # the README's commands were found at all
    assert wrong == []


def test_the_check_catches_a_wrong_command_or_option() -> None:
    wrong = "`dul audit verify --bogus` and `dul chain frob`"
    found = list(invocations(wrong))
    assert found == ["dul audit verify --bogus", "dul chain frob"]
    assert commands_of(found[1]) is None
    verify = commands_of(found[0])
    assert verify is not None
    assert "--bogus" not in options(verify[0])
    assert "--checkpoints" in options(verify[0])


def test_a_missing_subject_key_says_how_to_make_one(tmp_path: Path) -> None:
    env = {"DUL_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    runner = CliRunner()
    token = runner.invoke(app, ["steward", "patient-token", "p-1", "--holder", "hospital-b"],
                          env=env)  # fmt: skip
    assert token.exit_code == 1
    assert "dul steward subject-key new --holder hospital-b" in token.stderr
    assert "Traceback" not in token.output
    made = runner.invoke(app, ["steward", "subject-key", "new", "--holder", "hospital-b"], env=env)
    assert made.exit_code == 0, made.output
    key = tmp_path / "home" / "keys" / "hospital-b.subject-key"
    assert key.stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["steward", "subject-key", "new", "--holder", "hospital-b"], env=env)
    assert again.exit_code == 1
    assert "never replaced" in again.stderr

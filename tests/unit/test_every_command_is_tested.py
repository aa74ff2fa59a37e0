"""Every `dul` command and every REST route of the gateway, the audit service and the patient page
is run by some
test. The rule, kept simple so each new command or route only needs a test that runs it:

- a command `dul A B C` is tested when a test file holds its words as consecutive quoted list
  items (`"A", "B", "C"`, as a CliRunner or subprocess invocation spells them), or — for a test
  that invokes the group's own Typer app — the words after the group (`"B", "C"`) in a file
  that imports the command's module; a one-word rest must open or continue a list or tuple (`["C"`,
  `("C"` or `, "C"`); the README walkthrough's commands count too (a test runs them as written);
- a route is tested when a test file names its path, each `{param}` standing for any segment
  (an f-string field or a literal).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.main import get_command

from audit.app import create_app as audit_app
from audit.settings import AuditSettings
from dul.cli.main import app
from ledger_gateway.app import create_app as gateway_app
from ledger_gateway.patient_page.app import create_app as patient_page_app
from ledger_gateway.patient_page.settings import PatientPageSettings
from ledger_gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
WALKTHROUGH = "## Your own data space"


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(words, module of the command's function) for every leaf command."""
    if hasattr(command, "list_commands"):  # a group (the root loads its groups lazily)
        context = typer.Context(command)
        for name in command.list_commands(context):
            yield from commands(command.get_command(context, name), (*path, name))
    else:
        callback = getattr(command, "callback", None)
        yield path, getattr(callback, "__module__", "")


def quoted(words: tuple[str, ...]) -> re.Pattern[str]:
    items = r",\s*".join(rf"""["']{re.escape(w)}["']""" for w in words)
    return re.compile(rf"[\[(,]\s*{items}")


def walkthrough_text() -> str:
    readme = (ROOT / "README.md").read_text()
    if WALKTHROUGH not in readme:
        return ""
    section = readme.split(WALKTHROUGH, 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL))


def sources_of_tests() -> list[str]:
    return [p.read_text() for p in (ROOT / "tests").rglob("test_*.py")]


def is_tested(words: tuple[str, ...], module: str, sources: list[str], readme: str) -> bool:
    if re.search(rf"(^|[\s(]){re.escape(' '.join(('dul', *words)))}(\s|$)", readme, re.M):
        return True
    whole, rest = quoted(words), quoted(words[1:]) if len(words) > 1 else None
    for text in sources:
        if whole.search(text):
            return True
        if rest is not None and module and module in text and rest.search(text):
            return True
    return False


def test_every_command_is_run_by_a_test() -> None:
    sources, readme = sources_of_tests(), walkthrough_text()
    untested = [
        " ".join(words)
        for words, module in commands(get_command(app))
        if not is_tested(words, module, sources, readme)
    ]
    assert untested == [], f"commands no test runs: {untested}"


def route_pattern(path: str) -> re.Pattern[str]:
    parts = re.split(r"\{[^}]+\}", path)
    segment = r"[^/\"'\s?]+"
    return re.compile(segment.join(re.escape(p) for p in parts) + r"""(["'?]|$)""", re.M)


def test_every_route_is_run_by_a_test(tmp_path: Path) -> None:
    apps = {
        "gateway": gateway_app(GatewaySettings(home=tmp_path, org="hospital-a", key="gateway")),
        "audit": audit_app(AuditSettings(home=tmp_path)),
        "patient page": patient_page_app(PatientPageSettings(home=tmp_path)),
    }
    sources = "\n".join(sources_of_tests())
    untested = [
        f"{service} {method.upper()} {path}"
        for service, api in apps.items()
        for path, operations in api.openapi()["paths"].items()
        for method in operations
        if not route_pattern(path).search(sources)
    ]
    assert untested == [], f"routes no test names: {untested}"


def test_the_rule_catches_a_missing_command() -> None:
    sources = ['runner.invoke(app, ["admin", "org", "add", "x"])']
    assert is_tested(("admin", "org", "add"), "dul.cli.admin", sources, "")
    assert not is_tested(("admin", "org", "remove"), "dul.cli.admin", sources, "")
    assert not is_tested(("org", "add"), "", ['invoke(app, ["admin", "org", "ad"])'], "")
    assert is_tested(("steward", "dataset", "register"), "dul.cli.steward",
                     ['from dul.cli.steward import app\ninvoke(app, ["dataset", "register"])'],
                     "")  # fmt: skip
    assert is_tested(("access", "status"), "m", [], "dul access status $ACCESS\n")
    assert route_pattern("/v1/agreements/{agreement}/typed-data").search(
        'client.get(f"/v1/agreements/{agreement_id}/typed-data")'
    )
    assert not route_pattern("/v1/agreements/{agreement}").search('"/v1/agreements"')
    assert not route_pattern("/v1/agreements/{agreement}").search('"/v1/agreements/{a}/revoke"')

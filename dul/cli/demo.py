"""`dul demo`: the whole story on the embedded stack, then the regulator's view of it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.tree import Tree

from dul.cli.common import cli_errors, console, emit_json, err_console, home


def provenance_tree(
    graph: dict[str, Any], max_depth: int = 10, names: dict[str, str] | None = None
) -> Tree:
    """The provenance graph as a tree from its root, following each relation from the derived
    item to what it came from; an item reached twice is shown once and then referred to.
    `names` gives some nodes (by id) a name of their own, e.g. "model v1" and "model v2"."""
    nodes = {node["id"]: node for node in graph["nodes"]}
    names = names or {}
    children: dict[str, list[tuple[str, str]]] = {}
    for edge in graph["edges"]:
        children.setdefault(edge["source"], []).append((edge["relation"], edge["target"]))
        if nodes.get(edge["source"], {}).get("type") == "signature" and edge["relation"] == "used":
            # A signing is an activity that used the terms: show it under its agreement.
            children.setdefault(edge["target"], []).append(("signed by", edge["source"]))

    def label(node_id: str, relation: str | None) -> str:
        node = nodes.get(node_id, {"type": "?", "label": node_id})
        kind, text = str(node["type"]), str(node["label"])
        if kind == "account":
            text = text[:10] + "…"
        if node_id in names:
            text = f"{names[node_id]} ({text})"
        if node.get("attributes", {}).get("decision") == "DENIED":
            text += " [red]DENIED[/]"
        prefix = f"[dim]{relation}[/] " if relation else ""
        if text.split(" ", 1)[0] == kind:  # "model of ai-lab", not "model model of ai-lab"
            kind, text = text.split(" ", 1)[0], text.split(" ", 1)[1] if " " in text else ""
        return f"{prefix}[bold]{kind}[/] {text}".rstrip()

    root = graph["root"]
    tree = Tree(label(root, None))
    shown = {root}

    def grow(branch: Tree, node_id: str, parent: str | None, depth: int) -> None:
        if depth >= max_depth:
            return
        for relation, target in sorted(children.get(node_id, [])):
            if target in shown:
                # Parties and accounts recur under every access: name them once.
                kind = nodes.get(target, {}).get("type")
                if target != parent and kind not in ("organization", "account"):
                    branch.add(label(target, relation) + " [dim](above)[/]")
                continue
            shown.add(target)
            grow(branch.add(label(target, relation)), target, node_id, depth + 1)

    grow(tree, root, None, 0)
    return tree


def _ids(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """The story's items a regulator would look up, with their ids."""
    found: list[tuple[str, str]] = []
    for n, model in enumerate(facts.get("models", []), start=1):
        found.append((f"model v{n} (artifact)", str(model)))
    for title, agreement in (facts.get("agreements") or {}).items():
        found.append((f"agreement {title}", str(agreement)))
    glass = facts.get("break_glass") or {}
    if glass.get("access_id"):
        found.append(("break-glass access", str(glass["access_id"])))
    withdrawal = facts.get("withdrawal") or {}
    if withdrawal.get("subject"):
        found.append(("withdrawn patient (subject)", str(withdrawal["subject"])))
    return found


@cli_errors
def demo(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the story's facts as one JSON object.")
    ] = False,
) -> None:
    """Run the whole story on the embedded stack and print the regulator's view.

    From nothing: chain, contracts, three hospitals, a research institute, an AI lab, an insurer
    and a regulator; agreements signed; queries granted and denied; a consent withdrawn; an
    insurer's one-time code; an emergency break-glass access and its review; a two-round
    federated model. The stack stays up for exploring
    (`dul down` stops it)."""
    from dul import demo as story

    out = err_console if json_output else console
    facts = story.tell(home(), lambda line: out.print(f"▸ {line}", highlight=False))
    if json_output:
        emit_json(facts)
        return
    regulator = facts["regulator"]
    models = {f"artifact:{m}": f"v{n}" for n, m in enumerate(facts.get("models", []), start=1)}
    console.rule("regulator: provenance of model v2")
    console.print(provenance_tree(regulator["provenance"], names=models), highlight=False)
    report = regulator["report"]
    console.rule("regulator: compliance report of the research agreement")
    for key in ("status", "accesses", "granted", "denied", "denials_by_reason", "findings"):
        if key in report:
            console.print(f"  {key:<20} {report[key]}", highlight=False)
    emergency = regulator.get("emergency_report")
    if emergency:
        console.rule("regulator: break-glass under the emergency-care agreement (hospital C)")
        for case in emergency.get("break_glass", []):
            console.print(f"  {case['access_id']}  {case['reason']}  review: "
                          f"{case['state'].upper()} by {case.get('reviewer') or '—'}"
                          + (" (late)" if case.get("late") else ""), highlight=False)  # fmt: skip
    verify = regulator["verify"]
    console.rule("regulator: verify")
    checked = verify.get("checked", {})
    counts = ", ".join(
        f"{checked[key]} {key.replace('_', ' ')}"
        for key in ("accesses", "access_signatures", "agreement_signatures", "cohorts", "artifacts")
        if key in checked
    )
    if verify.get("ok"):
        verdict = "[green]clean[/]: the store matches the chain up to block "
        verdict += f"{verify.get('checkpoint_block')}; checked {counts}"
    else:
        verdict = f"[red]{verify.get('findings_total')} finding(s)[/]: "
        verdict += ", ".join(f"{k} {v}" for k, v in verify.get("findings_by_check", {}).items())
    console.print(f"  {verdict}", highlight=False)
    urls = facts["urls"]
    console.rule("ids to paste into the console's search")
    for name, value in _ids(facts):
        console.print(f"  {name:<26} {value}", highlight=False)
    console.print(
        f"\ndone in {facts['seconds']} s. The stack keeps running: audit console at "
        f"{urls['audit_url']}/ , gateways {', '.join(urls['gateway_urls'].values())}; "
        "`dul down` stops it.",
        highlight=False,
    )
    if facts.get("regulator_token"):
        console.print(
            f"sign in to the console as the regulator with this token (shown once): "
            f"{facts['regulator_token']}",
            highlight=False,
        )

"""`dul demo`: the whole story on the embedded stack, then the regulator's view of it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.tree import Tree

from dul.cli.common import cli_errors, console, emit_json, err_console, home


def provenance_tree(graph: dict[str, Any], max_depth: int = 10) -> Tree:
    """The provenance graph as a tree from its root, following each relation from the derived
    item to what it came from; an item reached twice is shown once and then referred to."""
    nodes = {node["id"]: node for node in graph["nodes"]}
    children: dict[str, list[tuple[str, str]]] = {}
    for edge in graph["edges"]:
        children.setdefault(edge["source"], []).append((edge["relation"], edge["target"]))

    def label(node_id: str, relation: str | None) -> str:
        node = nodes.get(node_id, {"type": "?", "label": node_id})
        flags = ""
        attributes = node.get("attributes", {})
        if attributes.get("decision") == "DENIED":
            flags = " [red]DENIED[/]"
        prefix = f"[dim]{relation}[/] " if relation else ""
        return f"{prefix}[bold]{node['type']}[/] {node['label']}{flags}"

    root = graph["root"]
    tree = Tree(label(root, None))
    shown = {root}

    def grow(branch: Tree, node_id: str, depth: int) -> None:
        if depth >= max_depth:
            return
        for relation, target in sorted(children.get(node_id, [])):
            if target in shown:
                branch.add(label(target, relation) + " [dim](above)[/]")
                continue
            shown.add(target)
            grow(branch.add(label(target, relation)), target, depth + 1)

    grow(tree, root, 0)
    return tree


@cli_errors
def demo(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the story's facts as one JSON object.")
    ] = False,
) -> None:
    """Run the whole story on the embedded stack and print the regulator's view.

    From nothing: chain, contracts, three hospitals, a research institute, an AI lab, an insurer
    and a regulator; agreements signed; queries granted and denied; a consent withdrawn; an
    insurer's one-time code; a two-round federated model. The stack stays up for exploring
    (`dul down` stops it)."""
    from dul import demo as story

    out = err_console if json_output else console
    facts = story.tell(home(), lambda line: out.print(f"▸ {line}", highlight=False))
    if json_output:
        emit_json(facts)
        return
    regulator = facts["regulator"]
    console.rule("regulator: provenance of model v2")
    console.print(provenance_tree(regulator["provenance"]), highlight=False)
    report = regulator["report"]
    console.rule("regulator: compliance report of the research agreement")
    for key in ("status", "accesses", "granted", "denied", "denials_by_reason", "findings"):
        if key in report:
            console.print(f"  {key:<20} {report[key]}", highlight=False)
    verify = regulator["verify"]
    console.rule("regulator: verify")
    verdict = "[green]clean[/]" if verify.get("ok") else "[red]FINDINGS[/]"
    console.print(
        f"  {verdict}: store matches the chain up to block {verify.get('checkpoint_block')}; "
        f"checked {verify.get('checked')}",
        highlight=False,
    )
    urls = facts["urls"]
    console.print(
        f"\ndone in {facts['seconds']} s. The stack keeps running: audit console at "
        f"{urls['audit_url']}/ , gateways {', '.join(urls['gateway_urls'].values())}; "
        "`dul down` stops it.",
        highlight=False,
    )

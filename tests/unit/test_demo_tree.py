"""The regulator's provenance tree that `dul demo` prints: derivations from the root down,
signatures under the agreement they signed, repeated parties named once."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from dul.cli.demo import provenance_tree


def _node(node_id: str, label: str, **attributes: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_id.split(":")[0], "label": label, "attributes": attributes}


def _edge(relation: str, source: str, target: str) -> dict[str, Any]:
    return {"relation": relation, "source": source, "target": target}


def render(graph: dict[str, Any]) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(provenance_tree(graph))
    return console.export_text()


GRAPH = {
    "root": "model:m2",
    "nodes": [
        _node("model:m2", "model v2"),
        _node("artifact:u1", "update 1"),
        _node("artifact:u2", "update 2"),
        _node("access:a1", "access granted", decision="GRANTED"),
        _node("access:a2", "access denied", decision="DENIED"),
        _node("agreement:g", "agreement v1"),
        _node("signature:s", "signature of party 0"),
        _node("account:0x1234567890abcdef", "0x1234567890abcdef"),
        _node("organization:h", "Hospital A"),
        _node("dataset:d", "hospital-a/omop-cdm"),
    ],
    "edges": [
        _edge("wasDerivedFrom", "model:m2", "artifact:u1"),
        _edge("wasDerivedFrom", "model:m2", "artifact:u2"),
        _edge("wasGeneratedBy", "artifact:u1", "access:a1"),
        _edge("wasGeneratedBy", "artifact:u2", "access:a2"),
        _edge("used", "access:a1", "agreement:g"),
        _edge("used", "access:a2", "agreement:g"),
        _edge("used", "signature:s", "agreement:g"),
        _edge("wasAssociatedWith", "signature:s", "account:0x1234567890abcdef"),
        _edge("actedOnBehalfOf", "account:0x1234567890abcdef", "organization:h"),
        _edge("wasAttributedTo", "agreement:g", "organization:h"),
        _edge("wasDerivedFrom", "agreement:g", "dataset:d"),
    ],
}


def test_derivations_hang_from_the_root_with_signatures_under_their_agreement() -> None:
    lines = render(GRAPH).splitlines()
    assert lines[0] == "model model v2"
    text = "\n".join(lines)
    assert "wasDerivedFrom artifact update 1" in text
    assert "signed by signature signature of party 0" in text
    assert "account 0x12345678…" in text  # accounts shortened
    assert "DENIED" in text


def test_an_agreement_reached_twice_is_referred_to_and_parties_are_named_once() -> None:
    text = render(GRAPH)
    assert text.count("used agreement agreement v1 (above)") == 1
    assert text.count("organization Hospital A") == 1
    # the signature does not point back at the agreement it hangs under
    assert "used agreement agreement v1 (above)" not in text.split("signed by")[1].split("\n")[1]


def test_depth_is_bounded() -> None:
    chain = {
        "root": "artifact:0",
        "nodes": [_node(f"artifact:{i}", f"a{i}") for i in range(30)],
        "edges": [_edge("wasDerivedFrom", f"artifact:{i}", f"artifact:{i + 1}") for i in range(29)],
    }
    text = render(chain)
    assert "a10" in text
    assert "a11" not in text

"""The regulator's provenance tree that `dul demo` prints: derivations from the root down,
signatures under the agreement they signed, repeated parties named once."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from dul.cli.demo import _ids, provenance_tree


def _node(node_id: str, label: str, **attributes: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_id.split(":")[0], "label": label, "attributes": attributes}


def _edge(relation: str, source: str, target: str) -> dict[str, Any]:
    return {"relation": relation, "source": source, "target": target}


def render(graph: dict[str, Any], names: dict[str, str] | None = None) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(provenance_tree(graph, names=names))
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
    assert lines[0] == "model v2"  # the kind is not repeated
    text = "\n".join(lines)
    assert "wasDerivedFrom artifact update 1" in text
    assert "signed by signature of party 0" in text
    assert "account 0x12345678…" in text  # accounts shortened
    assert "DENIED" in text


def test_an_agreement_reached_twice_is_referred_to_and_parties_are_named_once() -> None:
    text = render(GRAPH)
    assert text.count("used agreement v1 (above)") == 1
    assert text.count("organization Hospital A") == 1
    # the signature does not point back at the agreement it hangs under
    assert "used agreement v1 (above)" not in text.split("signed by")[1].split("\n")[1]


def test_depth_is_bounded() -> None:
    chain = {
        "root": "artifact:0",
        "nodes": [_node(f"artifact:{i}", f"a{i}") for i in range(30)],
        "edges": [_edge("wasDerivedFrom", f"artifact:{i}", f"artifact:{i + 1}") for i in range(29)],
    }
    text = render(chain)
    assert "a10" in text
    assert "a11" not in text


def test_models_are_told_apart_by_name() -> None:
    graph = {
        "root": "artifact:m2",
        "nodes": [
            {"id": "artifact:m2", "type": "model", "label": "model of ai-lab", "attributes": {}},
            {"id": "artifact:m1", "type": "model", "label": "model of ai-lab", "attributes": {}},
        ],
        "edges": [_edge("wasDerivedFrom", "artifact:m2", "artifact:m1")],
    }
    text = render(graph, names={"artifact:m1": "v1", "artifact:m2": "v2"})
    assert text.splitlines()[0] == "model v2 (model of ai-lab)"
    assert "wasDerivedFrom model v1 (model of ai-lab)" in text
    assert "model model" not in text


def test_the_ids_to_paste_are_listed() -> None:
    facts = {
        "models": ["0x" + "01" * 32, "0x" + "02" * 32],
        "agreements": {"research": "0x" + "aa" * 32},
        "withdrawal": {"subject": "0x" + "5b" * 32},
    }
    assert _ids(facts) == [
        ("model v1 (artifact)", "0x" + "01" * 32),
        ("model v2 (artifact)", "0x" + "02" * 32),
        ("agreement research", "0x" + "aa" * 32),
        ("withdrawn patient (subject)", "0x" + "5b" * 32),
    ]

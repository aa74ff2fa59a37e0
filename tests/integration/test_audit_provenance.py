"""Provenance graphs over a store indexed from the session's real chain: every node and edge
carries the chain reference of the event that states it, upward and downward queries answer
what happened, and bad ids are refused; on SQLite and on PostgreSQL (DUL_TEST_DATABASE_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit.provenance import (
    Direction,
    Graph,
    Kind,
    MalformedIdError,
    NotFoundError,
    StoreUnavailableError,
    parse_id,
    provenance,
)
from audit.testing import drop_stores, index_into, make_store_url, record_story
from dul.chain.testing import ChainHandle
from dul.contracts.world import World

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass
class Story:
    """What happened on chain, and the store it was indexed into."""

    engine: sa.Engine
    agreement: str
    granted: str
    exported: str
    denied: str
    result: str


@pytest.fixture(scope="module", params=BACKENDS)
def story(
    request: pytest.FixtureRequest,
    world: World,
    chain: ChainHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Story]:
    cleanup: list[tuple[str, str]] = []
    url = make_store_url(request.param, tmp_path_factory.mktemp("provenance"), cleanup)
    agreement, granted, exported, denied, result = record_story(world)
    engine = index_into(world.ledger.deployment, chain.rpc_url, url)
    yield Story(
        engine,
        hexed(agreement),
        hexed(granted.request.request_id),
        hexed(exported.request.request_id),
        hexed(denied.request.request_id),
        hexed(result),
    )
    engine.dispose()
    drop_stores(cleanup)


def event_positions(engine: sa.Engine) -> dict[tuple[int, int, int], str]:
    with engine.connect() as conn:
        return {
            (int(b), int(t), int(i)): str(tx)
            for b, t, i, tx in conn.execute(
                sa.text("SELECT block_number, tx_index, log_index, tx_hash FROM event")
            )
        }


def assert_chain_referenced(graph: Graph, engine: sa.Engine) -> None:
    """Every node (accounts aside, which hold no role only when never members) and every
    edge points at a stored event, with that event's transaction hash."""
    events = event_positions(engine)
    for node in graph.nodes:
        assert node.chain is not None, node.id
        position = (node.chain.block, node.chain.tx_index, node.chain.log_index)
        assert events[position] == node.chain.tx_hash, node.id
    for edge in graph.edges:
        position = (edge.chain.block, edge.chain.tx_index, edge.chain.log_index)
        assert events[position] == edge.chain.tx_hash, edge
        assert graph.node(edge.source)
        assert graph.node(edge.target)


def relations(graph: Graph) -> set[tuple[str, str, str]]:
    return {(e.source.split(":")[0], e.relation, e.target.split(":")[0]) for e in graph.edges}


def test_an_access_traces_up_to_its_agreement_signatures_and_organizations(
    story: Story, world: World
) -> None:
    graph = provenance(story.engine, Kind.ACCESS, story.exported, direction=Direction.UP)
    assert graph.root == f"access:{story.exported}@{story.agreement}"
    assert_chain_referenced(graph, story.engine)
    edges = {(e.source, e.relation, e.target, e.attributes.get("role")) for e in graph.edges}
    root = graph.root
    requester = f"account:{world.requester.address.lower()}"
    gateway = f"account:{world.gateway.address.lower()}"
    assert (root, "used", f"agreement:{story.agreement}", "agreement") in edges
    assert (root, "used", f"dataset:{hexed(world.dataset)}", "dataset") in edges
    assert (root, "wasAssociatedWith", requester, "requester") in edges
    assert (root, "wasAssociatedWith", gateway, "recorder") in edges
    assert (requester, "actedOnBehalfOf", f"organization:{hexed(world.institute)}",
            "REQUESTER") in edges  # fmt: skip
    assert (gateway, "actedOnBehalfOf", f"organization:{hexed(world.hospital)}",
            "GATEWAY") in edges  # fmt: skip
    signers = {
        graph.node(e.target).attributes["address"]
        for e in graph.edges
        if e.source.startswith("signature:") and e.relation == "wasAssociatedWith"
    }
    assert signers == {world.steward.address, world.partner_steward.address}  # EIP-55
    agreement = graph.node(f"agreement:{story.agreement}")
    assert agreement.attributes["status"] == "ACTIVE"
    assert [h["event"] for h in agreement.attributes["status_history"]] == ["AgreementActivated"]
    access = graph.node(root)
    assert access.prov == "activity"
    assert access.attributes["operation"] == "EXPORT_RESULT"
    # upward only: nothing that came of the access
    assert not any(e.relation == "wasGeneratedBy" for e in graph.edges)


def test_an_agreement_traces_down_to_its_accesses_and_released_results(story: Story) -> None:
    graph = provenance(story.engine, Kind.AGREEMENT, story.agreement, direction=Direction.DOWN)
    assert_chain_referenced(graph, story.engine)
    accesses = {n.attributes["access_id"]: n for n in graph.nodes if n.type == "access"}
    assert set(accesses) == {story.granted, story.exported, story.denied}
    assert accesses[story.denied].attributes["reason"] == "TIER_ABOVE_CEILING"
    (generated,) = [e for e in graph.edges if e.relation == "wasGeneratedBy"]
    assert (generated.source, generated.target) == (
        f"artifact:{story.result}",
        f"access:{story.exported}@{story.agreement}",
    )
    assert generated.attributes["kind"] == "DEIDENTIFIED_EXTRACT"
    assert graph.truncated == []


def test_a_released_result_answers_as_an_artifact_back_to_the_agreement(story: Story) -> None:
    graph = provenance(story.engine, Kind.ARTIFACT, story.result, direction=Direction.UP)
    assert_chain_referenced(graph, story.engine)
    assert ("artifact", "wasGeneratedBy", "access") in relations(graph)
    assert f"agreement:{story.agreement}" in {n.id for n in graph.nodes}
    assert graph.node(f"artifact:{story.result}").attributes["size"] == 4096


def test_limit_truncates_and_says_so(story: Story) -> None:
    graph = provenance(
        story.engine, Kind.AGREEMENT, story.agreement, direction=Direction.DOWN, limit=1
    )
    assert sum(1 for n in graph.nodes if n.type == "access") == 1
    assert f"agreement:{story.agreement}" in graph.truncated


def test_organizations_and_datasets_accept_their_slugs(story: Story, world: World) -> None:
    org = provenance(story.engine, Kind.ORGANIZATION, "hospital-a", direction=Direction.DOWN)
    assert_chain_referenced(org, story.engine)
    members = {e.source for e in org.edges if e.relation == "actedOnBehalfOf"}
    assert f"account:{world.gateway.address.lower()}" in members
    assert f"dataset:{hexed(world.dataset)}" in {n.id for n in org.nodes}
    dataset = provenance(story.engine, Kind.DATASET, "hospital-a/omop-cdm", limit=1000)
    assert_chain_referenced(dataset, story.engine)
    assert ("agreement", "wasDerivedFrom", "dataset") in relations(dataset)
    assert ("dataset", "wasAttributedTo", "organization") in relations(dataset)
    assert f"access:{story.granted}@{story.agreement}" in {n.id for n in dataset.nodes}


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (Kind.AGREEMENT, "0x1234"),
        (Kind.ACCESS, "not-an-id"),
        (Kind.ARTIFACT, "0x" + "g" * 64),
        (Kind.SUBJECT, "1" * 66),
        (Kind.DATASET, "x" * 40),
        (Kind.ORGANIZATION, "../../etc/passwd"),
        (Kind.ORGANIZATION, "hospital a"),
        (Kind.AGREEMENT, ""),
    ],
)
def test_malformed_ids_are_refused(story: Story, kind: Kind, raw: str) -> None:
    with pytest.raises(MalformedIdError) as caught:
        provenance(story.engine, kind, raw)
    assert caught.value.code == "malformed_id"


@pytest.mark.parametrize("kind", [Kind.AGREEMENT, Kind.ACCESS, Kind.ARTIFACT, Kind.DATASET])
def test_unknown_ids_are_not_found(story: Story, kind: Kind) -> None:
    with pytest.raises(NotFoundError) as caught:
        provenance(story.engine, kind, "0x" + "ab" * 32)
    assert caught.value.code == f"{kind.value}_not_found"


def test_a_subject_without_consents_codes_or_accesses_is_not_found(story: Story) -> None:
    with pytest.raises(NotFoundError) as caught:
        provenance(story.engine, Kind.SUBJECT, "0x" + "cd" * 32)
    assert caught.value.code == "subject_not_found"


def test_parse_id_is_canonical() -> None:
    upper = "0x" + "AB" * 32
    assert parse_id(Kind.AGREEMENT, upper) == upper.lower()
    assert parse_id(Kind.ORGANIZATION, "hospital-a") == "0x" + b"hospital-a".ljust(32, b"\0").hex()


def test_a_store_that_is_not_there_is_unavailable(tmp_path: Path) -> None:
    from audit.app import read_only_engine

    engine = read_only_engine(f"sqlite:///{tmp_path / 'missing' / 'audit.db'}")
    with pytest.raises(StoreUnavailableError):
        provenance(engine, Kind.AGREEMENT, "0x" + "ab" * 32)
    assert not (tmp_path / "missing").exists()  # read-only: nothing was created
    engine.dispose()

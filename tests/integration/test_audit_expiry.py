"""The audit service says EXPIRED, as the chain does, for an agreement past its window — judged
at the newest indexed block's time, with the moment the window ended — and ACTIVE before."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import pytest

from audit.provenance import Kind, effective_status, iso_time, provenance
from audit.reports import agreement_report
from audit.testing import index_into
from dul.chain.testing import ChainHandle
from dul.contracts.world import World
from dul.domain import AgreementStatus, OrgKind, slug_id

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


def test_effective_status_follows_the_chains_rule() -> None:
    until = 1_000
    assert effective_status(AgreementStatus.ACTIVE, until, 999) == ("ACTIVE", None)
    assert effective_status(AgreementStatus.ACTIVE, until, 1_000) == ("ACTIVE", None)
    assert effective_status(AgreementStatus.ACTIVE, until, 1_001) == ("EXPIRED", iso_time(until))
    assert effective_status(AgreementStatus.SUSPENDED, until, 2_000)[0] == "EXPIRED"
    assert effective_status(AgreementStatus.REVOKED, until, 2_000) == ("REVOKED", None)
    assert effective_status(AgreementStatus.ACTIVE, until, None) == ("ACTIVE", None)
    assert iso_time(0) == "1970-01-01T00:00:00Z"


def test_an_agreement_past_its_window_is_expired_in_the_audit_store(
    world: World, chain: ChainHandle, tmp_path: Path
) -> None:
    now = int(world.ledger.w3.eth.get_block("latest")["timestamp"])  # other tests move it on
    # 20 s: activating (three transactions) and indexing must fit inside the window, which
    # takes seconds on a busy machine running the suite on several workers
    terms = dataclasses.replace(
        world.research_terms(), valid_from=now - 60, valid_until=now + 20, deadline=now + 3_600
    )
    agreement = "0x" + world.activate(terms).hex()
    url = f"sqlite:///{tmp_path / 'before.db'}"
    before = agreement_report(index_into(world.ledger.deployment, chain.rpc_url, url), agreement)
    assert before.status == "ACTIVE"
    assert before.expired_at is None

    deadline = time.monotonic() + 60
    while world.ledger.w3.eth.get_block("latest")["timestamp"] <= terms.valid_until:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Any later event moves the indexed time past the window's end.
    world.ledger.transact(
        world.operator, "Membership", "registerOrganization",
        slug_id(f"x-{uuid.uuid4().hex[:8]}"), int(OrgKind.RESEARCH), "Later",
    )  # fmt: skip
    assert world.ledger.call("AgreementRegistry", "status", terms.agreement_id) == (
        AgreementStatus.EXPIRED
    )
    engine = index_into(world.ledger.deployment, chain.rpc_url, f"sqlite:///{tmp_path / 'a.db'}")
    report = agreement_report(engine, agreement)
    assert report.status == "EXPIRED"
    assert report.expired_at == iso_time(terms.valid_until)
    graph = provenance(engine, Kind.AGREEMENT, agreement)
    [node] = [n for n in graph.nodes if n.id == f"agreement:{agreement}"]
    assert node.attributes["status"] == "EXPIRED"
    assert node.attributes["expired_at"] == iso_time(terms.valid_until)
    assert node.label.endswith("expired")
    from audit.directory import agreements
    from audit.scope import Caller, CallerRole

    regulator = Caller(CallerRole.REGULATOR, "token", "tests")
    expired = agreements(engine, regulator, "EXPIRED", 200, None).items
    assert agreement in {a.agreement_id for a in expired}
    line = next(a for a in expired if a.agreement_id == agreement)
    assert (line.status, line.expired_at) == ("EXPIRED", iso_time(terms.valid_until))
    active = agreements(engine, regulator, "ACTIVE", 200, None).items
    assert agreement not in {a.agreement_id for a in active}

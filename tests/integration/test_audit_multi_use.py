"""A multi-use authorization code in the audit store, against the session's real chain: one
code redeemed by two accesses stays ISSUED, and its provenance node, the subject's
transparency report and its FHIR Consent all say it opens every fitting access until it
expires and that two accesses used it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from audit.exports import fhir_json
from audit.provenance import Direction, Kind, provenance
from audit.testing import index_into, issue_authorization, private_world, subject_of
from audit.transparency import subject_report
from dul.chain.testing import ChainHandle
from dul.cohort import leaf_hash
from dul.contracts.world import World
from dul.domain import ConsentPolicy, Scenario, Tier

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


def test_a_multi_use_code_shows_its_kind_and_every_use(
    world: World, chain: ChainHandle, tmp_path: Path
) -> None:
    """On a deployment of its own, built after the session's world (whose members, the same
    keys, the permissioned endpoint admits)."""
    world = private_world(chain.rpc_url, tmp_path / "deployment.json")
    insurance = world.activate(replace(
        world.research_terms(quota=10), scenario=Scenario.INSURANCE_CLAIM,
        max_tier=Tier.PSEUDONYMIZED, consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
        duo_codes=(),
    ))  # fmt: skip
    patient = subject_of("visits")
    multi = issue_authorization(world, patient, multi_use=True)
    once = issue_authorization(world, patient)
    claims = [
        replace(world.access_record(insurance, authorization_ref=code),
                cohort_root=leaf_hash(patient), cohort_size=1)
        for code in (multi, multi, once)
    ]  # fmt: skip
    world.ledger.transact(
        world.gateway, "AccessLog", "recordAccesses", [c.as_abi() for c in claims]
    )
    uses = [hexed(c.request.request_id) for c in claims[:2]]
    engine = index_into(world.ledger.deployment, chain.rpc_url, f"sqlite:///{tmp_path / 'a.db'}")
    try:
        codes = {c.code_hash: c for c in subject_report(engine, hexed(patient)).authorizations}
        assert (codes[hexed(multi)].multi_use, codes[hexed(multi)].uses) == (True, 2)
        assert codes[hexed(multi)].status == "ISSUED"
        assert (codes[hexed(once)].multi_use, codes[hexed(once)].uses) == (False, 1)
        assert codes[hexed(once)].status == "REDEEMED"
        # the last use is a request id under an agreement (an id names one access per agreement)
        assert codes[hexed(multi)].redeemed_by_access == uses[-1]
        assert codes[hexed(multi)].redeemed_by_agreement == hexed(insurance)

        graph = provenance(engine, Kind.SUBJECT, hexed(patient), direction=Direction.BOTH)
        node = graph.node(f"authorization:{hexed(multi)}")
        assert (node.attributes["multi_use"], node.attributes["uses"]) == (True, 2)
        assert node.attributes["redeemed_by_access"] == uses[-1]
        assert node.attributes["redeemed_by_agreement"] == hexed(insurance)
        redeemed = [e for e in node.attributes["history"] if e["event"] == "redeemed"]
        assert [e["access_id"] for e in redeemed] == uses
        # each use names its access's agreement (the redemption is the log before the access)
        assert [e["agreement_id"] for e in redeemed] == [hexed(insurance)] * 2

        bundle = json.loads(fhir_json(graph, {}))
        resources = [e["resource"] for e in bundle["entry"]]
        consents = {r["identifier"][0]["value"]: r for r in resources
                    if r["resourceType"] == "Consent"}  # fmt: skip
        provision = consents[hexed(multi)]["provision"]
        extensions = {e["url"]: e for e in provision["extension"]}
        assert extensions["urn:dul:authorization-use"]["valueCode"] == "until-expiry"
        assert extensions["urn:dul:authorization-uses"]["valueUnsignedInt"] == 2
        # each use is its access as its AuditEvent names it: request id @ agreement
        named = [f"{u}@{hexed(insurance)}" for u in uses]
        assert [d["reference"]["identifier"]["value"] for d in provision["data"]] == named
        events = {r["entity"][0]["what"]["identifier"]["value"] for r in resources
                  if r["resourceType"] == "AuditEvent"}  # fmt: skip
        assert set(named) <= events
        once_use = consents[hexed(once)]["provision"]["extension"]
        assert {e["url"]: e for e in once_use}["urn:dul:authorization-use"]["valueCode"] == "once"
    finally:
        engine.dispose()

"""The audit REST API over a store indexed from the session's real chain: provenance in three
formats (each parsed back by its own library), verify, reports, subjects, health and metrics;
every error is problem JSON with a stable code — unknown id 404, malformed id 422, store
unreachable 503 — and no input, however malformed, gets a 500."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eth_hash.auto import keccak
from fastapi.testclient import TestClient
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.provenance import Provenance
from prov.model import ProvDocument
from typer.testing import CliRunner

from audit.cli import app as audit_cli
from audit.settings import AuditSettings
from audit.testing import audit_client, index_into, private_world
from dul.chain.testing import ChainHandle, free_port
from dul.contracts.world import World
from dul.domain import Decision, DenyReason, Operation, ReleaseKind

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


class Api:
    def __init__(self, client: TestClient, url: str, ids: dict[str, str]) -> None:
        self.client = client
        self.url = url
        self.ids = ids


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A deployment of this module's own (see test_audit_verify.py): `GET /v1/verify` answers
    about this module's story only."""
    return private_world(chain.rpc_url, tmp_path_factory.mktemp("api") / "deployment.json")


@pytest.fixture(scope="module")
def api(
    world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    agreement = world.activate(world.research_terms(quota=20))
    granted = world.access_record(agreement, operation=Operation.EXPORT_RESULT)
    denied = world.access_record(
        agreement, Decision.DENIED, DenyReason.FIELDS_NOT_IN_SCOPE, field_mask=0b1
    )
    world.ledger.transact(
        world.gateway, "AccessLog", "recordAccesses", [granted.as_abi(), denied.as_abi()]
    )
    result = keccak(uuid.uuid4().bytes)
    world.ledger.transact(
        world.gateway, "AccessLog", "releaseResult", granted.request.request_id, agreement,
        result, ReleaseKind.AGGREGATE_RESULT, 321,
    )  # fmt: skip
    root = tmp_path_factory.mktemp("audit-api")
    url = f"sqlite:///{root / 'audit.db'}"
    manifest = root / "deployment.json"  # where verify starts: this module's deployment
    manifest.write_text(json.dumps(world.ledger.deployment.raw))
    index_into(world.ledger.deployment, chain.rpc_url, url).dispose()
    # a static store: no indexer follows the chain in this module, so the lag is not judged
    settings = AuditSettings(database_url=url, rpc_url=chain.rpc_url, deployment_path=manifest,
                             index_behind_blocks=10_000_000, index_behind_s=31_536_000)  # fmt: skip
    ids = {
        "agreement": hexed(agreement),
        "granted": hexed(granted.request.request_id),
        "denied": hexed(denied.request.request_id),
        "result": hexed(result),
    }
    with audit_client(settings) as client:
        yield Api(client, url, ids)


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:dul:problem:{code}"
    assert body["title"]
    assert body["detail"]
    return body


# --- provenance ---------------------------------------------------------------------------------


def test_provenance_graph_json(api: Api) -> None:
    response = api.client.get(f"/v1/provenance/access/{api.ids['granted']}")
    assert response.status_code == 200
    graph = response.json()
    assert graph["root"] == f"access:{api.ids['granted']}@{api.ids['agreement']}"
    assert graph["direction"] == "both"
    for item in graph["nodes"] + graph["edges"]:
        assert set(item["chain"]) == {"block", "tx_index", "log_index", "tx_hash"}
    relations = {(e["relation"], e["source"].split(":")[0], e["target"].split(":")[0])
                 for e in graph["edges"]}  # fmt: skip
    assert {
        ("used", "access", "agreement"),
        ("used", "access", "dataset"),
        ("wasAssociatedWith", "access", "account"),
        ("actedOnBehalfOf", "account", "organization"),
        ("wasGeneratedBy", "artifact", "access"),
        ("wasAttributedTo", "agreement", "organization"),
    } <= relations
    up = api.client.get(f"/v1/provenance/access/{api.ids['granted']}?direction=up").json()
    assert all(e["relation"] != "wasGeneratedBy" for e in up["edges"])


def test_provenance_prov_json_parses_back(api: Api) -> None:
    response = api.client.get(f"/v1/provenance/agreement/{api.ids['agreement']}?format=prov-json")
    assert response.status_code == 200
    document = ProvDocument.deserialize(content=response.text, format="json")
    records = list(document.get_records())
    assert len(records) > 5
    text = response.text
    assert f"dul:access-{api.ids['granted']}-{api.ids['agreement']}" in text
    body = json.loads(text)
    assert {"entity", "activity", "agent", "used", "wasGeneratedBy", "wasAttributedTo"} <= set(body)
    access = body["activity"][f"dul:access-{api.ids['granted']}-{api.ids['agreement']}"]
    assert "dul:txHash" in access
    assert "dul:block" in access


def test_provenance_fhir_parses_back(api: Api) -> None:
    response = api.client.get(f"/v1/provenance/agreement/{api.ids['agreement']}?format=fhir")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(response.text)
    assert bundle.type == "collection"
    events = [e.resource for e in bundle.entry or [] if isinstance(e.resource, AuditEvent)]
    provenances = [e.resource for e in bundle.entry or [] if isinstance(e.resource, Provenance)]
    outcomes = {e.id: (e.outcome, e.outcomeDesc) for e in events}
    assert outcomes[api.ids["granted"][2:]] == ("0", None)
    assert outcomes[api.ids["denied"][2:]] == ("8", "denied: FIELDS_NOT_IN_SCOPE")
    (released,) = provenances
    assert released.target[0].identifier is not None
    assert released.target[0].identifier.value == api.ids["result"]
    assert released.policy == [f"urn:dul:agreement:{api.ids['agreement']}"]


@pytest.mark.parametrize("kind", ["agreement", "access", "artifact", "dataset", "organization"])
def test_unknown_ids_are_404(api: Api, kind: str) -> None:
    response = api.client.get(f"/v1/provenance/{kind}/0x{'ab' * 32}")
    assert_problem(response, 404, f"{kind}_not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/provenance/agreement/0x1234",
        "/v1/provenance/access/zzz",
        "/v1/provenance/artifact/" + "0x" + "1" * 65,
        "/v1/provenance/organization/" + "a" * 200,
        "/v1/provenance/dataset/%00",
        "/v1/provenance/organization/hospital%20a",
        "/v1/provenance/agreement/%F0%9F%92%A9",
        "/v1/reports/agreements/0x12",
        "/v1/subjects/not-a-ref/accesses",
    ],
)
def test_malformed_ids_are_422(api: Api, path: str) -> None:
    assert_problem(api.client.get(path), 422, "malformed_id")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/provenance/banana/0x" + "ab" * 32, 422, "malformed_kind"),
        ("/v1/provenance/access/0x" + "ab" * 32 + "?direction=sideways", 422, "validation_error"),
        ("/v1/provenance/access/0x" + "ab" * 32 + "?format=xml", 422, "validation_error"),
        ("/v1/provenance/access/0x" + "ab" * 32 + "?limit=0", 422, "validation_error"),
        ("/v1/provenance/access/0x" + "ab" * 32 + "?limit=abc", 422, "validation_error"),
        ("/v1/verify?chain=maybe", 422, "validation_error"),
        ("/v1/nothing-here", 404, "not_found"),
        ("/v1/provenance/access/", 422, "malformed_id"),
    ],
)
def test_bad_requests_get_problem_json_never_500(
    api: Api, path: str, status: int, code: str
) -> None:
    assert_problem(api.client.get(path), status, code)


def test_an_unknown_subject_has_an_empty_report_and_no_provenance(api: Api) -> None:
    """ "Nothing recorded" is an answer for a patient; a graph of nothing is not."""
    report = api.client.get(f"/v1/subjects/0x{'CD' * 32}/accesses")
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["subject"] == f"0x{'cd' * 32}"
    assert (body["accesses"], body["authorizations"], body["consents"]) == ([], [], [])
    assert body["checkpoint_block"] > 0
    assert_problem(
        api.client.get(f"/v1/provenance/subject/0x{'cd' * 32}"), 404, "subject_not_found"
    )


# --- verify, reports, health ----------------------------------------------------------------


def test_verify_endpoint(api: Api) -> None:
    response = api.client.get("/v1/verify")
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is True, report["findings"]
    assert report["checked"]["accesses"] >= 2
    offline = api.client.get("/v1/verify?chain=false").json()
    assert offline["skipped"] == ["chain comparison (no node given)"]


def test_agreement_report(api: Api) -> None:
    response = api.client.get(f"/v1/reports/agreements/{api.ids['agreement']}")
    assert response.status_code == 200
    report = response.json()
    assert (report["accesses"], report["granted"], report["denied"]) == (2, 1, 1)
    assert report["denials_by_reason"] == {"FIELDS_NOT_IN_SCOPE": 1}
    assert report["quota"] == 20
    assert report["quota_used"] == 0.05
    assert report["releases_by_kind"] == {"AGGREGATE_RESULT": 1}
    assert report["released_bytes"] == 321
    assert [h["status"] for h in report["status_history"]] == ["ACTIVE"]
    assert len(report["signatures"]) == 2
    assert_problem(
        api.client.get(f"/v1/reports/agreements/0x{'ab' * 32}"), 404, "agreement_not_found"
    )


def test_health_and_metrics(api: Api) -> None:
    health = api.client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["store"] == "ok"
    assert health["checkpoint"] > 0
    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200
    assert "dul_audit_http_requests_total" in metrics.text


# --- the store unreachable ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}/no/such/audit.db",
        "postgresql+psycopg://dul:dul@127.0.0.1:{port}/dul_audit",
    ],
    ids=["sqlite-missing", "postgres-refused"],
)
def test_store_unreachable_is_503(tmp_path: Path, url: str) -> None:
    url = url.format(tmp=tmp_path, port=free_port())
    settings = AuditSettings(database_url=url, rpc_url="http://127.0.0.1:9")
    with audit_client(settings) as client:
        for path in (
            f"/v1/provenance/agreement/0x{'ab' * 32}",
            f"/v1/reports/agreements/0x{'ab' * 32}",
            f"/v1/subjects/0x{'ab' * 32}/accesses",
            "/v1/verify?chain=false",
        ):
            assert_problem(client.get(path), 503, "store_unavailable")
        # a malformed id is still the client's error, whatever the store
        assert_problem(client.get("/v1/provenance/agreement/0x12"), 422, "malformed_id")
        assert client.get("/healthz").json()["store"] == "unavailable"
    assert not (tmp_path / "no").exists()


def test_node_unreachable_is_503_for_verify(api: Api) -> None:
    settings = AuditSettings(database_url=api.url, rpc_url=f"http://127.0.0.1:{free_port()}",
                             request_timeout=2)  # fmt: skip
    with audit_client(settings) as client:
        assert_problem(client.get("/v1/verify"), 503, "node_unavailable")


# --- the CLI over the same store ----------------------------------------------------------------


def test_cli_provenance_export_and_report(api: Api, tmp_path: Path) -> None:
    runner = CliRunner()
    store = ["--database-url", api.url]
    shown = runner.invoke(audit_cli, ["provenance", "access", api.ids["granted"], *store])
    assert shown.exit_code == 0, shown.output
    assert "wasGeneratedBy" in shown.stdout
    as_json = runner.invoke(
        audit_cli, ["provenance", "agreement", api.ids["agreement"], "--json", *store]
    )
    assert json.loads(as_json.stdout.splitlines()[-1])["root"].startswith("agreement:")
    out = tmp_path / "bundle.json"
    exported = runner.invoke(audit_cli, ["export", "agreement", api.ids["agreement"],
                                         "--format", "fhir", "-o", str(out), *store])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    Bundle.model_validate_json(out.read_text())
    report = runner.invoke(audit_cli, ["report", api.ids["agreement"], *store])
    assert report.exit_code == 0, report.output
    assert "FIELDS_NOT_IN_SCOPE" in report.stdout
    missing = runner.invoke(audit_cli, ["report", "0x" + "ab" * 32, *store])
    assert missing.exit_code == 2
    assert "agreement_not_found" in missing.stderr
    malformed = runner.invoke(audit_cli, ["provenance", "access", "nope", *store])
    assert malformed.exit_code == 2
    assert "malformed_id" in malformed.stderr
    assert "Traceback" not in malformed.output


def test_the_store_is_never_written_by_the_service(api: Api) -> None:
    engine = sa.create_engine(api.url)
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM event")).scalar_one()
    api.client.get("/v1/verify")
    api.client.get(f"/v1/provenance/agreement/{api.ids['agreement']}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM event")).scalar_one() == before
    engine.dispose()

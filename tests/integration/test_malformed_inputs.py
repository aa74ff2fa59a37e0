"""Every REST route of the gateway, the audit service and the patient page, walked from the
service's own OpenAPI document over real HTTP against a real chain, with malformed inputs
(dul/route_walk.py: non-JSON and empty bodies, wrong JSON types, negative and huge integers,
over-long strings, non-hex and odd-length hex, wrong-length ids and addresses, unicode, deep
nesting, duplicate keys, bad path and query parameters), with a valid credential and without:
never a 5xx nor a traceback, every 4xx problem JSON with a code, and nothing changed (the
gateway's outbox and the chain accounts' nonces). A route the walk reached no case for fails."""

from __future__ import annotations

import collections
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from eth_account import Account
from eth_hash.auto import keccak
from pydantic import SecretStr

from audit.auth import AuditRole
from audit.settings import AuditSettings
from audit.testing import (
    audit_token,
    drop_stores,
    index_into,
    make_store_url,
    with_token_file,
)
from dul.chain.testing import ChainHandle
from dul.contracts.world import World
from dul.route_walk import RAW_BODIES, Case, bad_credentials, judge, send, walk
from dul.serving import serve_asgi
from ledger_gateway.patient_page.settings import PatientPageSettings
from ledger_gateway.patient_page.testing import patient_token, serve_patient_page
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration]

GATEWAY_TABLES = (
    "gateway_operations",
    "gateway_transactions",
    "gateway_transaction_bodies",
    "gateway_quota_use",
    "gateway_code_reservations",
    "cohort_leaves",
)


def outbox_counts(database_url: str | None) -> dict[str, int]:
    assert database_url is not None
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {
                t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: S608
                for t in GATEWAY_TABLES
            }
    finally:
        engine.dispose()


def nonces(chain: ChainHandle, addresses: list[str]) -> dict[str, int]:
    return {a: int(chain.rpc("eth_getTransactionCount", a, "latest"), 16) for a in addresses}


def unauthenticated(case: Case) -> bool:
    """The cases sent without a credential: the path, query and raw-body ones (a body's fields
    are never read without one)."""
    return not case.label.startswith("body ") or any(
        case.label == f"body {label}" for label, _, _ in RAW_BODIES
    )


def run_walk(
    client: httpx.Client,
    document: dict[str, Any],
    credential_for: dict[tuple[str, str], dict[str, str]],
    good: dict[str, str] | None = None,
) -> tuple[list[str], collections.Counter[tuple[str, str]]]:
    problems: list[str] = []
    reached: collections.Counter[tuple[str, str]] = collections.Counter()
    seen: set[tuple[str, str]] = set()
    for case in walk(document, good):
        key = (case.method, case.route)
        if key not in seen:  # each route's first case once with each bad credential
            seen.add(key)
            for bad in bad_credentials():
                found = judge(case, send(client, case, {"Authorization": bad}))
                if found is not None:
                    problems.append(f"{found} (Authorization {bad[:20]!r})")
        credentials = [credential_for.get(key, {})]
        if credential_for.get(key) and unauthenticated(case):
            credentials.append({})
        for headers in credentials:
            response = send(client, case, headers)
            if headers and response.status_code not in (401, 403, 429):
                reached[key] += 1  # past authentication and rate limits: the input was judged
            found = judge(case, response)
            if found is not None:
                problems.append(found + (" (no credential)" if not headers else ""))
    return problems, reached


def assert_every_route_walked(
    document: dict[str, Any], reached: collections.Counter[tuple[str, str]]
) -> None:
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    missing = sorted(op for op in operations if not reached[op])
    assert missing == [], (
        f"routes no malformed input of the walk got past authentication: {missing}"
    )


# --- the gateway ---------------------------------------------------------------------------------


def test_no_malformed_request_to_the_gateway_gets_a_5xx_or_changes_anything(
    gateway: GatewayHandle, world: World, chain: ChainHandle
) -> None:
    steward = TokenStore(gateway.settings.tokens_path).create(
        f"malformed-steward-{uuid.uuid4().hex[:8]}", "hospital-a", TokenRole.STEWARD
    )
    gateway_account = Account.from_key(keccak(b"dul tests fixture gateway")).address
    accounts = [gateway_account, world.steward.address, world.requester.address]
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        document = client.get("/openapi.json").json()
        # each route's credential: the role its plausible body is not refused for (401/403)
        credential_for: dict[tuple[str, str], dict[str, str]] = {}
        for path, operations in document["paths"].items():
            for method in operations:
                for token in (gateway.token, steward):
                    probe = client.request(
                        method.upper(), path.replace("{", "").replace("}", ""),
                        headers={"Authorization": f"Bearer {token}"},
                    )  # fmt: skip
                    if probe.status_code not in (401, 403):
                        credential_for[(method.upper(), path)] = {
                            "Authorization": f"Bearer {token}"
                        }
                        break
        before = outbox_counts(gateway.settings.database_url), nonces(chain, accounts)
        problems, reached = run_walk(client, document, credential_for)
        after = outbox_counts(gateway.settings.database_url), nonces(chain, accounts)
        assert client.get("/readyz").status_code == 200
    assert problems == [], "\n".join(problems[:60])
    assert_every_route_walked(document, reached)
    assert after == before


# --- the audit service ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def audit_url(
    request: pytest.FixtureRequest,
    world: World,
    chain: ChainHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    """The audit service over a store indexed from the session's chain (SQLite, and
    PostgreSQL, which refuses what SQLite keeps: NUL in text, integers past 64 bits), served on
    a free port; with a regulator's API token."""
    cleanup: list[tuple[str, str]] = []
    url = make_store_url(request.param, tmp_path_factory.mktemp("malformed-audit"), cleanup)
    try:
        yield from _serve_audit(url, world, chain)
    finally:
        drop_stores(cleanup)


def _serve_audit(url: str, world: World, chain: ChainHandle) -> Iterator[tuple[str, str]]:
    from audit.app import create_app

    index_into(world.ledger.deployment, chain.rpc_url, url).dispose()
    settings = with_token_file(
        AuditSettings(
            database_url=url,
            rpc_url=chain.rpc_url,
            deployment_path=chain.home.deployment,
            index_behind_blocks=10_000_000,
            index_behind_s=31_536_000,
        )
    )
    token = audit_token(settings, AuditRole.REGULATOR)
    with serve_asgi(create_app(settings), "audit") as served:
        yield served, token


def test_no_malformed_request_to_the_audit_service_gets_a_5xx(
    audit_url: tuple[str, str],
) -> None:
    url, token = audit_url
    with httpx.Client(base_url=url, timeout=60) as client:
        document = client.get("/openapi.json").json()
        credential = {"Authorization": f"Bearer {token}"}
        credential_for = {
            (m.upper(), p): credential for p, ops in document["paths"].items() for m in ops
        }
        problems, reached = run_walk(client, document, credential_for, {"kind": "access"})
    assert problems == [], "\n".join(problems[:60])
    assert_every_route_walked(document, reached)


# --- the patient page ----------------------------------------------------------------------------


def test_no_malformed_request_to_the_patient_page_gets_a_5xx_or_changes_anything(
    gateway: GatewayHandle, world: World, chain: ChainHandle, audit_url: tuple[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    steward = TokenStore(gateway.settings.tokens_path).create(
        f"malformed-page-{uuid.uuid4().hex[:8]}", "hospital-a", TokenRole.STEWARD
    )
    settings = PatientPageSettings(
        home=chain.home.root, org="hospital-a", gateway_url=gateway.url,
        gateway_token=SecretStr(steward), audit_url=audit_url[0], rpc_url=chain.rpc_url,
        deployment_path=chain.home.deployment, signin_failures=10_000,
    )  # fmt: skip
    subject = keccak(b"malformed-inputs patient")
    token = patient_token(
        world.steward, subject, world.hospital, world.ledger.chain_id,
        world.ledger.deployment.address("Membership"),
    )  # fmt: skip
    gateway_account = Account.from_key(keccak(b"dul tests fixture gateway")).address
    accounts = [gateway_account, world.steward.address]
    with serve_patient_page(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        document = client.get("/openapi.json").json()
        credential = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/session", headers=credential).status_code == 200
        credential_for = {
            (m.upper(), p): credential for p, ops in document["paths"].items() for m in ops
        }
        before = outbox_counts(gateway.settings.database_url), nonces(chain, accounts)
        problems, reached = run_walk(client, document, credential_for)
        after = outbox_counts(gateway.settings.database_url), nonces(chain, accounts)
    assert problems == [], "\n".join(problems[:60])
    assert_every_route_walked(document, reached)
    assert after == before


def raw_http(url: str, request: bytes) -> bytes:
    """`request`'s bytes sent as they are (httpx refuses to send a URL past 64 kB), and what the
    server answered until it closed the connection (b"" when it reset it first: a server may
    answer and close before reading all of a request it refuses)."""
    address = urlsplit(url)
    assert address.hostname is not None
    assert address.port is not None
    answer = b""
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        try:
            conn.sendall(request)
            while chunk := conn.recv(65536):
                answer += chunk
        except ConnectionError:
            pass
    return answer


@pytest.mark.parametrize(
    ("label", "request_bytes"),
    [
        ("1 MB id", b"GET /v1/agreements/" + b"a" * 1_000_000 + b" HTTP/1.1\r\n"),
        ("60 kB id", b"GET /v1/agreements/0x" + b"ab" * 30_000 + b" HTTP/1.1\r\n"),
        ("800 kB query", b"GET /v1/agreements/0x12?" + b"limit=1&" * 100_000 + b" HTTP/1.1\r\n"),
        (
            "two lengths",
            b"POST /v1/consents HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n",
        ),
        ("negative length", b"POST /v1/consents HTTP/1.1\r\nContent-Length: -1\r\n"),
        ("NUL in a header", b"GET /v1/agreements/0x12 HTTP/1.1\r\nAuthorization: Bearer \x00\r\n"),
    ],
)
def test_requests_past_what_http_allows_are_4xx_and_the_gateway_stays_up(
    gateway: GatewayHandle, label: str, request_bytes: bytes
) -> None:
    """Refused by the HTTP server before the application (uvicorn's own `400 Invalid HTTP
    request received.`, plain text: the one 4xx that is not problem JSON) or by the
    application as problem JSON; never a 5xx, and the gateway answers afterwards."""
    answer = raw_http(gateway.url, request_bytes + b"Host: x\r\nConnection: close\r\n\r\n{}")
    if answer:  # (a reset connection is a refusal too)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:300]
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        plain = answer.endswith(b"Invalid HTTP request received.")
        assert b"application/problem+json" in head or plain, answer[:300]
    assert httpx.get(gateway.url + "/readyz", timeout=30).status_code == 200

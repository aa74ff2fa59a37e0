"""Each gateway route by its raw path over real HTTP (the SDK tests reach most of them through
`GatewayClient` / `StewardClient`): the batch and result routes granted and recorded, and every
relay route refusing a missing token, a token of the wrong role and a malformed body with
problem JSON — before anything is sent."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import httpx
import pytest

from dul.contracts.world import World
from ledger_gateway.client import GatewayClient
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

SUBJECT = "0x" + "5a" * 32
CODE_HASH = "0x" + "c0" * 32
AGREEMENT = "0x" + "ab" * 32
RELAY_ROUTES = (
    "/v1/datasets",
    "/v1/consents",
    "/v1/authorizations",
    f"/v1/agreements/{AGREEMENT}/suspend",
    f"/v1/agreements/{AGREEMENT}/resume",
    f"/v1/agreements/{AGREEMENT}/revoke",
    f"/v1/consents/{SUBJECT}/withdraw",
    f"/v1/authorizations/{CODE_HASH}/revoke",
)


@pytest.fixture(scope="module")
def steward_token(gateway: GatewayHandle) -> str:
    store = TokenStore(gateway.settings.tokens_path)
    return store.create(f"routes-steward-{os.getpid()}", "hospital-a", TokenRole.STEWARD)


def post(gateway: GatewayHandle, path: str, body: Any, token: str | None, **params: str) -> Any:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.post(gateway.url + path, json=body, params=params, headers=headers, timeout=30)


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_batch_then_result_by_raw_path(gateway: GatewayHandle, world: World) -> None:
    agreement = "0x" + world.activate(world.research_terms()).hex()
    with GatewayClient(gateway.url, gateway.token, signer=world.requester) as client:
        bodies = [
            client.sign_access(
                agreement=agreement,
                dataset="hospital-a/omop-cdm",
                fields=["person.year_of_birth"],
                tier="DEIDENTIFIED",
                operation=operation,
            ).model_dump()
            for operation in ("QUERY", "EXPORT_RESULT")
        ]
    batch = post(
        gateway, "/v1/access-requests/batch", {"requests": bodies}, gateway.token, wait="confirmed"
    )
    assert batch.status_code == 201, batch.text
    results = batch.json()["results"]
    assert [r["decision"] for r in results] == ["GRANTED", "GRANTED"]
    assert {r["status"] for r in results} == {"confirmed"}

    access_id = results[0]["access_id"]
    release = {"result_hash": "0x" + hashlib.sha256(b"n=12").hexdigest(),
               "kind": "AGGREGATE_RESULT", "size": 4}  # fmt: skip
    released = post(
        gateway, f"/v1/access-requests/{access_id}/results", release, gateway.token,
        wait="confirmed",
    )  # fmt: skip
    assert released.status_code == 201, released.text
    assert released.json()["status"] == "confirmed"
    assert_problem(
        post(gateway, f"/v1/access-requests/{access_id}/results", {**release, "size": -1},
             gateway.token),
        422, "validation_error",
    )  # fmt: skip
    assert_problem(
        post(gateway, "/v1/access-requests/batch", {"requests": []}, gateway.token),
        422, "validation_error",
    )  # fmt: skip


@pytest.mark.parametrize("path", RELAY_ROUTES)
def test_relay_routes_refuse_before_sending(
    gateway: GatewayHandle, steward_token: str, path: str
) -> None:
    assert_problem(post(gateway, path, {"signed_transaction": "0x00"}, None), 401, "unauthorized")
    assert_problem(
        post(gateway, path, {"signed_transaction": "0x00"}, gateway.token), 403, "forbidden"
    )
    malformed = post(gateway, path, {"signed_transaction": "0x00"}, steward_token)
    assert malformed.status_code == 422, malformed.text
    assert malformed.json()["code"] in ("malformed_transaction", "validation_error")
    assert_problem(post(gateway, path, {"nonsense": 1}, steward_token), 422, "validation_error")


def test_signatures_route_refuses_a_bad_signature(
    gateway: GatewayHandle, world: World, steward_token: str
) -> None:
    terms = world.research_terms()
    world.ledger.transact(world.steward, "AgreementRegistry", "propose", terms.as_abi())
    path = f"/v1/agreements/0x{terms.agreement_id.hex()}/signatures"
    body = {"signer": world.steward.address, "signature": "0x" + "11" * 65}
    assert_problem(post(gateway, path, body, None), 401, "unauthorized")
    assert_problem(post(gateway, path, body, steward_token), 422, "bad_signature")
    assert_problem(post(gateway, path, {"signer": "me"}, steward_token), 422, "validation_error")


@pytest.mark.parametrize(
    "path", ["/v1/access-requests", "/v1/access-requests/batch", "/v1/consents"]
)
def test_a_body_past_the_ceiling_is_refused_before_anything_reads_it(
    gateway: GatewayHandle, path: str
) -> None:
    """No token needed to be refused: the ceiling comes before authentication (which reads
    nothing) and before FastAPI would have read the whole body into memory."""
    oversized = b"[" + b" " * gateway.settings.max_body_bytes + b"]"
    response = httpx.post(gateway.url + path, content=oversized, timeout=30,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert_problem(response, 413, "body_too_large")
    assert str(gateway.settings.max_body_bytes) in response.json()["detail"]
    # the service still answers afterwards
    assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200

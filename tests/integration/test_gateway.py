"""The gateway over real HTTP, against the real chain: decisions, idempotency, recording,
result releases, and every bad input answered with problem JSON and nothing changed."""

from __future__ import annotations

import gc
import os
import time

import httpx
import pytest
from eth_hash.auto import keccak

from dul.contracts.typed_data import AccessRequest
from dul.contracts.world import World, derived_signer
from dul.domain import Decision, DenyReason, Operation, Tier
from ledger_gateway.client import GatewayClientError, sign_request
from ledger_gateway.models import AccessRequestIn
from ledger_gateway.testing import GatewayHandle

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


def request(world: World, agreement: bytes, **overrides: object) -> AccessRequest:
    values: dict[str, object] = {
        "request_id": os.urandom(32),
        "agreement_id": agreement,
        "dataset_id": world.dataset,
        "field_mask": 0b0110,
        "tier": Tier.DEIDENTIFIED,
        "operation": Operation.QUERY,
        "request_hash": keccak(b"SELECT count(*) FROM condition_occurrence"),
        "deadline": int(time.time()) + 600,
    }
    values.update(overrides)
    return AccessRequest(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def agreement(world: World) -> bytes:
    return world.activate(world.research_terms(quota=50))


def test_a_granted_access_is_answered_at_once_and_recorded_on_chain(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    body = sign_request(world.requester, request(world, agreement), gateway.domain)
    answer = gateway.client.request_access(body)
    assert answer.decision == "GRANTED"
    assert answer.reasons == []
    assert answer.status in ("pending", "submitted", "confirmed")
    confirmed = gateway.client.get_access(answer.access_id, wait=True)
    assert confirmed.status == "confirmed"
    assert confirmed.block_number is not None
    assert (
        world.ledger.call("AccessLog", "decisionOf", bytes.fromhex(body.request_id[2:]), agreement)
        == Decision.GRANTED
    )


def test_a_denied_access_is_recorded_with_its_reasons(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    body = sign_request(
        world.requester,
        request(world, agreement, tier=Tier.IDENTIFIED, field_mask=1 << 7),
        gateway.domain,
    )
    answer = gateway.client.request_access(body, wait=True)
    assert answer.decision == "DENIED"
    assert answer.reasons == ["FIELDS_NOT_IN_SCOPE", "TIER_ABOVE_CEILING"]
    assert answer.status == "confirmed"
    assert (
        world.ledger.call("AccessLog", "decisionOf", bytes.fromhex(body.request_id[2:]), agreement)
        == Decision.DENIED
    )


def test_same_request_id_same_body_same_answer(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    body = sign_request(world.requester, request(world, agreement), gateway.domain)
    first = gateway.client.request_access(body, wait=True)
    again = gateway.client.request_access(body)
    assert again == first


def test_same_request_id_other_body_is_a_conflict(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    original = request(world, agreement)
    gateway.client.request_access(sign_request(world.requester, original, gateway.domain))
    other = AccessRequest(**{**original.__dict__, "field_mask": 0b0010})
    with pytest.raises(GatewayClientError) as caught:
        gateway.client.request_access(sign_request(world.requester, other, gateway.domain))
    assert (caught.value.status, caught.value.code) == (409, "request_id_conflict")


def test_a_batch_is_decided_and_recorded(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    bodies = [
        sign_request(world.requester, request(world, agreement), gateway.domain) for _ in range(20)
    ]
    answers = gateway.client.request_access_batch(bodies, wait=True)
    assert [a.decision for a in answers] == ["GRANTED"] * 20
    assert {a.status for a in answers} == {"confirmed"}
    assert len({a.tx_hash for a in answers}) <= 3  # batched into few transactions


def test_a_batch_with_one_forged_signature_is_refused_whole_and_nothing_recorded(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    # 20 requests: their signatures are checked on the verifier threads, not one by one
    bodies = [
        sign_request(world.requester, request(world, agreement), gateway.domain) for _ in range(20)
    ]
    forged = sign_request(derived_signer("forger"), request(world, agreement), gateway.domain)
    bodies[13] = forged.model_copy(update={"requester": world.requester.address})
    with pytest.raises(GatewayClientError) as caught:
        gateway.client.request_access_batch(bodies)
    assert (caught.value.status, caught.value.code) == (422, "bad_signature")
    assert forged.request_id in caught.value.problem["detail"]
    for body in (bodies[0], bodies[13], bodies[19]):
        with pytest.raises(GatewayClientError) as missing:
            gateway.client.get_access(body.request_id)
        assert missing.value.status == 404


def test_a_query_the_decision_layer_does_not_take_is_answered_by_the_api(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    body = sign_request(world.requester, request(world, agreement), gateway.domain)
    headers = {"Authorization": f"Bearer {gateway.token}"}
    odd = httpx.post(
        f"{gateway.url}/v1/access-requests?wait=soon",
        content=body.model_dump_json(),
        headers=headers,
    )
    assert odd.status_code == 422
    assert odd.json()["code"] == "validation_error"
    assert odd.json()["errors"][0]["loc"] == ["query", "wait"]
    unauthorized = httpx.post(
        f"{gateway.url}/v1/access-requests/batch", json={"requests": [body.model_dump()]}
    )
    assert unauthorized.status_code == 401
    assert unauthorized.json()["code"] == "unauthorized"
    fine = httpx.post(
        f"{gateway.url}/v1/access-requests?wait=confirmed",
        content=body.model_dump_json(),
        headers=headers,
    )
    assert fine.status_code == 201
    assert fine.headers["location"] == f"/v1/access-requests/{body.request_id}"
    assert fine.json()["status"] == "confirmed"


def test_quota_is_enforced_across_requests(world: World, gateway: GatewayHandle) -> None:
    small = world.activate(world.research_terms(quota=2))
    bodies = [
        sign_request(world.requester, request(world, small), gateway.domain) for _ in range(3)
    ]
    answers = gateway.client.request_access_batch(bodies, wait=True)
    assert [a.decision for a in answers] == ["GRANTED", "GRANTED", "DENIED"]
    assert answers[2].reasons == ["QUOTA_EXHAUSTED"]
    assert {a.status for a in answers} == {"confirmed"}


def test_a_suspension_is_honoured_by_the_next_decision(
    world: World, gateway: GatewayHandle
) -> None:
    suspended = world.activate(world.research_terms())
    world.ledger.transact(
        world.steward, "AgreementRegistry", "suspend", suspended, keccak(b"audit")
    )
    time.sleep(0.5)  # the view follows chain events every 0.25 s
    answer = gateway.client.request_access(
        sign_request(world.requester, request(world, suspended), gateway.domain)
    )
    assert answer.decision == "DENIED"
    assert answer.reasons == ["AGREEMENT_NOT_ACTIVE"]


def test_a_result_release_is_recorded_and_only_what_the_access_allowed(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    body = sign_request(world.requester, request(world, agreement), gateway.domain)
    access = gateway.client.request_access(body, wait=True)
    release = gateway.client.release_result(
        access.access_id, keccak(b"counts"), "AGGREGATE_RESULT", 512, wait=True
    )
    assert release.status == "confirmed"
    with pytest.raises(GatewayClientError) as caught:
        gateway.client.release_result(access.access_id, keccak(b"rows"), "IDENTIFIED_EXTRACT", 10)
    assert (caught.value.status, caught.value.code) == (409, "release_not_allowed")


def test_a_request_signed_by_someone_else_is_refused_and_not_recorded(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    body = sign_request(derived_signer("forger"), request(world, agreement), gateway.domain)
    forged = body.model_copy(update={"requester": world.requester.address})
    with pytest.raises(GatewayClientError) as caught:
        gateway.client.request_access(forged)
    assert (caught.value.status, caught.value.code) == (422, "bad_signature")
    with pytest.raises(GatewayClientError) as missing:
        gateway.client.get_access(body.request_id)
    assert missing.value.status == 404


def test_an_expired_signature_is_refused(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    body = sign_request(
        world.requester, request(world, agreement, deadline=int(time.time()) - 1), gateway.domain
    )
    with pytest.raises(GatewayClientError) as caught:
        gateway.client.request_access(body)
    assert (caught.value.status, caught.value.code) == (422, "request_expired")


@pytest.mark.parametrize("ahead", [2**64 - 1, 2**63, None])
def test_a_deadline_beyond_the_longest_lifetime_is_refused_and_not_recorded(
    world: World, gateway: GatewayHandle, agreement: bytes, ahead: int | None
) -> None:
    """2^64 - 1 (the largest the type holds), 2^63 (past a signed 64-bit column) and one minute
    past the configured lifetime: 422 `deadline_too_far`, nothing recorded."""
    lifetime = gateway.settings.max_request_lifetime_s
    assert lifetime == 86_400
    deadline = ahead if ahead is not None else int(time.time()) + lifetime + 60
    body = sign_request(world.requester, request(world, agreement, deadline=deadline),
                        gateway.domain)  # fmt: skip
    with pytest.raises(GatewayClientError) as caught:
        gateway.client.request_access(body)
    assert (caught.value.status, caught.value.code) == (422, "deadline_too_far")
    with pytest.raises(GatewayClientError) as missing:
        gateway.client.get_access(body.request_id)
    assert missing.value.status == 404


def test_an_unknown_agreement_is_404(world: World, gateway: GatewayHandle) -> None:
    body = sign_request(
        world.requester, request(world, keccak(b"no such agreement")), gateway.domain
    )
    with pytest.raises(GatewayClientError) as caught:
        gateway.client.request_access(body)
    assert (caught.value.status, caught.value.code) == (404, "unknown_agreement")


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [({}, 401, "unauthorized"), ({"Authorization": "Bearer dulgw_nope"}, 401, "unauthorized")],
)
def test_unknown_tokens_are_401(
    gateway: GatewayHandle, headers: dict[str, str], status: int, code: str
) -> None:
    response = httpx.post(f"{gateway.url}/v1/access-requests", json={}, headers=headers)
    assert response.status_code in (status, 422)
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[]",
        b'{"request_id": 5}',
        b'{"request_id": "0x' + b"00" * 32 + b'", "extra": 1}',
        b"\xff\xfe",
    ],
)
def test_malformed_bodies_get_problem_json_never_500(
    gateway: GatewayHandle, payload: bytes
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/access-requests",
        content=payload,
        headers={"Authorization": f"Bearer {gateway.token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["status"] == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_oversized_batch_is_refused(world: World, gateway: GatewayHandle, agreement: bytes) -> None:
    one = sign_request(world.requester, request(world, agreement), gateway.domain)
    limit = gateway.settings.max_batch_request
    bodies: list[AccessRequestIn] = [one] * (limit + 1)
    with pytest.raises(GatewayClientError) as caught:
        gateway.client.request_access_batch(bodies)
    assert (caught.value.status, caught.value.code) == (422, "batch_too_large")


def test_health_ready_and_metrics(gateway: GatewayHandle, world: World) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {
        "status": "ok",
        "service": "gateway",
        "instance": None,  # started here, not by `dul up` (which gives each start an id)
        "org": "hospital-a",
        "chain_id": world.ledger.chain_id,
    }
    ready = gateway.client.ready()
    assert ready["ready"] is True
    assert all(ready["checks"].values())
    assert ready["submitter_lease"] == "held"  # the only process on its outbox
    assert gc.get_freeze_count() > 0  # what start-up built is out of the collector's walks
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert "dul_gateway_decisions_total" in metrics
    assert httpx.get(f"{gateway.url}/docs").status_code == 200


def test_a_token_of_another_organization_is_403(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    from ledger_gateway.tokens import TokenRole, TokenStore

    other = TokenStore(gateway.settings.tokens_path).create(
        f"other-org-{os.getpid()}", "hospital-b", TokenRole.ACCESS_SERVICE
    )
    body = sign_request(world.requester, request(world, agreement), gateway.domain)
    response = httpx.post(
        f"{gateway.url}/v1/access-requests",
        json=body.model_dump(),
        headers={"Authorization": f"Bearer {other}"},
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    missing = httpx.get(
        f"{gateway.url}/v1/access-requests/{body.request_id}",
        headers={"Authorization": f"Bearer {gateway.token}"},
    )
    assert missing.status_code == 404  # nothing was recorded


def test_a_request_id_recorded_under_another_agreement_is_another_access(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    """On chain an access is its agreement and request id: a request id already recorded
    under another agreement (a requester reusing it at another hospital, or another gateway
    recording it first) takes nothing from this gateway's grant, which is recorded and
    confirmed beside it."""
    other = world.activate(world.research_terms())
    squatted = world.access_record(other, Decision.DENIED, DenyReason.QUOTA_EXHAUSTED)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [squatted.as_abi()])
    taken = squatted.request.request_id
    body = sign_request(world.requester, request(world, agreement, request_id=taken),
                        gateway.domain)  # fmt: skip
    answer = gateway.client.request_access(body)
    assert answer.decision == "GRANTED"
    settled = gateway.client.get_access(answer.access_id, wait=True)
    assert settled.status == "confirmed", settled
    assert world.ledger.call("AccessLog", "decisionOf", taken, other) == Decision.DENIED
    assert world.ledger.call("AccessLog", "decisionOf", taken, agreement) == Decision.GRANTED


def test_a_request_id_another_gateway_of_the_holder_recorded_is_no_confirmation(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    """Under one agreement a request id is one access. A gateway that finds it taken there by
    another gateway account of the holder (one that keeps another outbox) must not take that
    record for its own: a grant reported confirmed would be on no chain."""
    squatted = world.access_record(agreement, Decision.DENIED, DenyReason.QUOTA_EXHAUSTED)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [squatted.as_abi()])
    taken = squatted.request.request_id
    body = sign_request(world.requester, request(world, agreement, request_id=taken),
                        gateway.domain)  # fmt: skip
    answer = gateway.client.request_access(body)
    assert answer.decision == "GRANTED"  # decided before the chain is asked
    settled = gateway.client.get_access(answer.access_id, wait=True)
    assert settled.status == "failed", settled
    assert settled.error == "AccessLogDuplicateRequest"
    assert world.ledger.call("AccessLog", "decisionOf", taken, agreement) == Decision.DENIED
    ready = gateway.client.ready()  # an answered grant on no chain is the operator's alarm
    assert (ready["ready"], ready["status"]) == (True, "degraded"), ready
    assert "refused to record" in ready["degraded"]["operations_refused"]

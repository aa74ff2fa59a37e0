"""A request the chain view can decide without a read (`AccessService._decide_known`) is decided
exactly as the awaiting path (`_decide_one`) decides it — the same stored access, the same
refusal — and the view answers from its caches only while they hold (`ChainView.known_*`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from eth_typing import ChecksumAddress, HexAddress, HexStr
from prometheus_client import CollectorRegistry, Counter

from dul.contracts.deployment import Deployment
from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
from dul.contracts.world import derived_signer
from dul.domain import (
    AgreementStatus,
    BreakGlassReason,
    ConsentPolicy,
    Decision,
    DenyReason,
    Operation,
    Role,
    Scenario,
    Tier,
    break_glass_ref,
)
from ledger_gateway import service as service_module
from ledger_gateway.chain_view import ChainView
from ledger_gateway.client import sign_request
from ledger_gateway.errors import GatewayError
from ledger_gateway.migrations import migrate
from ledger_gateway.models import AccessRequestIn
from ledger_gateway.policy import AgreementState
from ledger_gateway.service import AccessService, body_hash
from ledger_gateway.store import SqlOutbox, make_engine
from ledger_gateway.tokens import Token, TokenRole

ORG = b"hospital-a".ljust(32, b"\0")
OTHER = b"hospital-b".ljust(32, b"\0")
REQUESTER_ORG = b"lab".ljust(32, b"\0")
DATASET = bytes([7]) * 32
DOMAIN = access_log_domain(31337, ChecksumAddress(HexAddress(HexStr("0x" + "11" * 20))))
MEMBER = derived_signer("member")
STRANGER = derived_signer("stranger")


class NoRpc:
    async def request(self, *args: Any) -> Any:
        raise AssertionError("the view read the chain")


def _view() -> ChainView:
    addresses = {
        name: "0x" + "33" * 20 for name in ("AgreementRegistry", "Membership", "AccessLog")
    }
    deployment = Deployment(31337, "0x" + "22" * 20, addresses, {})  # type: ignore[arg-type]
    view = ChainView(NoRpc(), deployment)  # type: ignore[arg-type]
    now = int(time.time())
    for agreement_id, holder, status in (
        (b"\1" * 32, ORG, AgreementStatus.ACTIVE),
        (b"\2" * 32, OTHER, AgreementStatus.ACTIVE),
        (b"\3" * 32, ORG, AgreementStatus.SUSPENDED),
    ):
        state = AgreementState(
            agreement_id=agreement_id, status=status, scenario=Scenario.RESEARCH,
            max_tier=Tier.PSEUDONYMIZED, operations=0b11, consent_policy=ConsentPolicy.NONE,
            valid_from=0, valid_until=now + 3600, quota=5, holder=holder,
            requester=REQUESTER_ORG, allowed_fields={},
        )  # fmt: skip
        view._agreements[agreement_id] = state
        view._fields[(agreement_id, DATASET)] = 0b0111
        view._used[agreement_id] = 2
    for agreement_id in (b"\1" * 32, b"\2" * 32, b"\3" * 32):  # scoped to the dataset once
        asyncio.run(view.agreement(agreement_id, DATASET))
    view._roles[(MEMBER.address.lower(), REQUESTER_ORG, Role.REQUESTER)] = True
    view._roles[(STRANGER.address.lower(), REQUESTER_ORG, Role.REQUESTER)] = False
    return view


def _service(view: ChainView) -> AccessService:
    decisions = Counter("d", "d", ["decision", "reason"], registry=CollectorRegistry())
    return AccessService(
        org=ORG, view=view, outbox=None, domain=DOMAIN,  # type: ignore[arg-type]
        deadline_margin_s=30, decisions=decisions,
    )  # fmt: skip


def _request(**change: Any) -> AccessRequestIn:
    signer = change.pop("signer", MEMBER)
    fields: dict[str, Any] = {
        "request_id": bytes([len(change)]) * 32, "agreement_id": b"\1" * 32,
        "dataset_id": DATASET, "field_mask": 0b0110, "tier": Tier.DEIDENTIFIED,
        "operation": Operation.QUERY, "request_hash": b"\x09" * 32,
        "deadline": int(time.time()) + 6 * 3600,  # signed at collection
    }  # fmt: skip
    fields.update(change)
    return sign_request(signer, AccessRequest(**fields), DOMAIN)


CASES = {
    "granted": _request(),
    "fields out of scope": _request(field_mask=0b1000),
    "tier above the ceiling": _request(tier=Tier.IDENTIFIED),
    "not a member": _request(signer=STRANGER),
    "suspended": _request(agreement_id=b"\3" * 32),
    "another holder's": _request(agreement_id=b"\2" * 32),
    "expired": _request(deadline=int(time.time()) + 5),
    "break-glass without a patient": _request(
        authorization_ref=break_glass_ref(BreakGlassReason.LIFE_THREATENING_EMERGENCY)
    ),
}


def _outcome(decide: Any) -> Any:
    try:
        decided = decide()
        if asyncio.iscoroutine(decided):
            decided = asyncio.run(decided)
    except GatewayError as error:
        return type(error), str(error), error.code
    assert decided is not None
    again = None if decided.again is None else decided.again(False)  # the quota used up
    return decided.access, decided.named, again


@pytest.mark.parametrize("case", list(CASES))
def test_the_known_path_decides_as_the_awaiting_path(case: str) -> None:
    body = CASES[case]
    service = _service(_view())
    now = int(time.time())
    checked = service._verify_or_refusal(body, now)
    digest = body_hash(body)
    known = _outcome(lambda: service._decide_known(body, digest, now, checked))
    awaited = _outcome(
        lambda: service._decide_one(
            body, bytes.fromhex(body.request_id[2:]), digest, now, None, checked
        )
    )
    assert known == awaited


def test_the_view_answers_from_its_caches_only_while_they_hold() -> None:
    view = _view()
    agreement_id = b"\1" * 32
    view._fields[(agreement_id, bytes(32))] = 1
    assert view.known_agreement(agreement_id, bytes(32)) is None  # never scoped yet
    scoped = asyncio.run(view.agreement(agreement_id, bytes(32)))
    assert scoped is not None
    assert view.known_agreement(agreement_id, bytes(32)) is scoped
    assert view.known_agreement(agreement_id, DATASET) is not None
    view._drop([{"address": "0x" + "44" * 20, "topics": ["0x" + "55" * 32, "0x" + "01" * 32]}])
    assert view.known_agreement(agreement_id, DATASET) is None  # an event dropped it
    assert view.known_role(MEMBER.address.upper().replace("0X", "0x"), REQUESTER_ORG,
                           Role.REQUESTER) is True  # fmt: skip
    assert view.known_role(MEMBER.address, OTHER, Role.REQUESTER) is None
    view._drop([{"address": "0x" + "33" * 20, "topics": ["0x" + "55" * 32]}])  # Membership
    assert view.known_role(MEMBER.address, REQUESTER_ORG, Role.REQUESTER) is None


def test_a_request_the_view_cannot_answer_is_left_to_the_awaiting_path() -> None:
    service = _service(_view())
    now = int(time.time())
    stranger_org = _request(agreement_id=b"\1" * 32)
    service.view._roles.clear()
    checked = service._verify_or_refusal(stranger_org, now)
    assert service._decide_known(stranger_org, body_hash(stranger_org), now, checked) is None
    with_cohort = stranger_org.model_copy(update={"cohort": []})
    assert service._decide_known(with_cohort, body_hash(with_cohort), now, checked) is None


def test_a_grant_refused_by_the_store_is_decided_again_with_the_quota_used_up() -> None:
    body = CASES["granted"]
    service = _service(_view())
    now = int(time.time())
    checked = service._verify_or_refusal(body, now)
    decided = service._decide_known(body, body_hash(body), now, checked)
    assert decided is not None
    assert decided.access.decision == Decision.GRANTED
    assert decided.again is not None
    again = decided.again(False)
    assert (again.decision, again.reasons) == (Decision.DENIED, (DenyReason.QUOTA_EXHAUSTED,))
    assert again.quota is None
    assert again.body_hash == decided.access.body_hash


def test_a_large_call_lets_the_event_loop_turn_between_runs_of_requests(tmp_path: Path) -> None:
    """The submitter's steps share the event loop with decisions: a 500-request batch decided
    in one go stalled them for tens of milliseconds each."""
    count = 5 * service_module.YIELD_EVERY
    bodies = [_request(request_id=i.to_bytes(32, "big")) for i in range(1, count + 1)]
    token = Token("bench", "hospital-a", TokenRole.ACCESS_SERVICE, created_at=0)
    service = _service(_view())

    async def scenario() -> tuple[int, int]:
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
        migrate(url)
        outbox = SqlOutbox(make_engine(url))
        await outbox.start()
        service.outbox = outbox
        now = int(time.time())
        checks = [service._verify_or_refusal(body, now) for body in bodies]

        async def checked(*_: Any) -> list[Any]:
            return checks  # no thread hop: only the decisions' own turns are counted

        service._verify_all = checked  # type: ignore[method-assign,assignment]
        turns = 0
        stop = False

        async def ticker() -> None:
            nonlocal turns
            while not stop:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = turns
        at_store: list[int] = []
        store = outbox.add_accesses

        async def add_accesses(accesses: Any) -> Any:
            at_store.append(turns)
            return await store(accesses)

        outbox.add_accesses = add_accesses  # type: ignore[method-assign]
        answers = await service.answers(token, bodies)
        stop = True
        await task
        await outbox.close()
        assert len(answers) == count
        return started, at_store[0]

    started, at_store = asyncio.run(scenario())
    assert at_store - started >= 4  # one turn per YIELD_EVERY requests (5 runs: 4 turns between)


def test_a_cohort_grant_the_store_refuses_is_answered_as_the_denial_it_stored(
    tmp_path: Path,
) -> None:
    """The agreement has three units left: the fourth grant is refused by the store's quota
    count and stored as a denial, which records no cohort — its answer must not show the
    cohort the refused grant would have recorded."""
    subjects = ["0x" + bytes([n]).hex() * 32 for n in (1, 2, 3)]
    bodies = [
        _request(request_id=n.to_bytes(32, "big")).model_copy(update={"cohort": subjects})
        for n in range(1, 5)
    ]
    token = Token("svc", "hospital-a", TokenRole.ACCESS_SERVICE, created_at=0)
    service = _service(_view())

    async def scenario() -> list[Any]:
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
        migrate(url)
        outbox = SqlOutbox(make_engine(url))
        await outbox.start()
        service.outbox = outbox
        try:
            return [answer.model() for answer in await service.answers(token, bodies)]
        finally:
            await outbox.close()

    answers = asyncio.run(scenario())
    assert [a.decision for a in answers] == ["GRANTED"] * 3 + ["DENIED"]
    assert answers[3].reasons == ["QUOTA_EXHAUSTED"]
    assert [a.cohort.size for a in answers if a.cohort] == [3, 3, 3, 0]
    refused = answers[3].cohort
    assert refused is not None
    assert (refused.root, refused.admitted, refused.excluded) == (None, [], 3)


def test_a_decided_access_is_stored_with_each_of_its_fields() -> None:
    """`_stored` builds the access by position: every field holds what its name says."""
    service = _service(_view())
    body = CASES["granted"]
    digest = body_hash(body)
    now = int(time.time())
    decided = service._decide_known(body, digest, now, service._verify(body, now))
    assert decided is not None
    request, signature, signer = service._verify(body, now)
    access = decided.access
    assert access._asdict() == {
        "request_id": request.request_id,
        "body_hash": digest,
        "org": ORG,
        "agreement_id": b"\1" * 32,
        "decision": Decision.GRANTED,
        "reasons": (),
        "record": AccessRecord(request, signer, signature, Decision.GRANTED).encode(),
        "cohort": None,
        "authorization_fault": None,
        "quota": 5,
        "chain_used": 2,
        "code": None,
    }
    stranger = CASES["not a member"]
    denied = service._decide_known(stranger, digest, now, service._verify(stranger, now))
    assert denied is not None
    assert denied.access.decision == Decision.DENIED
    assert denied.access.reasons == (DenyReason.REQUESTER_NOT_AUTHORIZED,)
    assert (denied.access.quota, denied.access.chain_used, denied.access.cohort) == (None, 0, None)

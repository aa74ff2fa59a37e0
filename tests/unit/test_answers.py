"""The access routes' answers written without their models (`ledger_gateway.answers`) are the
models' JSON byte for byte, for every shape an answer takes; and a request's canonical body
hash (`service.signed_json`) is the one pydantic's `model_dump_json` gave, for any valid body."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dul.domain import AuthorizationFault, Decision, DenyReason, Operation, Tier
from ledger_gateway.answers import Answer, access_out, batch_json, json_bytes
from ledger_gateway.models import AccessBatchOut, AccessRequestIn
from ledger_gateway.outbox import CohortLeaves, OperationKind, OperationStatus, OperationView
from ledger_gateway.service import signed_json

b32 = st.binary(min_size=32, max_size=32)
errors = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(['a "quoted" \\ \n\t\x01 é']))
leaves = st.one_of(
    st.none(),
    st.lists(b32, min_size=1, max_size=3, unique=True).map(
        lambda refs: CohortLeaves(bytes(32), len(refs), b"".join(sorted(refs)))
    ),
)
views = st.builds(
    OperationView,
    key=b32,
    kind=st.just(OperationKind.ACCESS),
    body_hash=b32,
    org=b32,
    agreement_id=b32,
    decision=st.sampled_from([Decision.GRANTED, Decision.DENIED, None]),
    reasons=st.lists(st.sampled_from(list(DenyReason)), max_size=4).map(tuple),
    status=st.sampled_from(list(OperationStatus)),
    payload=st.just(b""),
    tx_hash=st.one_of(st.none(), b32),
    block_number=st.one_of(st.none(), st.integers(0, 2**63)),
    error=errors,
    created_at=st.just(0.0),
    confirmed_at=st.none(),
    authorization_fault=st.one_of(st.none(), st.sampled_from([int(f) for f in AuthorizationFault])),
)
answers = st.builds(Answer, views, leaves, st.one_of(st.none(), st.integers(0, 10)))


@settings(max_examples=400, deadline=None)
@given(answers)
def test_an_answer_is_its_model_byte_for_byte(answer: Answer) -> None:
    assert answer.json() == json_bytes(access_out(answer.view, answer.leaves, answer.named))


@settings(max_examples=100, deadline=None)
@given(st.lists(answers, min_size=1, max_size=5))
def test_a_batch_answer_is_its_model_byte_for_byte(batch: list[Answer]) -> None:
    model = AccessBatchOut(results=[answer.model() for answer in batch])
    assert batch_json(batch) == model.__pydantic_serializer__.to_json(model)


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdefABCDEF", min_size=2 * size, max_size=2 * size).map(
        lambda digits: "0x" + digits
    )


bodies = st.builds(
    AccessRequestIn,
    request_id=_hex(32),
    agreement_id=_hex(32),
    dataset_id=_hex(32),
    field_mask=st.integers(1, 2**256 - 1),
    tier=st.sampled_from([t.name for t in Tier]),
    operation=st.sampled_from([o.name for o in Operation]),
    request_hash=_hex(32),
    deadline=st.integers(0, 2**64 - 1),
    authorization_ref=_hex(32),
    requester=_hex(20),
    signature=_hex(65),
    cohort=st.one_of(st.none(), st.lists(_hex(32), max_size=2)),
)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_the_signed_fields_are_written_as_pydantic_writes_them(body: AccessRequestIn) -> None:
    assert signed_json(body) == body.model_dump_json(exclude={"cohort"})

"""`/v1/access-requests`: ask before each access, report each result that leaves."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from dul.contracts.typed_data import AccessRequest
from dul.domain import Operation, ReleaseKind, Tier
from ledger_gateway.api.deps import AccessCallerDep, ContextDep
from ledger_gateway.errors import BadRequestError, NotFoundError
from ledger_gateway.models import (
    AccessBatchIn,
    AccessBatchOut,
    AccessDraftIn,
    AccessOut,
    AccessRequestIn,
    ReleaseOut,
    ResultReleaseIn,
)
from ledger_gateway.steward import steward_of

router = APIRouter(prefix="/v1/access-requests", tags=["access requests"])

WaitQuery = Annotated[
    Literal["confirmed"] | None,
    Query(description="`confirmed`: answer once the decision is on chain (or failed)"),
]


def _hex32(value: str) -> bytes:
    if len(value) != 66 or not value.startswith("0x"):
        raise BadRequestError(f"{value!r} is not a 0x-prefixed 32-byte id")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise BadRequestError(f"{value!r} is not a 0x-prefixed 32-byte id") from None


def json_response(answer: BaseModel, status_code: int, **headers: str) -> Response:
    """`answer` serialized once (FastAPI would validate it again first: with a 10,000-subject
    cohort that costs milliseconds for nothing)."""
    return Response(
        answer.model_dump_json(), status_code=status_code, media_type="application/json",
        headers=headers,
    )  # fmt: skip


async def access_request_body(request: Request) -> AccessRequestIn:
    """The body, parsed and validated in one pass by pydantic's JSON parser (FastAPI's
    `json.loads` and then validation take twice as long for a 10,000-subject cohort)."""
    try:
        return AccessRequestIn.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/AccessRequestIn"}}
        },
    }
}


@router.post("", response_model=AccessOut, status_code=201, openapi_extra=_BODY_SCHEMA)
async def request_access(
    body: Annotated[AccessRequestIn, Depends(access_request_body)],
    context: ContextDep,
    caller: AccessCallerDep,
    wait: WaitQuery = None,
) -> Response:
    """Decide one access request; the decision is durable before this answers.

    Under a COHORT_CONSENT agreement, `cohort` names the subjects the access would include; the
    answer's `cohort.admitted` are those whose consent covers the agreement now (run the access
    over them only), and their tree head is what the chain records."""
    [answer] = await context.access.decide(caller.token, [body])
    if wait == "confirmed":
        answer = await wait_for(context, answer)
    return json_response(answer, 201, Location=f"/v1/access-requests/{answer.access_id}")


DEFAULT_VALIDITY_S = 300
"""How long a drafted request's signature stays valid unless the draft names a deadline."""


async def _field_mask(request: Request, draft: AccessDraftIn, dataset_id: bytes) -> int:
    if draft.field_mask is not None:
        return draft.field_mask
    names = await steward_of(request.app).field_names(dataset_id)
    if not names:
        raise NotFoundError(f"no dataset {draft.dataset_id} on the ledger", code="unknown_dataset")
    mask = 0
    for item in draft.fields or ():
        if isinstance(item, int):
            if item >= len(names):
                raise BadRequestError(
                    f"field index {item} is out of range: the dataset has {len(names)} fields",
                    code="unknown_field",
                )
            mask |= 1 << item
        elif item in names:
            mask |= 1 << names.index(item)
        else:
            raise BadRequestError(
                f"the dataset has no field {item!r}; its fields: {', '.join(names)}",
                code="unknown_field",
            )
    return mask


@router.post("/typed-data")
async def access_typed_data(
    draft: AccessDraftIn, request: Request, context: ContextDep, caller: AccessCallerDep
) -> dict[str, Any]:
    """The EIP-712 JSON (eth_signTypedData_v4) of an access request, for the requester's
    wallet, HSM or `dul access request` to sign; fields may be named. Post the signed request to
    `/v1/access-requests` with the message's values (snake_case; tier and operation by name),
    `requester` and `signature`."""
    dataset_id = _hex32(draft.dataset_id)
    lifetime = context.access.max_request_lifetime_s
    if draft.deadline is not None and draft.deadline > int(time.time()) + lifetime:
        raise BadRequestError(
            f"deadline {draft.deadline} is more than {lifetime} s from now: the gateway would "
            "refuse the signed request; sign a nearer deadline",
            code="deadline_too_far",
        )
    access_request = AccessRequest(
        request_id=_hex32(draft.request_id) if draft.request_id else secrets.token_bytes(32),
        agreement_id=_hex32(draft.agreement_id),
        dataset_id=dataset_id,
        field_mask=await _field_mask(request, draft, dataset_id),
        tier=Tier[draft.tier],
        operation=Operation[draft.operation],
        request_hash=_hex32(draft.request_hash),
        deadline=draft.deadline or int(time.time()) + DEFAULT_VALIDITY_S,
        authorization_ref=_hex32(draft.authorization_ref),
    )
    return access_request.typed_data(context.access.domain)


@router.post("/batch", response_model=AccessBatchOut, status_code=201)
async def request_access_batch(
    body: AccessBatchIn, context: ContextDep, caller: AccessCallerDep, wait: WaitQuery = None
) -> Response:
    """Decide many requests at once (all stored in one durable write)."""
    limit = context.settings.max_batch_request
    if len(body.requests) > limit:
        raise BadRequestError(
            f"a batch holds at most {limit} requests, not {len(body.requests)}",
            code="batch_too_large",
        )
    answers = await context.access.decide(caller.token, body.requests)
    if wait == "confirmed":
        answers = [await wait_for(context, a) for a in answers]
    return json_response(AccessBatchOut(results=answers), 201)


@router.get("/{access_id}", response_model=AccessOut)
async def get_access(
    access_id: str, context: ContextDep, caller: AccessCallerDep, wait: WaitQuery = None
) -> AccessOut:
    """The decision and its recording status."""
    view = await context.outbox.get(_hex32(access_id))
    if view is None or view.org != context.access.org:
        raise NotFoundError(f"no access request {access_id}")
    answer = await context.access.answer(view)
    return await wait_for(context, answer) if wait == "confirmed" else answer


async def wait_for(context: ContextDep, answer: AccessOut) -> AccessOut:
    """`answer` once its access is confirmed or failed (or the wait ends); only the recording
    status changes, the decision and its cohort stay as answered."""
    if answer.status in ("confirmed", "failed"):
        return answer
    view = await context.outbox.wait(_hex32(answer.access_id), context.settings.wait_timeout_s)
    if view is None:
        return answer
    return answer.model_copy(
        update={
            "status": view.status.value,
            "tx_hash": None if view.tx_hash is None else "0x" + view.tx_hash.hex(),
            "block_number": view.block_number,
            "error": view.error,
        }
    )


@router.post("/{access_id}/results", response_model=ReleaseOut, status_code=201)
async def release_result(
    access_id: str,
    body: ResultReleaseIn,
    context: ContextDep,
    caller: AccessCallerDep,
    wait: WaitQuery = None,
) -> ReleaseOut:
    """Report a result that leaves the hospital; only what the access allowed may leave."""
    answer = await context.access.release(
        caller.token, _hex32(access_id), _hex32(body.result_hash), ReleaseKind[body.kind], body.size
    )
    if wait == "confirmed" and answer.status not in ("confirmed", "failed"):
        view = await context.outbox.wait(_hex32(answer.release_id), context.settings.wait_timeout_s)
        if view is not None:
            answer = answer.model_copy(
                update={
                    "status": view.status.value,
                    "tx_hash": None if view.tx_hash is None else "0x" + view.tx_hash.hex(),
                    "block_number": view.block_number,
                    "error": view.error,
                }
            )
    return answer

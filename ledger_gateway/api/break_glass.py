"""`/v1/access-requests/{id}/break-glass-review`: a holder steward's review of an emergency
access that opened a patient's records without their code.

The steward signs `AccessLog.reviewBreakGlass(accessId, agreementId, outcome, findingHash)`
on their own machine (`dul steward break-glass review`); the gateway checks the bytes are that
call for the access of the path, about an agreement the token's organization holds, simulates
it from the steward's address (a refusal answers with the contract's error, e.g.
`AccessLogBreakGlassReviewed` for a second review) and relays them."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ledger_gateway.api.agreements import StewardDep, WaitQuery, settled
from ledger_gateway.api.deps import StewardCallerDep
from ledger_gateway.errors import BadRequestError
from ledger_gateway.steward import SignedTransactionIn, TransactionOut

router = APIRouter(prefix="/v1/access-requests", tags=["break-glass"])


def _access_id(value: str) -> bytes:
    if len(value) != 66 or not value.startswith("0x"):
        raise BadRequestError(f"{value!r} is not a 0x-prefixed 32-byte access id")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise BadRequestError(f"{value!r} is not a 0x-prefixed 32-byte access id") from None


@router.post("/{access}/break-glass-review", response_model=TransactionOut, status_code=202)
async def review_break_glass(
    access: str,
    body: SignedTransactionIn,
    steward: StewardDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> TransactionOut:
    """Relay a holder steward's signed `AccessLog.reviewBreakGlass` of this break-glass access:
    UPHELD, or REFERRED to the regulator, with the hash of the written finding (simulated
    first: a refusal answers with the contract's error code, nothing sent)."""
    expected = steward.expect_break_glass_review(_access_id(access))
    answer = await steward.relay(body, expected, caller, wait=wait == "confirmed")
    return settled(response, answer)

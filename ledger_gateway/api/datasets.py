"""`/v1/datasets`: a steward registers a dataset with a transaction signed at home."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ledger_gateway.api.agreements import StewardDep, WaitQuery, settled
from ledger_gateway.api.deps import StewardCallerDep
from ledger_gateway.steward import SignedTransactionIn, TransactionOut

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", response_model=TransactionOut, status_code=202)
async def register_dataset(
    body: SignedTransactionIn,
    steward: StewardDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> TransactionOut:
    """Relay a steward-signed `DatasetRegistry.registerDataset` of a dataset the token's
    organization holds."""
    expected = steward.expect_dataset()
    answer = await steward.relay(body, expected, caller, wait=wait == "confirmed")
    return settled(response, answer)

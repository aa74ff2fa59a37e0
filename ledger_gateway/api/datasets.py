"""`/v1/datasets`: a steward registers a dataset with a transaction signed at home."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ledger_gateway.api.agreements import StewardDep, WaitQuery, settled
from ledger_gateway.api.deps import TokenDep
from ledger_gateway.steward import SignedTransactionIn, TransactionOut

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", response_model=TransactionOut, status_code=202)
async def register_dataset(
    body: SignedTransactionIn,
    steward: StewardDep,
    token: TokenDep,
    response: Response,
    wait: WaitQuery = None,
) -> TransactionOut:
    """Relay a steward-signed `DatasetRegistry.registerDataset`."""
    steward.authorize(token)
    answer = await steward.relay(body, steward.expect_dataset(), wait=wait == "confirmed")
    return settled(response, answer)

"""`/v1/agreements`: the digital contracts — read them, get their EIP-712 data, relay the
parties' signatures, and relay the steward's own signed lifecycle transactions."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response

from ledger_gateway.api.deps import CallerDep, StewardCallerDep
from ledger_gateway.errors import BadRequestError
from ledger_gateway.steward import (
    AgreementOut,
    SignatureIn,
    SignatureOut,
    SignedTransactionIn,
    StewardService,
    TransactionOut,
    lifespan,
    steward_of,
)

router = APIRouter(prefix="/v1/agreements", tags=["agreements"], lifespan=lifespan)

WaitQuery = Annotated[
    Literal["confirmed"] | None,
    Query(description="`confirmed`: answer once the transaction is mined (or the wait ends)"),
]


async def get_steward(request: Request) -> StewardService:
    return steward_of(request.app)


StewardDep = Annotated[StewardService, Depends(get_steward)]


def agreement_id(value: str) -> bytes:
    if len(value) != 66 or not value.startswith("0x"):
        raise BadRequestError(f"{value!r} is not a 0x-prefixed 32-byte agreement id")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise BadRequestError(f"{value!r} is not a 0x-prefixed 32-byte agreement id") from None


class _Relayed(Protocol):
    @property
    def status(self) -> str: ...


RelayedT = TypeVar("RelayedT", bound=_Relayed)


def settled(response: Response, answer: RelayedT) -> RelayedT:
    """200 once the relayed transaction is settled (confirmed or failed), else 202."""
    response.status_code = 200 if answer.status in ("confirmed", "failed") else 202
    return answer


@router.post("", response_model=TransactionOut, status_code=202)
async def propose(
    body: SignedTransactionIn,
    steward: StewardDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> TransactionOut:
    """Relay a steward-signed `propose(terms)` or `amend(previous, terms)` of an agreement the
    token's organization holds."""
    expected = steward.expect_agreement(("propose", "amend"))
    answer = await steward.relay(body, expected, caller, wait=wait == "confirmed")
    return settled(response, answer)


@router.get("/{agreement}", response_model=AgreementOut)
async def get_agreement(agreement: str, steward: StewardDep, caller: CallerDep) -> AgreementOut:
    """Terms, version chain, effective status, signers and quota used (a token of a party)."""
    return await steward.agreement(agreement_id(agreement), caller)


@router.get("/{agreement}/typed-data")
async def typed_data(
    agreement: str, steward: StewardDep, caller: StewardCallerDep
) -> dict[str, Any]:
    """The EIP-712 JSON (eth_signTypedData_v4) the parties sign, as proposed on chain."""
    return await steward.typed_data(agreement_id(agreement), caller)


@router.post("/{agreement}/signatures", response_model=SignatureOut, status_code=202)
async def add_signature(
    agreement: str,
    body: SignatureIn,
    steward: StewardDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> SignatureOut:
    """Verify a party's signature off chain and relay it with the gateway's key (a steward
    token of one of the agreement's parties)."""
    answer = await steward.add_signature(
        agreement_id(agreement), body, caller, wait=wait == "confirmed"
    )
    return settled(response, answer)


def _lifecycle(name: str) -> Any:
    async def endpoint(
        agreement: str,
        body: SignedTransactionIn,
        steward: StewardDep,
        caller: StewardCallerDep,
        response: Response,
        wait: WaitQuery = None,
    ) -> TransactionOut:
        expected = steward.expect_agreement((name,), agreement_id(agreement))
        answer = await steward.relay(body, expected, caller, wait=wait == "confirmed")
        return settled(response, answer)

    endpoint.__name__ = name
    endpoint.__doc__ = (
        f"Relay a steward-signed `AgreementRegistry.{name}` of this agreement, held by the "
        "token's organization (simulated first: a refusal answers with the contract's error "
        "code, nothing sent)."
    )
    return endpoint


for _step in ("suspend", "resume", "revoke"):
    router.add_api_route(
        f"/{{agreement}}/{_step}",
        _lifecycle(_step),
        methods=["POST"],
        response_model=TransactionOut,
        status_code=202,
        name=_step,
    )

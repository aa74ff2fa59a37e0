"""`/v1/consents` and `/v1/authorizations`: what patients permit.

Stewards record and withdraw consents and issue or revoke authorization codes with transactions
signed on their own machine (the gateway checks, simulates and relays them); a patient's own
withdrawal signature is relayed with the gateway's key, and so are the consents a patient grants
(`/v1/consents/by-patient`) and the codes a patient issues or
revokes with their own key (`/v1/authorizations/by-patient`, `…/revoke-by-patient`), whose
key a steward registers (`/v1/consents/{subject}/key`); an access service redeems a code the
patient handed to a third party (`/v1/authorizations/redeem`)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from ledger_gateway.api.access import json_response, wait_for
from ledger_gateway.api.agreements import WaitQuery, settled
from ledger_gateway.api.deps import AccessCallerDep, ContextDep, StewardCallerDep
from ledger_gateway.consent_flows import (
    ConsentGrantIn,
    ConsentGrantOut,
    ConsentService,
    ConsentsOut,
    PatientAuthorizationIn,
    PatientCallOut,
    PatientRevocationIn,
    WithdrawalIn,
    WithdrawalOut,
    consent_flows_of,
    hex32,
    lifespan,
)
from ledger_gateway.models import AccessOut, RedeemIn
from ledger_gateway.steward import SignedTransactionIn, TransactionOut

router = APIRouter(tags=["consents and authorization codes"], lifespan=lifespan)


async def get_flows(request: Request) -> ConsentService:
    return consent_flows_of(request.app)


FlowsDep = Annotated[ConsentService, Depends(get_flows)]


@router.post("/v1/consents", response_model=TransactionOut, status_code=202)
async def record_consents(
    body: SignedTransactionIn,
    flows: FlowsDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> TransactionOut:
    """Relay a steward-signed `ConsentRegistry.recordConsent` or `recordConsents` (simulated
    first: a refusal answers with the contract's error code and nothing is sent). Once mined,
    the answer lists the new consent ids."""
    answer = await flows.record(body, caller, wait=wait == "confirmed")
    return settled(response, answer)


@router.post("/v1/consents/by-patient", response_model=ConsentGrantOut, status_code=202)
async def grant_consent_by_patient(
    body: ConsentGrantIn,
    flows: FlowsDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> ConsentGrantOut:
    """Relay a consent the patient granted in their own wallet (EIP-712 `ConsentGrant` by the
    subject's registered key) with the gateway's key, once. Simulated first: a forged, expired
    or replayed signature (`ConsentRegistryStaleConsentGrant`), or terms the chain refuses,
    answer with the contract's error as `code` and nothing is sent. In force for the next
    decision once mined (`?wait=confirmed` answers then)."""
    answer = await flows.grant_by_subject(body, caller, wait=wait == "confirmed")
    return settled(response, answer)


@router.post("/v1/consents/{subject}/withdraw", response_model=WithdrawalOut, status_code=202)
async def withdraw_consent(
    subject: str,
    body: WithdrawalIn,
    flows: FlowsDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> WithdrawalOut:
    """Withdraw one of the subject's consents at this holder: a steward-signed
    `withdrawConsent` transaction, or the patient's EIP-712 `ConsentWithdrawal` signature
    (relayed with the gateway's key). Either is in force for the next decision at once."""
    answer = await flows.withdraw(
        hex32(subject, "subject reference"), body, caller, wait=wait == "confirmed"
    )
    return settled(response, answer)


@router.get("/v1/consents/{subject}", response_model=ConsentsOut)
async def list_consents(subject: str, flows: FlowsDep, caller: StewardCallerDep) -> ConsentsOut:
    """The subject's consents at this holder, oldest first, as of the chain head."""
    return await flows.consents_of(hex32(subject, "subject reference"), int(time.time()), caller)


@router.post("/v1/authorizations", response_model=TransactionOut, status_code=202)
async def issue_authorization(
    body: SignedTransactionIn,
    flows: FlowsDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> TransactionOut:
    """Relay a steward-signed `ConsentRegistry.issueAuthorization` (the code's hash only)."""
    answer = await flows.issue(body, caller, wait=wait == "confirmed")
    return settled(response, answer)


@router.post("/v1/consents/{subject}/key", response_model=TransactionOut, status_code=202)
async def register_subject_key(
    subject: str,
    body: SignedTransactionIn,
    flows: FlowsDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> TransactionOut:
    """Relay a steward-signed `ConsentRegistry.registerSubjectKey(holder, subject, key)`: the
    patient's key, whose EIP-712 signatures issue and revoke their authorization codes (with
    or without any consent); again to rotate it, the zero address to remove it."""
    answer = await flows.register_key(
        hex32(subject, "subject reference"), body, caller, wait=wait == "confirmed"
    )
    return settled(response, answer)


@router.post("/v1/authorizations/by-patient", response_model=PatientCallOut, status_code=202)
async def issue_authorization_by_patient(
    body: PatientAuthorizationIn,
    flows: FlowsDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> PatientCallOut:
    """Relay an authorization code the patient signed in their own wallet (EIP-712
    `Authorization` by the subject's registered key) with the gateway's key, once. Simulated
    first: a forged or expired signature, or a scope the chain refuses, answers with the
    contract's error as `code` and nothing is sent."""
    answer = await flows.issue_by_subject(body, caller, wait=wait == "confirmed")
    return settled(response, answer)


@router.post(
    "/v1/authorizations/{code_hash}/revoke-by-patient",
    response_model=PatientCallOut,
    status_code=202,
)
async def revoke_authorization_by_patient(
    code_hash: str,
    body: PatientRevocationIn,
    flows: FlowsDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> PatientCallOut:
    """Relay the patient's EIP-712 `AuthorizationRevocation` of an unredeemed code."""
    answer = await flows.revoke_by_subject(
        hex32(code_hash, "code hash"), body, caller, wait=wait == "confirmed"
    )
    return settled(response, answer)


@router.post("/v1/authorizations/redeem", response_model=AccessOut, status_code=201)
async def redeem_authorization(
    body: RedeemIn, context: ContextDep, caller: AccessCallerDep, wait: WaitQuery = None
) -> Response:
    """Decide an access under a PATIENT_AUTHORIZATION agreement that redeems the patient's code:
    the requester-signed request names the code's hash (`authorization_ref`), the body carries
    the code. GRANTED: a one-patient cohort, and the code is the access's alone; otherwise
    DENIED with `authorization_fault`. Recorded on chain either way (a code that does not match
    `authorization_ref` is 400 and records nothing)."""
    answer = await context.access.redeem(caller.token, body)
    if wait == "confirmed":
        answer = await wait_for(context, answer)
    return json_response(answer, 201, Location=f"/v1/access-requests/{answer.access_id}")


@router.post(
    "/v1/authorizations/{code_hash}/revoke", response_model=TransactionOut, status_code=202
)
async def revoke_authorization(
    code_hash: str,
    body: SignedTransactionIn,
    flows: FlowsDep,
    caller: StewardCallerDep,
    response: Response,
    wait: WaitQuery = None,
) -> TransactionOut:
    """Relay a steward-signed `ConsentRegistry.revokeAuthorization` of this code hash."""
    answer = await flows.revoke(
        hex32(code_hash, "code hash"), body, caller, wait=wait == "confirmed"
    )
    return settled(response, answer)

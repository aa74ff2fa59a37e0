"""Steward flows: datasets, agreement drafts, signatures and lifecycle, with the key at home.

Two kinds of steward action reach the gateway, and neither carries a key:

- **signatures** over an agreement's EIP-712 data, which anyone may relay: the gateway checks
  the signature off chain against the on-chain digest, then queues `AgreementRegistry.sign` as a
  CALL operation of its outbox — sent by the submitter with the gateway's own key and nonce
  sequence, durably and exactly once, like every other transaction of that key;
- **transactions that need the steward as `msg.sender`** (propose / amend, suspend, resume,
  revoke, registerDataset): signed by the steward's CLI, checked by `relay` (right contract,
  function and id for the path), simulated from the steward's address (a revert answers with
  the contract's custom error name as `code`, nothing sent) and forwarded byte for byte.

The service reads terms from the `AgreementProposed` event (exactly what the parties sign)
and everything else with `eth_call`, through the same permissioned endpoint as the submitter.

Every call is checked against its `Caller`: a relayed transaction must touch only what the
token's organization holds (`holders_of`: the agreement's, dataset's, consent's or code's
holder, from the call or from the chain), a signature or a read must be about an agreement the
organization is a party of; otherwise 403 `wrong_organization` and nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal

import structlog
from eth_hash.auto import keccak
from eth_typing import ChecksumAddress
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from dul.chain.node import rpc_url
from dul.chain.rpc import AsyncRpcClient, RpcError, to_hex
from dul.contracts import bindings
from dul.contracts.bindings import FunctionBinding, event
from dul.contracts.deployment import Deployment
from dul.contracts.reverts import DecodedRevert, decode_revert
from dul.contracts.typed_data import AgreementTerms, Domain, agreement_domain
from dul.domain import AgreementStatus, Operation, slug_of
from dul.keys import KeyStore
from dul.signing import InvalidSignatureError, checksum_address, recover
from ledger_gateway.callers import Caller
from ledger_gateway.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    GatewayError,
    NotFoundError,
    UnavailableError,
)
from ledger_gateway.models import Address, Signature
from ledger_gateway.outbox import NewCall, OperationStatus, OperationView, Outbox
from ledger_gateway.relay import (
    Call,
    Expected,
    RelayError,
    check,
    decode_transaction,
    function,
)

log = structlog.get_logger(__name__)

ZERO32 = bytes(32)
SIGN = function("AgreementRegistry", "sign")
SIGN_GAS_MIN = 300_000
"""Floor of a relayed `sign`'s gas: the second signature also activates (zero gas price)."""


PROPOSED = event("AgreementRegistry", "AgreementProposed")
PROPOSED_TOPIC = PROPOSED.topic
SUPERSEDED_TOPIC = event("AgreementRegistry", "AgreementSuperseded").topic
DATASET_REGISTERED = event("DatasetRegistry", "DatasetRegistered")
DATASET_TOPIC = DATASET_REGISTERED.topic
CONSENT_RECORDED_TOPIC = event("ConsentRegistry", "ConsentRecorded").topic
_STATUS = bindings.function("AgreementRegistry", "status")
_DIGEST = bindings.function("AgreementRegistry", "digest")
_SIGNERS = bindings.function("AgreementRegistry", "signers")
_VERSION_OF = bindings.function("AgreementRegistry", "versionOf")
_ACCESSES_USED = bindings.function("AccessLog", "accessesUsed")
_CONSENT = bindings.function("ConsentRegistry", "consent")
_AUTHORIZATION = bindings.function("ConsentRegistry", "authorization")

# --------------------------------------------------------------------------- API models


class SignedTransactionIn(BaseModel):
    """A transaction the steward signed locally (the key never leaves the steward's machine)."""

    model_config = ConfigDict(extra="forbid")

    signed_transaction: str = Field(
        pattern=r"^0x(?:[0-9a-fA-F]{2})+$",
        max_length=2 + 2 * 128 * 1024,
        description="raw signed transaction, 0x-hex (at most 128 KiB, the node's own bound)",
    )


class SignatureIn(BaseModel):
    """A party's EIP-712 signature over the agreement's typed data."""

    model_config = ConfigDict(extra="forbid")

    signer: Address
    signature: Signature


class TransactionOut(BaseModel):
    """A relayed steward transaction."""

    tx_hash: str
    sender: str
    function: str
    nonce: int
    status: Literal["submitted", "confirmed", "failed"]
    block_number: int | None = None
    agreement_id: str | None = None
    dataset_id: str | None = None
    consent_ids: list[str] | None = None
    """Consents the transaction recorded (known once it is mined) or withdrew."""
    code_hash: str | None = None
    """The authorization code hash the transaction issued or revoked."""
    access_id: str | None = None
    """The access a break-glass review is about."""


class SignatureOut(BaseModel):
    """A signature queued for relay with the gateway's key (an outbox CALL operation)."""

    operation_id: str
    agreement_id: str
    signer: str
    status: Literal["pending", "submitted", "confirmed", "failed"]
    tx_hash: str | None = None
    block_number: int | None = None
    error: str | None = None
    agreement_status: str | None = None
    """The agreement's status once the signature is confirmed (ACTIVE after the last one)."""


class DatasetScope(BaseModel):
    dataset_id: str
    dataset: str
    field_mask: str
    fields: list[str]
    """Names of the allowed fields, when the dataset's registration is found."""


class VersionOut(BaseModel):
    agreement_id: str
    version: int


class AgreementOut(BaseModel):
    agreement_id: str
    version: int
    previous: str | None
    versions: list[VersionOut]
    """The amendment chain, oldest first, ending with this version."""
    superseded_by: str | None
    status: str
    """Effective status: EXPIRED as soon as the window is over."""
    holder: str
    requester: str
    datasets: list[DatasetScope]
    scenario: str
    duo_codes: list[str]
    disease_code: str
    ethics_approval: str
    max_tier: str
    operations: list[str]
    consent_policy: str
    break_glass_review_hours: int
    """0: no break-glass; else the hours a holder steward has to review each emergency access."""
    valid_from: int
    valid_until: int
    quota: int
    quota_used: int
    terms_hash: str
    nonce: str
    deadline: int
    digest: str
    signers: dict[str, str | None]
    proposed_tx: str
    proposed_block: int


# --------------------------------------------------------------------------- helpers


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _render(value: Any) -> Any:
    if isinstance(value, bytes):
        return _hex(value)
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        with contextlib.suppress(ValueError):
            return checksum_address(bytes.fromhex(value[2:]))  # eth_abi gives lower case
    if isinstance(value, list | tuple):
        return [_render(v) for v in value]
    return value if isinstance(value, int | str | bool) or value is None else str(value)


_CONFLICTS = (
    "AlreadySigned",
    "BreakGlassReviewed",
    "Exists",
    "InvalidStatus",
    "NotExpired",
    "Overlapping",
    "NotGranted",
    "NotIssued",
)


def refusal(name: str, args: dict[str, Any], what: str) -> GatewayError:
    """The problem for a call the chain refuses: its custom error name is the `code`."""
    detail = f"the chain refuses {what}: {DecodedRevert(name, args).describe()}"
    extra = {"error_args": {k: _render(v) for k, v in args.items()}}
    if "Unknown" in name:
        return NotFoundError(detail, code=name, **extra)
    if "Unauthorized" in name:
        return ForbiddenError(detail, code=name, **extra)
    if any(part in name for part in _CONFLICTS):
        return ConflictError(detail, code=name, **extra)
    return BadRequestError(detail, code=name, **extra)


def _reverted(exc: RpcError, what: str) -> GatewayError:
    raw = exc.revert_data
    decoded = decode_revert(raw) if raw else None
    if decoded is None:
        return BadRequestError(f"the chain refuses {what}: {exc.message}", code="reverted")
    return refusal(decoded.name, decoded.args, what)


def _b32(value: str) -> bytes:
    return bytes.fromhex(value[2:])


# --------------------------------------------------------------------------- the service


class StewardService:
    """Steward reads, signature relays and signed-transaction relays of one gateway."""

    def __init__(
        self,
        *,
        rpc: AsyncRpcClient,
        deployment: Deployment,
        outbox: Outbox,
        org: bytes,
        relayer: str,
        wait_timeout_s: float = 30.0,
    ) -> None:
        self.rpc = rpc
        self.deployment = deployment
        self.outbox = outbox
        self.org = org
        self.relayer = relayer
        self.wait_timeout_s = wait_timeout_s
        self.registry = deployment.address("AgreementRegistry")
        self.datasets = deployment.address("DatasetRegistry")
        self.access_log = deployment.address("AccessLog")
        self.domain: Domain = agreement_domain(deployment.chain_id, self.registry)
        self.first_block = int(deployment.raw.get("block", 0))
        """The deployment's block: no event of these contracts lies before it."""
        self._field_names: dict[bytes, list[str]] = {}
        self._proposals: dict[bytes, tuple[dict[str, Any], AgreementTerms]] = {}

    # --- whose is it ------------------------------------------------------------------------

    async def parties(self, agreement_id: bytes, caller: Caller, what: str) -> None:
        """The caller's organization must be the agreement's holder or requester."""
        _, terms = await self._proposal(agreement_id)
        caller.require_party((terms.holder, terms.requester), f"{what} {_hex(agreement_id)}")

    async def _holder_at(self, view: FunctionBinding, key: bytes) -> list[bytes]:
        """The holder (first word) of a stored consent or authorization; none when unknown."""
        raw = await self.rpc.call(self.deployment.address(view.contract), view.encode(key))
        holder = raw[:32]
        return [] if len(holder) < 32 or holder == ZERO32 else [holder]

    async def holders_of(self, call: Call) -> list[bytes]:
        """The holder organizations of what a relayed call touches (none: the chain does not
        know it, and its simulation names that)."""
        name, args = call.function.name, call.args
        if name in ("propose", "amend"):
            return [AgreementTerms.from_abi(args["terms"]).holder]
        if name in ("suspend", "resume", "revoke"):
            _, terms = await self._proposal(args["id"])
            return [terms.holder]
        if name == "registerDataset":
            return [bytes(args["holder"])]
        if name == "recordConsent":
            return [bytes(args["terms"][0])]
        if name == "recordConsents":
            return [bytes(terms[0]) for terms in args["terms"]]
        if name == "issueAuthorization":
            return [bytes(args["authorization_"][0])]
        if name == "registerSubjectKey":
            return [bytes(args["holder"])]
        if name == "withdrawConsent":
            return await self._holder_at(_CONSENT, args["consentId"])
        if name == "revokeAuthorization":
            return await self._holder_at(_AUTHORIZATION, args["codeHash"])
        if name == "reviewBreakGlass":
            _, terms = await self._proposal(args["agreementId"])
            return [terms.holder]
        raise RelayError(f"{name} is not relayed for stewards", code="wrong_transaction")

    # --- reads -------------------------------------------------------------------------------

    async def _view(self, to: str, view: FunctionBinding, *args: Any) -> tuple[Any, ...]:
        return view.decode_output(await self.rpc.call(to, view.encode(*args)))

    async def _proposal(self, agreement_id: bytes) -> tuple[dict[str, Any], AgreementTerms]:
        """The AgreementProposed event of `agreement_id`: (version facts, terms); cached, since
        an id is proposed once and a finality chain does not take it back."""
        known = self._proposals.get(agreement_id)
        if known is not None:
            return known
        logs = await self.rpc.find_logs(
            {"address": self.registry, "topics": [to_hex(PROPOSED_TOPIC), to_hex(agreement_id)]},
            from_block=self.first_block,
            first_match=True,
        )
        if not logs:
            raise NotFoundError(f"no agreement {_hex(agreement_id)}", code="unknown_agreement")
        entry = logs[0]
        version, previous, digest, terms = PROPOSED.decode_data(_b32(entry["data"]))
        facts = {
            "version": int(version),
            "previous": bytes(previous),
            "digest": bytes(digest),
            "tx_hash": entry["transactionHash"],
            "block": int(entry["blockNumber"], 16),
        }
        found = facts, AgreementTerms.from_abi(terms)
        self._proposals[agreement_id] = found
        return found

    async def typed_data(self, agreement_id: bytes, caller: Caller) -> dict[str, Any]:
        """The EIP-712 JSON each party signs, rebuilt from the proposed terms and checked
        against the digest the contract computed, so a wallet is never shown other data."""
        facts, terms = await self._proposal(agreement_id)
        caller.require_party((terms.holder, terms.requester), f"agreement {_hex(agreement_id)}")
        digest = terms.digest(self.domain, facts["version"], facts["previous"])
        if digest != facts["digest"]:
            raise GatewayError(
                f"agreement {_hex(agreement_id)}: typed data does not hash to the digest on "
                "chain (contract and gateway disagree)"
            )
        return terms.typed_data(self.domain, facts["version"], facts["previous"])

    async def field_names(self, dataset_id: bytes) -> list[str]:
        """The field names of a dataset, from its registration event (cached: immutable)."""
        if dataset_id not in self._field_names:
            logs = await self.rpc.find_logs(
                {"address": self.datasets, "topics": [to_hex(DATASET_TOPIC), to_hex(dataset_id)]},
                from_block=self.first_block,
                first_match=True,
            )
            if not logs:
                return []
            _, _, fields = DATASET_REGISTERED.decode_data(_b32(logs[0]["data"]))
            self._field_names[dataset_id] = [str(f) for f in fields]
        return self._field_names[dataset_id]

    async def agreement(self, agreement_id: bytes, caller: Caller) -> AgreementOut:
        facts, terms = await self._proposal(agreement_id)
        caller.require_party((terms.holder, terms.requester), f"agreement {_hex(agreement_id)}")
        (status,) = await self._view(self.registry, _STATUS, agreement_id)
        holder_signer, requester_signer = await self._view(self.registry, _SIGNERS, agreement_id)
        (used,) = await self._view(self.access_log, _ACCESSES_USED, agreement_id)
        versions = [VersionOut(agreement_id=_hex(agreement_id), version=facts["version"])]
        previous = facts["previous"]
        while previous != ZERO32 and len(versions) < 1_000:
            version, before = await self._view(self.registry, _VERSION_OF, previous)
            versions.insert(0, VersionOut(agreement_id=_hex(previous), version=int(version)))
            previous = bytes(before)
        superseded = await self.rpc.find_logs(  # an amendment comes after the proposal
            {"address": self.registry, "topics": [to_hex(SUPERSEDED_TOPIC), to_hex(agreement_id)]},
            from_block=facts["block"],
        )
        scopes = []
        for dataset, mask in zip(terms.datasets, terms.field_masks, strict=True):
            names = await self.field_names(dataset)
            scopes.append(
                DatasetScope(
                    dataset_id=_hex(dataset),
                    dataset=slug_of(dataset),
                    field_mask=hex(mask),
                    fields=[n for i, n in enumerate(names) if mask >> i & 1],
                )
            )
        zero = "0x" + "00" * 20

        def signer(address: str) -> str | None:
            return None if address.lower() == zero else checksum_address(_b32(address))

        return AgreementOut(
            agreement_id=_hex(agreement_id),
            version=facts["version"],
            previous=None if facts["previous"] == ZERO32 else _hex(facts["previous"]),
            versions=versions,
            superseded_by=superseded[0]["topics"][2] if superseded else None,
            status=AgreementStatus(status).name,
            holder=slug_of(terms.holder),
            requester=slug_of(terms.requester),
            datasets=scopes,
            scenario=terms.scenario.name,
            duo_codes=[f"DUO:{c:07d}" for c in terms.duo_codes],
            disease_code=_hex(terms.disease_code),
            ethics_approval=_hex(terms.ethics_approval),
            max_tier=terms.max_tier.name,
            operations=[o.name for o in Operation if terms.operations >> o & 1],
            consent_policy=terms.consent_policy.name,
            break_glass_review_hours=terms.break_glass_review_hours,
            valid_from=terms.valid_from,
            valid_until=terms.valid_until,
            quota=terms.quota,
            quota_used=int(used),
            terms_hash=_hex(terms.terms_hash),
            nonce=str(terms.nonce),
            deadline=terms.deadline,
            digest=_hex(facts["digest"]),
            signers={"holder": signer(holder_signer), "requester": signer(requester_signer)},
            proposed_tx=facts["tx_hash"],
            proposed_block=facts["block"],
        )

    async def _status_name(self, agreement_id: bytes) -> str:
        (status,) = await self._view(self.registry, _STATUS, agreement_id)
        return AgreementStatus(status).name

    # --- signatures (relayed with the gateway's key, through the outbox) ---------------------

    async def add_signature(
        self, agreement_id: bytes, body: SignatureIn, caller: Caller, *, wait: bool = False
    ) -> SignatureOut:
        """Verify a party's signature off chain, then queue `sign` for the submitter.

        A signature that does not recover to `signer` over the on-chain digest is refused
        here (422 bad_signature) and costs nothing; whether `signer` may sign for a party is
        simulated before anything is stored, so a refusal carries the contract's error code.
        """
        signer = checksum_address(_b32(body.signer))
        signature = _b32(body.signature)
        (status,) = await self._view(self.registry, _STATUS, agreement_id)
        if status == AgreementStatus.NONE:
            raise NotFoundError(f"no agreement {_hex(agreement_id)}", code="unknown_agreement")
        await self.parties(agreement_id, caller, "a signature of agreement")
        (digest,) = await self._view(self.registry, _DIGEST, agreement_id)
        try:
            recovered = recover(bytes(digest), signature)
        except InvalidSignatureError as exc:
            raise BadRequestError(
                f"signature refused: {exc.message}", code="bad_signature"
            ) from None
        if recovered != signer:
            raise BadRequestError(
                f"the signature is {recovered}'s over agreement {_hex(agreement_id)}, not "
                f"{signer}'s (wrong key, wrong agreement or wrong version)",
                code="bad_signature",
            )
        data = SIGN.encode(agreement_id, signer, signature)
        key = keccak(b"AgreementRegistry.sign" + agreement_id + _b32(body.signer) + signature)
        stored = await self.outbox.get(key)
        if stored is None:
            try:
                gas = await self.rpc.estimate_gas(self.registry, data, sender=self.relayer)
            except RpcError as exc:
                raise _reverted(exc, f"{signer}'s signature") from None
            accepted = await self.outbox.add_call(
                NewCall(
                    key=key,
                    body_hash=hashlib.sha256(_b32(self.registry) + data).digest(),
                    org=self.org,
                    agreement_id=agreement_id,
                    target=_b32(self.registry),
                    gas=max(SIGN_GAS_MIN, gas * 3 // 2),
                    data=data,
                )
            )
            stored = accepted.view
            log.info("steward.signature_queued", agreement=_hex(agreement_id), signer=signer)
        if wait and stored.status not in (OperationStatus.CONFIRMED, OperationStatus.FAILED):
            stored = await self.outbox.wait(key, self.wait_timeout_s) or stored
        return await self._signature_out(agreement_id, signer, stored)

    async def _signature_out(
        self, agreement_id: bytes, signer: ChecksumAddress, view: OperationView
    ) -> SignatureOut:
        confirmed = view.status is OperationStatus.CONFIRMED
        return SignatureOut(
            operation_id=_hex(view.key),
            agreement_id=_hex(agreement_id),
            signer=signer,
            status=view.status.value,
            tx_hash=None if view.tx_hash is None else _hex(view.tx_hash),
            block_number=view.block_number,
            error=view.error,
            agreement_status=await self._status_name(agreement_id) if confirmed else None,
        )

    # --- signed transactions (the steward is msg.sender) -------------------------------------

    def expect_agreement(
        self, functions: Sequence[str], agreement_id: bytes | None = None
    ) -> Expected:
        return Expected(
            contract="AgreementRegistry",
            address=self.registry,
            functions=functions,
            chain_id=self.deployment.chain_id,
            id_arg=None if agreement_id is None else "id",
            id_value=agreement_id,
        )

    def expect_break_glass_review(self, access_id: bytes) -> Expected:
        """`AccessLog.reviewBreakGlass` of the access of the path."""
        return Expected(
            contract="AccessLog",
            address=self.deployment.address("AccessLog"),
            functions=("reviewBreakGlass",),
            chain_id=self.deployment.chain_id,
            id_arg="accessId",
            id_value=access_id,
        )

    def expect_dataset(self) -> Expected:
        return Expected(
            contract="DatasetRegistry",
            address=self.datasets,
            functions=("registerDataset",),
            chain_id=self.deployment.chain_id,
        )

    def expect_consent(
        self, functions: Sequence[str], id_arg: str | None = None, id_value: bytes | None = None
    ) -> Expected:
        """A `ConsentRegistry` call (consents and authorization codes)."""
        return Expected(
            contract="ConsentRegistry",
            address=self.deployment.address("ConsentRegistry"),
            functions=functions,
            chain_id=self.deployment.chain_id,
            id_arg=id_arg,
            id_value=id_value,
        )

    async def relay(
        self,
        body: SignedTransactionIn,
        expected: Expected,
        caller: Caller,
        *,
        wait: bool = False,
        guard: Callable[[Call], Awaitable[None]] | None = None,
        sent: Callable[[Call], None] | None = None,
    ) -> TransactionOut:
        """Check, simulate and forward a steward's signed transaction; nothing is sent when the
        shape is wrong or the chain would refuse it. Re-posting the same bytes is harmless:
        a mined transaction answers with its receipt, a pooled one is not sent twice.

        `guard` may refuse a well-formed call before it is simulated (path-specific checks);
        `sent` runs once the node has the transaction (e.g. to honour a withdrawal at once)."""
        try:
            raw = bytes.fromhex(body.signed_transaction[2:])
        except ValueError:
            raise RelayError("signed_transaction is not hex") from None
        call = check(decode_transaction(raw), expected)
        caller.require_holder(await self.holders_of(call), f"what {call.function.name} touches")
        tx = call.tx
        receipt = await self.rpc.receipt(tx.tx_hash)
        if receipt is None:
            if guard is not None:
                await guard(call)
            try:
                await self._simulate(call)
            except GatewayError:
                # Mined between the receipt look-up and the simulation (a re-post of the same
                # bytes): its receipt is the answer, not the refusal of a second run.
                receipt = await self.rpc.receipt(tx.tx_hash)
                if receipt is None:
                    raise
                return self._transaction_out(call, receipt)
            await self._send(call)
            if sent is not None:
                sent(call)
            if wait:
                receipt = await self._wait_receipt(tx.tx_hash)
        return self._transaction_out(call, receipt)

    async def _simulate(self, call: Call) -> None:
        tx = call.tx
        try:
            await self.rpc.request(
                "eth_call",
                {"from": tx.sender, "to": tx.to, "data": to_hex(tx.data), "gas": hex(tx.gas)},
                "latest",
            )
        except RpcError as exc:
            log.info(
                "steward.refused", function=call.function.name, sender=tx.sender, error=exc.message
            )
            raise _reverted(exc, f"{call.function.name} from {tx.sender}") from None

    async def _node_has(self, tx_hash: bytes) -> bool:
        """Whether the node knows the transaction (pending or mined)."""
        try:
            return await self.rpc.request("eth_getTransactionByHash", _hex(tx_hash)) is not None
        except RpcError:
            return False

    async def _send(self, call: Call) -> None:
        tx = call.tx
        try:
            await self.rpc.send_raw_transaction(tx.raw)
        except RpcError as exc:
            text = exc.message.lower()
            if "already known" in text or "already imported" in text:
                return
            if await self._node_has(tx.tx_hash):
                return  # a resend, worded by each node its own way (Hardhat: "Known transaction")
            if exc.rpc_code == -32003:  # the permissioned endpoint: sender is not a member
                raise ForbiddenError(exc.message, code="sender_not_member") from None
            if "nonce too low" in text:
                raise ConflictError(
                    f"nonce {tx.nonce} of {tx.sender} is used already; sign again with the "
                    "account's next nonce",
                    code="nonce_too_low",
                ) from None
            raise ConflictError(
                f"the node refused the transaction: {exc.message}", code="tx_refused"
            ) from None
        log.info(
            "steward.relayed",
            function=call.function.name,
            sender=tx.sender,
            tx=_hex(tx.tx_hash),
            nonce=tx.nonce,
        )

    async def _wait_receipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.wait_timeout_s
        while time.monotonic() < deadline:
            receipt = await self.rpc.receipt(tx_hash)
            if receipt is not None:
                return receipt
            await asyncio.sleep(0.1)
        return None

    def _transaction_out(self, call: Call, receipt: dict[str, Any] | None) -> TransactionOut:
        status: Literal["submitted", "confirmed", "failed"] = "submitted"
        block = None
        if receipt is not None:
            block = int(receipt["blockNumber"], 16)
            status = "confirmed" if int(receipt.get("status", "0x1"), 16) == 1 else "failed"
        args = call.args
        agreement_id: bytes | None = args.get("id", args.get("agreementId"))
        if call.function.name in ("propose", "amend"):
            terms = AgreementTerms.from_abi(args["terms"])
            agreement_id = terms.agreement_id
        dataset_id: bytes | None = None
        if call.function.contract == "DatasetRegistry":
            dataset_id, agreement_id = args.get("id"), None
        consent_ids: list[str] | None = None
        name = call.function.name
        if name == "withdrawConsent":
            consent_ids = [_hex(args["consentId"])]
        elif name in ("recordConsent", "recordConsents") and status == "confirmed":
            assert receipt is not None
            consent_ids = [
                str(entry["topics"][1])
                for entry in receipt.get("logs", ())
                if entry["topics"] and _b32(entry["topics"][0]) == CONSENT_RECORDED_TOPIC
            ]
        code_hash: bytes | None = args.get("codeHash")
        access_id: bytes | None = args.get("accessId")
        return TransactionOut(
            tx_hash=_hex(call.tx.tx_hash),
            sender=call.tx.sender,
            function=call.function.name,
            nonce=call.tx.nonce,
            status=status,
            block_number=block,
            agreement_id=None if agreement_id is None else _hex(agreement_id),
            dataset_id=None if dataset_id is None else _hex(dataset_id),
            consent_ids=consent_ids,
            code_hash=None if code_hash is None else _hex(code_hash),
            access_id=None if access_id is None else _hex(access_id),
        )


# --------------------------------------------------------------------------- wiring


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Builds the steward service next to the gateway's context (runs inside the app's
    lifespan, as the agreements router's own): its own RPC client, the gateway's outbox."""
    context = app.state.context
    settings = context.settings
    home = settings.dul_home
    deployment = Deployment.load(home.deployment)
    rpc = AsyncRpcClient(settings.rpc_url or rpc_url(home))
    app.state.steward = StewardService(
        rpc=rpc,
        deployment=deployment,
        outbox=context.outbox,
        org=context.access.org,
        relayer=KeyStore(home).show(settings.key).address,
        wait_timeout_s=settings.wait_timeout_s,
    )
    try:
        yield
    finally:
        await rpc.aclose()


def steward_of(app: FastAPI) -> StewardService:
    service = getattr(app.state, "steward", None)
    if not isinstance(service, StewardService):
        raise UnavailableError("steward flows are not started", code="not_ready")
    return service

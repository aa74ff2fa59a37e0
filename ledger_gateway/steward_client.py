"""The gateway's steward endpoints: transactions that need the steward as msg.sender are built
and signed here, on the steward's machine, and the gateway only relays the bytes."""

from __future__ import annotations

from typing import Any, Literal

from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from dul.contracts.reverts import decode_revert
from dul.errors import TransactionError
from dul.signing import Signer, typed_data_digest
from ledger_gateway.client import GatewayClient, _hex
from ledger_gateway.consent_flows import (
    ConsentGrantIn,
    ConsentGrantOut,
    ConsentsOut,
    PatientAuthorizationIn,
    PatientCallOut,
    PatientRevocationIn,
    WithdrawalIn,
    WithdrawalOut,
)
from ledger_gateway.steward import (
    AgreementOut,
    SignatureIn,
    SignatureOut,
    SignedTransactionIn,
    TransactionOut,
)


def sign_steward_call(
    w3: Web3, signer: Signer, to: str, data: bytes, *, gas: int | None = None
) -> bytes:
    """Sign a call of `to` as `signer`, locally: nonce from the chain, gas price 0, gas from
    eth_estimateGas — which also surfaces the contract's refusal (`TransactionError` with the
    custom error name as `code`) before anything is signed. `gas` skips the estimate."""
    tx: dict[str, Any] = {
        "from": signer.address,
        "to": Web3.to_checksum_address(to),
        "data": "0x" + data.hex(),
        "value": 0,
    }
    if gas is None:
        try:
            estimate = w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
        except (ContractCustomError, ContractLogicError) as exc:
            raw = exc.data.get("data") if isinstance(exc.data, dict) else exc.data
            decoded = (
                decode_revert(bytes.fromhex(raw[2:]))
                if isinstance(raw, str) and raw.startswith("0x")
                else None
            )
            if decoded is None:
                raise TransactionError(
                    f"the chain refuses this call: {exc}", code="reverted"
                ) from None
            raise TransactionError(
                f"the chain refuses this call: {decoded.describe()}", code=decoded.name
            ) from None
        gas = estimate + estimate // 5 + 10_000
    tx.update(
        gas=gas,
        gasPrice=0,
        nonce=w3.eth.get_transaction_count(signer.address, "pending"),
        chainId=w3.eth.chain_id,
    )
    tx.pop("from")
    return signer.sign_transaction(tx)


class StewardClient(GatewayClient):
    """The gateway's steward endpoints (a steward token)."""

    def __enter__(self) -> StewardClient:
        return self

    def get_agreement(self, agreement_id: str) -> AgreementOut:
        return AgreementOut.model_validate(self._send("GET", f"/v1/agreements/{agreement_id}"))

    def typed_data(self, agreement_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._send("GET", f"/v1/agreements/{agreement_id}/typed-data")
        return data

    def add_signature(
        self, agreement_id: str, signer: str, signature: bytes, *, wait: bool = False
    ) -> SignatureOut:
        body = SignatureIn(signer=signer, signature=_hex(signature))
        data = self._send(
            "POST",
            f"/v1/agreements/{agreement_id}/signatures",
            json=body.model_dump(),
            params=self._wait(wait),
        )
        return SignatureOut.model_validate(data)

    def sign_agreement(
        self, agreement_id: str, signer: Signer, *, wait: bool = False
    ) -> SignatureOut:
        """Fetch the typed data, hash it here (what is signed is what was fetched), sign
        locally and post the signature; the gateway re-checks it against the chain's digest."""
        digest = typed_data_digest(self.typed_data(agreement_id))
        return self.add_signature(
            agreement_id, signer.address, signer.sign_digest(digest), wait=wait
        )

    def _relay(self, path: str, raw: bytes, wait: bool) -> TransactionOut:
        body = SignedTransactionIn(signed_transaction=_hex(raw))
        data = self._send("POST", path, json=body.model_dump(), params=self._wait(wait))
        return TransactionOut.model_validate(data)

    def propose(self, signed_transaction: bytes, *, wait: bool = False) -> TransactionOut:
        """Relay a signed `propose` or `amend`."""
        return self._relay("/v1/agreements", signed_transaction, wait)

    def lifecycle(
        self,
        step: Literal["suspend", "resume", "revoke"],
        agreement_id: str,
        signed_transaction: bytes,
        *,
        wait: bool = False,
    ) -> TransactionOut:
        return self._relay(f"/v1/agreements/{agreement_id}/{step}", signed_transaction, wait)

    def review_break_glass(
        self, access_id: str, signed_transaction: bytes, *, wait: bool = False
    ) -> TransactionOut:
        """Relay a signed `AccessLog.reviewBreakGlass` of break-glass access `access_id`."""
        return self._relay(
            f"/v1/access-requests/{access_id}/break-glass-review", signed_transaction, wait
        )

    def register_dataset(self, signed_transaction: bytes, *, wait: bool = False) -> TransactionOut:
        return self._relay("/v1/datasets", signed_transaction, wait)

    # --- consents and authorization codes ----------------------------------------------------

    def record_consents(self, signed_transaction: bytes, *, wait: bool = False) -> TransactionOut:
        """Relay a signed `recordConsent` / `recordConsents`."""
        return self._relay("/v1/consents", signed_transaction, wait)

    def withdraw_consent(
        self, subject: bytes, signed_transaction: bytes, *, wait: bool = False
    ) -> WithdrawalOut:
        """Relay a steward's signed `withdrawConsent` of one of `subject`'s consents."""
        body = WithdrawalIn(signed_transaction=_hex(signed_transaction))
        return self._withdraw(subject, body, wait)

    def relay_patient_withdrawal(
        self,
        subject: bytes,
        consent_id: bytes,
        deadline: int,
        signature: bytes,
        *,
        wait: bool = False,
    ) -> WithdrawalOut:
        """Relay a patient's own EIP-712 `ConsentWithdrawal` signature."""
        body = WithdrawalIn(
            consent_id=_hex(consent_id), deadline=deadline, signature=_hex(signature)
        )
        return self._withdraw(subject, body, wait)

    def _withdraw(self, subject: bytes, body: WithdrawalIn, wait: bool) -> WithdrawalOut:
        data = self._send(
            "POST",
            f"/v1/consents/{_hex(subject)}/withdraw",
            json=body.model_dump(exclude_none=True),
            params=self._wait(wait),
        )
        return WithdrawalOut.model_validate(data)

    def consents(self, subject: bytes) -> ConsentsOut:
        return ConsentsOut.model_validate(self._send("GET", f"/v1/consents/{_hex(subject)}"))

    def issue_authorization(
        self, signed_transaction: bytes, *, wait: bool = False
    ) -> TransactionOut:
        """Relay a signed `issueAuthorization` (the code's hash only)."""
        return self._relay("/v1/authorizations", signed_transaction, wait)

    def revoke_authorization(
        self, code_hash: bytes, signed_transaction: bytes, *, wait: bool = False
    ) -> TransactionOut:
        return self._relay(f"/v1/authorizations/{_hex(code_hash)}/revoke", signed_transaction, wait)

    def register_subject_key(
        self, subject: bytes, signed_transaction: bytes, *, wait: bool = False
    ) -> TransactionOut:
        """Relay a signed `registerSubjectKey` for `subject`."""
        return self._relay(f"/v1/consents/{_hex(subject)}/key", signed_transaction, wait)

    def relay_patient_consent(self, body: ConsentGrantIn, *, wait: bool = False) -> ConsentGrantOut:
        """Relay a consent the patient granted with their own key (EIP-712 `ConsentGrant`)."""
        data = self._send(
            "POST", "/v1/consents/by-patient", json=body.model_dump(), params=self._wait(wait)
        )
        return ConsentGrantOut.model_validate(data)

    def relay_patient_authorization(
        self, body: PatientAuthorizationIn, *, wait: bool = False
    ) -> PatientCallOut:
        """Relay a code the patient signed with their own key (EIP-712 `Authorization`)."""
        data = self._send(
            "POST",
            "/v1/authorizations/by-patient",
            json=body.model_dump(),
            params=self._wait(wait),
        )
        return PatientCallOut.model_validate(data)

    def relay_patient_revocation(
        self, code_hash: bytes, deadline: int, signature: bytes, *, wait: bool = False
    ) -> PatientCallOut:
        """Relay the patient's EIP-712 `AuthorizationRevocation` of one of their codes."""
        body = PatientRevocationIn(deadline=deadline, signature=_hex(signature))
        data = self._send(
            "POST",
            f"/v1/authorizations/{_hex(code_hash)}/revoke-by-patient",
            json=body.model_dump(),
            params=self._wait(wait),
        )
        return PatientCallOut.model_validate(data)

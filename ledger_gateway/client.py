"""The Python SDK of access services: ask the gateway before each access, report each result.

Importable without FastAPI or web3 (httpx, pydantic and the signing core only), so it fits an
access service's own process:

    from dul.keys import KeyStore                     # or any `dul.signing.Signer` (an HSM)
    from ledger_gateway.client import GatewayClient

    requester = KeyStore(home).unlock("institute.requester")
    with GatewayClient("http://127.0.0.1:8700", token, signer=requester) as gateway:
        answer = gateway.request_access(
            agreement="0x…",                          # the agreement id
            dataset="hospital-a/omop-cdm",            # a dataset slug or 0x-hex id
            fields=["person_id", "year_of_birth"],    # names (or indices) as the dataset has them
            tier="DEIDENTIFIED",
            operation="QUERY",
            query="SELECT count(*) FROM person",      # what will run; its SHA-256 is signed
            cohort=None,                              # subject references under COHORT_CONSENT
            wait=True,                                # answer once the decision is on chain
        )
        if answer.decision == "GRANTED":
            digest = hashlib.sha256(result).digest()
            gateway.release_result(answer.access_id, digest, "AGGREGATE_RESULT", len(result))

`request_access` asks `POST /v1/access-requests/typed-data` for the EIP-712 JSON of the request,
checks that it is the request asked for (and, given `domain=`, in that domain), signs its digest
locally — the key never travels — and posts the signed request. `sign_request` signs a request
built by hand. Every refusal is a `GatewayClientError` with the problem's stable `code`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from dul.contracts.typed_data import AccessRequest, Domain
from dul.domain import Operation, Tier, slug_id
from dul.errors import ConfigError, DulError
from dul.signing import Signer, typed_data_digest
from ledger_gateway.models import AccessBatchOut, AccessOut, AccessRequestIn, RedeemIn, ReleaseOut

if TYPE_CHECKING:  # the steward side needs web3; imported on first use (see __getattr__)
    from ledger_gateway.steward_client import StewardClient as StewardClient
    from ledger_gateway.steward_client import sign_steward_call as sign_steward_call


def __getattr__(name: str) -> Any:
    if name in ("StewardClient", "sign_steward_call"):
        from ledger_gateway import steward_client

        return getattr(steward_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GatewayClientError(DulError):
    """The gateway answered with a problem; `code` is its stable code."""

    def __init__(self, status: int, code: str, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}", code=code)
        self.status = status
        self.problem = problem


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _id32(value: str | bytes, what: str) -> bytes:
    """A bytes32 id: raw bytes, 0x-hex, or (datasets) a slug."""
    if isinstance(value, bytes):
        if len(value) != 32:
            raise ConfigError(f"{what} id must be 32 bytes", code="invalid_id")
        return value
    if value.startswith("0x") and len(value) == 66:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    if what != "dataset":
        raise ConfigError(f"{value!r} is not a 0x-prefixed 32-byte {what} id", code="invalid_id")
    try:
        return slug_id(value)
    except ValueError as exc:
        raise ConfigError(str(exc), code="invalid_id") from None


def _name(kind: type[Tier] | type[Operation], value: str | Tier | Operation) -> str:
    if isinstance(value, kind):
        return value.name
    name = str(value).upper().replace("-", "_")
    if name not in kind.__members__:
        choices = ", ".join(kind.__members__)
        raise ConfigError(f"unknown {kind.__name__.lower()} {value!r}; one of {choices}",
                          code="invalid_request")  # fmt: skip
    return name


def _signed_fields(requester: Signer, request: AccessRequest, domain: Domain) -> dict[str, Any]:
    return {
        "request_id": _hex(request.request_id),
        "agreement_id": _hex(request.agreement_id),
        "dataset_id": _hex(request.dataset_id),
        "field_mask": request.field_mask,
        "tier": request.tier.name,
        "operation": request.operation.name,
        "request_hash": _hex(request.request_hash),
        "deadline": request.deadline,
        "authorization_ref": _hex(request.authorization_ref),
        "requester": requester.address,
        "signature": _hex(request.sign(requester, domain)),
    }


def sign_request(
    requester: Signer,
    request: AccessRequest,
    domain: Domain,
    *,
    cohort: Iterable[bytes] | None = None,
) -> AccessRequestIn:
    """The API body of `request`, signed by the requester's own key (the key never travels).

    `cohort`: the subject references the access would include (not signed: the gateway decides
    which of them it admits and records their tree head)."""
    return AccessRequestIn(
        **_signed_fields(requester, request, domain),
        cohort=None if cohort is None else [_hex(ref) for ref in cohort],
    )


def sign_redemption(
    requester: Signer, request: AccessRequest, domain: Domain, code: str
) -> RedeemIn:
    """A redemption body: `request` must name the code's hash (`code_hash(code)`) as its
    `authorization_ref`; the code goes beside the signed fields."""
    return RedeemIn(**_signed_fields(requester, request, domain), code=code)


class GatewayClient:
    """An access service's gateway client; `signer` is the requester's key (`request_access`)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        signer: Signer | None = None,
        domain: Domain | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token.strip()  # a token read from a file keeps its newline
        if not token:
            raise ConfigError(
                "no gateway API token: set DUL_GATEWAY_TOKEN (or pass --token) to a token made "
                "by `dul admin token create NAME --org ORG`",
                code="token_missing",
            )
        self.signer = signer
        self.domain = domain
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"code": "http_error", "detail": response.text}
            raise GatewayClientError(
                response.status_code, str(problem.get("code")), str(problem.get("detail")), problem
            )
        return response.json()

    @staticmethod
    def _wait(wait: bool) -> dict[str, str]:
        return {"wait": "confirmed"} if wait else {}

    def request_access(
        self,
        body: AccessRequestIn | None = None,
        *,
        agreement: str | bytes | None = None,
        dataset: str | bytes | None = None,
        fields: Sequence[str | int] | None = None,
        tier: str | Tier | None = None,
        operation: str | Operation | None = None,
        cohort: Iterable[str | bytes] | None = None,
        query: str | bytes | None = None,
        request_id: bytes | None = None,
        deadline: int | None = None,
        signer: Signer | None = None,
        wait: bool = False,
    ) -> AccessOut:
        """Ask for one access and get the gateway's decision (durable before it answers).

        Either a `body` signed by hand (`sign_request`), or the request's terms: `agreement`
        (0x-hex id), `dataset` (slug or 0x-hex id), `fields` (names or indices), `tier` and
        `operation` (names, e.g. "DEIDENTIFIED", "AGGREGATE_QUERY"), optional `query` (its
        SHA-256 is the signed request hash) and `cohort` (subject references) — then the
        request is drafted by the gateway, checked and signed here by `signer` (default: the
        client's), and sent. `wait=True` answers once the decision is on chain."""
        terms = (agreement, dataset, fields, tier, operation, cohort, query, request_id, deadline)
        if body is not None and any(t is not None for t in terms):
            raise ConfigError(
                "give either a signed body or the request's terms, not both",
                code="invalid_request",
            )
        if body is None:
            body = self.sign_access(
                agreement=agreement,
                dataset=dataset,
                fields=fields,
                tier=tier,
                operation=operation,
                cohort=cohort,
                query=query,
                request_id=request_id,
                deadline=deadline,
                signer=signer,
            )
        data = self._send(
            "POST", "/v1/access-requests", json=body.model_dump(), params=self._wait(wait)
        )
        return AccessOut.model_validate(data)

    def access_typed_data(
        self,
        *,
        agreement: str | bytes,
        dataset: str | bytes,
        fields: Sequence[str | int],
        tier: str | Tier,
        operation: str | Operation,
        query: str | bytes | None = None,
        request_id: bytes | None = None,
        deadline: int | None = None,
    ) -> dict[str, Any]:
        """The EIP-712 JSON (eth_signTypedData_v4) of a request, as the gateway drafts it."""
        draft: dict[str, Any] = {
            "agreement_id": _hex(_id32(agreement, "agreement")),
            "dataset_id": _hex(_id32(dataset, "dataset")),
            "fields": list(fields),
            "tier": _name(Tier, tier),
            "operation": _name(Operation, operation),
        }
        if query is not None:
            raw = query.encode() if isinstance(query, str) else query
            draft["request_hash"] = _hex(hashlib.sha256(raw).digest())
        if request_id is not None:
            draft["request_id"] = _hex(request_id)
        if deadline is not None:
            draft["deadline"] = deadline
        result: dict[str, Any] = self._send("POST", "/v1/access-requests/typed-data", json=draft)
        return result

    def sign_access(
        self,
        *,
        agreement: str | bytes | None,
        dataset: str | bytes | None,
        fields: Sequence[str | int] | None,
        tier: str | Tier | None,
        operation: str | Operation | None,
        cohort: Iterable[str | bytes] | None = None,
        query: str | bytes | None = None,
        request_id: bytes | None = None,
        deadline: int | None = None,
        signer: Signer | None = None,
    ) -> AccessRequestIn:
        """The signed body of a request (see `request_access`), not yet sent."""
        signer = signer or self.signer
        if signer is None:
            raise ConfigError("no signer: pass signer= (the requester's key)", code="no_signer")
        if agreement is None or dataset is None or not fields or tier is None or not operation:
            raise ConfigError(
                "an access request needs agreement, dataset, fields, tier and operation",
                code="invalid_request",
            )
        typed = self.access_typed_data(
            agreement=agreement,
            dataset=dataset,
            fields=fields,
            tier=tier,
            operation=operation,
            query=query,
            request_id=request_id,
            deadline=deadline,
        )
        request = self._check_draft(typed, agreement, dataset, fields, tier, operation, request_id)
        signature = signer.sign_digest(typed_data_digest(typed))
        refs = None if cohort is None else [_hex(_id32(r, "subject reference")) for r in cohort]
        return AccessRequestIn(
            request_id=_hex(request.request_id),
            agreement_id=_hex(request.agreement_id),
            dataset_id=_hex(request.dataset_id),
            field_mask=request.field_mask,
            tier=request.tier.name,
            operation=request.operation.name,
            request_hash=_hex(request.request_hash),
            deadline=request.deadline,
            authorization_ref=_hex(request.authorization_ref),
            requester=signer.address,
            signature=_hex(signature),
            cohort=refs,
        )

    def _check_draft(
        self,
        typed: dict[str, Any],
        agreement: str | bytes,
        dataset: str | bytes,
        fields: Sequence[str | int],
        tier: str | Tier,
        operation: str | Operation,
        request_id: bytes | None,
    ) -> AccessRequest:
        """Sign only what was asked for: same agreement, dataset, tier, operation, one bit per
        distinct field, the AccessRequest type, and the pinned domain if one was given."""
        try:
            request = AccessRequest.from_message(typed["message"])
            primary = typed["primaryType"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DulError(
                f"the gateway's typed data is malformed: {exc}", code="bad_typed_data"
            ) from None
        expected = (
            _id32(agreement, "agreement"),
            _id32(dataset, "dataset"),
            Tier[_name(Tier, tier)],
            Operation[_name(Operation, operation)],
            len(set(fields)),
        )
        got = (
            request.agreement_id,
            request.dataset_id,
            request.tier,
            request.operation,
            request.field_mask.bit_count(),
        )
        wrong_id = request_id is not None and request.request_id != request_id
        if primary != "AccessRequest" or got != expected or wrong_id:
            raise DulError(
                "the gateway drafted another request than the one asked for; nothing was signed",
                code="bad_typed_data",
            )
        if self.domain is not None and typed_data_digest(typed) != request.digest(self.domain):
            raise DulError(
                "the gateway's signing domain is not the pinned one; nothing was signed",
                code="bad_typed_data",
            )
        return request

    def request_access_batch(
        self, bodies: Sequence[AccessRequestIn], *, wait: bool = False
    ) -> list[AccessOut]:
        payload = {"requests": [b.model_dump() for b in bodies]}
        data = self._send(
            "POST", "/v1/access-requests/batch", json=payload, params=self._wait(wait)
        )
        return AccessBatchOut.model_validate(data).results

    def redeem(self, body: RedeemIn, *, wait: bool = False) -> AccessOut:
        """An access that redeems a patient's authorization code (see `sign_redemption`)."""
        data = self._send(
            "POST", "/v1/authorizations/redeem", json=body.model_dump(), params=self._wait(wait)
        )
        return AccessOut.model_validate(data)

    def get_access(self, access_id: str, *, wait: bool = False) -> AccessOut:
        data = self._send("GET", f"/v1/access-requests/{access_id}", params=self._wait(wait))
        return AccessOut.model_validate(data)

    def release_result(
        self, access_id: str, result_hash: bytes, kind: str, size: int, *, wait: bool = False
    ) -> ReleaseOut:
        body = {"result_hash": _hex(result_hash), "kind": kind, "size": size}
        data = self._send(
            "POST", f"/v1/access-requests/{access_id}/results", json=body, params=self._wait(wait)
        )
        return ReleaseOut.model_validate(data)

    def ready(self) -> dict[str, Any]:
        response = self._http.get("/readyz")
        result: dict[str, Any] = response.json()
        return result

"""A typed Python client for access services (and the tests and CLI).

client = GatewayClient("http://127.0.0.1:8700", token)
signed = sign_request(requester, request, domain)
answer = client.request_access(signed, wait=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from dul.contracts.typed_data import AccessRequest, Domain
from dul.errors import DulError
from dul.signing import Signer
from ledger_gateway.models import AccessBatchOut, AccessOut, AccessRequestIn, ReleaseOut


class GatewayClientError(DulError):
    """The gateway answered with a problem; `code` is its stable code."""

    def __init__(self, status: int, code: str, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}", code=code)
        self.status = status
        self.problem = problem


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def sign_request(
    requester: Signer,
    request: AccessRequest,
    domain: Domain,
    *,
    cohort_root: bytes = bytes(32),
    cohort_size: int = 0,
) -> AccessRequestIn:
    """The API body of `request`, signed by the requester's own key (the key never travels)."""
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
        cohort_root=_hex(cohort_root),
        cohort_size=cohort_size,
        requester=requester.address,
        signature=_hex(request.sign(requester, domain)),
    )


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
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

    def request_access(self, body: AccessRequestIn, *, wait: bool = False) -> AccessOut:
        data = self._send(
            "POST", "/v1/access-requests", json=body.model_dump(), params=self._wait(wait)
        )
        return AccessOut.model_validate(data)

    def request_access_batch(
        self, bodies: Sequence[AccessRequestIn], *, wait: bool = False
    ) -> list[AccessOut]:
        payload = {"requests": [b.model_dump() for b in bodies]}
        data = self._send(
            "POST", "/v1/access-requests/batch", json=payload, params=self._wait(wait)
        )
        return AccessBatchOut.model_validate(data).results

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

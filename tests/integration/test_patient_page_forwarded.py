"""The patient page's per-client limits key on the TCP peer: a client cannot pick its address
with X-Forwarded-For (uvicorn trusts that header from any 127.0.0.1 peer unless told not to)."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from ledger_gateway.patient_page.settings import PatientPageSettings
from ledger_gateway.patient_page.testing import serve_patient_page


def test_forwarded_for_neither_bypasses_nor_aims_the_sign_in_limit(tmp_path: Path) -> None:
    settings = PatientPageSettings(
        home=tmp_path, gateway_url="http://127.0.0.1:9", gateway_token=SecretStr("unused"),
        audit_url="http://127.0.0.1:9", rpc_url="http://127.0.0.1:9",
        signin_failures=2, signin_window_s=600,
    )  # fmt: skip
    with serve_patient_page(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        for n in range(2):
            answer = client.get(
                "/api/session",
                headers={
                    "Authorization": "Bearer dulpt_garbage",
                    "X-Forwarded-For": f"198.51.100.{n}",
                },
            )
            assert answer.status_code == 401, answer.text
        # a third failure from the same peer is refused whatever address it claims
        refused = client.get(
            "/api/session",
            headers={"Authorization": "Bearer dulpt_garbage", "X-Forwarded-For": "198.51.100.77"},
        )
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited"

"""A subject reference is a patient's pseudonym: the gateway's request log line names the
route (`/v1/consents/{subject}`) for the paths that carry one, never the reference itself. The
hospital's patient page reads `/v1/consents/{subject}` on every visit, so without this the
gateway's log would list which patient came when."""

from __future__ import annotations

import logging
import os
import secrets
import time

import httpx
import pytest
import structlog

from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore


@pytest.mark.every_node
def test_request_log_never_names_a_subject_reference(gateway: GatewayHandle) -> None:
    token = TokenStore(gateway.settings.tokens_path).create(
        f"log-privacy-steward-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )
    subject = "0x" + secrets.token_hex(32)
    headers = {"Authorization": f"Bearer {token}"}
    withdrawal = {"consent_id": "0x" + "11" * 32, "deadline": 1, "signature": "0x" + "00" * 65}
    # Whatever level an earlier test configured, info lines reach the capture here.
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with (
            structlog.testing.capture_logs() as logs,
            httpx.Client(base_url=gateway.url) as client,
        ):
            listed = client.get(f"/v1/consents/{subject}", headers=headers, timeout=30)
            refused = client.post(
                f"/v1/consents/{subject}/withdraw", json=withdrawal, headers=headers, timeout=30
            )
            access = "0x" + secrets.token_hex(32)
            unknown = client.get(f"/v1/access-requests/{access}", headers=headers, timeout=30)
            # the line is written once the answer is sent: wait for the last one
            deadline = time.monotonic() + 10
            while sum(e.get("event") == "request" for e in logs) < 3:
                assert time.monotonic() < deadline, logs
                time.sleep(0.05)
    finally:
        structlog.configure(**saved)
    assert listed.status_code == 200, listed.text
    assert 400 <= refused.status_code < 500, refused.text
    assert unknown.status_code == 403, unknown.text
    requests = {e["path"]: e["status"] for e in logs if e.get("event") == "request"}
    assert requests["/v1/consents/{subject}"] == 200
    assert requests["/v1/consents/{subject}/withdraw"] == refused.status_code
    assert requests[f"/v1/access-requests/{access}"] == 403  # other ids stay findable
    assert subject[2:] not in repr(logs).lower()

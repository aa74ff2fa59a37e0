"""The patient page's rate limits: failed sign-ins per client address, codes per patient token
and per client — a clear 429 `rate_limited` problem with Retry-After, and nothing counted or
relayed past the limit. (Codes over a real chain: tests/e2e/test_patient_page.py.)"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from ledger_gateway.patient_page.limits import PageLimits, RateLimitedError, Window
from ledger_gateway.patient_page.settings import PatientPageSettings
from ledger_gateway.patient_page.testing import serve_patient_page


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_allows_its_limit_then_names_the_wait_until_the_oldest_hit_leaves() -> None:
    clock = Clock()
    window = Window(3, 60, clock=clock)
    for _ in range(3):  # hits at 1000, 1010, 1020
        window.take("a", "tries")
        clock.now += 10
    with pytest.raises(RateLimitedError) as exc:
        window.take("a", "tries")
    assert (exc.value.status, exc.value.code, exc.value.retry_after) == (429, "rate_limited", 30)
    assert "at most 3 in 1 minute; try again in 30 seconds" in exc.value.message
    window.take("b", "tries")  # another key is not limited
    clock.now = 1_060.5  # the first hit has left the window; the refused one was not counted
    window.take("a", "tries")
    with pytest.raises(RateLimitedError) as exc:
        window.take("a", "tries")
    assert exc.value.retry_after == 10  # 1010 + 60 - 1060.5, rounded up


def test_codes_are_limited_per_token_and_per_client() -> None:
    clock = Clock()
    limits = PageLimits(signin_failures=5, signin_window_s=60, codes_per_token=2,
                        codes_per_client=3, codes_window_s=3600, clock=clock)  # fmt: skip
    limits.take_code("patient-1", "10.0.0.1")
    limits.take_code("patient-1", "10.0.0.1")
    with pytest.raises(RateLimitedError, match="too many codes for you"):
        limits.take_code("patient-1", "10.0.0.2")
    limits.take_code("patient-2", "10.0.0.1")  # the client's third
    with pytest.raises(RateLimitedError, match="from this address") as exc:
        limits.take_code("patient-3", "10.0.0.1")
    assert exc.value.retry_after == 3600
    clock.now += 3600
    limits.take_code("patient-1", "10.0.0.1")


def test_signed_changes_are_limited_per_token_and_checked_without_counting() -> None:
    clock = Clock()
    limits = PageLimits(signin_failures=5, signin_window_s=60, codes_per_token=1,
                        codes_per_client=1, codes_window_s=60, writes_per_token=2,
                        writes_window_s=3600, clock=clock)  # fmt: skip
    limits.check_write("patient-1")  # a consent to sign: nothing counted
    limits.take_write("patient-1")
    limits.check_write("patient-1")
    limits.take_write("patient-1")
    for refused in (limits.take_write, limits.check_write):
        with pytest.raises(RateLimitedError, match="at most 2 in 1 hour") as exc:
            refused("patient-1")
        assert (exc.value.code, exc.value.retry_after) == ("rate_limited", 3600)
    limits.take_write("patient-2")  # another patient is not limited
    limits.take_code("patient-1", "10.0.0.1")  # nor are the patient's codes
    clock.now += 3600
    limits.take_write("patient-1")


def test_failed_sign_ins_block_the_address_but_not_a_token_that_signed_in() -> None:
    limits = PageLimits(signin_failures=2, signin_window_s=60, codes_per_token=1,
                        codes_per_client=1, codes_window_s=60)  # fmt: skip
    limits.signed_in("Bearer good", expires_at=2**40)
    for _ in range(2):
        limits.check_signin("10.0.0.9", "Bearer guess")
        limits.failed_signin("10.0.0.9")
    with pytest.raises(RateLimitedError, match="too many failed sign-ins"):
        limits.check_signin("10.0.0.9", "Bearer another guess")
    limits.check_signin("10.0.0.9", "Bearer good")  # a patient's session goes on
    limits.check_signin("10.0.0.10", "Bearer guess")  # another address is not blocked
    limits.signed_in("Bearer stale", expires_at=1)  # an expired token is no pass
    with pytest.raises(RateLimitedError):
        limits.check_signin("10.0.0.9", "Bearer stale")


def test_the_page_answers_429_after_too_many_failed_sign_ins(tmp_path: Path) -> None:
    settings = PatientPageSettings(
        home=tmp_path, gateway_token="dul_not_used_without_a_patient", org="hospital-a",
        signin_failures=3, signin_window_s=600,
    )  # fmt: skip
    with serve_patient_page(settings) as url, httpx.Client(base_url=url, timeout=10) as client:
        bad = {"Authorization": "Bearer dulpt_not-a-token"}
        for path in ("/api/session", "/api/report", "/api/consents"):
            answer = client.get(path, headers=bad)
            assert answer.status_code == 401, answer.text
        for method, path in (("GET", "/api/session"), ("POST", "/api/codes")):
            refused = client.request(method, path, headers=bad, json={})
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            body = refused.json()
            assert (body["status"], body["code"], body["title"]) == (
                429, "rate_limited", "Too many requests"
            )  # fmt: skip
            assert "too many failed sign-ins from this address" in body["detail"]
            assert 1 <= int(refused.headers["Retry-After"]) <= 600
            assert refused.headers["X-Frame-Options"] == "DENY"  # still the page's headers
        assert client.get("/healthz").status_code == 200  # the page itself is not limited
        assert client.get("/").status_code == 200


def test_the_limits_are_bounded_settings(tmp_path: Path) -> None:
    for bad in (
        {"signin_failures": 0},
        {"codes_per_token": 10_001},
        {"codes_window_s": 0.5},
        {"writes_per_token": 0},
        {"writes_window_s": 86_401},
    ):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            PatientPageSettings(home=tmp_path, **bad)

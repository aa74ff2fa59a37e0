"""The patient page's security headers are on every answer it gives, not on `/` alone: the same
page is also reachable as `/page/index.html` (the static mount), and a copy served there without
`frame-ancestors 'none'` could be framed by another site over a signed-in patient's page."""

from __future__ import annotations

from pathlib import Path

import httpx

from ledger_gateway.patient_page.app import SECURITY_HEADERS
from ledger_gateway.patient_page.settings import PatientPageSettings
from ledger_gateway.patient_page.testing import serve_patient_page


def test_every_answer_carries_the_security_headers(tmp_path: Path) -> None:
    settings = PatientPageSettings(
        home=tmp_path, gateway_token="dul_not_used_without_a_patient", org="hospital-a"
    )
    with serve_patient_page(settings) as url:
        answers = {
            path: httpx.request(method, f"{url}{path}", timeout=5)
            for method, path in [
                ("GET", "/"),
                ("GET", "/page/index.html"),
                ("GET", "/page/patient.js"),
                ("GET", "/page/patient.css"),
                ("GET", "/page/proof.js"),
                ("GET", "/page/no-such-file.html"),
                ("GET", "/api/session"),
                ("POST", "/api/qr"),
                ("GET", "/nothing-here"),
            ]
        }
    assert answers["/page/index.html"].status_code == 200
    assert "Patient token" in answers["/page/index.html"].text
    assert answers["/page/no-such-file.html"].status_code == 404
    missing = answers["/nothing-here"]  # starlette's own refusal, as problem JSON
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["code"] == "not_found"
    assert answers["/api/session"].status_code == 401
    for path, answer in answers.items():
        for name in ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy"):
            assert answer.headers.get(name) == SECURITY_HEADERS[name], (path, name)
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], path
        assert answer.headers.get("X-Frame-Options") == "DENY", path
        assert answer.headers.get("Cache-Control"), path
    # a patient's answers are never cached; the page's own files keep their own policy
    assert answers["/api/session"].headers["Cache-Control"] == "no-store"
    assert answers["/page/index.html"].headers["Cache-Control"] == "no-store"

"""Both services' OpenAPI documents every error as RFC 9457 problem JSON with its codes, and
the code tables behind it name every code the services raise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from audit.app import PROBLEM_CODES as AUDIT_CODES
from audit.app import create_app as audit_app
from audit.settings import AuditSettings
from ledger_gateway.api.problems import PROBLEM_CODES as GATEWAY_CODES
from ledger_gateway.app import create_app as gateway_app
from ledger_gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
CODE = re.compile(r"""\bcode\s*=\s*"([a-z_]+)\"""")


def schemas(tmp_path: Path) -> dict[str, dict[str, Any]]:
    gateway = gateway_app(GatewaySettings(home=tmp_path, org="hospital-a", key="gateway"))
    audit = audit_app(AuditSettings(home=tmp_path))
    return {"gateway": gateway.openapi(), "audit": audit.openapi()}


@pytest.mark.parametrize("service", ["gateway", "audit"])
def test_every_error_response_is_problem_json(service: str, tmp_path: Path) -> None:
    schema = schemas(tmp_path)[service]
    text = str(schema)
    assert "HTTPValidationError" not in text
    codes = GATEWAY_CODES if service == "gateway" else AUDIT_CODES
    enum = schema["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
    assert set(enum) >= {c for s, group in codes.items() if s != 405 for c in group}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert "500" in errors, f"{method} {path}"
            if path not in ("/healthz", "/readyz", "/metrics"):
                assert "422" in errors, f"{method} {path}"
            for status, response in errors.items():
                content = response["content"]
                assert list(content) == ["application/problem+json"], f"{method} {path} {status}"
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }
                for code in codes[int(status)]:
                    assert f"`{code}`" in response["description"]


def raised_codes(package: str, skip: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        if path.name not in skip and not set(path.parts) & set(skip):
            found |= set(CODE.findall(path.read_text()))
    return found


def test_the_gateway_code_table_is_complete() -> None:
    listed = {c for group in GATEWAY_CODES.values() for c in group}
    # (the patient page is an application of its own, with its own answers)
    raised = raised_codes("ledger_gateway", ("client.py", "steward_client.py", "bench.py",
                                             "testing.py", "cli.py", "patient_page"))  # fmt: skip
    assert raised - listed == set()


def test_the_audit_code_table_is_complete() -> None:
    """The modules whose errors reach an API client with their own code (the indexer's and the
    chain readers' reach it as node_unavailable; checkpoints are the CLI's)."""
    listed = {c for group in AUDIT_CODES.values() for c in group}
    served = ("app.py", "auth.py", "scope.py", "signin.py", "provenance.py", "reports.py",
              "transparency.py", "exports.py")  # fmt: skip
    raised: set[str] = set()
    for name in served:
        path = ROOT / "audit" / name
        if path.exists():
            raised |= set(CODE.findall(path.read_text()))
    assert raised - listed == set()


def test_starlette_s_own_refusals_are_problem_json(tmp_path: Path) -> None:
    """No such route, a wrong method: the gateway answers both as problem JSON with a code
    (`ledger_gateway.api.problems.http_problem`, which the patient page shares)."""
    from fastapi.testclient import TestClient

    client = TestClient(
        gateway_app(GatewaySettings(home=tmp_path, org="hospital-a", key="gateway"))
    )
    for method, path, status, code in (
        ("GET", "/nothing-here", 404, "not_found"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
    ):
        answer = client.request(method, path)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == code

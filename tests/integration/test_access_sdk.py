"""The access service's side over real HTTP against the chain: the Python SDK
(`GatewayClient.request_access` with terms by name), `POST /v1/access-requests/typed-data`
signed by eth_account (by MetaMask's eth-sig-util and ethers v6 in node: in
test_wallet_interop.py), `dul access request|status|release` through the CLI, and the SDK
importable without FastAPI or web3."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from typer.testing import CliRunner, Result

from dul.chain.testing import ChainHandle
from dul.cli.main import app
from dul.contracts.world import OMOP_FIELDS, World
from dul.errors import DulError
from dul.keys import KeyStore
from dul.signing import LocalSigner, typed_data_digest
from ledger_gateway.client import GatewayClient, GatewayClientError
from ledger_gateway.testing import GatewayHandle

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "access-cli-tests"
REQUESTER_SECRET = keccak(b"dul world requester")  # world.requester's derived key


@pytest.fixture(scope="module")
def agreement(world: World) -> str:
    """A fresh ACTIVE research agreement: fields 1-4 of the OMOP dataset, QUERY, DEIDENTIFIED."""
    return "0x" + world.activate(world.research_terms()).hex()


def draft(agreement: str, world: World, **overrides: Any) -> dict[str, Any]:
    body = {
        "agreement_id": agreement,
        "dataset_id": "0x" + world.dataset.hex(),
        "fields": ["person.year_of_birth", "person.gender_concept_id"],
        "tier": "DEIDENTIFIED",
        "operation": "QUERY",
    }
    body.update(overrides)
    return body


def signed_body(typed: dict[str, Any], requester: str, signature: str) -> dict[str, Any]:
    """The signed request a wallet user posts: the message's values, snake_case, names."""
    m = typed["message"]
    return {
        "request_id": m["requestId"],
        "agreement_id": m["agreementId"],
        "dataset_id": m["datasetId"],
        "field_mask": int(m["fieldMask"]),
        "tier": ("AGGREGATE", "MODEL_PARAMETERS", "DEIDENTIFIED")[int(m["tier"])],
        "operation": ("QUERY", "TRAIN", "EXPORT_RESULT")[int(m["operation"])],
        "request_hash": m["requestHash"],
        "authorization_ref": m["authorizationRef"],
        "deadline": int(m["deadline"]),
        "requester": requester,
        "signature": signature,
    }


def post(gateway: GatewayHandle, path: str, body: Any, **params: str) -> httpx.Response:
    return httpx.post(
        gateway.url + path,
        json=body,
        params=params,
        headers={"Authorization": f"Bearer {gateway.token}"},
        timeout=30,
    )


def test_typed_data_signed_by_eth_account_is_granted(
    gateway: GatewayHandle, world: World, agreement: str
) -> None:
    reply = post(gateway, "/v1/access-requests/typed-data", draft(agreement, world))
    assert reply.status_code == 200, reply.text
    typed = reply.json()
    assert typed["primaryType"] == "AccessRequest"
    assert typed["domain"]["verifyingContract"] == gateway.domain.verifying_contract
    assert int(typed["message"]["fieldMask"]) == 0b110  # named fields 1 and 2
    account = Account.from_key(REQUESTER_SECRET)
    assert account.address == world.requester.address
    signature = account.sign_message(encode_typed_data(full_message=typed)).signature
    body = signed_body(typed, account.address, "0x" + signature.hex().removeprefix("0x"))
    answer = post(gateway, "/v1/access-requests", body, wait="confirmed")
    assert answer.status_code == 201, answer.text
    assert answer.json()["decision"] == "GRANTED"
    assert answer.json()["status"] == "confirmed"


def test_typed_data_refusals_are_problems(
    gateway: GatewayHandle, world: World, agreement: str
) -> None:
    unknown = post(
        gateway, "/v1/access-requests/typed-data", draft(agreement, world, fields=["nope"])
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_field"
    assert OMOP_FIELDS[0] in unknown.json()["detail"]
    both = post(gateway, "/v1/access-requests/typed-data", draft(agreement, world, field_mask=2))
    assert both.status_code == 422
    assert both.json()["code"] == "validation_error"
    no_dataset = post(
        gateway,
        "/v1/access-requests/typed-data",
        draft(agreement, world, dataset_id="0x" + "ab" * 32),
    )
    assert no_dataset.status_code == 404
    assert no_dataset.json()["code"] == "unknown_dataset"
    forever = post(gateway, "/v1/access-requests/typed-data",
                   draft(agreement, world, deadline=2**64 - 1))  # fmt: skip
    assert forever.status_code == 422
    assert forever.json()["code"] == "deadline_too_far"
    anonymous = httpx.post(
        gateway.url + "/v1/access-requests/typed-data", json=draft(agreement, world)
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"


def test_sdk_requests_by_name_and_releases(
    gateway: GatewayHandle, world: World, agreement: str
) -> None:
    with GatewayClient(
        gateway.url, gateway.token, signer=world.requester, domain=gateway.domain
    ) as client:
        answer = client.request_access(
            agreement=agreement,
            dataset="hospital-a/omop-cdm",
            fields=["person.year_of_birth", 3],
            tier="deidentified",
            operation="QUERY",
            query="SELECT count(*) FROM person",
            wait=True,
        )
        assert answer.decision == "GRANTED"
        assert answer.status == "confirmed"
        release = client.release_result(
            answer.access_id, hashlib.sha256(b"42").digest(), "AGGREGATE_RESULT", 2, wait=True
        )
        assert release.status == "confirmed"
        over = client.request_access(
            agreement=agreement,
            dataset="hospital-a/omop-cdm",
            fields=["person.person_id"],  # field 0 is outside the agreement
            tier="DEIDENTIFIED",
            operation="QUERY",
        )
        assert over.decision == "DENIED"
        assert over.reasons


def test_sdk_refuses_a_domain_it_did_not_pin(
    gateway: GatewayHandle, world: World, agreement: str
) -> None:
    other = type(gateway.domain)(gateway.domain.name, 1, gateway.domain.verifying_contract)
    client = GatewayClient(gateway.url, gateway.token, signer=world.requester, domain=other)
    with client, pytest.raises(DulError, match="pinned") as refused:
        client.request_access(
            agreement=agreement,
            dataset="hospital-a/omop-cdm",
            fields=["person.year_of_birth"],
            tier="DEIDENTIFIED",
            operation="QUERY",
        )
    assert getattr(refused.value, "code", None) == "bad_typed_data"


def test_sdk_imports_without_fastapi_or_web3() -> None:
    probe = (
        "import sys, ledger_gateway.client as c; assert c.GatewayClient; "
        "print(sorted(m for m in ('fastapi', 'starlette', 'web3', 'uvicorn', 'sqlalchemy') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_sdk_refuses_a_body_and_terms_together(gateway: GatewayHandle, world: World) -> None:
    with GatewayClient(gateway.url, gateway.token, signer=world.requester) as client:
        body = client.sign_access(
            agreement="0x" + "ab" * 32, dataset="hospital-a/omop-cdm", fields=[1],
            tier="AGGREGATE", operation="QUERY",
        )  # fmt: skip
        with pytest.raises(DulError, match="not both"):
            client.request_access(body, tier="IDENTIFIED")


def test_missing_token_says_what_to_do(gateway: GatewayHandle) -> None:
    with pytest.raises(DulError, match="dul admin token create"):
        GatewayClient(gateway.url, "")


# --------------------------------------------------------------------------- dul access


@pytest.fixture(scope="module")
def env(chain: ChainHandle, gateway: GatewayHandle) -> dict[str, str]:
    keys = KeyStore(chain.home, passphrase=PASSPHRASE, scrypt_n=2**10)
    if "cli-requester" not in dict(keys.list()):
        keys.import_key("cli-requester", REQUESTER_SECRET)
    return {
        **chain.env,
        "DUL_KEY_PASSPHRASE": PASSPHRASE,
        "DUL_GATEWAY_URL": gateway.url,
        "DUL_GATEWAY_TOKEN": gateway.token,
        "COLUMNS": "200",
    }


def dul(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def json_out(result: Result) -> Any:
    """The command's JSON object. The runner holds this process's stdout while it runs, so a
    line a background thread of the test process logs then (its logging is not the CLI's, which
    writes to stderr) can land beside it: seen once on a worker that keeps Hardhat's node."""
    text = result.stdout
    start = 0 if text.startswith("{") else text.index("\n{") + 1
    return json.JSONDecoder().raw_decode(text, start)[0]


def test_cli_request_status_release(env: dict[str, str], agreement: str, tmp_path: Path) -> None:
    asked = dul(
        env,
        "access",
        "request",
        "--agreement",
        agreement,
        "--dataset",
        "hospital-a/omop-cdm",
        "--field",
        "person.year_of_birth",
        "--field",
        "condition_occurrence.condition_concept_id",
        "--tier",
        "deidentified",
        "--query",
        "SELECT count(*) FROM condition_occurrence",
        "--key",
        "cli-requester",
        "--wait",
        "--json",
    )
    assert asked.exit_code == 0, asked.output
    answer = json_out(asked)
    assert answer["decision"] == "GRANTED"
    assert answer["status"] == "confirmed"

    shown = dul(env, "access", "status", answer["access_id"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith(f"GRANTED access_id={answer['access_id']} status=confirmed")

    result = tmp_path / "result.json"
    result.write_text('{"count": 17}')
    released = dul(
        env, "access", "release", answer["access_id"], "--file", str(result), "--wait", "--json"
    )
    assert released.exit_code == 0, released.output
    out = json_out(released)
    assert out["status"] == "confirmed"
    # Only what the access allowed leaves: a model update from a QUERY is refused.
    refused = dul(
        env, "access", "release", answer["access_id"], "--hash", "0x" + "11" * 32,
        "--size", "3", "--kind", "MODEL_UPDATE",
    )  # fmt: skip
    assert refused.exit_code == 1
    assert "release_not_allowed" in refused.stderr

    quiet = dul(
        env, "access", "request", "--agreement", agreement, "--dataset", "hospital-a/omop-cdm",
        "--field", "0", "--tier", "DEIDENTIFIED", "--key", "cli-requester", "-q",
    )  # fmt: skip
    assert quiet.exit_code == 0, quiet.output
    access_id = quiet.stdout.strip()
    assert len(access_id) == 66
    denied = dul(env, "access", "status", access_id, "--json")
    assert json_out(denied)["decision"] == "DENIED"


def test_cli_refusals_are_one_line(env: dict[str, str], agreement: str) -> None:
    base = ["access", "request", "--agreement", agreement, "--dataset", "hospital-a/omop-cdm"]
    unknown = dul(env, *base, "--field", "shoe_size", "--tier", "DEIDENTIFIED",
                  "--key", "cli-requester")  # fmt: skip
    assert unknown.exit_code == 1
    assert "unknown_field" in unknown.stderr
    assert "Traceback" not in unknown.output
    no_token = dul({**env, "DUL_GATEWAY_TOKEN": ""}, "access", "status", "0x" + "00" * 32)
    assert no_token.exit_code == 1
    assert "dul admin token create" in no_token.stderr
    nobody = dul({**env, "DUL_GATEWAY_URL": "http://127.0.0.1:9"}, "access", "status",
                 "0x" + "00" * 32)  # fmt: skip
    assert nobody.exit_code == 1
    assert "gateway_unreachable" in nobody.stderr
    missing = dul(env, "access", "status", "0x" + uuid.uuid4().hex * 2)
    assert missing.exit_code == 1
    assert "not_found" in missing.stderr
    bad_tier = dul(env, *base, "--field", "0", "--tier", "SECRET", "--key", "cli-requester")
    assert bad_tier.exit_code == 2


def test_digest_of_served_typed_data_matches_eth_account(
    gateway: GatewayHandle, world: World, agreement: str
) -> None:
    typed = post(gateway, "/v1/access-requests/typed-data", draft(agreement, world)).json()
    signer = LocalSigner(REQUESTER_SECRET)
    ours = signer.sign_digest(typed_data_digest(typed))
    theirs = Account.from_key(REQUESTER_SECRET).sign_message(encode_typed_data(full_message=typed))
    assert ours == bytes(theirs.signature)


def test_client_error_carries_the_problem_code(gateway: GatewayHandle) -> None:
    with pytest.raises(GatewayClientError) as missing:
        gateway.client.get_access("0x" + "00" * 32)
    assert missing.value.code == "not_found"

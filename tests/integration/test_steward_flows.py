"""Steward flows over real HTTP against the real chain: datasets, agreements drafted, proposed,
signed by both parties and activated, suspended, resumed and revoked — every signature and
transaction made on the steward's side, the gateway only checking and relaying — and every
refusal answered with problem JSON before anything is sent."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from eth_hash.auto import keccak
from eth_typing import ChecksumAddress
from typer.testing import CliRunner, Result

from dul import log as dul_log
from dul.chain.testing import ChainHandle
from dul.cli.steward import app as steward_app
from dul.contracts.typed_data import AgreementTerms, agreement_domain
from dul.contracts.world import World
from dul.domain import AgreementStatus, Tier, slug_id
from dul.errors import TransactionError
from dul.keys import KeyStore
from dul.signing import Signer, typed_data_digest
from ledger_gateway.client import GatewayClientError, StewardClient, sign_steward_call
from ledger_gateway.relay import function
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

PASSPHRASE = "gateway-tests"  # the gateway fixture's keystore passphrase


@pytest.fixture(scope="module")
def steward_token(gateway: GatewayHandle) -> str:
    store = TokenStore(gateway.settings.tokens_path)
    return store.create(f"steward-{os.getpid()}-{id(gateway)}", "hospital-a", TokenRole.STEWARD)


@pytest.fixture(scope="module")
def client(gateway: GatewayHandle, steward_token: str) -> Iterator[StewardClient]:
    with StewardClient(gateway.url, steward_token) as steward:
        yield steward


def registry(world: World) -> ChecksumAddress:
    return world.ledger.deployment.address("AgreementRegistry")


def signed(
    world: World, signer: Signer, contract: str, name: str, *args: object, gas: int | None = None
) -> bytes:
    data = function(contract, name).encode(*args)
    return sign_steward_call(
        world.ledger.w3, signer, world.ledger.deployment.address(contract), data, gas=gas
    )


def nonce(world: World, signer: Signer) -> int:
    return world.ledger.w3.eth.get_transaction_count(signer.address, "pending")


def status(world: World, agreement: bytes) -> AgreementStatus:
    return AgreementStatus(world.ledger.call("AgreementRegistry", "status", agreement))


def problem(exc: pytest.ExceptionInfo[GatewayClientError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


def propose(world: World, client: StewardClient, terms: AgreementTerms) -> str:
    raw = signed(world, world.steward, "AgreementRegistry", "propose", terms.as_abi())
    answer = client.propose(raw, wait=True)
    assert answer.status == "confirmed"
    return answer.agreement_id or ""


def test_draft_submit_and_both_signatures_activate_the_agreement(
    world: World, client: StewardClient, gateway: GatewayHandle
) -> None:
    terms = world.research_terms(quota=10)
    raw = signed(world, world.steward, "AgreementRegistry", "propose", terms.as_abi())
    answer = client.propose(raw, wait=True)
    assert answer.status == "confirmed"
    assert answer.function == "propose"
    assert answer.sender == world.steward.address
    agreement = answer.agreement_id
    assert agreement == "0x" + terms.agreement_id.hex()
    assert client.propose(raw).status == "confirmed"  # the same bytes again: its receipt

    shown = client.get_agreement(agreement)
    assert shown.status == "PROPOSED"
    assert shown.signers == {"holder": None, "requester": None}
    assert shown.datasets[0].fields == [
        "person.year_of_birth",
        "person.gender_concept_id",
        "condition_occurrence.condition_concept_id",
        "condition_occurrence.condition_start_date",
    ]
    typed = client.typed_data(agreement)
    domain = agreement_domain(world.ledger.chain_id, registry(world))
    assert typed_data_digest(typed) == terms.digest(domain)
    assert shown.digest == "0x" + terms.digest(domain).hex()

    first = client.sign_agreement(agreement, world.steward, wait=True)
    assert first.status == "confirmed"
    assert first.agreement_status == "PROPOSED"
    again = client.sign_agreement(agreement, world.steward, wait=True)
    assert again.operation_id == first.operation_id  # idempotent: one operation, one tx
    assert again.tx_hash == first.tx_hash
    second = client.sign_agreement(agreement, world.partner_steward, wait=True)
    assert second.status == "confirmed"
    assert second.agreement_status == "ACTIVE"
    assert second.tx_hash is not None

    shown = client.get_agreement(agreement)
    assert shown.status == "ACTIVE"
    assert shown.signers == {
        "holder": world.steward.address,
        "requester": world.partner_steward.address,
    }
    assert shown.quota == 10
    assert shown.quota_used == 0
    assert [v.version for v in shown.versions] == [1]
    # signatures went out from the gateway's key, through its outbox and nonce sequence
    tx = world.ledger.w3.eth.get_transaction(second.tx_hash)  # type: ignore[arg-type]
    relayer = KeyStore(gateway.settings.dul_home).show(gateway.settings.key).address
    assert tx["from"] == relayer


def test_a_bad_signature_is_refused_and_changes_nothing(
    world: World, client: StewardClient
) -> None:
    terms = world.research_terms()
    agreement = propose(world, client, terms)
    domain = agreement_domain(world.ledger.chain_id, registry(world))
    other = world.requester.sign_digest(terms.digest(domain))
    with pytest.raises(GatewayClientError) as exc:
        client.add_signature(agreement, world.steward.address, other)
    assert problem(exc) == (422, "bad_signature")
    with pytest.raises(GatewayClientError) as exc:
        client.add_signature(agreement, world.steward.address, b"\x01" * 65)
    assert problem(exc) == (422, "bad_signature")
    # a valid signature of the wrong version (another digest) is just as bad
    stale = world.steward.sign_digest(terms.digest(domain, version=2))
    with pytest.raises(GatewayClientError) as exc:
        client.add_signature(agreement, world.steward.address, stale)
    assert problem(exc) == (422, "bad_signature")
    # a real signature by someone who is no party: the chain's reason, nothing queued
    outsider = world.regulator.sign_digest(terms.digest(domain))
    with pytest.raises(GatewayClientError) as exc:
        client.add_signature(agreement, world.regulator.address, outsider)
    assert problem(exc) == (403, "AgreementRegistryUnauthorizedSigner")
    shown = client.get_agreement(agreement)
    assert shown.status == "PROPOSED"
    assert shown.signers == {"holder": None, "requester": None}


def test_a_transaction_for_another_path_or_function_is_refused(
    world: World, client: StewardClient, gateway: GatewayHandle, steward_token: str
) -> None:
    first = world.activate(world.research_terms())
    second = world.activate(world.research_terms())
    before = nonce(world, world.steward)
    suspend = signed(world, world.steward, "AgreementRegistry", "suspend", first, bytes(32))
    for step, agreement in (("resume", first), ("revoke", first), ("suspend", second)):
        with pytest.raises(GatewayClientError) as exc:
            client.lifecycle(step, "0x" + agreement.hex(), suspend)  # type: ignore[arg-type]
        assert problem(exc) == (422, "wrong_transaction"), step
    with pytest.raises(GatewayClientError) as exc:
        client.propose(suspend)
    assert problem(exc) == (422, "wrong_transaction")
    with pytest.raises(GatewayClientError) as exc:
        client.register_dataset(suspend)
    assert problem(exc) == (422, "wrong_transaction")
    with pytest.raises(GatewayClientError) as exc:
        client.lifecycle("suspend", "0x" + first.hex(), b"\xc0\x01\x02")
    assert problem(exc) == (422, "malformed_transaction")
    response = httpx.post(
        f"{gateway.url}/v1/agreements/0x{first.hex()}/suspend",
        headers={"Authorization": f"Bearer {steward_token}"},
        json={"signed_transaction": "not hex"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert nonce(world, world.steward) == before  # nothing was sent
    assert status(world, first) == AgreementStatus.ACTIVE


def test_a_transaction_the_chain_would_refuse_is_answered_with_its_error_and_not_sent(
    world: World, client: StewardClient
) -> None:
    terms = world.research_terms()
    with pytest.raises(TransactionError) as refused:  # the CLI's own estimate catches it first
        signed(world, world.requester, "AgreementRegistry", "propose", terms.as_abi())
    assert refused.value.code == "AgreementRegistryUnauthorizedProposer"
    raw = signed(
        world, world.requester, "AgreementRegistry", "propose", terms.as_abi(), gas=2_000_000
    )
    before = nonce(world, world.requester)
    with pytest.raises(GatewayClientError) as exc:
        client.propose(raw, wait=True)
    assert problem(exc) == (403, "AgreementRegistryUnauthorizedProposer")
    assert exc.value.problem["error_args"]["account"] == world.requester.address
    assert nonce(world, world.requester) == before
    assert status(world, terms.agreement_id) == AgreementStatus.NONE


def test_suspend_resume_revoke_with_the_right_and_the_wrong_steward(
    world: World, client: StewardClient
) -> None:
    agreement = world.activate(world.research_terms())
    path = "0x" + agreement.hex()

    def step(name: str, signer: Signer, *args: object) -> str:
        raw = signed(world, signer, "AgreementRegistry", name, agreement, *args, gas=500_000)
        return client.lifecycle(name, path, raw, wait=True).status  # type: ignore[arg-type]

    assert step("suspend", world.partner_steward, slug_id("audit finding")) == "confirmed"
    assert status(world, agreement) == AgreementStatus.SUSPENDED
    with pytest.raises(GatewayClientError) as exc:
        step("suspend", world.steward, bytes(32))
    assert problem(exc) == (409, "AgreementRegistryInvalidStatus")
    with pytest.raises(GatewayClientError) as exc:
        step("resume", world.steward)  # the holder lifts its own suspensions, not the partner's
    assert problem(exc) == (403, "AgreementRegistryUnauthorizedAccount")
    assert step("resume", world.partner_steward) == "confirmed"
    assert client.get_agreement(path).status == "ACTIVE"
    with pytest.raises(GatewayClientError) as exc:
        step("revoke", world.partner_steward, bytes(32))  # only the holder's steward revokes
    assert problem(exc) == (403, "AgreementRegistryUnauthorizedAccount")
    with pytest.raises(GatewayClientError) as exc:
        step("suspend", world.requester, bytes(32))  # a requester is no steward
    assert problem(exc) == (403, "AgreementRegistryUnauthorizedAccount")
    assert status(world, agreement) == AgreementStatus.ACTIVE
    assert step("revoke", world.steward, slug_id("ended")) == "confirmed"
    assert client.get_agreement(path).status == "REVOKED"


def test_dataset_registration(world: World, client: StewardClient) -> None:
    dataset = slug_id(f"hospital-a/labs-{os.getpid()}")
    args = (dataset, world.hospital, keccak(b"OMOP CDM 5.4"), ["a", "b", "c"], Tier.DEIDENTIFIED)
    raw = signed(world, world.steward, "DatasetRegistry", "registerDataset", *args)
    answer = client.register_dataset(raw, wait=True)
    assert answer.status == "confirmed"
    assert answer.dataset_id == "0x" + dataset.hex()
    assert world.ledger.call("DatasetRegistry", "dataset", dataset)[0] == world.hospital
    assert client.register_dataset(raw).status == "confirmed"  # replay: the same receipt
    again = signed(world, world.steward, "DatasetRegistry", "registerDataset", *args, gas=10**6)
    with pytest.raises(GatewayClientError) as exc:
        client.register_dataset(again)
    assert problem(exc) == (409, "DatasetRegistryDatasetExists")


def test_an_access_service_token_may_not_act_as_a_steward(
    world: World, gateway: GatewayHandle
) -> None:
    agreement = "0x" + world.activate(world.research_terms()).hex()
    with StewardClient(gateway.url, gateway.token) as service:
        assert service.get_agreement(agreement).status == "ACTIVE"  # reading is fine
        raw = signed(world, world.steward, "AgreementRegistry", "resume", bytes(32), gas=10**6)
        for call in (
            lambda: service.typed_data(agreement),
            lambda: service.register_dataset(raw),
            lambda: service.propose(raw),
            lambda: service.lifecycle("suspend", agreement, raw),
            lambda: service.add_signature(agreement, world.steward.address, bytes(65)),
        ):
            with pytest.raises(GatewayClientError) as exc:
                call()
            assert problem(exc) == (403, "forbidden")
    with pytest.raises(GatewayClientError) as exc:
        StewardClient(gateway.url, "dulgw_nope").get_agreement(agreement)
    assert problem(exc) == (401, "unauthorized")
    with (
        StewardClient(gateway.url, gateway.token) as service,
        pytest.raises(GatewayClientError) as exc,
    ):
        service.get_agreement("0x" + "ab" * 32)
    assert problem(exc) == (404, "unknown_agreement")


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def cli_env(chain: ChainHandle, gateway: GatewayHandle, steward_token: str) -> dict[str, str]:
    keys = KeyStore(chain.home, passphrase=PASSPHRASE, scrypt_n=2**14)
    names = {name for name, _ in keys.list()}
    for name, seed in (("hospital-a.steward", "steward"), ("institute.steward", "partner-steward")):
        if name not in names:
            keys.import_key(name, keccak(f"dul world {seed}".encode()))
    return {
        "DUL_HOME": str(chain.home.root),
        "DUL_RPC_URL": chain.rpc_url,
        "DUL_KEY_PASSPHRASE": PASSPHRASE,
        "DUL_GATEWAY_URL": gateway.url,
        "DUL_GATEWAY_TOKEN": steward_token,
    }


def invoke(env: dict[str, str], *args: str) -> Result:
    """Run `dul steward …` as `dul` would (logs to stderr at WARNING), leaving the session's
    logging configuration as it was."""
    saved = structlog.get_config()
    dul_log.configure("WARNING")
    try:
        return CliRunner().invoke(steward_app, list(args), env=env)
    finally:
        structlog.configure(**saved)


def run(env: dict[str, str], *args: str) -> dict[str, object]:
    result = invoke(env, *args)
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_cli_draft_submit_sign_suspend_resume_revoke_show(
    world: World, cli_env: dict[str, str], tmp_path: Path
) -> None:
    draft = tmp_path / "draft.toml"
    draft.write_text(
        'holder = "hospital-a"\nrequester = "institute"\nscenario = "RESEARCH"\n'
        'max_tier = "DEIDENTIFIED"\noperations = ["QUERY"]\nquota = 25\ndays = 30\n'
        'duo_codes = ["DUO:0000042"]\n'
        '[[datasets]]\nid = "hospital-a/omop-cdm"\n'
        'fields = ["person.year_of_birth", 2]\n'
    )
    explicit = tmp_path / "draft.json"
    drafted = run(cli_env, "agreement", "draft", str(draft), "--out", str(explicit), "--json")
    agreement = str(drafted["agreement_id"])
    typed = drafted["typed_data"]
    assert isinstance(typed, dict)
    assert typed["message"]["fieldMasks"] == ["6"]
    submitted = run(cli_env, "agreement", "submit", str(explicit), "--key", "hospital-a.steward",
                    "--json")  # fmt: skip
    assert submitted["agreement_id"] == agreement
    assert submitted["status"] == "confirmed"
    for key, expected in (("hospital-a.steward", "PROPOSED"), ("institute.steward", "ACTIVE")):
        signed_ = run(cli_env, "agreement", "sign", agreement, "--key", key, "--yes", "--json")
        assert signed_["status"] == "confirmed"
        assert signed_["agreement_status"] == expected
    reason = ("--reason", "study closed")
    for args, expected in (
        (("agreement", "suspend", agreement, "--key", "institute.steward", *reason), "SUSPENDED"),
        (("agreement", "resume", agreement, "--key", "institute.steward"), "ACTIVE"),
        (("agreement", "suspend", agreement, "--key", "hospital-a.steward", *reason), "SUSPENDED"),
        (("agreement", "resume", agreement, "--key", "hospital-a.steward"), "ACTIVE"),
        (("agreement", "revoke", agreement, "--key", "hospital-a.steward", *reason), "REVOKED"),
    ):
        if args[1] == "resume":  # a suspension is lifted by its own party only
            other = "hospital-a.steward" if args[4] == "institute.steward" else "institute.steward"
            refused = invoke(cli_env, "agreement", "resume", agreement, "--key", other)
            assert refused.exit_code == 1, refused.output
            assert "AgreementRegistryUnauthorizedAccount" in refused.output
            assert status(world, bytes.fromhex(agreement[2:])).name == "SUSPENDED"
        done = run(cli_env, *args, "--json")
        assert done["status"] == "confirmed", args
        assert status(world, bytes.fromhex(agreement[2:])).name == expected
    shown = run(cli_env, "agreement", "show", agreement, "--json")
    assert shown["status"] == "REVOKED"
    assert shown["quota"] == 25
    human = invoke(cli_env, "agreement", "show", agreement)
    assert "REVOKED" in human.stdout
    assert "person.year_of_birth" in human.stdout


def test_cli_dataset_register_and_clear_errors(world: World, cli_env: dict[str, str]) -> None:
    dataset = f"hospital-a/cli-{os.getpid()}"
    done = run(cli_env, "dataset", "register", dataset, "--holder", "hospital-a",
               "--field", "x", "--field", "y", "--key", "hospital-a.steward", "--json")  # fmt: skip
    assert done["status"] == "confirmed"
    assert world.ledger.call("DatasetRegistry", "dataset", slug_id(dataset))[0] == world.hospital
    # the chain's refusal, found by the local estimate: one line, exit 1, nothing signed
    again = invoke(cli_env, "dataset", "register", dataset, "--holder", "hospital-a",
                   "--field", "x", "--key", "hospital-a.steward")  # fmt: skip
    assert again.exit_code == 1
    assert "DatasetRegistryDatasetExists" in again.output
    assert "Traceback" not in again.output
    unknown = invoke(cli_env, "agreement", "show", "0x" + "cd" * 32)
    assert unknown.exit_code == 1
    assert "unknown_agreement" in unknown.output
    down = invoke(cli_env, "agreement", "show", "0x" + "cd" * 32, "--gateway", "http://127.0.0.1:9")
    assert down.exit_code == 1
    assert "gateway_unreachable" in down.output

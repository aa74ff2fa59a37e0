"""A confirmed access whose block leaves the chain (the node's history rewritten with
`evm_revert`): the gateway alarms, sends the access again so it is on chain exactly once, its
nonce sequence follows the chain so the outbox drains, and a later agreement signature mines.

Each test builds its own chain (reverting the session's would rewind every other module's
state) and serves a real gateway on it, in-process, over real HTTP.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from eth_account import Account
from eth_hash.auto import keccak
from eth_typing import HexStr
from pydantic import SecretStr

from dul.chain.testing import (
    TEST_OPERATOR_KEY,
    ChainHandle,
    free_port,
    start_chain,
    throwaway_chain_settings,
)
from dul.contracts.deploy import deploy
from dul.contracts.ledger import Ledger, connect
from dul.contracts.typed_data import AccessRequest, access_log_domain
from dul.contracts.world import World
from dul.domain import AgreementStatus, Operation, Tier
from dul.home import Home
from dul.keys import KeyStore
from dul.signing import LocalSigner, checksum_address
from ledger_gateway.client import GatewayClient, sign_request
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.steward_client import StewardClient
from ledger_gateway.submitter import ACCESS_RECORDED_TOPIC
from ledger_gateway.testing import serve
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

PASSPHRASE = "vanished-tests"


@dataclass
class Stack:
    chain: ChainHandle
    world: World


@pytest.fixture
def stack(node_kind: str, tmp_path: Path) -> Iterator[Stack]:
    """A private chain (the node of `node_kind`) with the contracts, the small world and the
    gateway's key."""
    operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
    account = Account.from_key(TEST_OPERATOR_KEY)
    home = Home(tmp_path / "home").ensure()
    settings = throwaway_chain_settings(operator=account.address, start_timeout=120.0)
    node = start_chain(node_kind, home, settings)
    status = node.status()
    assert status.rpc_url is not None
    assert status.node_url is not None
    assert status.chain_id is not None
    chain = ChainHandle(
        status.rpc_url, status.node_url, status.chain_id, home, account, node, kind=node_kind
    )
    try:
        w3 = connect(status.rpc_url)
        deployment, _ = deploy(w3, operator, home.deployment, admin_delay=5)
        world = World(Ledger(w3, deployment), operator).build()
        KeyStore(home, passphrase=PASSPHRASE, scrypt_n=2**14).import_key(
            "hospital-a.gateway", keccak(b"dul world gateway")
        )
        yield Stack(chain, world)
    finally:
        chain.client.close()
        node.stop()


@dataclass
class Gateway:
    url: str
    access: GatewayClient
    steward: StewardClient
    stop: Callable[[], None]


@pytest.fixture
def gateway(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Starts the stack's gateway with the given settings (stopped at the end)."""
    stops: list[Callable[[], None]] = []

    def start(**overrides: Any) -> Gateway:
        settings = GatewaySettings(
            home=stack.chain.home.root,
            org="hospital-a",
            key="hospital-a.gateway",
            key_passphrase=SecretStr(PASSPHRASE),
            rpc_url=stack.chain.rpc_url,
            database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
            port=free_port(),
            batch_latency_ms=20,
            deadline_margin_s=5,
            reconfirm_interval_s=0.2,
            **overrides,
        )
        tokens = TokenStore(settings.tokens_path)
        suffix = settings.port
        access = tokens.create(f"access-{suffix}", "hospital-a", TokenRole.ACCESS_SERVICE)
        steward = tokens.create(f"steward-{suffix}", "hospital-a", TokenRole.STEWARD)
        served = serve(settings)
        url = served.__enter__()
        clients = (GatewayClient(url, access), StewardClient(url, steward))

        stopped: list[bool] = []

        def stop() -> None:
            if not stopped:
                stopped.append(True)
                for client in clients:
                    client.close()
                served.__exit__(None, None, None)

        stops.append(stop)
        return Gateway(url, *clients, stop)

    try:
        yield start
    finally:
        for stop in stops:
            stop()


def request_body(stack: Stack, agreement: bytes) -> Any:
    world = stack.world
    request = AccessRequest(
        request_id=os.urandom(32),
        agreement_id=agreement,
        dataset_id=world.dataset,
        field_mask=0b0110,
        tier=Tier.DEIDENTIFIED,
        operation=Operation.QUERY,
        request_hash=keccak(b"SELECT count(*) FROM person"),
        deadline=int(time.time()) + 3_600,
    )
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    return sign_request(world.requester, request, domain)


def recorded(stack: Stack, access_id: str) -> list[dict[str, Any]]:
    """Every AccessRecorded event of `access_id` on the chain now."""
    logs: list[dict[str, Any]] = stack.chain.rpc(
        "eth_getLogs",
        {
            "address": stack.world.ledger.deployment.address("AccessLog"),
            "fromBlock": "0x0",
            "toBlock": "latest",
            "topics": ["0x" + ACCESS_RECORDED_TOPIC.hex(), access_id],
        },
    )
    return logs


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.1)


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def revert_access_away(stack: Stack, gateway: Gateway) -> str:
    """A confirmed access, then the chain rewound to before it (the transaction dropped, so
    the node cannot mine it again by itself). Returns the access id."""
    world, chain = stack.world, stack.chain
    agreement = world.activate(world.research_terms())
    snapshot = chain.node_rpc("evm_snapshot")
    answer = gateway.access.request_access(request_body(stack, agreement), wait=True)
    assert answer.status == "confirmed", answer
    assert len(recorded(stack, answer.access_id)) == 1
    assert chain.node_rpc("evm_revert", snapshot) is True
    chain.node_rpc("anvil_dropAllTransactions")
    assert recorded(stack, answer.access_id) == []
    return answer.access_id


def assert_recovered(stack: Stack, gateway: Gateway, access_id: str) -> None:
    """Alarmed; the access on chain exactly once and confirmed where it is; outbox drained; a
    later agreement signature (relayed with the gateway's key) mines."""
    world, chain = stack.world, stack.chain

    def settled() -> bool:
        view = gateway.access.get_access(access_id)
        return view.status == "confirmed" and len(recorded(stack, access_id)) == 1

    wait_until(settled, 30, "the vanished access confirmed again")
    time.sleep(1.0)  # a few more re-checks: nothing is sent twice
    (event,) = recorded(stack, access_id)
    view = gateway.access.get_access(access_id)
    assert view.tx_hash == event["transactionHash"]
    assert view.block_number == int(event["blockNumber"], 16)
    assert metric(gateway.url, "dul_gateway_confirmations_vanished_total") >= 1
    ready = httpx.get(f"{gateway.url}/readyz").json()
    assert ready["status"] == "degraded"
    assert "left the chain" in ready["degraded"]["confirmations_vanished"]
    assert ready["outbox_depth"] == 0

    terms = world.research_terms()
    world.ledger.transact(world.steward, "AgreementRegistry", "propose", terms.as_abi())
    agreement = "0x" + terms.agreement_id.hex()
    for signer in (world.steward, world.partner_steward):
        signed = gateway.steward.sign_agreement(agreement, signer, wait=True)
        assert signed.status == "confirmed", signed
    status = world.ledger.call("AgreementRegistry", "status", terms.agreement_id)
    assert AgreementStatus(status) is AgreementStatus.ACTIVE
    nonce = chain.rpc("eth_getTransactionCount", world.gateway.address, "latest")
    assert httpx.get(f"{gateway.url}/readyz").json()["outbox_depth"] == 0
    assert int(nonce, 16) > 0


@pytest.mark.timeout(180)
def test_a_confirmation_reverted_away_alarms_and_the_access_is_on_chain_once_again(
    stack: Stack, gateway: Callable[..., Gateway]
) -> None:
    served = gateway()
    with structlog.testing.capture_logs() as logs:
        access_id = revert_access_away(stack, served)
        assert_recovered(stack, served, access_id)
    alarms = [e for e in logs if e["event"] == "submitter.confirmation_vanished"]
    assert len(alarms) == 1
    assert alarms[0]["log_level"] == "error"
    assert alarms[0]["operations"] == 1


@pytest.mark.timeout(180)
def test_nonces_the_chain_lost_beyond_the_window_are_filled_and_the_outbox_drains(
    stack: Stack, gateway: Callable[..., Gateway]
) -> None:
    """No re-check window at all: the nonce check alone finds what the chain lost."""
    served = gateway(reconfirm_window_s=0)
    with structlog.testing.capture_logs() as logs:
        access_id = revert_access_away(stack, served)
        assert_recovered(stack, served, access_id)
    assert [e["event"] for e in logs].count("submitter.confirmation_vanished") == 1


@pytest.mark.timeout(180)
def test_a_lost_access_recorded_meanwhile_by_another_transaction_settles_confirmed(
    stack: Stack, gateway: Callable[..., Gateway]
) -> None:
    """While the gateway is down, its confirmed access is reverted away and the same record
    lands again in another transaction of its key at the lost nonce. After a restart the
    gateway alarms, its own transaction can no longer be mined (its nonce is taken), so the
    access is batched again, the chain answers "already recorded", and that is its
    confirmation: on chain once, confirmed, not failed."""
    world, chain = stack.world, stack.chain
    first = gateway()
    agreement = world.activate(world.research_terms())
    snapshot = chain.node_rpc("evm_snapshot")
    answer = first.access.request_access(request_body(stack, agreement), wait=True)
    assert answer.status == "confirmed"
    original = chain.rpc("eth_getTransactionByHash", answer.tx_hash)
    first.stop()
    assert chain.node_rpc("evm_revert", snapshot) is True
    chain.node_rpc("anvil_dropAllTransactions")
    assert recorded(stack, answer.access_id) == []
    nonce = int(chain.rpc("eth_getTransactionCount", world.gateway.address, "pending"), 16)
    assert nonce == int(original["nonce"], 16)
    raw = world.gateway.sign_transaction(
        {
            "to": checksum_address(bytes.fromhex(original["to"][2:])),
            "data": bytes.fromhex(original["input"][2:]),
            "gas": int(original["gas"], 16) + 1,  # another transaction, the same record
            "gasPrice": 0,
            "nonce": nonce,
            "chainId": chain.chain_id,
            "value": 0,
        }
    )
    again = chain.send_raw(raw)
    assert int(again["status"], 16) == 1
    assert again["transactionHash"] != answer.tx_hash

    with structlog.testing.capture_logs() as logs:
        second = gateway()

        def settled() -> bool:
            view = second.access.get_access(answer.access_id)
            return view.tx_hash is not None and view.tx_hash == str(again["transactionHash"])

        wait_until(settled, 30, "the access confirmed at the transaction that recorded it")
    view = second.access.get_access(answer.access_id)
    assert (view.status, view.error) == ("confirmed", None)
    assert view.block_number == int(again["blockNumber"], 16)
    assert len(recorded(stack, answer.access_id)) == 1
    assert [e["event"] for e in logs].count("submitter.confirmation_vanished") == 1
    reverted = [e for e in logs if e["event"] == "submitter.reverted"]
    assert reverted, "the access was sent again and the chain answered it is recorded already"
    assert reverted[-1]["already_recorded"] == 1
    assert httpx.get(f"{second.url}/readyz").json()["outbox_depth"] == 0

"""The chain node stopped and restarted under load (a private chain for this test): the
outbox keeps accepting, the submitter keeps retrying, and it drains, exactly once, when the
node is back — transactions the node forgot with its mempool are re-sent at their nonce."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_hash.auto import keccak
from eth_typing import HexStr

from dul.chain.node import ChainNode
from dul.chain.rpc import AsyncRpcClient
from dul.chain.testing import TEST_OPERATOR_KEY, node_call, throwaway_chain_settings
from dul.contracts.deploy import deploy
from dul.contracts.ledger import Ledger, connect
from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
from dul.contracts.world import World
from dul.domain import Decision, DenyReason, Operation, Tier
from dul.home import Home
from dul.signing import LocalSigner
from ledger_gateway.migrations import migrate
from ledger_gateway.outbox import NewAccess, OperationStatus
from ledger_gateway.store import SqlOutbox, make_engine
from ledger_gateway.submitter import (
    ACCESS_RECORDED_TOPIC,
    Submitter,
    SubmitterSettings,
    encode_access_record,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def private(tmp_path: Path) -> Iterator[tuple[ChainNode, World]]:
    operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
    home = Home(tmp_path / "home").ensure()
    node = ChainNode(
        home, throwaway_chain_settings(operator=Account.from_key(TEST_OPERATOR_KEY).address)
    )
    status = node.start()
    assert status.rpc_url is not None
    try:
        w3 = connect(status.rpc_url)
        deployment, _ = deploy(w3, operator, home.deployment, admin_delay=5)
        yield node, World(Ledger(w3, deployment), operator).build()
    finally:
        node.stop()


def accesses_for(world: World, agreement: bytes, count: int) -> list[NewAccess]:
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    out = []
    for i in range(count):
        request = AccessRequest(
            request_id=keccak(agreement + i.to_bytes(8, "big")),
            agreement_id=agreement,
            dataset_id=world.dataset,
            field_mask=0b0110,
            tier=Tier.DEIDENTIFIED,
            operation=Operation.QUERY,
            request_hash=keccak(b"q"),
            deadline=int(time.time()) + 3_600,
        )
        signature = request.sign(world.requester, domain)
        record = AccessRecord(
            request, world.requester.address, signature, Decision.GRANTED, DenyReason.NONE
        )
        out.append(
            NewAccess(
                request_id=request.request_id,
                body_hash=keccak(request.request_id),
                org=world.hospital,
                agreement_id=agreement,
                decision=Decision.GRANTED,
                reasons=(),
                record=encode_access_record(record.as_abi()),
            )
        )
    return out


def test_the_outbox_drains_once_the_node_is_back(
    private: tuple[ChainNode, World], tmp_path: Path
) -> None:
    node, world = private
    agreement = world.activate(world.research_terms())
    accesses = accesses_for(world, agreement, 300)
    rpc_url = node.status().rpc_url
    assert rpc_url is not None
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(url)

    async def scenario() -> None:
        outbox = SqlOutbox(make_engine(url))
        await outbox.start()
        rpc = AsyncRpcClient(rpc_url, timeout=2.0)
        sub = Submitter(
            outbox,
            rpc,
            world.gateway,
            access_log=world.ledger.deployment.address("AccessLog"),
            chain_id=world.ledger.chain_id,
            settings=SubmitterSettings(
                max_batch=20, max_delay=0.01, poll_interval=0.05, backoff_max=0.5
            ),
        )
        await sub.start()
        await outbox.add_accesses(accesses[:100])
        await asyncio.sleep(0.3)  # some mined, some in the node's pool when it stops
        await asyncio.to_thread(node.stop)
        for chunk in range(100, 300, 25):  # the API keeps accepting into the outbox
            await outbox.add_accesses(accesses[chunk : chunk + 25])
        deadline = time.monotonic() + 15  # a loaded machine may take a while to notice
        while sub.stats.chain_reachable:
            assert time.monotonic() < deadline, "the submitter never noticed the node was gone"
            await asyncio.sleep(0.1)
        assert await outbox.depth() > 0
        await asyncio.to_thread(node.start)
        deadline = time.monotonic() + 40
        while await outbox.depth() > 0:
            assert time.monotonic() < deadline, f"{await outbox.depth()} still open"
            await asyncio.sleep(0.1)
        assert sub.stats.chain_reachable
        views = await outbox.get_many([a.request_id for a in accesses])
        assert {v.status for v in views.values()} == {OperationStatus.CONFIRMED}
        await sub.stop()
        await rpc.aclose()
        await outbox.close()

    asyncio.run(scenario())
    logs = world.ledger.w3.eth.get_logs(
        {
            "address": world.ledger.deployment.address("AccessLog"),
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [ACCESS_RECORDED_TOPIC, None, agreement],  # type: ignore[list-item]
        }
    )
    ids = [bytes(entry["topics"][1]) for entry in logs]
    assert len(ids) == len(set(ids)) == len(accesses)


def test_a_nonce_spent_elsewhere_is_given_up_and_its_operations_land_once(
    private: tuple[ChainNode, World], tmp_path: Path
) -> None:
    """Something else signs with the gateway's key and takes the nonce the submitter used:
    that transaction can never be mined, so its operations go out again under a new nonce."""
    node, world = private
    agreement = world.activate(world.research_terms())
    accesses = accesses_for(world, agreement, 20)
    status = node.status()
    assert status.rpc_url is not None
    assert status.node_url is not None
    node_url = status.node_url
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(url)
    access_log = world.ledger.deployment.address("AccessLog")

    async def scenario() -> None:
        outbox = SqlOutbox(make_engine(url))
        await outbox.start()
        rpc = AsyncRpcClient(status.rpc_url or "", timeout=2.0)

        async def node_rpc(method: str, *params: object) -> None:
            await asyncio.to_thread(node_call, node_url, method, *params)

        sub = Submitter(
            outbox,
            rpc,
            world.gateway,
            access_log=access_log,
            chain_id=world.ledger.chain_id,
            settings=SubmitterSettings(max_delay=0.01, poll_interval=0.05, resend_after=0.3),
        )
        await sub.start()
        await sub.recovered()
        await node_rpc("evm_setIntervalMining", 0)  # hold blocks while the race is set
        nonce = await rpc.transaction_count(world.gateway.address, "pending")
        foreign = world.gateway.sign_transaction(
            {"to": world.gateway.address, "value": 0, "gas": 21_000, "gasPrice": 0,
             "nonce": nonce, "chainId": world.ledger.chain_id, "data": b""}
        )  # fmt: skip
        await rpc.send_raw_transaction(foreign)
        await outbox.add_accesses(accesses)
        await asyncio.sleep(0.5)  # the submitter signs the same nonce; the node keeps the first
        await node_rpc("evm_mine")
        await node_rpc("evm_setIntervalMining", 1)
        deadline = time.monotonic() + 30
        while await outbox.depth() > 0:
            assert time.monotonic() < deadline, f"{await outbox.depth()} still open"
            await asyncio.sleep(0.1)
        views = [await outbox.get(a.request_id) for a in accesses]
        assert {v.status for v in views if v is not None} == {OperationStatus.CONFIRMED}
        assert sub.stats.replaced == 1
        await sub.stop()
        await outbox.close()
        await rpc.aclose()

    asyncio.run(scenario())
    logs = world.ledger.w3.eth.get_logs(
        {"address": access_log, "fromBlock": 0, "topics": ["0x" + ACCESS_RECORDED_TOPIC.hex()]}
    )
    recorded = [bytes(log["topics"][1]) for log in logs]
    assert sorted(recorded) == sorted(a.request_id for a in accesses)  # each once, none lost

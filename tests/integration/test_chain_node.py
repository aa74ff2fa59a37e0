"""Starting, stopping and restarting the embedded chain (each test has its own node)."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner
from web3 import Web3

from dul.chain.node import ChainNode, find_anvil, namespace_launcher, read_chain_info, rpc_url
from dul.chain.testing import (
    TEST_OPERATOR_KEY,
    ChainHandle,
    ports_answering_cheat_methods,
    throwaway_chain_settings,
)
from dul.cli.main import app
from dul.errors import ChainError
from dul.home import Home

pytestmark = pytest.mark.integration

OPERATOR: LocalAccount = Account.from_key(TEST_OPERATOR_KEY)
DEAD = Web3.to_checksum_address("0x000000000000000000000000000000000000dead")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ChainNode]:
    """A stopped node in a fresh data directory; stopped again after the test."""
    chain_node = ChainNode(
        Home(tmp_path / "home").ensure(), throwaway_chain_settings(operator=OPERATOR.address)
    )
    try:
        yield chain_node
    finally:
        chain_node.stop()


def _handle(node: ChainNode) -> ChainHandle:
    status = node.status()
    assert status.running
    assert status.rpc_url is not None
    assert status.node_url is not None
    assert status.chain_id is not None
    return ChainHandle(
        rpc_url=status.rpc_url,
        node_url=status.node_url,
        chain_id=status.chain_id,
        home=node.home,
        operator=OPERATOR,
        node=node,
    )


def _signed_transfer(handle: ChainHandle) -> bytes:
    """The operator's next transaction (a zero transfer), signed."""
    nonce = int(handle.rpc("eth_getTransactionCount", OPERATOR.address, "pending"), 16)
    signed = OPERATOR.sign_transaction(
        {
            "to": DEAD,
            "value": 0,
            "gas": 21_000,
            "gasPrice": 0,
            "nonce": nonce,
            "chainId": handle.chain_id,
        }
    )
    return bytes(signed.raw_transaction)


def _operator_transfer(handle: ChainHandle) -> dict[str, object]:
    return handle.send_raw(_signed_transfer(handle))


def test_up_writes_the_endpoint_and_down_removes_it(node: ChainNode) -> None:
    status = node.start()
    assert status.running
    assert not status.already_running
    assert status.start_seconds is not None
    info = read_chain_info(node.home)
    assert info is not None
    assert info["rpc_url"] == status.rpc_url == f"http://127.0.0.1:{node.settings.port}"
    assert info["isolation"] == status.isolation == "netns+ipc"
    assert info["node_url"] == status.node_url == str(node.ipc_path)
    assert info["node_port"] is None
    assert (node.ipc_path.parent.stat().st_mode & 0o777) == 0o700
    assert status.warning is None
    assert rpc_url(node.home) == status.rpc_url
    assert (node.home.logs_dir / "anvil.log").exists()
    assert (node.home.run_dir / "anvil.pid").read_text().strip() == str(status.anvil_pid)

    assert node.stop() is True
    assert read_chain_info(node.home) is None
    assert not node.ipc_path.exists()
    assert not (node.home.run_dir / "anvil.pid").exists()
    assert not node.status().running
    with pytest.raises(ChainError) as caught:
        rpc_url(node.home)
    assert caught.value.code == "chain_not_running"


def test_up_is_idempotent_and_down_twice_is_fine(node: ChainNode) -> None:
    first = node.start()
    again = node.start()
    assert again.already_running
    assert (again.anvil_pid, again.proxy_pid) == (first.anvil_pid, first.proxy_pid)
    assert node.stop() is True
    assert node.stop() is False


def _operator_nonce(handle: ChainHandle) -> int:
    return int(handle.rpc("eth_getTransactionCount", OPERATOR.address, "latest"), 16)


def test_the_node_has_no_dev_accounts_and_no_reachable_port(node: ChainNode) -> None:
    status = node.start()
    handle = _handle(node)
    assert handle.node_rpc("eth_accounts") == []
    owners = ports_answering_cheat_methods()
    assert not [port for port, pids in owners.items() if status.anvil_pid in pids], owners
    # The node itself answers cheat methods, on its IPC socket only.
    assert handle.node_rpc("evm_snapshot") == "0x0"


def test_forced_loopback_fallback_is_reachable_and_says_so(node: ChainNode) -> None:
    """The fallback works as before, and the scan that guards the isolation finds it."""
    node.settings = node.settings.model_copy(update={"isolation": "loopback"})
    status = node.start()
    assert status.isolation == "loopback"
    assert status.node_url == f"http://127.0.0.1:{node.settings.node_port}"
    assert status.warning is not None
    assert "NOT isolated" in status.warning
    assert node.status().warning == status.warning
    handle = _handle(node)
    assert handle.node_rpc("eth_accounts") == []
    assert status.anvil_pid in ports_answering_cheat_methods()[node.settings.effective_node_port]
    receipt = _operator_transfer(handle)
    assert receipt["status"] == "0x1"


def test_auto_falls_back_when_namespaces_are_unavailable(
    node: ChainNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`unshare` that fails (as in a container without the capability) is probed for real."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "unshare").write_text(
        "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n"
    )
    (fake / "unshare").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert namespace_launcher() is None

    node.settings = node.settings.model_copy(update={"isolation": "netns"})
    with pytest.raises(ChainError) as caught:
        node.start()
    assert caught.value.code == "isolation_unavailable"
    assert not node.status().running

    node.settings = node.settings.model_copy(update={"isolation": "auto"})
    status = node.start()
    assert status.isolation == "loopback"
    assert status.warning is not None


def test_a_restart_keeps_the_ledger(node: ChainNode) -> None:
    # No periodic dump during the test: what survives is what anvil wrote on SIGTERM.
    node.settings = node.settings.model_copy(update={"state_interval": 3600})
    node.start()
    handle = _handle(node)
    receipt = _operator_transfer(handle)
    block_before = int(handle.rpc("eth_blockNumber"), 16)
    assert not node.home.chain_state.exists()
    node.stop()
    assert node.home.chain_state.exists()

    node.start()
    handle = _handle(node)
    assert int(handle.rpc("eth_blockNumber"), 16) >= block_before
    again = handle.rpc("eth_getTransactionReceipt", receipt["transactionHash"])
    assert again is not None
    assert again["blockNumber"] == receipt["blockNumber"]
    assert int(handle.rpc("eth_getTransactionCount", OPERATOR.address, "latest"), 16) == 1


def test_a_stop_mines_the_pool_and_leaves_every_block_whole(node: ChainNode) -> None:
    """`down` stops block production and mines what the pool holds before anvil's exit dump:
    a transaction sent just before the stop is in the restored ledger with its block, receipt
    and nonce (the pool itself is not dumped), and the restored head is that last block."""
    node.settings = node.settings.model_copy(update={"block_time": 60, "state_interval": 3600})
    node.start()
    handle = _handle(node)
    tx_hash = handle.rpc("eth_sendRawTransaction", "0x" + _signed_transfer(handle).hex())
    assert handle.rpc("eth_getTransactionReceipt", tx_hash) is None  # a minute to its block
    node.stop()

    node.start()
    handle = _handle(node)
    receipt = handle.rpc("eth_getTransactionReceipt", tx_hash)
    assert receipt is not None
    assert int(handle.rpc("eth_getTransactionCount", OPERATOR.address, "latest"), 16) == 1
    block = handle.rpc("eth_getBlockByNumber", receipt["blockNumber"], False)
    assert block["transactions"] == [tx_hash]
    assert int(handle.rpc("eth_blockNumber"), 16) == int(receipt["blockNumber"], 16)


def test_the_node_writes_no_state_history_outside_its_home(node: ChainNode, tmp_path: Path) -> None:
    """anvil keeps recent states in memory; past that window it would dump each block's full
    state under $HOME/.foundry (unbounded, left behind by a kill). Nothing is written there,
    the recent state still answers, and state older than the window is refused."""
    node.node_env = {**os.environ, "HOME": str(tmp_path / "node-user")}
    node.start()
    handle = _handle(node)
    handle.node_rpc("anvil_mine", hex(1_500))
    head = int(handle.rpc("eth_blockNumber"), 16)
    assert handle.rpc("eth_getBalance", DEAD, hex(head - 10)) == "0x0"
    old = handle.rpc_raw("eth_getBalance", DEAD, hex(1))
    assert "error" in old, old
    assert not list((tmp_path / "node-user").rglob("*.json"))


def test_a_taken_port_is_reported_before_anything_starts(node: ChainNode) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", node.settings.port))
        squatter.listen()
        with pytest.raises(ChainError) as caught:
            node.start()
    assert caught.value.code == "port_in_use"
    assert str(node.settings.port) in caught.value.message
    assert not (node.home.run_dir / "anvil.pid").exists()


def test_a_missing_binary_is_reported(tmp_path: Path) -> None:
    settings = throwaway_chain_settings(anvil_bin=tmp_path / "no-anvil")
    with pytest.raises(ChainError) as caught:
        ChainNode(Home(tmp_path / "home").ensure(), settings).start()
    assert caught.value.code == "anvil_missing"
    assert "no-anvil" in caught.value.message


def test_anvil_is_found_in_the_repositorys_node_modules() -> None:
    found = find_anvil()
    assert found.name == "anvil"
    assert os.access(found, os.X_OK)


def test_a_crashed_node_is_restarted_cleanly(node: ChainNode) -> None:
    first = node.start()
    assert first.anvil_pid is not None
    os.kill(first.anvil_pid, signal.SIGKILL)
    assert not node.status().running
    second = node.start()
    assert second.running
    assert not second.already_running
    assert second.anvil_pid != first.anvil_pid


def test_rpc_url_prefers_the_environment(node: ChainNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUL_RPC_URL", "http://besu.example:8545")
    assert rpc_url(node.home) == "http://besu.example:8545"


def test_cli_up_status_down(tmp_path: Path) -> None:
    settings = throwaway_chain_settings()
    env = {
        "DUL_HOME": str(tmp_path / "home"),
        "DUL_CHAIN_PORT": str(settings.port),
        "DUL_CHAIN_NODE_PORT": str(settings.node_port),
        "DUL_CHAIN_BLOCK_TIME": "0.2",
    }
    runner = CliRunner()
    try:
        up = runner.invoke(app, ["chain", "up", "--json"], env=env)
        assert up.exit_code == 0, up.output
        started = json.loads(up.stdout)
        assert started["rpc_url"] == f"http://127.0.0.1:{settings.port}"
        assert started["isolation"] == "netns+ipc"
        assert started["warning"] is None
        assert "WARNING" not in up.stderr

        status = runner.invoke(app, ["chain", "status", "--json"], env=env)
        assert status.exit_code == 0, status.output
        current = json.loads(status.stdout)
        assert current["running"] is True
        assert current["chain_id"] == 31337
        assert current["block"] >= 0
        assert current["pids"]["anvil"] == started["anvil_pid"]
        assert current["isolation"] == "netns+ipc"
        assert current["node_url"].endswith("run/node/anvil.ipc")

        again = runner.invoke(app, ["chain", "up"], env=env)
        assert again.exit_code == 0
        assert "already running" in again.stdout
    finally:
        down = runner.invoke(app, ["chain", "down"], env=env)
    assert down.exit_code == 0
    stopped = runner.invoke(app, ["chain", "status", "--json"], env=env)
    assert stopped.exit_code == 1
    assert json.loads(stopped.stdout)["running"] is False


def test_cli_reports_a_taken_port_in_one_line(tmp_path: Path) -> None:
    settings = throwaway_chain_settings()
    env = {"DUL_HOME": str(tmp_path / "home"), "DUL_CHAIN_PORT": str(settings.port)}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", settings.port))
        squatter.listen()
        result = CliRunner().invoke(app, ["chain", "up"], env=env)
    assert result.exit_code == 1
    assert "already in use" in result.stderr
    assert "Traceback" not in result.output


def test_cli_warns_loudly_in_the_loopback_fallback(tmp_path: Path) -> None:
    settings = throwaway_chain_settings()
    env = {
        "DUL_HOME": str(tmp_path / "home"),
        "DUL_CHAIN_PORT": str(settings.port),
        "DUL_CHAIN_NODE_PORT": str(settings.node_port),
        "DUL_CHAIN_ISOLATION": "loopback",
    }
    runner = CliRunner()
    try:
        up = runner.invoke(app, ["chain", "up"], env=env)
        assert up.exit_code == 0, up.output
        assert "WARNING" in up.stderr
        assert "NOT isolated" in up.stderr
        assert "isolation loopback" in up.stdout

        status = runner.invoke(app, ["chain", "status", "--json"], env=env)
        assert status.exit_code == 0, status.output
        current = json.loads(status.stdout)  # the warning goes to stderr, the JSON stays whole
        assert current["isolation"] == "loopback"
        assert "NOT isolated" in current["warning"]
        assert current["node_url"] == f"http://127.0.0.1:{settings.node_port}"
        assert "WARNING" in status.stderr
    finally:
        runner.invoke(app, ["chain", "down"], env=env)


def test_cli_refuses_an_unknown_isolation_mode(tmp_path: Path) -> None:
    env = {"DUL_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(app, ["chain", "up", "--isolation", "none"], env=env)
    assert result.exit_code == 1
    assert "isolation" in result.stderr
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["chain", "status"], env={**env, "DUL_CHAIN_ISOLATION": "x"})
    assert result.exit_code == 1
    assert "config_error" in result.stderr

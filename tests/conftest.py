"""Shared pytest fixtures. Each owner keeps to its own marked section."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import sqlalchemy as sa
from _pytest.nodeid import NodeId  # the node id's type (see pytest_collection_modifyitems)
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_typing import HexStr
from pydantic import SecretStr

from dul.chain.rpc_auth import OPERATOR_PERMISSIONS, issue_token, signing_key
from dul.chain.testing import (
    NODES,
    TEST_OPERATOR_KEY,
    ChainHandle,
    free_port,
    start_chain,
    throwaway_chain_settings,
)
from dul.contracts.deploy import deploy
from dul.contracts.ledger import Ledger, connect
from dul.contracts.typed_data import access_log_domain
from dul.contracts.world import World
from dul.domain import Role
from dul.home import Home
from dul.keys import KeyStore
from dul.signing import LocalSigner
from ledger_gateway.client import GatewayClient
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.testing import GatewayHandle, serve
from ledger_gateway.tokens import TokenRole, TokenStore

# --- parallel runs (pytest-xdist) ---
# scripts/test runs the suite on several workers (`-n`; pyproject's addopts pick
# `--dist loadgroup`). Each worker is a pytest session of its own, so the session fixtures below
# (`rpc_token`, `chain`, `world`, `gateway`), tmp_path and the free ports they draw are the
# worker's own. What the workers would otherwise share is made theirs here:
# - PostgreSQL: DUL_TEST_DATABASE_URL points at a database of the worker's own,
#   `<database>_<worker>_<run>`, made by the controller before the workers start and dropped
#   (with FORCE) by it at the end, whatever became of the workers. Where the role may not
#   create databases the workers share the named one (tests make their schemas and databases
#   under random names there anyway); .ci/run grants CREATEDB.
# - Work is handed out in groups (`xdist_group`): a test that uses a module-scoped fixture goes
#   with the rest of its module on the same node kind, so the fixture is set up once per kind;
#   each demo (tests/e2e/test_demo.py, one per node kind) is a group. Other tests go one by one,
#   whatever their node: each worker starts the nodes its tests ask for, once (a Hardhat node,
#   its world and gateway cost ~14 s of set-up), and keeps them to the end (`_Started`), so a
#   worker going from anvil's tests to Hardhat's and back starts nothing again. One worker
#   holding every Hardhat test would be the run's long pole (~500 of them).
# - Groups that take minutes are handed out first (SLOW_FIRST), so no worker starts one last.

#: Groups (or test files) that take minutes on one worker, slowest first: a demo is two
#: minutes of set-up, the walkthrough some 40 CLI processes; on Hardhat's node audit verify's
#: module took 3.3 min, the artifact registry's, the policy table and verify-state's 1.4-1.8
#: (measured one module at a time at load 10-20).
SLOW_FIRST: tuple[str, ...] = (
    "tests/e2e/test_demo.py:hardhat",
    "tests/e2e/test_demo.py",
    "tests/integration/test_walkthrough.py",
    "tests/integration/test_audit_verify.py:hardhat",
    "tests/integration/test_audit_artifacts.py:hardhat",
    "tests/integration/test_policy_matches_chain.py:hardhat",
    "tests/integration/test_verify_state.py:hardhat",
    "tests/integration/test_vanished_confirmations.py",
    "tests/e2e/test_console.py",
    "tests/e2e/test_patient_page.py",
    "tests/integration/test_indexer.py",
    "tests/unit/test_audit_extremes.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """The controller of a parallel run makes one database per worker; a worker points
    DUL_TEST_DATABASE_URL at its own (named after its id and the run's, in WORKER_DATABASES)."""
    base = os.environ.get("DUL_TEST_DATABASE_URL")
    if not base:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if hasattr(config, "workerinput"):
        run = os.environ.get(WORKER_DATABASES)
        if worker and run:
            url = sa.make_url(base)
            name = _worker_database(url, worker, run)
            os.environ["DUL_TEST_DATABASE_URL"] = url.set(database=name).render_as_string(False)
        return
    workers = config.getoption("numprocesses", None)
    if not isinstance(workers, int) or workers < 1:
        return
    run = uuid.uuid4().hex[:8]
    names = [_worker_database(sa.make_url(base), f"gw{i}", run) for i in range(workers)]
    try:
        _each_database(base, "CREATE DATABASE", names)
    except (sa.exc.ProgrammingError, sa.exc.OperationalError):  # no CREATEDB (see above)
        return
    config.stash[_WORKER_DATABASE_NAMES] = names
    os.environ[WORKER_DATABASES] = run  # read by the workers, which start after this


def pytest_unconfigure(config: pytest.Config) -> None:
    names = config.stash.get(_WORKER_DATABASE_NAMES, None)
    base = os.environ.get("DUL_TEST_DATABASE_URL")
    if names and base:
        os.environ.pop(WORKER_DATABASES, None)
        for attempt in range(5):  # FORCE cannot end autovacuum's worker without pg_signal_backend
            try:
                _each_database(base, "DROP DATABASE IF EXISTS", names, " WITH (FORCE)")
                break
            except sa.exc.DBAPIError:
                time.sleep(1 + attempt)


WORKER_DATABASES = "DUL_TEST_WORKER_DATABASES"
_WORKER_DATABASE_NAMES = pytest.StashKey[list[str]]()


def _worker_database(url: sa.URL, worker: str, run: str) -> str:
    return f"{url.database}_{worker}_{run}"


def _each_database(base: str, statement: str, names: list[str], suffix: str = "") -> None:
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'{statement} "{name}"{suffix}'))
    finally:
        admin.dispose()


def _xdist_group(item: pytest.Item) -> str | None:
    """The group `item` must run in (None: any worker, alone). No "@" nor "]" in a name: xdist
    finds the group after the node id's last "@", and only past its last "]"."""
    module = item.nodeid.split("::", 1)[0]
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if params.get("demo", NODES[0]) != NODES[0]:
        return f"{module}:{params['demo']}"
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    if any(defs and defs[-1].scope in ("module", "class", "package") for defs in definitions):
        kind = params.get("node_kind", NODES[0])
        return module if kind == NODES[0] else f"{module}:{kind}"
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):
        return  # a serial run keeps the collection order and the node ids
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    order: dict[int, int] = {}
    for item in items:
        group = _xdist_group(item)
        order[id(item)] = rank.get(group or item.nodeid.split("::", 1)[0], len(rank))
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            # xdist 3.8 appends "@group" to the node id through `_nodeid`, which pytest 9 no
            # longer reads (its scheduler then ignores every group): append it to `_id`.
            if "@" not in item.nodeid:
                item._id = NodeId.parse(f"{item.nodeid}@{group}")
    items.sort(key=lambda item: order[id(item)])


# --- end parallel runs ---


# --- chain fixtures ---
# `chain` (session scope): one embedded chain — real anvil behind the real permissioned proxy,
# both on free 127.0.0.1 ports, in a temporary data directory — started once and stopped at the
# end of the session. Use it for anything that needs a node:
#
#     from dul.chain.testing import ChainHandle
#
#     def test_something(chain: ChainHandle) -> None:
#         w3 = connect(chain.rpc_url)        # the public, permissioned URL (with the token)
#         tx = chain.operator.sign_transaction({..., "gasPrice": 0, "chainId": chain.chain_id})
#         receipt = chain.send_raw(tx.raw_transaction)           # waits for the receipt
#
# - `rpc_url` is the permissioned endpoint: only `chain.operator` (deployments included) and
#   accounts the deployment manifest's Membership contract authorizes may send; fees are zero,
#   so fresh accounts need no balance. Blocks come every 0.2 s.
# - `node_url` is anvil itself (no access control, anvil_* cheat codes work): its IPC socket, in
#   a network namespace of its own (or its loopback URL in the fallback). Drive it only with
#   `chain.node_rpc(method, *params)` / `node_rpc_raw(...)` (or `dul.chain.testing.node_call`),
#   and only for test set-up and attacks that the product never does.
# - `home` is the data directory; writing `home.deployment` (JSON with `operator` and
#   `contracts.Membership.address`) changes who the proxy admits — prefer a fresh `Home` and
#   `ChainNode(home, throwaway_chain_settings(...))` over editing the shared manifest.
# - `env` holds DUL_HOME / DUL_RPC_URL / DUL_RPC_TOKEN for subprocess or CLI tests.
# - Every request to `rpc_url` needs `Authorization: Bearer`: the autouse `rpc_token` fixture
#   sets DUL_RPC_TOKEN (an operator token) for the session and DUL_CHAIN_RPC_AUTH_KEY, so every
#   chain the session starts accepts it and every client (`connect`, RpcClient, RpcClient, the
#   CLI) presents it; raw httpx calls add `bearer_headers(rpc_token)` themselves.
# - `rpc(method, *params)`, `rpc_raw(...)`, `send_raw(raw)`, `wait_receipt(hash)`: small helpers.


@pytest.fixture(scope="session", autouse=True)
def rpc_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The public RPC wants a bearer token on every request: every chain the session starts
    signs with one key (`DUL_CHAIN_RPC_AUTH_KEY`) and every client of the session presents one
    operator token (`DUL_RPC_TOKEN`). Tests of the authentication itself send their own."""
    key_path = tmp_path_factory.mktemp("rpc-auth") / "rpc-jwt.pem"
    token = issue_token(
        signing_key(key_path, create=True), "tests", OPERATOR_PERMISSIONS, 2 * 24 * 3600
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DUL_CHAIN_RPC_AUTH_KEY", str(key_path))
        patch.setenv("DUL_RPC_TOKEN", token)
        yield token


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that need the chain run on anvil; those marked `every_node` on each of NODES."""
    if "node_kind" in metafunc.fixturenames:
        every = metafunc.definition.get_closest_marker("every_node") is not None
        kinds = NODES if every else NODES[:1]
        metafunc.parametrize("node_kind", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def node_kind(request: pytest.FixtureRequest) -> str:
    """The node under the session's `chain`: "anvil" or "hardhat" (named in the test id)."""
    kind: str = getattr(request, "param", NODES[0])
    return kind


class _Started:
    """The chains this worker started, by node kind, with their world and gateway: each made
    on first use and kept to the session's end. pytest tears a session fixture down when the
    next test asks for another parameter (`node_kind`), so a worker whose tests alternate
    between nodes would otherwise start a node, deploy and serve a gateway at each switch."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, stack: ExitStack) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.stack = stack
        self.chains: dict[str, ChainHandle] = {}
        self.worlds: dict[str, World] = {}
        self.gateways: dict[str, GatewayHandle] = {}

    def chain(self, kind: str) -> ChainHandle:
        if kind not in self.chains:
            self.chains[kind] = self.stack.enter_context(self._start_chain(kind))
        return self.chains[kind]

    def world(self, kind: str) -> World:
        if kind not in self.worlds:
            chain = self.chain(kind)
            operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
            w3 = connect(chain.rpc_url)
            deployment, _ = deploy(w3, operator, chain.home.deployment, admin_delay=5)
            self.worlds[kind] = World(Ledger(w3, deployment), operator).build()
        return self.worlds[kind]

    def gateway(self, kind: str) -> GatewayHandle:
        if kind not in self.gateways:
            self.gateways[kind] = self.stack.enter_context(self._serve_gateway(kind))
        return self.gateways[kind]

    @contextmanager
    def _start_chain(self, kind: str) -> Iterator[ChainHandle]:
        operator: LocalAccount = Account.from_key(TEST_OPERATOR_KEY)
        home = Home(self.tmp_path_factory.mktemp(f"dul-home-{kind}")).ensure()
        settings = throwaway_chain_settings(operator=operator.address, start_timeout=120.0)
        node = start_chain(kind, home, settings)
        try:
            status = node.status()
            assert status.rpc_url is not None
            assert status.node_url is not None
            assert status.chain_id is not None
            handle = ChainHandle(
                rpc_url=status.rpc_url,
                node_url=status.node_url,
                chain_id=status.chain_id,
                home=home,
                operator=operator,
                node=node,
                kind=kind,
            )
            try:
                yield handle
            finally:
                handle.client.close()
        finally:
            node.stop()

    @contextmanager
    def _serve_gateway(self, kind: str) -> Iterator[GatewayHandle]:
        world, chain = self.world(kind), self.chain(kind)
        # Its own GATEWAY key: the submitter owns its key's nonces, and other tests send with
        # `world.gateway` directly.
        keys = KeyStore(chain.home, passphrase="gateway-tests", scrypt_n=2**14)
        secret = keccak(b"dul tests fixture gateway")
        address = keys.import_key("hospital-a.fixture-gateway", secret)
        world.ledger.transact(
            world.operator, "Membership", "grantMemberRole", world.hospital, address, Role.GATEWAY
        )
        settings = GatewaySettings(
            home=chain.home.root,
            org="hospital-a",
            key="hospital-a.fixture-gateway",
            key_passphrase=SecretStr("gateway-tests"),
            rpc_url=chain.rpc_url,
            database_url=f"sqlite:///{self.tmp_path_factory.mktemp('gateway') / 'gateway.db'}",
            port=free_port(),
            batch_latency_ms=20,
            deadline_margin_s=5,
        )
        tokens = TokenStore(settings.tokens_path)
        token = tokens.create(f"tests-{settings.port}", "hospital-a", TokenRole.ACCESS_SERVICE)
        domain = access_log_domain(
            world.ledger.chain_id, world.ledger.deployment.address("AccessLog")
        )
        with serve(settings) as url, GatewayClient(url, token) as client:
            yield GatewayHandle(url, token, client, domain, settings)


@pytest.fixture(scope="session")
def _started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Started]:
    with ExitStack() as stack:
        yield _Started(tmp_path_factory, stack)


@pytest.fixture(scope="session")
def chain(node_kind: str, _started: _Started) -> ChainHandle:
    """One chain (the node + permissioned proxy) per node kind for the whole test session."""
    return _started.chain(node_kind)


# --- end chain fixtures ---


# --- ledger fixtures ---
# `world` (session scope): the contracts deployed on the session's `chain` (manifest written to
# `chain.home.deployment`, so the permissioned endpoint admits the members below) and a small
# data space: `world.hospital` with `world.steward` and `world.gateway`, `world.institute` with
# `world.partner_steward` and `world.requester`, `world.regulator`, and `world.dataset` (8 OMOP
# fields). `world.activate(world.research_terms(...))` gives a fresh ACTIVE agreement id;
# `world.ledger.transact(signer, contract, function, *args)` / `.call(...)` reach the contracts.


@pytest.fixture(scope="session")
def world(chain: ChainHandle, _started: _Started) -> World:
    return _started.world(chain.kind)


# --- end ledger fixtures ---


# --- gateway fixtures ---
# `gateway` (session scope): the real gateway app served by uvicorn on a free 127.0.0.1 port, for
# `world.hospital`, signing with `world.gateway`'s key (imported into the chain's data directory),
# with its outbox in SQLite. `gateway.client` is a `GatewayClient` with an access-service token;
# `gateway.domain` the AccessLog EIP-712 domain requesters sign in.


@pytest.fixture(scope="session")
def gateway(world: World, chain: ChainHandle, _started: _Started) -> GatewayHandle:
    return _started.gateway(chain.kind)


# --- end gateway fixtures ---

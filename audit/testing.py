"""Helpers for tests and benchmarks that need an audit store of a real chain: a fresh SQLite
file or PostgreSQL database (a schema where the role may not create databases), and an index
of the chain up to its head. Lives in the package so every test module imports it with types."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from eth_hash.auto import keccak
from sqlalchemy.engine import make_url

from audit.indexer import Indexer, JsonRpc
from audit.migrations import migrate
from audit.store import AuditStore, create_store_engine
from dul.contracts.ledger import Deployment
from dul.contracts.typed_data import AccessRecord
from dul.contracts.world import World
from dul.domain import Decision, DenyReason, Operation, ReleaseKind, Tier

POSTGRES_ENV = "DUL_TEST_DATABASE_URL"


def make_store_url(backend: str, tmp: Path, cleanup: list[tuple[str, str]]) -> str:
    """A fresh SQLite file, or a fresh PostgreSQL database or schema (noted in `cleanup`)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'audit-{uuid.uuid4().hex[:8]}.db'}"
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set (PostgreSQL runs under .ci/run)")
    name = f"dul_audit_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            try:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                cleanup.append(("database", name))
                return make_url(admin_url).set(database=name).render_as_string(False)
            except sa.exc.ProgrammingError:
                conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
                cleanup.append(("schema", name))
                url = make_url(admin_url).update_query_dict({"options": f"-csearch_path={name}"})
                return url.render_as_string(False)
    finally:
        admin.dispose()


def drop_stores(cleanup: list[tuple[str, str]]) -> None:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not cleanup or not admin_url:
        return
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for what, name in cleanup:
            if what == "database":
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    admin.dispose()


def index_into(deployment: Deployment, rpc_url: str, url: str) -> sa.Engine:
    """Migrate the store at `url` and index the chain into it up to the current head."""
    engine = create_store_engine(url)
    migrate(engine)
    rpc = JsonRpc(rpc_url)
    indexer = Indexer(
        AuditStore(engine),
        rpc,
        chain_id=deployment.chain_id,
        contracts=deployment.addresses,
        start_block=int(deployment.raw["block"]),
    )
    indexer.run(to_block=int(rpc.call("eth_blockNumber"), 16))
    rpc.close()
    return engine


def record_story(world: World) -> tuple[bytes, AccessRecord, AccessRecord, AccessRecord, bytes]:
    """On chain: an agreement, a granted query, a granted export whose de-identified extract
    is released, and an access denied for its tier. Returns (agreement, granted, exported,
    denied, result hash)."""
    agreement = world.activate(world.research_terms(quota=50))
    granted = world.access_record(agreement)
    exported = world.access_record(agreement, operation=Operation.EXPORT_RESULT)
    denied = world.access_record(
        agreement, Decision.DENIED, DenyReason.TIER_ABOVE_CEILING, tier=Tier.PSEUDONYMIZED
    )
    records = [granted.as_abi(), exported.as_abi(), denied.as_abi()]
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", records)
    result = keccak(uuid.uuid4().bytes)
    release = (
        exported.request.request_id,
        agreement,
        result,
        ReleaseKind.DEIDENTIFIED_EXTRACT,
        4096,
    )
    world.ledger.transact(world.gateway, "AccessLog", "releaseResult", *release)
    return agreement, granted, exported, denied, result

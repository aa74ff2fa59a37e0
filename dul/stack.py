"""The local stack `dul up` runs: the embedded chain, the contracts, (with `--demo`) a sample
data space, and the gateway of the organization whose gateway key is in the data directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from eth_hash.auto import keccak

from audit.settings import AuditSettings
from dul import services
from dul.chain.node import ChainNode, ChainStatus
from dul.chain.settings import ChainSettings
from dul.contracts.deploy import deploy
from dul.contracts.ledger import Deployment, Ledger, connect
from dul.contracts.world import OMOP_FIELDS
from dul.domain import OrgKind, OrgStatus, Role, Tier, slug_id
from dul.errors import KeyStoreError
from dul.home import Home
from dul.keys import KeyStore
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.tokens import TokenRole, TokenStore

log = structlog.get_logger(__name__)

OPERATOR_KEY = "operator"
AUDIT_PORT = int(os.environ.get("DUL_AUDIT_PORT", "8600"))
DEMO_TOKEN_NAME = "demo-access-service"  # noqa: S105 - the name of a token, not its secret

# The sample data space of `dul up --demo`: (org, kind, display name, [(key suffix, role)]).
SAMPLE_ORGANIZATIONS: tuple[tuple[str, OrgKind, str, tuple[tuple[str, Role], ...]], ...] = (
    (
        "hospital-a",
        OrgKind.HOSPITAL,
        "Hospital A",
        (("steward", Role.STEWARD), ("gateway", Role.GATEWAY)),
    ),
    (
        "hospital-b",
        OrgKind.HOSPITAL,
        "Hospital B",
        (("steward", Role.STEWARD), ("gateway", Role.GATEWAY)),
    ),
    (
        "hospital-c",
        OrgKind.HOSPITAL,
        "Hospital C",
        (("steward", Role.STEWARD), ("gateway", Role.GATEWAY)),
    ),
    (
        "institute",
        OrgKind.RESEARCH,
        "Research Institute",
        (("steward", Role.STEWARD), ("requester", Role.REQUESTER)),
    ),
    (
        "ai-lab",
        OrgKind.AI_COMPANY,
        "AI Lab",
        (("steward", Role.STEWARD), ("requester", Role.REQUESTER)),
    ),
    (
        "insurer",
        OrgKind.INSURER,
        "Insurer",
        (("steward", Role.STEWARD), ("requester", Role.REQUESTER)),
    ),
    ("regulator", OrgKind.REGULATOR, "Health Data Regulator", (("auditor", Role.REGULATOR),)),
)


@dataclass(frozen=True)
class StackStatus:
    chain: ChainStatus
    deployment: Deployment
    deployed_now: bool
    seeded: list[str]
    gateway_url: str | None = None
    access_token: str | None = None
    """Shown once, when `dul up --demo` creates the sample access service's token."""
    audit_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rpc_url": self.chain.rpc_url,
            "gateway_url": self.gateway_url,
            "audit_url": self.audit_url,
            "access_token": self.access_token,
            "chain_id": self.chain.chain_id,
            "deployment": self.deployment.raw,
            "deployed_now": self.deployed_now,
            "seeded_organizations": self.seeded,
        }


def operator_address(keys: KeyStore) -> str:
    """The operator's address, creating its keystore on first use."""
    try:
        return keys.show(OPERATOR_KEY).address
    except KeyStoreError as exc:
        if exc.code != "key_not_found":
            raise
        return keys.new(OPERATOR_KEY)


def up(home: Home, settings: ChainSettings | None = None, *, demo: bool = False) -> StackStatus:
    keys = KeyStore(home)
    operator = operator_address(keys)
    base = settings or ChainSettings()
    if base.operator_address is None:
        base = base.model_copy(update={"operator_address": operator})
    chain = ChainNode(home, base).start()
    assert chain.rpc_url is not None
    w3 = connect(chain.rpc_url)
    deployment, new = deploy(w3, keys.unlock(OPERATOR_KEY), home.deployment)
    seeded = seed_sample(Ledger(w3, deployment), keys) if demo else []
    gateway_url, token = _start_gateway(home, keys, demo=demo)
    audit_url = _start_audit(home)
    return StackStatus(chain, deployment, new, seeded, gateway_url, token, audit_url)


def _start_audit(home: Home) -> str:
    """The indexer follows the chain into the audit store; the audit API serves it."""
    database_url = AuditSettings().resolved_database_url(home)
    store = Path(database_url.removeprefix("sqlite:///"))
    # The local gateway's store holds the subjects of its accesses' cohorts (`cohort_leaves`):
    # the indexer reads them, read-only, to check each cohort against its root on chain.
    env: dict[str, str] = {}
    if "DUL_AUDIT_COHORT_SOURCES" not in os.environ:
        gateway_store = GatewaySettings(home=home.root).effective_database_url
        env["DUL_AUDIT_COHORT_SOURCES"] = json.dumps([gateway_store])
    services.start(
        home,
        "audit-indexer",
        ["audit", "index", "--follow"],
        None,
        env=env,
        ready=lambda: not database_url.startswith("sqlite") or store.exists(),
    )
    url = f"http://127.0.0.1:{AUDIT_PORT}"
    services.start(
        home,
        "audit",
        ["audit", "serve", "--port", str(AUDIT_PORT)],
        url,
        env={},
        ready_path="/healthz",
    )
    return url


def _start_gateway(home: Home, keys: KeyStore, *, demo: bool) -> tuple[str | None, str | None]:
    """The gateway runs when its organization's gateway key is in this data directory."""
    settings = GatewaySettings(home=home.root)
    if settings.key not in {name for name, _ in keys.list()}:
        return None, None
    url = f"http://{settings.host}:{settings.port}"
    services.start(home, "gateway", ["gateway", "serve"], url, env={})
    token = None
    tokens = TokenStore(settings.tokens_path)
    if demo and not any(t.name == DEMO_TOKEN_NAME and t.revoked_at is None for t in tokens.list()):
        token = tokens.create(DEMO_TOKEN_NAME, settings.org, TokenRole.ACCESS_SERVICE)
    return url, token


def down(home: Home) -> bool:
    """Stop the services, then the chain (the ledger and all state stay in `home`)."""
    stopped = False
    for name in ("audit", "audit-indexer", "gateway"):
        stopped = services.stop(home, name) or stopped
    return ChainNode(home).stop() or stopped


def seed_sample(ledger: Ledger, keys: KeyStore) -> list[str]:
    """Register the sample organizations, their members' keys and one dataset per hospital.

    Idempotent: organizations already registered are left as they are.
    """
    operator = keys.unlock(OPERATOR_KEY)
    seeded: list[str] = []
    for slug, kind, name, members in SAMPLE_ORGANIZATIONS:
        org = slug_id(slug)
        _, status = ledger.call("Membership", "organization", org)
        if status != OrgStatus.NONE:
            continue
        ledger.transact(operator, "Membership", "registerOrganization", org, kind, name)
        for suffix, role in members:
            key_name = f"{slug}.{suffix}"
            try:
                address = keys.show(key_name).address
            except KeyStoreError:
                address = keys.new(key_name)
            ledger.transact(operator, "Membership", "grantMemberRole", org, address, role)
        if kind == OrgKind.HOSPITAL:
            ledger.transact(
                keys.unlock(f"{slug}.steward"),
                "DatasetRegistry",
                "registerDataset",
                slug_id(f"{slug}/omop-cdm"),
                org,
                keccak(b"OMOP CDM 5.4"),
                list(OMOP_FIELDS),
                Tier.IDENTIFIED,
            )
        seeded.append(slug)
        log.info("stack.seeded", org=slug, kind=kind.name)
    return seeded

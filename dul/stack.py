"""The local stack `dul up` runs: the embedded chain, the contracts, (with `--demo`) a sample
data space, and the gateway of the organization whose gateway key is in the data directory."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from eth_hash.auto import keccak

from audit.auth import AuditRole, audit_tokens
from audit.settings import AuditSettings
from dul import services
from dul.chain.node import ChainNode, ChainStatus
from dul.chain.rpc import request_once
from dul.chain.rpc_auth import (
    LOCAL_TTL_SECONDS,
    MEMBER_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    READ_PERMISSIONS,
)
from dul.chain.settings import ChainSettings
from dul.contracts.deploy import deploy
from dul.contracts.deployment import Deployment
from dul.contracts.ledger import Ledger, connect
from dul.contracts.world import OMOP_FIELDS
from dul.domain import OrgKind, OrgStatus, Role, Tier, slug_id
from dul.endpoints import audit_port
from dul.errors import ChainError, KeyStoreError
from dul.home import Home, private_dir, write_private
from dul.keys import KeyStore
from ledger_gateway.patient_page.settings import PatientPageSettings
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.tokens import TokenRole, TokenStore

log = structlog.get_logger(__name__)

OPERATOR_KEY = "operator"
RPC_TOKEN_DIR = "rpc-tokens"  # noqa: S105 - a directory under run_dir (0700) of service tokens
DEMO_TOKEN_NAME = "demo-access-service"  # noqa: S105 - the name of a token, not its secret
DEMO_REGULATOR_TOKEN = "demo-regulator"  # noqa: S105 - the name of a token, not its secret
PATIENT_PAGE = "patient-page"
"""The patient page's service name, and the name of its STEWARD token at the hospital's gateway."""

# The sample data space of `dul up --demo`: (org, kind, display name, [(key suffix, role)]).
SAMPLE_ORGANIZATIONS: tuple[tuple[str, OrgKind, str, tuple[tuple[str, Role], ...]], ...] = (
    (
        "hospital-a",
        OrgKind.HOSPITAL,
        "Hospital A",
        # clinician: its emergency department, which may break the glass on hospital C's records
        (("steward", Role.STEWARD), ("gateway", Role.GATEWAY), ("clinician", Role.REQUESTER)),
    ),
    (
        "hospital-b",
        OrgKind.HOSPITAL,
        "Hospital B",
        # its clinicians' system requests a transferred patient's records from hospital A
        (("steward", Role.STEWARD), ("gateway", Role.GATEWAY), ("requester", Role.REQUESTER)),
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

SAMPLE_HOSPITALS = tuple(
    slug for slug, kind, *_ in SAMPLE_ORGANIZATIONS if kind == OrgKind.HOSPITAL
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
    gateway_urls: dict[str, str] = field(default_factory=dict)
    """Every local gateway by organization (the sample hospitals' under `--demo`)."""
    regulator_token: str | None = None
    """Under `--demo`: the sample regulator's audit API token (console sign-in), shown only."""
    gateway_skipped: dict[str, str] = field(default_factory=dict)
    """Organizations whose gateway was not started, and why (and what to do)."""
    patient_url: str | None = None
    """The default hospital's patient page (started beside its gateway)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "rpc_url": self.chain.rpc_url,
            "gateway_url": self.gateway_url,
            "patient_url": self.patient_url,
            "gateway_urls": self.gateway_urls,
            "gateway_skipped": self.gateway_skipped,
            "audit_url": self.audit_url,
            "access_token": self.access_token,
            "regulator_token": self.regulator_token,
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
    node = ChainNode(home, base)
    chain = _chain(node)
    assert chain.rpc_url is not None
    w3 = connect(chain.rpc_url, token=node.issue_token("dul-up", OPERATOR_PERMISSIONS, 3600))
    deployment, new = deploy(w3, keys.unlock(OPERATOR_KEY), home.deployment)
    seeded = seed_sample(Ledger(w3, deployment), keys) if demo else []
    skipped: dict[str, str] = {}
    gateways = _start_gateways(home, keys, node, demo=demo, skipped=skipped)
    audit_url = _start_audit(home, node, [gateway_settings(home, org) for org in gateways])
    default = GatewaySettings(home=home.root).org
    gateway_url = gateways.get(default)
    token = _demo_token(home) if demo and gateway_url else None
    patient_url = _start_patient_page(home, node, default, gateway_url, audit_url)
    return StackStatus(
        chain, deployment, new, seeded, gateway_url, token, audit_url, gateway_urls=gateways,
        regulator_token=_regulator_token(home) if demo else None, gateway_skipped=skipped,
        patient_url=patient_url,
    )  # fmt: skip


def _chain(node: ChainNode) -> ChainStatus:
    """The embedded chain, started; with `DUL_RPC_URL` set, that node instead (run by someone
    else: `dul down` leaves it alone), asked with a token signed by this chain's key."""
    url = os.environ.get("DUL_RPC_URL")
    if not url:
        return node.start()
    token = node.issue_token("dul-up", ("eth:chainId", "eth:blockNumber"), 300)
    try:
        chain_id = int(request_once(url, "eth_chainId", timeout=10.0, token=token), 16)
        block = int(request_once(url, "eth_blockNumber", timeout=10.0, token=token), 16)
    except (ChainError, OSError, ValueError, httpx.HTTPError) as exc:
        raise ChainError(
            f"the node at DUL_RPC_URL ({url}) does not answer: {exc}", code="chain_not_running"
        ) from None
    return ChainStatus(running=True, rpc_url=url, chain_id=chain_id, block=block)


def gateway_settings(home: Home, org: str | None = None) -> GatewaySettings:
    """The local gateway of `org`: the configured one (`DUL_GATEWAY_…`) by default; each other
    sample hospital's gateway gets the next port and a state directory of its own."""
    base = GatewaySettings(home=home.root)
    if org is None or org == base.org:
        return base
    others = [slug for slug in SAMPLE_HOSPITALS if slug != base.org]
    return base.model_copy(
        update={
            "org": org,
            "key": f"{org}.gateway",
            "port": base.port + 1 + others.index(org),
            "state_dir": home.root / f"gateway-{org}",
            "database_url": None,
        }
    )


def _gateway_service(settings: GatewaySettings) -> str:
    return "gateway" if settings.state_dir is None else f"gateway-{settings.org}"


def service_token_env(node: ChainNode, service: str, permissions: Sequence[str]) -> dict[str, str]:
    """An RPC token for one local service, in `DUL_HOME/run/rpc-tokens/SERVICE.jwt` (0600),
    and the environment that makes the service present it (over any inherited token)."""
    path = private_dir(node.home.run_dir / RPC_TOKEN_DIR) / f"{service}.jwt"
    write_private(path, node.issue_token(service, permissions, LOCAL_TTL_SECONDS) + "\n")
    return {"DUL_RPC_TOKEN": "", "DUL_RPC_TOKEN_FILE": str(path)}


def _start_audit(home: Home, node: ChainNode, gateways: list[GatewaySettings]) -> str:
    """The indexer follows the chain into the audit store; the audit API serves it."""
    database_url = AuditSettings().resolved_database_url(home)
    store = Path(database_url.removeprefix("sqlite:///"))
    # The local gateway's store holds the subjects of its accesses' cohorts (`cohort_leaves`):
    # the indexer reads them, read-only, to check each cohort against its root on chain.
    env: dict[str, str] = {}
    if "DUL_AUDIT_COHORT_SOURCES" not in os.environ:
        stores = [g.effective_database_url for g in gateways]
        env["DUL_AUDIT_COHORT_SOURCES"] = json.dumps(stores)
    services.start(
        home,
        "audit-indexer",
        ["audit", "index", "--follow"],
        None,
        env={**env, **service_token_env(node, "audit-indexer", READ_PERMISSIONS)},
        ready=lambda: not database_url.startswith("sqlite") or store.exists(),
    )
    url = f"http://127.0.0.1:{audit_port()}"
    services.start(
        home,
        "audit",
        ["audit", "serve", "--port", str(audit_port())],
        url,
        env={**env, **service_token_env(node, "audit", READ_PERMISSIONS)},  # verify asks them too
        ready_path="/healthz",
    )
    return url


def _start_gateways(
    home: Home,
    keys: KeyStore,
    node: ChainNode,
    *,
    demo: bool,
    skipped: dict[str, str] | None = None,
) -> dict[str, str]:
    """A gateway runs for each organization whose gateway key is in this data directory: the
    configured one, and under `--demo` every sample hospital's; `skipped` learns why not."""
    present = {name for name, _ in keys.list()}
    wanted = [GatewaySettings(home=home.root).org]
    if demo:
        wanted += [slug for slug in SAMPLE_HOSPITALS if slug not in wanted]
    urls: dict[str, str] = {}
    for org in wanted:
        settings = gateway_settings(home, org)
        if settings.key not in present:
            if skipped is not None:
                skipped[org] = (
                    f"no keystore {settings.key!r} in {keys.directory}: create it (dul keys new "
                    f"{settings.key}), make it a GATEWAY member of {org} (dul admin member add), "
                    "or name another with DUL_GATEWAY_ORG / DUL_GATEWAY_KEY"
                )
            continue
        url = f"http://{settings.host}:{settings.port}"
        env = {}
        if settings.state_dir is not None:
            env = {
                "DUL_GATEWAY_ORG": settings.org,
                "DUL_GATEWAY_KEY": settings.key,
                "DUL_GATEWAY_PORT": str(settings.port),
                "DUL_GATEWAY_STATE_DIR": str(settings.state_dir),
                "DUL_GATEWAY_DATABASE_URL": "",
            }
        name = _gateway_service(settings)
        env = {**env, **service_token_env(node, name, MEMBER_PERMISSIONS)}
        services.start(home, name, ["gateway", "serve"], url, env=env)
        urls[org] = url
    return urls


def patient_page_agreements(home: Home) -> Path:
    """The JSON list of agreement ids the local patient page offers codes under (the hospital's
    steward keeps it; re-read on every request)."""
    return home.root / PATIENT_PAGE / "agreements.json"


def _start_patient_page(
    home: Home, node: ChainNode, org: str, gateway_url: str | None, audit_url: str
) -> str | None:
    """The hospital's patient page beside its gateway, with a STEWARD token of that gateway of
    its own (made anew, the previous one revoked, whenever the page is started)."""
    if gateway_url is None:
        return None
    port = PatientPageSettings().port
    url = f"http://127.0.0.1:{port}"
    running = services.running(home, PATIENT_PAGE)
    if running is not None:
        return running.url
    tokens = TokenStore(gateway_settings(home, org).tokens_path)
    tokens.revoke(PATIENT_PAGE)
    token_file = private_dir(home.run_dir) / f"{PATIENT_PAGE}.gateway-token"
    write_private(token_file, tokens.create(PATIENT_PAGE, org, TokenRole.STEWARD) + "\n")
    agreements = patient_page_agreements(home)
    private_dir(agreements.parent)
    if not agreements.exists():
        write_private(agreements, "[]\n")
    env = {
        "DUL_PATIENT_ORG": org,
        "DUL_PATIENT_PORT": str(port),
        "DUL_PATIENT_GATEWAY_URL": gateway_url,
        "DUL_PATIENT_GATEWAY_TOKEN": "",
        "DUL_PATIENT_GATEWAY_TOKEN_FILE": str(token_file),
        "DUL_PATIENT_AUDIT_URL": audit_url,
        "DUL_PATIENT_AGREEMENTS_FILE": str(agreements),
        **service_token_env(node, PATIENT_PAGE, READ_PERMISSIONS),
    }
    services.start(home, PATIENT_PAGE, ["patient", "serve"], url, env=env, ready_path="/healthz")
    return url


def _demo_token(home: Home) -> str | None:
    """The sample access service's token for the default gateway, created (and shown) once."""
    tokens = TokenStore(GatewaySettings(home=home.root).tokens_path)
    if any(t.name == DEMO_TOKEN_NAME and t.revoked_at is None for t in tokens.list()):
        return None
    return tokens.create(
        DEMO_TOKEN_NAME, GatewaySettings(home=home.root).org, TokenRole.ACCESS_SERVICE
    )


def _regulator_token(home: Home) -> str:
    """The sample regulator's audit token: made anew on each start (the previous one revoked),
    since its secret is shown and never kept."""
    tokens = audit_tokens(AuditSettings().resolved_tokens_path(home))
    tokens.revoke(DEMO_REGULATOR_TOKEN)
    return tokens.create(DEMO_REGULATOR_TOKEN, "regulator", AuditRole.REGULATOR)


def down(home: Home) -> bool:
    """Stop the services, then the chain (the ledger and all state stay in `home`)."""
    stopped = False
    gateways = [f"gateway-{slug}" for slug in SAMPLE_HOSPITALS]
    for name in (PATIENT_PAGE, "audit", "audit-indexer", "gateway", *gateways):
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

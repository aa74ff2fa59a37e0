"""Helpers for tests and benchmarks that need an audit store of a real chain: a fresh SQLite
file or PostgreSQL database (a schema where the role may not create databases), and an index
of the chain up to its head. Lives in the package so every test module imports it with types."""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from eth_hash.auto import keccak
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from audit.auth import AuditRole, audit_tokens
from audit.indexer import Indexer
from audit.migrations import migrate
from audit.settings import AuditSettings
from audit.store import AuditStore, create_store_engine
from dul import subjects
from dul.chain.rpc import RpcClient
from dul.chain.testing import free_port
from dul.cohort import cohort_root, leaf_hash
from dul.consent_terms import ConsentTerms
from dul.contracts.deployment import Deployment
from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
from dul.contracts.world import OMOP_FIELDS, World
from dul.domain import (
    BreakGlassReason,
    ConsentPolicy,
    Decision,
    DenyReason,
    Operation,
    ReleaseKind,
    Scenario,
    Tier,
    break_glass_ref,
    scenario_mask,
    slug_id,
)
from dul.pg_schema import schema_url

POSTGRES_ENV = "DUL_TEST_DATABASE_URL"


# --- credentials --------------------------------------------------------------------------------


def with_token_file(settings: AuditSettings) -> AuditSettings:
    """`settings` with a token file of its own (a fresh temporary one unless it names one)."""
    if settings.tokens_path is not None:
        return settings
    directory = Path(tempfile.mkdtemp(prefix="dul-audit-tokens-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)  # token hashes: not left behind
    return settings.model_copy(update={"tokens_path": directory / "tokens.json"})


def audit_token(
    settings: AuditSettings,
    role: AuditRole = AuditRole.REGULATOR,
    org: str = "",
    *,
    expires_at: float | None = None,
    name: str | None = None,
) -> str:
    """A new API token in the token file of `settings` (see `with_token_file`)."""
    assert settings.tokens_path is not None, "use with_token_file(settings) first"
    name = name or f"tests-{role.value}-{uuid.uuid4().hex[:8]}"
    return audit_tokens(settings.tokens_path).create(name, org, role, expires_at=expires_at)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def audit_client(
    settings: AuditSettings, role: AuditRole = AuditRole.REGULATOR, org: str = ""
) -> Iterator[TestClient]:
    """The audit app in a TestClient that sends a regulator's API token (or `role`'s) with
    every request; `client.app.state.audit.settings` names the token file for more tokens."""
    from audit.app import create_app

    settings = with_token_file(settings)
    token = audit_token(settings, role, org)
    with TestClient(
        create_app(settings), raise_server_exceptions=False, headers=bearer(token)
    ) as client:
        yield client


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
                return schema_url(admin_url, name)
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
    rpc = RpcClient(rpc_url)
    indexer = Indexer(
        AuditStore(engine),
        rpc,
        chain_id=deployment.chain_id,
        contracts=deployment.addresses,
        start_block=int(deployment.raw["block"]),
    )
    indexer.run(to_block=int(rpc.request("eth_blockNumber"), 16))
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


# --- patients: consents, authorization codes, cohorts ---------------------------------------

COHORT_LEAVES_DDL = (
    "CREATE TABLE IF NOT EXISTS cohort_leaves (access_id BLOB PRIMARY KEY, root BLOB NOT NULL, "
    "size INTEGER NOT NULL, leaves BLOB NOT NULL)"
)
"""The hospital gateway's cohort store, as far as the audit service reads it."""


BREAK_GLASS_DATASET = slug_id("hospital-a/ehr-identified")


def record_break_glass(
    world: World, subject: bytes, *, review_hours: int = 1
) -> tuple[bytes, bytes]:
    """On chain: the hospital's identified dataset (registered once), a transfer agreement with
    the institute that allows break-glass (`review_hours`), and one break-glass access for
    `subject` (LIFE_THREATENING_EMERGENCY), unreviewed. The agreement id and the access id."""
    if world.ledger.call("DatasetRegistry", "dataset", BREAK_GLASS_DATASET)[0] != world.hospital:
        world.ledger.transact(
            world.steward, "DatasetRegistry", "registerDataset", BREAK_GLASS_DATASET,
            world.hospital, keccak(b"OMOP CDM 5.4"), list(OMOP_FIELDS), Tier.IDENTIFIED,
        )  # fmt: skip
    agreement = world.activate(
        replace(
            world.research_terms(), datasets=(BREAK_GLASS_DATASET,),
            scenario=Scenario.CLINICAL_CARE, max_tier=Tier.IDENTIFIED,
            consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION, duo_codes=(43,),
            break_glass_review_hours=review_hours,
        )
    )  # fmt: skip
    request = AccessRequest(
        request_id=keccak(f"break-glass {uuid.uuid4()}".encode()),
        agreement_id=agreement,
        dataset_id=BREAK_GLASS_DATASET,
        field_mask=0b0110,
        tier=Tier.IDENTIFIED,
        operation=Operation.QUERY,
        request_hash=keccak(b"SELECT * FROM condition_occurrence WHERE person_id = :p"),
        deadline=int(time.time()) + 600,
        authorization_ref=break_glass_ref(BreakGlassReason.LIFE_THREATENING_EMERGENCY),
    )
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    record = AccessRecord(
        request, world.requester.address, request.sign(world.requester, domain),
        Decision.GRANTED, DenyReason.NONE, cohort_root=leaf_hash(subject), cohort_size=1,
    )  # fmt: skip
    world.ledger.transact(world.gateway, "AccessLog", "recordAccess", record.as_abi())
    return agreement, request.request_id


def make_cohort_store(path: Path) -> str:
    """A SQLite cohort store with an empty `cohort_leaves` table; its URL."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(COHORT_LEAVES_DDL))
    engine.dispose()
    return url


def put_cohort(
    url: str, access_id: bytes, subjects: Sequence[bytes], *, root: bytes | None = None
) -> tuple[bytes, int]:
    """Writes the cohort of `access_id` as a gateway does (sorted leaves, concatenated); the
    tree head (root, size), or `root` instead of the true one (a store that lies)."""
    from dul.cohort import canonical, cohort_root

    true_root, size = cohort_root(subjects)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO cohort_leaves (access_id, root, size, leaves) VALUES (:a, :r, :n, :l)"
            ),
            {"a": access_id, "r": root or true_root, "n": size, "l": b"".join(canonical(subjects))},
        )
    engine.dispose()
    return true_root, size


def subject_of(name: str) -> bytes:
    """A fresh subject reference for a test's patient (random, as a keyed hash looks)."""
    return keccak(f"{name} {uuid.uuid4()}".encode())


def record_consents(
    world: World,
    subjects: Sequence[bytes],
    scenarios: Sequence[Scenario] = (Scenario.RESEARCH,),
    *,
    duo_codes: Sequence[int] = (42, 46),
) -> list[bytes]:
    """One consent per subject at the world's hospital, by its steward; the consent ids."""
    mask = scenario_mask(*scenarios)
    until = int(time.time()) + 86_400 * 365
    terms = [ConsentTerms(world.hospital, s, mask, until, tuple(duo_codes)).as_abi()
             for s in subjects]  # fmt: skip
    receipt = world.ledger.transact(world.steward, "ConsentRegistry", "recordConsents", terms)
    events = world.ledger.contract("ConsentRegistry").events.ConsentRecorded()
    return [bytes(e["args"]["consentId"]) for e in events.process_receipt(receipt)]


def issue_authorization(
    world: World, subject: bytes, *, tier: Tier = Tier.PSEUDONYMIZED, multi_use: bool = False
) -> bytes:
    """An INSURANCE_CLAIM code for `subject`, granted to the world's institute (once, or with
    `multi_use` every fitting access until it expires); its hash."""
    code_hash = subjects.code_hash(subjects.new_authorization_code())
    authorization = (
        world.hospital, subject, world.institute, world.dataset, 0b0110, tier,
        Scenario.INSURANCE_CLAIM, 0, int(time.time()) + 3_600, multi_use, bytes(32),
    )  # fmt: skip
    world.ledger.transact(
        world.steward, "ConsentRegistry", "issueAuthorization", code_hash, authorization
    )
    return code_hash


@dataclass
class PatientStory:
    """What `record_patient_story` put on chain and in the hospital's cohort store."""

    cohort_store: str
    agreement: bytes
    insurance_agreement: bytes
    subjects: dict[str, bytes]
    consents: dict[str, bytes]
    accesses: dict[str, bytes]
    cohorts: dict[str, list[str]]
    """Access name -> names of the subjects its cohort admitted."""
    code: bytes
    revoked_code: bytes

    def hex(self, value: bytes) -> str:
        return "0x" + value.hex()


def record_patient_story(world: World, cohort_store: str) -> PatientStory:
    """On chain, under a COHORT_CONSENT research agreement of the hospital:

    - consents for RESEARCH of alice, bob, carol and walt; walt withdraws (by the steward);
      erin never consents;
    - `cohort` admits alice, bob, carol (its leaves in the cohort store);
    - `after_withdrawal` admits bob and walt, recorded after walt's withdrawal;
    - `unconsented` admits carol and erin;
    - `unavailable` has a cohort whose leaves the store does not hold;
    - `mismatch` has leaves in the store that hash to another root;
    - `denied` is a denial (no cohort);

    and under an INSURANCE_CLAIM agreement with the institute: an authorization code for
    alice redeemed by access `insurance` (a cohort of one), and another code revoked.
    """
    names = ("alice", "bob", "carol", "walt", "erin", "nobody")
    people = {name: subject_of(name) for name in names}
    consented = ("alice", "bob", "carol", "walt")
    ids = record_consents(world, [people[n] for n in consented])
    consents = dict(zip(consented, ids, strict=True))
    world.ledger.transact(world.steward, "ConsentRegistry", "withdrawConsent", consents["walt"])

    cohort_terms = replace(
        world.research_terms(quota=100),
        max_tier=Tier.PSEUDONYMIZED,
        consent_policy=ConsentPolicy.COHORT_CONSENT,
    )
    agreement = world.activate(cohort_terms)
    cohorts = {
        "cohort": ["alice", "bob", "carol"],
        "after_withdrawal": ["bob", "walt"],
        "unconsented": ["carol", "erin"],
        "unavailable": ["alice", "nobody"],
        "mismatch": ["bob", "nobody"],
    }
    records = {}
    for access, members in cohorts.items():
        record = world.access_record(agreement, tier=Tier.PSEUDONYMIZED)
        request_id = record.request.request_id
        if access == "unavailable":
            root, size = cohort_root([people[m] for m in members])
        elif access == "mismatch":
            root, size = cohort_root([people[m] for m in members])
            put_cohort(cohort_store, request_id, [people["alice"], people["nobody"]])
        else:
            root, size = put_cohort(cohort_store, request_id, [people[m] for m in members])
        records[access] = replace(record, cohort_root=root, cohort_size=size)
    records["denied"] = world.access_record(
        agreement, Decision.DENIED, DenyReason.CONSENT_MISSING, tier=Tier.PSEUDONYMIZED
    )
    world.ledger.transact(
        world.gateway, "AccessLog", "recordAccesses", [r.as_abi() for r in records.values()]
    )

    insurance_terms = replace(
        world.research_terms(quota=10),
        scenario=Scenario.INSURANCE_CLAIM,
        max_tier=Tier.PSEUDONYMIZED,
        consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
        duo_codes=(),
    )
    insurance = world.activate(insurance_terms)
    code = issue_authorization(world, people["alice"])
    revoked = issue_authorization(world, people["alice"])
    world.ledger.transact(world.steward, "ConsentRegistry", "revokeAuthorization", revoked)
    claim = world.access_record(insurance, authorization_ref=code)
    claim = replace(claim, cohort_root=leaf_hash(people["alice"]), cohort_size=1)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [claim.as_abi()])
    records["insurance"] = claim
    cohorts["insurance"] = ["alice"]
    return PatientStory(
        cohort_store=cohort_store,
        agreement=agreement,
        insurance_agreement=insurance,
        subjects=people,
        consents=consents,
        accesses={name: r.request.request_id for name, r in records.items()},
        cohorts=cohorts,
        code=code,
        revoked_code=revoked,
    )


def index_with_cohorts(
    deployment: Deployment, rpc_url: str, url: str, cohort_stores: Sequence[str]
) -> tuple[sa.Engine, Indexer]:
    """Like `index_into`, reading cohorts from `cohort_stores`; the indexer stays open (its
    store engine is the first element; close the indexer when done)."""
    from audit.cohorts import open_sources

    engine = create_store_engine(url)
    migrate(engine)
    indexer = Indexer(
        AuditStore(engine),
        RpcClient(rpc_url),
        chain_id=deployment.chain_id,
        contracts=deployment.addresses,
        start_block=int(deployment.raw["block"]),
        cohort_sources=open_sources(cohort_stores),
    )
    indexer.run(to_block=int(indexer.rpc.request("eth_blockNumber"), 16))
    return engine, indexer


def private_world(rpc_url: str, manifest: Path) -> World:
    """A deployment of its own on the session's chain (manifest at `manifest`, never the
    chain's own, which the permissioned endpoint reads), with the usual small data space: a
    story recorded here stays out of the other tests' stores, which index the session's
    deployment. The members are the session world's deterministic keys, so the endpoint admits
    them."""
    from eth_typing import HexStr

    from dul.chain.testing import TEST_OPERATOR_KEY
    from dul.contracts.deploy import deploy
    from dul.contracts.ledger import Ledger, connect
    from dul.signing import LocalSigner

    operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
    w3 = connect(rpc_url)
    deployment, _ = deploy(w3, operator, manifest, admin_delay=5)
    return World(Ledger(w3, deployment), operator).build()


# --- an OpenID Connect provider for tests -------------------------------------------------------


class TestIdentityProvider:
    """A small OpenID Connect provider on 127.0.0.1 for tests: an RSA key of its own, its JWKS
    (`/jwks.json`), the authorization endpoint (`/authorize`, which signs in whoever
    `next_claims` describes at once and redirects back with a code) and the token endpoint
    (`/token`, authorization code + PKCE S256, each code once). `token(**claims)` signs an
    access token directly."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, audience: str, client_id: str = "dul-console") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:8]
        self.audience = audience
        self.client_id = client_id
        self.next_claims: dict[str, object] = {}
        self.codes: dict[str, dict[str, object]] = {}
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwks = json.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]})
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/jwks.json":
                    self._json(200, json.loads(jwks))
                    return
                if url.path != "/authorize":
                    self._json(404, {"error": "not_found"})
                    return
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if (
                    q.get("client_id") != provider.client_id
                    or q.get("code_challenge_method") != "S256"
                ):
                    self._json(400, {"error": "invalid_request"})
                    return
                code = secrets.token_urlsafe(16)
                provider.codes[code] = {**q, "claims": dict(provider.next_claims)}
                back = urlencode({"code": code, "state": q.get("state", "")})
                self.send_response(302)
                self.send_header("Location", f"{q['redirect_uri']}?{back}")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                grant = provider.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "").encode()
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest())
                if (
                    grant is None
                    or form.get("grant_type") != "authorization_code"
                    or form.get("client_id") != grant["client_id"]
                    or form.get("redirect_uri") != grant["redirect_uri"]
                    or challenge.rstrip(b"=").decode() != grant["code_challenge"]
                ):
                    self._json(400, {"error": "invalid_grant"})
                    return
                claims = grant["claims"]
                assert isinstance(claims, dict)
                self._json(200, {"access_token": provider.token(**claims),
                                 "token_type": "Bearer", "expires_in": 300})  # fmt: skip

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.issuer = self.url
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def token(self, *, key: object = None, **claims: object) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "sub": "dr-house", "iat": now,
                "exp": now + 300, **claims}  # fmt: skip
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key or self.key,  # type: ignore[arg-type]
                          algorithm="RS256", headers={"kid": self.kid})  # fmt: skip

    def settings(self, base: AuditSettings) -> AuditSettings:
        """`base` accepting this provider's tokens and signing the console in with it."""
        return base.model_copy(update={
            "oidc_issuer": self.issuer, "oidc_audience": self.audience,
            "oidc_jwks_url": f"{self.url}/jwks.json", "oidc_client_id": self.client_id,
            "oidc_authorization_endpoint": f"{self.url}/authorize",
            "oidc_token_endpoint": f"{self.url}/token",
        })  # fmt: skip

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

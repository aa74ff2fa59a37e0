"""The real patient page served over HTTP for tests (uvicorn in a thread), and a patient token
signed the way a hospital's steward signs one; the audit service and the page served together."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import SecretStr

from audit.console.testing import serve_audit
from audit.settings import AuditSettings
from audit.testing import with_token_file
from dul.chain.testing import ChainHandle
from dul.contracts.world import World
from dul.patient_tokens import PatientToken, patient_token_domain
from dul.serving import serve_asgi
from dul.signing import Signer
from ledger_gateway.patient_page.app import SERVER_OPTIONS, create_app
from ledger_gateway.patient_page.settings import PatientPageSettings
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore


@contextlib.contextmanager
def serve_patient_page(
    settings: PatientPageSettings, *, ready_timeout: float = 20.0
) -> Iterator[str]:
    """The page's app on a free 127.0.0.1 port until the block ends; yields its URL."""
    with serve_asgi(
        create_app(settings), "patient page", ready_timeout=ready_timeout, **SERVER_OPTIONS
    ) as url:
        yield url


def patient_token(
    steward: Signer,
    subject: bytes,
    holder: bytes,
    chain_id: int,
    membership: str,
    *,
    lifetime_s: int = 1800,
) -> str:
    """A patient token for `subject` at `holder`, signed by `steward`."""
    from eth_utils.address import to_checksum_address

    now = int(time.time())
    domain = patient_token_domain(chain_id, to_checksum_address(membership))
    return PatientToken(subject, holder, now, now + lifetime_s).signed(steward, domain).encode()


@dataclass(frozen=True)
class ServedPage:
    url: str
    audit_url: str
    token: str
    """A patient token for the subject the page was served for."""
    settings: PatientPageSettings


@contextlib.contextmanager
def serve_audit_and_page(
    world: World,
    chain: ChainHandle,
    gateway: GatewayHandle,
    store: str,
    subject: bytes,
    agreements: list[bytes],
) -> Iterator[ServedPage]:
    """The audit service over `store` (an index already written) and hospital A's patient page
    behind it and `gateway` (with a steward token of its own), offering `agreements`, until the
    block ends; with a patient token for `subject`."""
    audit = with_token_file(AuditSettings(
        database_url=store, rpc_url=chain.rpc_url, deployment_path=chain.home.deployment,
        index_behind_blocks=10_000_000, index_behind_s=31_536_000,
    ))  # fmt: skip
    steward = TokenStore(gateway.settings.tokens_path).create(
        f"patient-page-{os.getpid()}-{os.urandom(4).hex()}", "hospital-a", TokenRole.STEWARD
    )
    membership = world.ledger.deployment.address("Membership")
    token = patient_token(world.steward, subject, world.hospital, world.ledger.chain_id, membership)
    with serve_audit(audit) as audit_url:
        page = PatientPageSettings(
            home=chain.home.root, org="hospital-a", gateway_url=gateway.url,
            gateway_token=SecretStr(steward), audit_url=audit_url, rpc_url=chain.rpc_url,
            deployment_path=chain.home.deployment, agreements=["0x" + a.hex() for a in agreements],
            signin_failures=1_000,  # every test signs in from 127.0.0.1; limits: their own test
        )  # fmt: skip
        with serve_patient_page(page) as url:
            yield ServedPage(url, audit_url, token, page)

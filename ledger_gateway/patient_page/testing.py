"""The real patient page served over HTTP for tests (uvicorn in a thread), and a patient token
signed the way a hospital's steward signs one."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from dul.patient_tokens import PatientToken, patient_token_domain
from dul.serving import serve_asgi
from dul.signing import Signer
from ledger_gateway.patient_page.app import SERVER_OPTIONS, create_app
from ledger_gateway.patient_page.settings import PatientPageSettings


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

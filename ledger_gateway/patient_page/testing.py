"""The real patient page served over HTTP for tests (uvicorn in a thread), and a patient token
signed the way a hospital's steward signs one."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from dul.chain.testing import free_port
from dul.patient_tokens import PatientToken, patient_token_domain
from dul.signing import Signer
from ledger_gateway.patient_page.app import SERVER_OPTIONS, create_app
from ledger_gateway.patient_page.settings import PatientPageSettings


@contextlib.contextmanager
def serve_patient_page(
    settings: PatientPageSettings, *, ready_timeout: float = 20.0
) -> Iterator[str]:
    """The page's app on a free 127.0.0.1 port until the block ends; yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        **SERVER_OPTIONS,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"patient-page-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the patient page at {url} did not start")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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

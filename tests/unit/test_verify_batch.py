"""A batch's signature checks run off the event loop's thread, on the verifier thread(s), and
come back in the batch's order with each refusal at its request's place, whatever
`VERIFY_THREADS` is."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from ledger_gateway import service
from ledger_gateway.errors import BadRequestError


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_batch_is_checked_off_the_loop_in_order(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "VERIFY_THREADS", threads)
    monkeypatch.setattr(service, "_VERIFIER", [])  # a pool of this size, shut down below
    access = service.AccessService.__new__(service.AccessService)
    refusal = BadRequestError("not signed by its requester", code="bad_signature")
    seen: set[int] = set()

    def check(body: Any, now: int) -> Any:
        seen.add(threading.get_ident())
        return refusal if body == 7 else (body, now)

    monkeypatch.setattr(access, "_verify_or_refusal", check)
    bodies: list[Any] = list(range(service.VERIFY_PARALLEL_MIN + 9))

    async def main() -> tuple[list[Any], int]:
        return await access._verify_all(bodies, 5), threading.get_ident()

    try:
        checked, loop_thread = asyncio.run(main())
    finally:
        for pool in service._VERIFIER:
            pool.shutdown()
    assert checked == [refusal if i == 7 else (i, 5) for i in bodies]
    assert loop_thread not in seen
    assert 1 <= len(seen) <= threads

"""What the gateway knows about its patients: an in-memory index of `ConsentRegistry` state for
the gateway's holder organization, built from raw `eth_getLogs` and decoded with eth_abi.

- consents by id and by subject (a cohort of 10,000 is filtered with 10,000 dict lookups);
- authorization codes (by code hash) issued by the holder's stewards, with their status;
- withdrawals the gateway relayed itself and has not seen mined yet, which count as done;
- the disease term of each of the holder's agreements (`AgreementProposed`), which a
  disease-specific consent is matched against.

**A withdrawal recorded before a request is honoured by it**: every cohort or authorization
decision first calls `sync()`, which brings the index up to the chain head — one
`eth_getBlockByNumber("latest")` (the head and its time, `head_time`), and `eth_getLogs` over
the new blocks when there are any (in pages a node serves, `dul.chain.log_pages`). Concurrent
callers share one catch-up, but only one that *started after they asked*, so no caller is
answered from a head read before its request arrived.

The chain is a finality chain (Besu QBFT in production): the index does not roll back. After
`evm_revert` on a development node, restart the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import structlog

from dul.chain.log_pages import PageSizer, apaged, gateway_sizer
from dul.chain.rpc import AsyncRpcClient, range_refused
from dul.consent_terms import ConsentTerms
from dul.contracts import bindings
from dul.contracts.bindings import EventBinding
from dul.contracts.typed_data import AgreementTerms
from dul.domain import AuthorizationStatus, ConsentStatus, Scenario, Tier
from dul.signing import checksum_address
from ledger_gateway.consent_policy import (
    ZERO32,
    AuthorizationState,
    ConsentIndex,
    ConsentState,
    Study,
)

log = structlog.get_logger(__name__)

ZERO_ADDRESS = "0x" + "00" * 20

FREEZE_AFTER_CONSENTS = 1_000
"""A catch-up that records at least this many consents freezes what the process holds
(`gc.freeze`): 8,000 consents are ~40,000 tracked objects (measured) that every full
collection would walk again."""


@functools.cache
def events() -> dict[str, EventBinding]:
    """The ConsentRegistry events the view reads, and AgreementRegistry's AgreementProposed
    (an agreement's disease term), from the packaged ABIs."""
    return {
        **bindings.events("ConsentRegistry"),
        "AgreementProposed": bindings.event("AgreementRegistry", "AgreementProposed"),
    }


_HOLDER_EVENTS = (
    "ConsentRecorded",
    "ConsentWithdrawn",
    "AuthorizationIssued",
    "AuthorizationRevoked",
)


def _b(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def _address(value: str) -> str | None:
    return None if value.lower() == ZERO_ADDRESS else checksum_address(_b(value))


class ConsentView:
    """ConsentRegistry state of one holder, following the chain."""

    def __init__(
        self,
        rpc: AsyncRpcClient,
        registry: str,
        holder: bytes,
        *,
        first_block: int = 0,
        pages: PageSizer | None = None,
        agreements: str | None = None,
    ) -> None:
        self._rpc = rpc
        self.registry = registry
        self.agreement_registry = agreements
        """Where the holder's agreements are proposed (None: disease terms are not followed)."""
        self.holder = holder
        self.pages = pages or gateway_sizer()
        """Blocks per catch-up page (`dul.chain.log_pages`: shrinks on refusal, grows back)."""
        self.index = ConsentIndex(holder)
        self.authorizations: dict[bytes, AuthorizationState] = {}
        self.diseases: dict[bytes, bytes] = {}
        """Agreement id -> the disease term its signed terms carry (zero: none)."""
        self.last_block = first_block - 1
        """The highest block whose events are applied (before the deployment: none yet)."""
        self.head_time: int | None = None
        """The time of the latest block a catch-up started from (None: none yet), which
        consents and codes are judged no earlier than (`consent_policy.judged_at`)."""
        self._queued: asyncio.Future[None] | None = None
        self._running = False
        self._runner: asyncio.Future[None] | None = None

    # --- queries (no I/O) --------------------------------------------------------------------

    @property
    def withdrawn_pending(self) -> set[bytes]:
        """Withdrawals relayed by this gateway and not yet seen mined: already in force."""
        return self.index.withdrawn_pending

    def consents_of(self, subject: bytes) -> list[ConsentState]:
        """The subject's consents at this holder, oldest first; a pending withdrawal shows as
        WITHDRAWN."""
        return self.index.consents_of(subject)

    def study(self, agreement_id: bytes, requester: bytes) -> Study:
        """The agreement as specific consents see it (its disease term as proposed)."""
        return Study(agreement_id, requester, self.diseases.get(agreement_id, ZERO32))

    def admit(
        self, cohort: Iterable[bytes], scenario: Scenario, now: int, study: Study | None = None
    ) -> tuple[list[bytes], int]:
        """(admitted subjects ascending, how many distinct named subjects were left out)."""
        return self.index.admit(cohort, scenario, now, study)

    def root(self, admitted: Sequence[bytes]) -> bytes:
        """The cohort tree root of admitted subjects (ascending), from kept leaf hashes."""
        return self.index.root(admitted)

    def authorization(self, code_hash: bytes) -> AuthorizationState | None:
        return self.authorizations.get(code_hash)

    def mark_withdrawn(self, consent_id: bytes) -> None:
        """A withdrawal this gateway relayed: in force from now on, before it is mined."""
        self.index.mark_withdrawn(consent_id)

    # --- following the chain -----------------------------------------------------------------

    async def sync(self) -> None:
        """Apply every event up to the chain head as it is after this call began."""
        loop = asyncio.get_running_loop()
        if self._queued is None:
            self._queued = loop.create_future()
        waiter = self._queued
        if not self._running:
            self._running = True
            self._runner = asyncio.ensure_future(self._run())
        await asyncio.shield(waiter)

    async def _run(self) -> None:
        try:
            while self._queued is not None:
                batch, self._queued = self._queued, None  # later callers queue the next round
                try:
                    await self._catch_up()
                except BaseException as exc:
                    if not batch.done():
                        batch.set_exception(exc)
                    batch.exception()  # retrieved: a caller may have gone away
                    if not isinstance(exc, Exception):
                        raise
                else:
                    if not batch.done():
                        batch.set_result(None)
        finally:
            self._running = False

    async def _catch_up(self) -> None:
        latest = await self._rpc.request("eth_getBlockByNumber", "latest", False)
        head = int(latest["number"], 16)  # one round trip for the head and its time
        self.head_time = max(self.head_time or 0, int(latest["timestamp"], 16))
        pages = apaged(
            self._fetch,
            self.last_block + 1,
            head,
            sizer=self.pages,
            refused=range_refused,  # a refusal of the range, not an outage
        )
        applied = 0
        async for _, end, entries in pages:
            applied += self.apply(entries)
            self.last_block = end
        if applied >= FREEZE_AFTER_CONSENTS:
            # A bulk of consents (a gateway's first catch-up, usually in its background
            # follow) lives as long as the process: out of the collector's sight, as start-up
            # is, so that full collections stop walking the whole index in the middle of later
            # decisions. One full collection per bulk, here.
            gc.collect()
            gc.freeze()

    async def _fetch(self, start: int, end: int) -> list[dict[str, Any]]:
        abi = events()
        addresses = [self.registry]
        names = list(_HOLDER_EVENTS)
        if self.agreement_registry is not None:  # AgreementProposed names the holder too
            addresses.append(self.agreement_registry)
            names.append("AgreementProposed")
        span = {"fromBlock": hex(start), "toBlock": hex(end), "address": addresses}
        holder_topics = ["0x" + abi[name].topic.hex() for name in names]
        ours = await self._rpc.request(
            "eth_getLogs", {**span, "topics": [holder_topics, None, "0x" + self.holder.hex()]}
        )
        # AuthorizationRedeemed names the grantee, not the holder: read them all, keep ours.
        redeemed = await self._rpc.request(
            "eth_getLogs",
            {**span, "address": self.registry,
             "topics": ["0x" + abi["AuthorizationRedeemed"].topic.hex()]},
        )  # fmt: skip
        merged = list(ours) + list(redeemed)
        merged.sort(key=lambda e: (int(e["blockNumber"], 16), int(e["logIndex"], 16)))
        return merged

    def apply(self, entries: Sequence[dict[str, Any]]) -> int:
        """Apply decoded events in chain order; returns how many consents were recorded."""
        abi = events()
        recorded = abi["ConsentRecorded"].topic
        withdrawn = abi["ConsentWithdrawn"].topic
        issued = abi["AuthorizationIssued"].topic
        revoked = abi["AuthorizationRevoked"].topic
        redeemed = abi["AuthorizationRedeemed"].topic
        proposed = abi["AgreementProposed"].topic
        consents = 0
        for entry in entries:
            topics = [_b(t) for t in entry["topics"]]
            topic = topics[0]
            if topic == recorded:
                self._recorded(topics, _b(entry["data"]))
                consents += 1
            elif topic == withdrawn:
                self.index.set_status(topics[1], ConsentStatus.WITHDRAWN)
            elif topic == issued:
                self._issued(topics, _b(entry["data"]))
            elif topic == revoked:
                self._set_authorization(topics[1], status=AuthorizationStatus.REVOKED)
            elif topic == redeemed:
                code = self.authorizations.get(topics[1])
                if code is not None and code.multi_use:  # stays ISSUED until it expires
                    self._set_authorization(topics[1], redeemed_by=topics[2])
                else:
                    self._set_authorization(
                        topics[1], status=AuthorizationStatus.REDEEMED, redeemed_by=topics[2]
                    )
            elif topic == proposed:
                *_, terms = abi["AgreementProposed"].decode_data(_b(entry["data"]))
                self.diseases[topics[1]] = AgreementTerms.from_abi(terms).disease_code
        if entries:
            log.debug("consents.applied", events=len(entries), consents=consents)
        return consents

    def _recorded(self, topics: list[bytes], data: bytes) -> None:
        raw, _recorder, by_subject = events()["ConsentRecorded"].decode_data(data)
        terms = ConsentTerms.from_abi(raw)
        state = ConsentState(
            consent_id=topics[1],
            holder=terms.holder,
            subject=terms.subject,
            scenarios=terms.scenarios,
            status=ConsentStatus.GRANTED,
            valid_from=terms.valid_from,
            valid_until=terms.valid_until,
            subject_key=_address(terms.subject_key),
            duo_codes=terms.duo_codes,
            disease=terms.disease_code,
            studies=frozenset(terms.studies),
            requesters=frozenset(terms.requesters),
            by_subject=bool(by_subject),
        )
        self.index.add(state)

    def _issued(self, topics: list[bytes], data: bytes) -> None:
        value, *_issuer = events()["AuthorizationIssued"].decode_data(data)
        holder, subject, grantee, dataset, mask, tier, scenario, status, expires, multi, by = value
        if bytes(holder) != self.holder:
            return
        self.authorizations[topics[1]] = AuthorizationState(
            code_hash=topics[1],
            holder=bytes(holder),
            subject=bytes(subject),
            grantee=bytes(grantee),
            dataset=bytes(dataset),
            field_mask=int(mask),
            tier=Tier(tier),
            scenario=Scenario(scenario),
            status=AuthorizationStatus(status),
            expires_at=int(expires),
            redeemed_by=bytes(by),
            multi_use=bool(multi),
        )

    def _set_authorization(self, code_hash: bytes, **changes: Any) -> None:
        old = self.authorizations.get(code_hash)
        if old is not None:
            self.authorizations[code_hash] = replace(old, **changes)

    async def follow(self, interval: float) -> None:
        """Keep up with the chain between requests (decisions still `sync()` themselves)."""
        while True:
            try:
                await self.sync()
            except Exception as exc:  # the node may be down; decisions then fail clearly
                log.warning("consents.sync_failed", error=str(exc))
            await asyncio.sleep(interval)

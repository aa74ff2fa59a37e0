"""What the gateway knows about the chain: agreement terms, scope, quota use and requester
membership, read with `eth_call` and cached; chain events drop cache entries as soon as they
are mined, so a suspension or revocation is honoured by the next decision.

The quota use read here only seeds the outbox's counted reservation of an agreement (the
store reserves each grant's unit in the transaction that stores it, shared by all workers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import structlog

from dul.chain.log_pages import apaged, gateway_sizer, span_filter
from dul.chain.rpc import AsyncRpcClient, range_refused
from dul.contracts.bindings import event, function
from dul.contracts.deployment import Deployment
from dul.domain import AgreementStatus, ConsentPolicy, Role, Scenario, Tier
from ledger_gateway.policy import AgreementState

log = structlog.get_logger(__name__)


_ACCESS_TERMS = function("AgreementRegistry", "accessTerms")
_ALLOWED_FIELDS = function("AgreementRegistry", "allowedFields")
_ACCESSES_USED = function("AccessLog", "accessesUsed")
_HAS_ORG_ROLE = function("Membership", "hasOrgRole")
_SUPERSEDED_TOPIC = event("AgreementRegistry", "AgreementSuperseded").topic


class ChainView:
    def __init__(self, rpc: AsyncRpcClient, deployment: Deployment) -> None:
        self._rpc = rpc
        self._registry = deployment.address("AgreementRegistry")
        self._membership = deployment.address("Membership")
        self._access_log = deployment.address("AccessLog")
        self._agreements: dict[bytes, AgreementState] = {}
        self._fields: dict[tuple[bytes, bytes], int] = {}
        self._used: dict[bytes, int] = {}
        self._roles: dict[tuple[str, bytes, Role], bool] = {}
        self._log_pages = gateway_sizer()
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._scoped: dict[tuple[bytes, bytes], tuple[AgreementState, AgreementState]] = {}
        """(agreement, dataset) -> (cached state, that state scoped to the dataset)."""
        self._last_block: int | None = None
        self.last_refresh: float = 0.0

    async def _call(self, to: str, data: bytes) -> bytes:
        result = await self._rpc.request(
            "eth_call", {"to": to, "data": "0x" + data.hex()}, "latest"
        )
        return bytes.fromhex(str(result)[2:])

    async def agreement(self, agreement_id: bytes, dataset_id: bytes) -> AgreementState | None:
        """The agreement's state with the scope of `dataset_id` filled in; None when unknown."""
        known = self.known_agreement(agreement_id, dataset_id)
        if known is not None:
            return known
        key = (agreement_id, dataset_id)
        lock = self._locks.setdefault(agreement_id, asyncio.Lock())
        async with lock:  # one chain read per agreement, however many requests wait for it
            state = self._agreements.get(agreement_id)
            if state is None:
                raw = await self._call(self._registry, _ACCESS_TERMS.encode(agreement_id))
                v = _ACCESS_TERMS.decode_output(raw)[0]  # one AccessTerms struct
                if v[0] == AgreementStatus.NONE:
                    return None
                state = AgreementState(
                    agreement_id=agreement_id,
                    status=AgreementStatus(v[0]),
                    scenario=Scenario(v[1]),
                    max_tier=Tier(v[2]),
                    operations=v[3],
                    consent_policy=ConsentPolicy(v[4]),
                    valid_from=v[5],
                    valid_until=v[6],
                    quota=v[7],
                    holder=v[8],
                    requester=v[9],
                    allowed_fields={},
                    break_glass_review_hours=v[10],
                )
                raw_used = await self._call(self._access_log, _ACCESSES_USED.encode(agreement_id))
                self._used[agreement_id] = _ACCESSES_USED.decode_output(raw_used)[0]
                self._agreements[agreement_id] = state
            if key not in self._fields:
                data = _ALLOWED_FIELDS.encode(agreement_id, dataset_id)
                self._fields[key] = _ALLOWED_FIELDS.decode_output(
                    await self._call(self._registry, data)
                )[0]
        fields = self._fields[key]
        scoped_state = dataclasses.replace(state, allowed_fields={dataset_id: fields})
        self._scoped[key] = (state, scoped_state)
        return scoped_state

    def known_agreement(self, agreement_id: bytes, dataset_id: bytes) -> AgreementState | None:
        """What `agreement` answers when it needs no chain read; None: it needs one."""
        scoped = self._scoped.get((agreement_id, dataset_id))
        if scoped is not None and scoped[0] is self._agreements.get(agreement_id):
            return scoped[1]  # cached, and not dropped since
        return None

    def known_role(self, account: str, org: bytes, role: Role) -> bool | None:
        """What `has_role` answers when it needs no chain read; None: it needs one."""
        return self._roles.get((account.lower(), org, role))

    async def has_role(self, account: str, org: bytes, role: Role) -> bool:
        """`Membership.hasOrgRole`, cached until the next membership event."""
        key = (account.lower(), org, role)
        if key not in self._roles:
            data = _HAS_ORG_ROLE.encode(account, org, role)
            self._roles[key] = bool(
                _HAS_ORG_ROLE.decode_output(await self._call(self._membership, data))[0]
            )
        return self._roles[key]

    async def is_requester(self, account: str, org: bytes) -> bool:
        return await self.has_role(account, org, Role.REQUESTER)

    def chain_used(self, agreement_id: bytes) -> int:
        """`AccessLog.accessesUsed` as read when the agreement was last loaded."""
        return self._used.get(agreement_id, 0)

    async def refresh(self) -> int:
        """Drop what mined events changed; returns the number of events seen."""
        latest = int(await self._rpc.request("eth_blockNumber"), 16)
        if self._last_block is None:
            self._last_block = latest
            self.last_refresh = time.monotonic()
            return 0
        if latest <= self._last_block:
            self.last_refresh = time.monotonic()
            return 0
        watched = {"address": [self._registry, self._membership]}

        async def fetch(a: int, b: int) -> list[dict[str, Any]]:
            return list(await self._rpc.request("eth_getLogs", span_filter(watched, a, b)))

        seen = 0
        pages = apaged(
            fetch,
            self._last_block + 1,
            latest,
            sizer=self._log_pages,
            refused=range_refused,
        )
        async for _, end, logs in pages:
            self._drop(logs)
            self._last_block = end
            seen += len(logs)
        self.last_refresh = time.monotonic()
        if seen:
            log.info("chain_view.refreshed", events=seen, block=latest)
        return seen

    def _drop(self, logs: list[dict[str, Any]]) -> None:
        """Forgets what these events changed."""
        for entry in logs:
            if entry["address"].lower() == self._membership.lower():
                self._roles.clear()
                continue
            topics = entry["topics"]
            if len(topics) > 1:
                self._agreements.pop(bytes.fromhex(topics[1][2:]), None)
            if bytes.fromhex(topics[0][2:]) == _SUPERSEDED_TOPIC and len(topics) > 2:
                self._agreements.pop(bytes.fromhex(topics[2][2:]), None)

    async def follow(self, interval: float) -> None:
        """Refresh forever; a node outage is logged and retried, never fatal."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the node may be down; readiness reports it
                log.warning("chain_view.refresh_failed", error=str(exc))
            await asyncio.sleep(interval)

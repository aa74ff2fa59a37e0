"""When a consent covered an access: the one rule `verify`, provenance and reports share.

A consent at the access's holder covers an access that admitted its subject when

- it permits the agreement's scenario (`scenarios` holds the bit `1 << scenario`);
- its scope covers the agreement (specific consent): when it names studies, the agreement's id
  is one of them; when it names requesting organizations, the agreement's requester is one of
  them; when it carries a disease term (DUO:0000007), the agreement carries exactly that term;
- it was recorded on chain before the access (chain order);
- its window holds the access: `valid_from <= t` and `t - lag <= valid_until`, with `t` the
  access's block time;
- it was not withdrawn before the access — except by a withdrawal mined less than `lag`
  seconds before the access's block.

Why the lag: the gateway decides an access (and fixes its cohort) when the request arrives and
records it on chain a little later, in a batch. A withdrawal or an expiry that lands in between
was not there when the gateway decided, so it cannot be the gateway's fault; `lag`
(`consent_lag_s`, default 60 s, well above the gateway's batching and confirmation delay) is
the longest such gap a regulator accepts. A withdrawal mined earlier than that before the
access means the gateway admitted a subject who had already said no: a violation.
Without block times (a node that gives none) only chain order is checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dul.consent_terms import scope_covers

ZERO32 = "0x" + "00" * 32


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """The agreement an access was under, as specific consents are matched against it."""

    agreement_id: str
    requester: str
    disease_code: str = ZERO32


@dataclass(frozen=True, slots=True)
class ConsentFacts:
    """One consent as the store holds it, with its withdrawal if any."""

    consent_id: str
    holder: str
    scenarios: int
    valid_from: int
    valid_until: int
    recorded_at: tuple[int, int, int]
    withdrawn_at: tuple[int, int, int] | None = None
    withdrawn_time: int | None = None
    disease_code: str = ZERO32
    studies: tuple[str, ...] = ()
    requesters: tuple[str, ...] = ()

    @property
    def specific(self) -> bool:
        return bool(self.studies or self.requesters or self.disease_code != ZERO32)


def in_scope(consent: ConsentFacts, study: StudyFacts | None) -> bool:
    """Whether the consent's scope covers `study` (any study when it names none): the
    gateway's rule (`dul.consent_terms.scope_covers`)."""
    return scope_covers(
        consent.studies,
        consent.requesters,
        consent.disease_code,
        None if study is None else (study.agreement_id, study.requester, study.disease_code),
        no_disease=ZERO32,
    )


def covers(
    consent: ConsentFacts,
    *,
    holder: str,
    scenario: int,
    position: tuple[int, int, int],
    timestamp: int | None,
    lag: float,
    study: StudyFacts | None = None,
) -> bool:
    """Whether `consent` covered an access of `holder` for `scenario` under `study` at chain
    `position` (block time `timestamp`); see the module docstring."""
    if consent.holder != holder or not consent.scenarios >> scenario & 1:
        return False
    if not in_scope(consent, study):
        return False
    if consent.recorded_at >= position:
        return False
    if timestamp is not None and not (
        consent.valid_from <= timestamp and timestamp - lag <= consent.valid_until
    ):
        return False
    if consent.withdrawn_at is not None and consent.withdrawn_at < position:
        if timestamp is None or consent.withdrawn_time is None:
            return False
        if consent.withdrawn_time <= timestamp - lag:
            return False
    return True


def covering(
    consents: Iterable[ConsentFacts],
    *,
    holder: str,
    scenario: int,
    position: tuple[int, int, int],
    timestamp: int | None,
    lag: float,
    study: StudyFacts | None = None,
) -> ConsentFacts | None:
    """The first consent (in recording order as given) that covered the access, if any."""
    for consent in consents:
        if covers(
            consent, holder=holder, scenario=scenario, position=position, timestamp=timestamp,
            lag=lag, study=study,
        ):  # fmt: skip
            return consent
    return None


CONSENT_FACTS_SQL = (
    "SELECT c.consent_id, c.holder_org, c.subject, c.scenarios, c.valid_from, c.valid_until, "
    "c.block_number, c.tx_index, c.log_index, w.block_number AS w_block, w.tx_index AS w_tx, "
    "w.log_index AS w_log, wb.timestamp AS w_time, c.disease_code, c.studies, c.requesters "
    "FROM consent c "
    "LEFT JOIN consent_withdrawal w ON w.consent_id = c.consent_id "
    "LEFT JOIN block wb ON wb.number = w.block_number"
)
"""Columns `consent_facts` reads (add a WHERE and ORDER BY)."""


def consent_facts(row: Any) -> tuple[str, ConsentFacts]:
    """(subject, facts) of a `CONSENT_FACTS_SQL` row."""
    withdrawn = None
    if row["w_block"] is not None:
        withdrawn = (int(row["w_block"]), int(row["w_tx"]), int(row["w_log"]))
    return str(row["subject"]), ConsentFacts(
        consent_id=str(row["consent_id"]),
        holder=str(row["holder_org"]),
        scenarios=int(row["scenarios"]),
        valid_from=int(row["valid_from"]),
        valid_until=int(row["valid_until"]),
        recorded_at=(int(row["block_number"]), int(row["tx_index"]), int(row["log_index"])),
        withdrawn_at=withdrawn,
        withdrawn_time=None if row["w_time"] is None else int(row["w_time"]),
        disease_code=str(row["disease_code"]),
        studies=tuple(str(row["studies"]).split()),
        requesters=tuple(str(row["requesters"]).split()),
    )

"""verify's fold of `subjectKeyOf` agrees with the registry: a registered key wins, a removed
one (the zero key) stays removed even when a consent names a key, and only a subject whose key
was never registered falls back to its newest consent naming one."""

from __future__ import annotations

from typing import Any

from audit.events import DecodedEvent
from audit.verify_state import ZERO20, StateFold

HOLDER, SUBJECT, OTHER = "0x" + "aa" * 32, "0x" + "bb" * 32, "0x" + "cc" * 32
LOST, NEW = "0x" + "11" * 20, "0x" + "22" * 20
STEWARD = "0x" + "33" * 20
_log = iter(range(1_000))


def event(name: str, args: dict[str, Any]) -> DecodedEvent:
    return DecodedEvent(1, 0, next(_log), "0x", "0x", "0x", "ConsentRegistry", name, args, "{}")


def consent(subject: str, key: str) -> DecodedEvent:
    terms = {"scenarios": 2, "validFrom": 1, "validUntil": 2, "subjectKey": key, "studies": [],
             "requesters": [], "diseaseCode": "0x" + "00" * 32}  # fmt: skip
    return event("ConsentRecorded", {"consentId": "0x" + next(_log).to_bytes(32).hex(),
                                     "holder": HOLDER, "subject": subject, "terms": terms,
                                     "recorder": STEWARD})  # fmt: skip


def registered(subject: str, key: str) -> DecodedEvent:
    return event("SubjectKeyRegistered", {"holder": HOLDER, "subject": subject, "key": key,
                                          "previous": ZERO20, "by": STEWARD})  # fmt: skip


def test_a_removed_key_stays_removed_and_an_unregistered_subject_falls_back() -> None:
    fold = StateFold()
    for ev in (registered(SUBJECT, LOST), consent(SUBJECT, LOST), registered(SUBJECT, ZERO20),
               consent(OTHER, LOST)):  # fmt: skip
        fold.apply(ev)
    keys = fold.effective_subject_keys()
    assert keys[(HOLDER, SUBJECT)] == ZERO20  # the registry: removed, whatever a consent names
    assert keys[(HOLDER, OTHER)] == LOST  # never registered: the newest consent's key
    fold.apply(registered(SUBJECT, NEW))
    assert fold.effective_subject_keys()[(HOLDER, SUBJECT)] == NEW

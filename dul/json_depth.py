"""How deep a JSON body nests, judged before any parser sees it.

Python's C JSON parser recurses once per level, and the recursion limit that would stop it is
process-wide: py_ecc (a web3 dependency) raises it to 100,000, deep enough to overflow the C
stack. A body of 100,000 `[` killed a service's whole process (a segmentation fault, not an
exception). `too_deep` finds such a body with byte operations only (no per-byte Python loop),
so the services refuse it before FastAPI's `json.loads` runs (`dul.body_limit`).
"""

from __future__ import annotations

import re

#: Deepest JSON body the HTTP services accept. Their bodies nest a few levels (a batch of
#: access requests: four).
MAX_JSON_DEPTH = 32

_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def too_deep(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether the brackets outside strings in `body` nest deeper than `max_depth` (or are
    so far from pairing up that `max_depth` levels do not match them)."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    kept = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = b"".join(kept.split(b'"')[::2])
    opener_run = re.compile(rb"[\[{]{%d}" % (max_depth + 1))
    for _ in range(max_depth):
        if not brackets:
            return False
        if opener_run.search(brackets):
            return True
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    # left after `max_depth` peels: nested deeper, or brackets that never pair up (not JSON)
    return bool(brackets)

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


def bracket_shape(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """ "too_deep" when the brackets outside strings in `body` nest deeper than `max_depth`,
    "unpaired" when they are so far from pairing up that `max_depth` levels do not match them
    (not JSON), None when neither.

    Drop escaped backslashes and quotes, keep quotes and brackets, drop what lies between
    quotes, then peel innermost pairs level by level, at most `max_depth` times, stopping at
    the first run of too many openers.
    """
    if b"\\" in body:  # a search for one byte: most bodies have no escape to drop
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = body.translate(None, _NOT_STRUCTURE)
    if kept.count(b"[") + kept.count(b"{") <= max_depth:
        return None
    # Two adjacent quotes have no bracket between them and an even count changes nothing after
    # them: dropping them first leaves only strings that hold brackets (a batch of 500 access
    # requests holds ~11,000 strings, none with a bracket, that would be split out one by one).
    return peeled_shape(b"".join(kept.replace(b'""', b"").split(b'"')[::2]), max_depth)


def peeled_shape(brackets: bytes, max_depth: int) -> str | None:
    """`bracket_shape` of the brackets outside strings: innermost pairs peeled level by level."""
    opener_run = re.compile(rb"[\[{]{%d}" % (max_depth + 1))
    for _ in range(max_depth):
        if not brackets:
            return None
        if opener_run.search(brackets):
            return "too_deep"
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    if not brackets:
        return None
    paired = brackets.count(b"[") == brackets.count(b"]") and brackets.count(
        b"{"
    ) == brackets.count(b"}")
    return "too_deep" if paired else "unpaired"


def too_deep(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether `body` nests deeper than `max_depth` or its brackets do not pair up."""
    return bracket_shape(body, max_depth) is not None

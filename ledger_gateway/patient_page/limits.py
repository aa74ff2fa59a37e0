"""Rate limits of the patient page: failed sign-ins per client, one-time codes per patient
token and per client, and the other signed changes relayed per patient token.

- **sign-in** — every request to `/api/…` authenticates with a patient token; one that fails
  (missing, malformed, expired, not signed by an active steward: an on-chain check) counts
  against the client's address. Past `signin_failures` failures in `signin_window_s`, the client
  is answered 429 `rate_limited` before any token is checked, until the oldest failure leaves the
  window: guessing tokens, or making the page call the chain for garbage, is slow. A good
  sign-in is not counted, and a token that signed in well before is let through even while its
  address is blocked (patients behind one hospital proxy share an address; their sessions go on).
- **codes** — `POST /api/codes` counts against the patient token's subject and against the
  client: past `codes_per_token` (`codes_per_client`) in
  `codes_window_s`, 429 until the window frees one. A signed code the chain refuses still
  counts: the limit is on what a browser asks, before anything is relayed.
- **signed changes** — `POST /api/consents` (a grant), `POST /api/consents/{id}/withdraw` and
  `POST /api/codes/{hash}/revoke`, each a simulation and a transaction the hospital's gateway
  relays, count against the patient token's subject: past `writes_per_token` in
  `writes_window_s`, 429 until the window frees one (a patient cannot spend their consent slots,
  or the hospital's gas, by granting and withdrawing in a loop). Every ask counts, as for codes;
  `POST /api/consents/typed-data` counts nothing but is 429 too while no change may be relayed.

Sliding windows of hit times, in this process's memory: a page restart forgets them, and
several page processes each keep their own (the limits are per process). A window keeps at most
`MAX_KEYS` keys; when full, the key whose newest hit is oldest is dropped. The client is the
TCP peer (`request.client.host`): behind a reverse proxy, that is the proxy, so set the limits
per client with that in mind (X-Forwarded-For is not trusted: the page is served with
uvicorn's proxy headers off, `app.SERVER_OPTIONS`).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from dul.errors import DulError

MAX_KEYS = 50_000
WRITES = "consents given or withdrawn and codes cancelled for you"


class RateLimitedError(DulError):
    """429: too many attempts; `retry_after` seconds until one is allowed again."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, code=self.code, status=self.status, retry_after=retry_after)
        self.retry_after = retry_after


class Window:
    """At most `limit` hits per key in any `seconds`-long window."""

    def __init__(
        self, limit: int, seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.seconds = seconds
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.seconds:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return None
        return hits

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again (None: it may now)."""
        with self._lock:
            now = self._clock()
            hits = self._live(key, now)
            if hits is None or len(hits) < self.limit:
                return None
            return max(1, math.ceil(hits[0] + self.seconds - now))

    def hit(self, key: str) -> None:
        """Count one hit of `key` now."""
        with self._lock:
            now = self._clock()
            hits = self._live(key, now)
            if hits is None:
                if len(self._hits) >= MAX_KEYS:
                    stalest = min(self._hits, key=lambda k: self._hits[k][-1])
                    del self._hits[stalest]
                hits = self._hits[key] = deque()
            hits.append(now)
            while len(hits) > self.limit:
                hits.popleft()

    def check(self, key: str, what: str) -> None:
        """Raise RateLimitedError, naming `what`, when `key` may not try now (counting nothing)."""
        wait = self.retry_after(key)
        if wait is not None:
            raise RateLimitedError(
                f"too many {what}: at most {self.limit} in {_span(self.seconds)}; "
                f"try again in {_span(wait)}",
                wait,
            )

    def take(self, key: str, what: str) -> None:
        """Count a hit of `key`, or raise RateLimitedError (counting nothing) when over."""
        self.check(key, what)
        self.hit(key)


def _span(seconds: float) -> str:
    whole = math.ceil(seconds)
    if whole % 3600 == 0 and whole >= 3600:
        hours = whole // 3600
        return "1 hour" if hours == 1 else f"{hours} hours"
    if whole % 60 == 0 and whole >= 60:
        minutes = whole // 60
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    return "1 second" if whole == 1 else f"{whole} seconds"


class PageLimits:
    """The patient page's four windows."""

    def __init__(
        self,
        *,
        signin_failures: int,
        signin_window_s: float,
        codes_per_token: int,
        codes_per_client: int,
        codes_window_s: float,
        writes_per_token: int = 20,
        writes_window_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signin = Window(signin_failures, signin_window_s, clock=clock)
        self.codes_by_token = Window(codes_per_token, codes_window_s, clock=clock)
        self.codes_by_client = Window(codes_per_client, codes_window_s, clock=clock)
        self.writes_by_token = Window(writes_per_token, writes_window_s, clock=clock)
        self._good: dict[bytes, float] = {}
        """sha256 of a token that signed in -> its expiry (unix seconds)."""

    def signed_in(self, token: str, expires_at: float) -> None:
        """Remember a token that signed in, until it expires."""
        if len(self._good) >= MAX_KEYS:
            now = time.time()
            self._good = {k: v for k, v in self._good.items() if v > now}
            if len(self._good) >= MAX_KEYS:
                self._good.pop(next(iter(self._good)))
        self._good[hashlib.sha256(token.encode()).digest()] = expires_at

    def check_signin(self, client: str, token: str) -> None:
        """429 when the client has failed to sign in too often lately, unless `token` signed
        in before and has not expired."""
        known = self._good.get(hashlib.sha256(token.encode()).digest())
        if known is not None and known > time.time():
            return
        self.signin.check(client, "failed sign-ins from this address")

    def failed_signin(self, client: str) -> None:
        self.signin.hit(client)

    def take_code(self, subject: str, client: str) -> None:
        """Count one code for the patient and the client, or 429 (counting neither)."""
        self.codes_by_client.check(client, "codes asked from this address")
        self.codes_by_token.take(subject, "codes for you")
        self.codes_by_client.hit(client)

    def take_write(self, subject: str) -> None:
        """Count one relayed change (a consent given or withdrawn, a code cancelled) for the
        patient, or 429 (counting nothing)."""
        self.writes_by_token.take(subject, WRITES)

    def check_write(self, subject: str) -> None:
        """429 when the patient may not make another signed change now (counting nothing): a
        consent to sign is not served when it could not be relayed."""
        self.writes_by_token.check(subject, WRITES)

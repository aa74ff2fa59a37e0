"""Who is calling: an authenticated token and the organization it speaks for.

The API's dependencies (`ledger_gateway.api.deps`) turn a bearer token into a `Caller` once per
request, one dependency per role; the services then ask the caller whether it may touch what a
call is about — the holder of an agreement, dataset, consent or authorization code, or a party of
an agreement it signs or reads — so no route checks organizations by hand.

    ForbiddenError (ledger_gateway.errors)   403 forbidden (wrong role), wrong_organization
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dul.domain import slug_id, slug_of
from ledger_gateway.errors import ForbiddenError
from ledger_gateway.tokens import Token, TokenRole


@dataclass(frozen=True)
class Caller:
    token: Token
    org: bytes
    """The token's organization as the chain names it (`slug_id`)."""

    @classmethod
    def of(cls, token: Token, *roles: TokenRole) -> Caller:
        """The caller of `token`, which must have one of `roles` (403 `forbidden` if not)."""
        if roles and token.role not in roles:
            wanted = " or ".join(str(r) for r in roles)
            raise ForbiddenError(f"token {token.name!r} is a {token.role} token, not {wanted}")
        try:
            org = slug_id(token.org)
        except ValueError:
            raise ForbiddenError(f"token {token.name!r} names no valid organization") from None
        return cls(token, org)

    def _refuse(self, detail: str) -> ForbiddenError:
        return ForbiddenError(
            f"token {self.token.name!r} speaks for {self.token.org}: {detail}",
            code="wrong_organization",
        )

    def require_holder(self, holders: Iterable[bytes], what: str) -> None:
        """Every one of `holders` (of what the call touches) must be the caller's organization."""
        others = sorted({h for h in holders if h != self.org})
        if others:
            names = ", ".join(slug_of(h) for h in others)
            raise self._refuse(f"{what} is held by {names}")

    def require_party(self, parties: Iterable[bytes], what: str) -> None:
        """The caller's organization must be one of `parties` (holder, requester)."""
        named = list(parties)
        if self.org not in named:
            names = " and ".join(slug_of(p) for p in named)
            raise self._refuse(f"{what} is between {names}")

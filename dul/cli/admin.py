"""`dul admin …`: the data-space operator registers organizations and their members."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from eth_utils.address import to_checksum_address

from dul.cli.common import cli_errors, console, emit_json, home
from dul.cli.rpc_tokens import app as rpc_token_app
from dul.contracts.session import open_ledger, resolve_account, unlock
from dul.domain import OrgKind, OrgStatus, Role, slug_id, slug_of
from dul.errors import ConfigError
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.tokens import HashedTokenStore, TokenRole, TokenStore

app = typer.Typer(
    help="Operator tasks: organizations, members, operator hand-over.", no_args_is_help=True
)
org_app = typer.Typer(help="Register, suspend and reinstate organizations.", no_args_is_help=True)
member_app = typer.Typer(help="Grant and revoke member roles.", no_args_is_help=True)
transfer_app = typer.Typer(
    help="Hand the operator role over in two delayed steps.", no_args_is_help=True
)
app.add_typer(org_app, name="org")
app.add_typer(member_app, name="member")
app.add_typer(transfer_app, name="transfer")
app.add_typer(rpc_token_app, name="rpc-token")

KeyOption = Annotated[str, typer.Option("--key", help="Keystore that signs (the operator's).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _kind(value: str) -> OrgKind:
    try:
        return OrgKind[value.upper().replace("-", "_")]
    except KeyError:
        choices = ", ".join(k.name.lower() for k in OrgKind)
        raise typer.BadParameter(f"unknown kind {value!r}; one of {choices}") from None


def _role(value: str) -> Role:
    try:
        return Role[value.upper()]
    except KeyError:
        choices = ", ".join(r.name.lower() for r in Role)
        raise typer.BadParameter(f"unknown role {value!r}; one of {choices}") from None


def _org_id(slug: str) -> bytes:
    try:
        return slug_id(slug)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _show(facts: Mapping[str, object], json_output: bool) -> None:
    """One JSON object, or one `key=value …` line."""
    if json_output:
        emit_json(dict(facts))
    else:
        console.print(" ".join(f"{k}={v}" for k, v in facts.items()), highlight=False)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _done(json_output: bool, receipt_tx: str, **facts: object) -> None:
    _show({**facts, "tx": receipt_tx}, json_output)


@org_app.command("add")
@cli_errors
def org_add(
    slug: Annotated[str, typer.Argument(help="Organization id (up to 32 bytes, e.g. charite).")],
    kind: Annotated[
        str, typer.Option(help="hospital, research, ai_company, insurer or regulator.")
    ],
    name: Annotated[str, typer.Option(help="Display name.")],
    key: KeyOption = "operator",
    json_output: JsonOption = False,
) -> None:
    """Register an organization."""
    h = home()
    ledger = open_ledger(h)
    receipt = ledger.transact(
        unlock(h, key), "Membership", "registerOrganization", _org_id(slug), int(_kind(kind)), name
    )
    _done(json_output, receipt["transactionHash"].to_0x_hex(), org=slug, kind=_kind(kind).name)


@org_app.command("suspend")
@cli_errors
def org_suspend(slug: str, key: KeyOption = "operator", json_output: JsonOption = False) -> None:
    """Suspend an organization: every member is disabled at once."""
    h = home()
    receipt = open_ledger(h).transact(
        unlock(h, key), "Membership", "suspendOrganization", _org_id(slug)
    )
    _done(json_output, receipt["transactionHash"].to_0x_hex(), org=slug, status="SUSPENDED")


@org_app.command("reinstate")
@cli_errors
def org_reinstate(slug: str, key: KeyOption = "operator", json_output: JsonOption = False) -> None:
    """Reinstate a suspended organization."""
    h = home()
    receipt = open_ledger(h).transact(
        unlock(h, key), "Membership", "reinstateOrganization", _org_id(slug)
    )
    _done(json_output, receipt["transactionHash"].to_0x_hex(), org=slug, status="ACTIVE")


@org_app.command("show")
@cli_errors
def org_show(slug: str, json_output: JsonOption = False) -> None:
    """Show an organization's kind and status."""
    kind, status = open_ledger(home()).call("Membership", "organization", _org_id(slug))
    facts = {"org": slug, "kind": OrgKind(kind).name, "status": OrgStatus(status).name}
    if status == OrgStatus.NONE:
        facts["kind"] = "-"
    _show(facts, json_output)


@member_app.command("add")
@cli_errors
def member_add(
    org: Annotated[str, typer.Argument(help="Organization id.")],
    account: Annotated[str, typer.Argument(help="Address, or a key name in this data directory.")],
    role: Annotated[str, typer.Option(help="steward, requester, gateway or regulator.")],
    key: KeyOption = "operator",
    json_output: JsonOption = False,
) -> None:
    """Grant a role in an organization to an account."""
    h = home()
    address = resolve_account(h, account)
    receipt = open_ledger(h).transact(
        unlock(h, key), "Membership", "grantMemberRole", _org_id(org), address, int(_role(role))
    )
    _done(
        json_output,
        receipt["transactionHash"].to_0x_hex(),
        org=org,
        account=address,
        role=_role(role).name,
    )


@member_app.command("remove")
@cli_errors
def member_remove(
    account: Annotated[str, typer.Argument(help="Address, or a key name in this data directory.")],
    role: Annotated[str, typer.Option(help="steward, requester, gateway or regulator.")],
    key: KeyOption = "operator",
    json_output: JsonOption = False,
) -> None:
    """Revoke a role; an account with no role left leaves its organization."""
    h = home()
    address = resolve_account(h, account)
    receipt = open_ledger(h).transact(
        unlock(h, key), "Membership", "revokeMemberRole", address, int(_role(role))
    )
    _done(
        json_output,
        receipt["transactionHash"].to_0x_hex(),
        account=address,
        role=_role(role).name,
        revoked=True,
    )


@member_app.command("show")
@cli_errors
def member_show(account: str, json_output: JsonOption = False) -> None:
    """Show an account's organization and roles."""
    h = home()
    address = resolve_account(h, account)
    org, roles = open_ledger(h).call("Membership", "memberOf", address)
    facts = {
        "account": address,
        "org": slug_of(org) if roles else None,
        "roles": [r.name for r in Role if roles & (1 << r)],
    }
    _show(facts, json_output)


@transfer_app.command("begin")
@cli_errors
def transfer_begin(
    new_operator: Annotated[str, typer.Argument(help="Address or key name of the next operator.")],
    key: KeyOption = "operator",
    json_output: JsonOption = False,
) -> None:
    """Start handing the operator role over; the new operator accepts after the delay."""
    h = home()
    ledger = open_ledger(h)
    address = resolve_account(h, new_operator)
    receipt = ledger.transact(unlock(h, key), "Membership", "beginDefaultAdminTransfer", address)
    _, schedule = ledger.call("Membership", "pendingDefaultAdmin")
    _done(
        json_output,
        receipt["transactionHash"].to_0x_hex(),
        pending=address,
        accept_after=_iso(schedule),
        accept_after_unix=schedule,
    )


@transfer_app.command("accept")
@cli_errors
def transfer_accept(
    key: Annotated[str, typer.Option("--key", help="Keystore of the pending operator.")],
    json_output: JsonOption = False,
) -> None:
    """Accept the operator role (as the pending operator, once the delay has passed)."""
    h = home()
    signer = unlock(h, key)
    receipt = open_ledger(h).transact(signer, "Membership", "acceptDefaultAdminTransfer")
    _done(json_output, receipt["transactionHash"].to_0x_hex(), operator=signer.address)


@transfer_app.command("cancel")
@cli_errors
def transfer_cancel(key: KeyOption = "operator", json_output: JsonOption = False) -> None:
    """Cancel a pending operator hand-over."""
    h = home()
    receipt = open_ledger(h).transact(unlock(h, key), "Membership", "cancelDefaultAdminTransfer")
    _done(json_output, receipt["transactionHash"].to_0x_hex(), cancelled=True)


@transfer_app.command("status")
@cli_errors
def transfer_status(json_output: JsonOption = False) -> None:
    """Show the operator, a pending hand-over and the delay."""
    ledger = open_ledger(home())
    pending, schedule = ledger.call("Membership", "pendingDefaultAdmin")
    facts = {
        "operator": to_checksum_address(ledger.call("Membership", "defaultAdmin")),
        "pending": None if int(pending, 16) == 0 else to_checksum_address(pending),
        "accept_after": _iso(schedule) if schedule else None,
        "accept_after_unix": schedule or None,
        "delay_s": ledger.call("Membership", "defaultAdminDelay"),
    }
    _show(facts, json_output)


token_app = typer.Typer(
    help="API tokens: the gateway's (access services, stewards) and the audit service's "
    "(regulators, organizations).",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

ServiceOption = Annotated[
    str, typer.Option("--service", help="gateway or audit: which service accepts the token.")
]
_DURATION = re.compile(r"^(\d{1,6})([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
MAX_TOKEN_LIFETIME_S = 5 * 366 * 86_400


def _require_org(slug: str) -> None:
    """A token acts for an organization the ledger knows (else every request would be refused)."""
    h = home()
    if not h.deployment.exists():
        raise ConfigError(
            f"no deployment in {h.root}: deploy first (dul contracts deploy), then create tokens",
            code="not_deployed",
        )
    _, status = open_ledger(h).call("Membership", "organization", _org_id(slug))
    if status == OrgStatus.NONE:
        raise ConfigError(
            f"unknown organization {slug!r}: register it first with "
            f"`dul admin org add {slug} --kind … --name …`",
            code="unknown_org",
        )


def _service(service: str) -> str:
    if service not in ("gateway", "audit"):
        raise typer.BadParameter(f"unknown service {service!r}; gateway or audit")
    return service


def _tokens(service: str = "gateway") -> HashedTokenStore[Any]:
    if _service(service) == "audit":
        from audit.auth import audit_tokens
        from audit.settings import AuditSettings

        return audit_tokens(AuditSettings().resolved_tokens_path(home()))
    return TokenStore(GatewaySettings(home=home().root).tokens_path)


def _expiry(value: str | None) -> float | None:
    """Unix time `value` (e.g. 3600, 90m, 12h, 30d) from now, bounded."""
    if value is None:
        return None
    found = _DURATION.match(value.strip())
    seconds = int(found.group(1)) * _UNITS[found.group(2)] if found else 0
    if not 0 < seconds <= MAX_TOKEN_LIFETIME_S:
        raise typer.BadParameter(
            f"--expires-in {value!r}: a duration such as 3600, 90m, 12h or 30d, at most 5 years"
        )
    return time.time() + seconds


def _token_role(service: str, role: str | None, org: str | None) -> tuple[StrEnum, str]:
    """The role (default per service) and the organization it acts for."""
    roles: type[StrEnum]
    if service == "audit":
        from audit.auth import AuditRole

        roles, default = AuditRole, AuditRole.REGULATOR.value
    else:
        roles, default = TokenRole, TokenRole.ACCESS_SERVICE.value
    try:
        chosen = roles(role or default)
    except ValueError:
        choices = " or ".join(r.value for r in roles)
        raise typer.BadParameter(f"unknown {service} role {role!r}; {choices}") from None
    if org is None:
        if service == "gateway" or chosen.value == "organization":
            raise typer.BadParameter(f"a {service} {chosen.value} token needs --org")
        return chosen, ""
    _org_id(org)  # a valid organization id
    return chosen, org


@token_app.command("create")
@cli_errors
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the client, e.g. query-engine.")],
    org: Annotated[
        str | None, typer.Option(help="Organization the token acts for (optional for a regulator).")
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            help="gateway: access-service (default) or steward; audit: regulator (default) or "
            "organization."
        ),
    ] = None,
    service: ServiceOption = "gateway",
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 3600, 90m, 12h, 30d (default: none).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the secret (for scripts).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Create a token; its secret is printed once and stored only as a hash."""
    token_role, token_org = _token_role(_service(service), role, org)
    expires_at = _expiry(expires_in)
    if not name.strip() or len(name) > 100:
        raise typer.BadParameter("a token name is 1 to 100 characters")
    if token_org:
        _require_org(token_org)
    try:
        secret = _tokens(service).create(name, token_org, token_role, expires_at=expires_at)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    shown = token_org or "-"
    if json_output:
        emit_json(
            {
                "name": name,
                "service": service,
                "org": token_org or None,
                "role": token_role.value,
                "expires_at": expires_at,
                "token": secret,
            }
        )
    elif quiet:
        console.print(secret, highlight=False)
    else:
        console.print(
            f"{service} token for {name} ({shown}, {token_role.value}) — shown once:\n{secret}",
            highlight=False,
        )


@token_app.command("revoke")
@cli_errors
def token_revoke(
    name: str, service: ServiceOption = "gateway", json_output: JsonOption = False
) -> None:
    """Revoke a token at once (both services re-read their token file on change)."""
    revoked = _tokens(service).revoke(name)
    if not revoked:
        raise ConfigError(f"no active {service} token named {name!r}", code="token_not_found")
    if json_output:
        emit_json({"name": name, "revoked": True})
    else:
        console.print(f"revoked {name}", highlight=False)


@token_app.command("list")
@cli_errors
def token_list(service: ServiceOption = "gateway", json_output: JsonOption = False) -> None:
    """List tokens (names, organizations, roles, state; never secrets)."""
    now = time.time()
    rows = [
        {
            "name": t.name,
            "org": t.org or None,
            "role": t.role.value,
            "revoked": t.revoked_at is not None,
            "expired": t.expired(now),
        }
        for t in _tokens(service).list()
    ]
    if json_output:
        emit_json(rows)
    else:
        for row in rows:
            console.print(" ".join(f"{k}={v}" for k, v in row.items()), highlight=False)

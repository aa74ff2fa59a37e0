"""`dul admin rpc-token create`: bearer tokens for the public RPC (Besu's JWT public-key mode)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from dul.chain.node import ChainNode
from dul.chain.rpc_auth import (
    MAX_TTL_SECONDS,
    MEMBER_PERMISSIONS,
    MIN_TTL_SECONDS,
    OPERATOR_PERMISSIONS,
    READ_PERMISSIONS,
    permission_error,
)
from dul.chain.settings import ChainSettings
from dul.cli.common import cli_errors, console, emit_json, err_console, home
from dul.contracts.session import open_ledger, resolve_account
from dul.errors import ConfigError

app = typer.Typer(
    help="Bearer tokens for the public RPC: every request needs one (Besu's JWT public-key "
    "mode, signed with the key under DUL_HOME/keys).",
    no_args_is_help=True,
)

PRESETS = {
    "member": MEMBER_PERMISSIONS,
    "read": READ_PERMISSIONS,
    "operator": OPERATOR_PERMISSIONS,
}
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def parse_ttl(text: str) -> int:
    """`90s`, `15m`, `12h` or `30d`, between a minute and a year."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ConfigError(f"--ttl {text!r}: give a number and s, m, h or d (e.g. 30d)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not MIN_TTL_SECONDS <= seconds <= MAX_TTL_SECONDS:
        raise ConfigError(f"--ttl {text!r}: between 1m and {MAX_TTL_SECONDS // 86400}d")
    return seconds


@app.command("create")
@cli_errors
def create(
    account: Annotated[
        str | None,
        typer.Option(help="A member's address or key name: the token is for that account."),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(help="Or a service/operator name (e.g. audit-indexer), not checked on chain."),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(help="member (eth:*, net:*, web3:*), read (reads only) or operator (*:*)."),
    ] = "member",
    permission: Annotated[
        list[str] | None,
        typer.Option(help="Besu permission instead of the preset (repeat): eth:getLogs, eth:*."),
    ] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 30d, 12h, 15m (1m to 366d).")] = "30d",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Make a token; it is not stored anywhere, so keep what is printed."""
    if (account is None) == (service is None):
        raise ConfigError("give either --account ADDRESS|KEY or --service NAME")
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r}: member, read or operator")
    permissions = tuple(permission) if permission else PRESETS[preset]
    for entry in permissions:
        problem = permission_error(entry)
        if problem is not None:
            raise ConfigError(problem)
    seconds = parse_ttl(ttl)
    h = home()
    subject: str
    if account is not None:
        subject = resolve_account(h, account)
        _require_member(subject)
    else:
        assert service is not None
        if not _SERVICE.match(service):
            raise ConfigError(f"--service {service!r}: lower-case letters, digits, . _ -")
        subject = service
    try:
        node = ChainNode(h, ChainSettings())
        token = node.issue_token(subject, permissions, seconds)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc.message} (tokens are signed with the chain's key: run `dul chain up` once)",
            code="no_rpc_key",
        ) from None
    facts = {"subject": subject, "permissions": list(permissions), "ttl_s": seconds}
    if json_output:
        emit_json({**facts, "token": token})
        return
    # the token alone on stdout, so `TOKEN=$(dul admin rpc-token create …)` and `… > token.jwt`
    # (DUL_RPC_TOKEN_FILE) hold just the token; what it is goes to stderr
    err_console.print(
        f"RPC token for {subject} ({', '.join(permissions)}; {ttl}); send it as "
        "Authorization: Bearer …",
        highlight=False,
    )
    console.print(token, highlight=False)


def _require_member(address: str) -> None:
    """Only the operator or an active member gets a member's token."""
    h = home()
    if not h.deployment.exists():
        raise ConfigError(
            f"no deployment in {h.root}: deploy first (dul contracts deploy); "
            "services and the operator use --service",
            code="not_deployed",
        )
    ledger = open_ledger(h)
    operator = str(ledger.call("Membership", "defaultAdmin")).lower()
    if address.lower() != operator and not ledger.call("Membership", "isAuthorizedSender", address):
        raise ConfigError(
            f"{address} is not an active member of the data space: grant it a role first "
            "(dul admin member add …)",
            code="not_a_member",
        )

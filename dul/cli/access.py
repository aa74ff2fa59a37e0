"""`dul access …`: what an access service does — ask before an access, follow its recording,
report a result that leaves. Requests are signed locally with the requester's keystore."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import typer

from dul.cli.common import GatewayOption, JsonOption, cli_errors, console, emit_json, home
from dul.contracts.session import unlock
from dul.domain import Operation, ReleaseKind, Tier
from dul.endpoints import gateway_url
from dul.errors import ConfigError, DulError
from dul.signing import Signer
from ledger_gateway.client import GatewayClient
from ledger_gateway.models import AccessOut

app = typer.Typer(
    help="Access requests as an access service makes them (signed by the requester's key).",
    no_args_is_help=True,
)

TokenOption = Annotated[
    str,
    typer.Option(
        "--token", envvar="DUL_GATEWAY_TOKEN", help="Access-service API token (dul admin token)."
    ),
]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Answer once the record is on chain.")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the id (for scripts).")
]


@contextlib.contextmanager
def _client(url: str | None, token: str, signer: Signer | None = None) -> Iterator[GatewayClient]:
    base = url or gateway_url()
    client = GatewayClient(base, token, signer=signer)
    try:
        yield client
    except httpx.HTTPError as exc:
        raise DulError(
            f"no gateway answers at {base} ({exc}): start it with `dul gateway serve`, or set "
            "DUL_GATEWAY_URL / DUL_GATEWAY_PORT",
            code="gateway_unreachable",
        ) from None
    finally:
        client.close()


def _choice(kind: type[Tier] | type[Operation] | type[ReleaseKind], value: str) -> str:
    name = value.upper().replace("-", "_")
    if name not in kind.__members__:
        raise typer.BadParameter(f"unknown {value!r}; one of {', '.join(kind.__members__)}")
    return name


def _print_access(answer: AccessOut, json_output: bool, quiet: bool) -> None:
    if json_output:
        emit_json(answer.model_dump(exclude_none=True))
        return
    if quiet:
        console.print(answer.access_id, highlight=False)
        return
    line = f"{answer.decision} access_id={answer.access_id} status={answer.status}"
    if answer.reasons:
        line += f" reasons={','.join(answer.reasons)}"
    if answer.tx_hash:
        line += f" tx={answer.tx_hash} block={answer.block_number}"
    if answer.cohort is not None:
        line += f" cohort={answer.cohort.size}"
    if answer.error:
        line += f" error={answer.error}"
    console.print(line, highlight=False)


@app.command("request")
@cli_errors
def request(
    agreement: Annotated[str, typer.Option(help="Agreement id (0x…).")],
    dataset: Annotated[str, typer.Option(help="Dataset id (slug, e.g. hospital-a/omop, or 0x…).")],
    field: Annotated[
        list[str], typer.Option("--field", help="A requested field by name (or index); repeat.")
    ],
    tier: Annotated[str, typer.Option(help="AGGREGATE, MODEL_PARAMETERS, DEIDENTIFIED, …")],
    operation: Annotated[str, typer.Option(help="QUERY, TRAIN or EXPORT_RESULT.")] = "QUERY",
    query: Annotated[
        str | None, typer.Option(help="What will run (its SHA-256 is signed as the request hash).")
    ] = None,
    cohort_file: Annotated[
        Path | None,
        typer.Option(help="Subject references (0x…), one a line, for consent-bound agreements."),
    ] = None,
    key: Annotated[str, typer.Option("--key", help="The requester's keystore.")] = "requester",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = False,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    """Ask the gateway for one access: drafted by the gateway, checked and signed here."""
    items: list[str | int] = [int(f) if f.isdigit() else f for f in field]
    cohort = None
    if cohort_file is not None:
        try:
            cohort = [x.strip() for x in cohort_file.read_text().splitlines() if x.strip()]
        except OSError as exc:
            raise ConfigError(f"cannot read {cohort_file}: {exc.strerror}") from None
    tier_name, operation_name = _choice(Tier, tier), _choice(Operation, operation)
    signer = unlock(home(), key)
    with _client(gateway, token, signer) as client:
        answer = client.request_access(
            agreement=agreement,
            dataset=dataset,
            fields=items,
            tier=tier_name,
            operation=operation_name,
            query=query,
            cohort=cohort,
            wait=wait,
        )
    _print_access(answer, json_output, quiet)


@app.command("status")
@cli_errors
def status(
    access_id: Annotated[str, typer.Argument(help="Access id (0x…), as `request` printed it.")],
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = False,
    json_output: JsonOption = False,
) -> None:
    """An access's decision and its recording status (pending, submitted, confirmed, failed)."""
    with _client(gateway, token) as client:
        answer = client.get_access(access_id, wait=wait)
    _print_access(answer, json_output, False)


@app.command("release")
@cli_errors
def release(
    access_id: Annotated[str, typer.Argument(help="The access the result came from.")],
    file: Annotated[
        Path | None, typer.Option(help="The result file (hashed here with SHA-256; not sent).")
    ] = None,
    result_hash: Annotated[
        str | None, typer.Option("--hash", help="Instead of --file: its SHA-256 (0x…).")
    ] = None,
    size: Annotated[int | None, typer.Option(min=0, help="Bytes (with --hash).")] = None,
    kind: Annotated[
        str, typer.Option(help="AGGREGATE_RESULT, MODEL_UPDATE, DEIDENTIFIED_EXTRACT, …")
    ] = "AGGREGATE_RESULT",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = False,
    json_output: JsonOption = False,
) -> None:
    """Report a result that leaves the hospital; only what the access allowed may leave."""
    if (file is None) == (result_hash is None):
        raise ConfigError("give the result as --file PATH, or as --hash 0x… --size N")
    if file is not None:
        try:
            content = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
        digest, length = hashlib.sha256(content).digest(), len(content)
    else:
        text = str(result_hash)
        try:
            digest = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            digest = b""
        if len(digest) != 32 or size is None:
            raise ConfigError("--hash takes a 0x-prefixed SHA-256 (32 bytes), with --size N")
        length = size
    with _client(gateway, token) as client:
        answer = client.release_result(
            access_id, digest, _choice(ReleaseKind, kind), length, wait=wait
        )
    out = answer.model_dump(exclude_none=True)
    if json_output:
        emit_json(out)
    else:
        console.print(" ".join(f"{k}={v}" for k, v in out.items()), highlight=False)

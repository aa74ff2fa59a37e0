"""`dul audit …` commands: the indexer, and the regulator's serve, provenance, verify, export,
report and the patient transparency report `subject`, and the operator's `acknowledge` of a
history rewrite (registered by `dul.cli.main` as `dul audit`)."""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import structlog
import typer
from pydantic import BaseModel

from audit.settings import AuditSettings
from dul import log as dul_log
from dul.cli.common import load_settings
from dul.errors import ConfigError, DulError

if TYPE_CHECKING:
    from rich.console import RenderableType
    from sqlalchemy import Engine

R = TypeVar("R", bound=BaseModel)

log = structlog.get_logger("audit.cli")

app = typer.Typer(
    help="The audit trail: index the chain, query provenance, verify, export, report.",
    no_args_is_help=True,
)


@app.callback()
def audit() -> None:
    """The audit trail: index the chain, query provenance, verify, export, report."""


@app.command("index")
def index(
    follow: Annotated[
        bool,
        typer.Option("--follow/--once", help="keep following the head, or stop once caught up"),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="print a JSON summary at the end")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(help="store URL (default: DUL_AUDIT_DATABASE_URL or sqlite in DUL_HOME)"),
    ] = None,
    rpc_url: Annotated[
        str | None, typer.Option(help="JSON-RPC endpoint (default: the running chain)")
    ] = None,
    confirmations: Annotated[
        int | None, typer.Option(min=0, help="blocks to stay behind the head")
    ] = None,
    page_size: Annotated[
        int | None, typer.Option(min=1, help="blocks per eth_getLogs page to start with")
    ] = None,
    to_block: Annotated[int | None, typer.Option(min=0, help="stop at this block")] = None,
) -> None:
    """Catch up with the chain into the audit store, then follow it (Ctrl-C stops cleanly)."""
    from audit.indexer import Indexer

    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "database_url": database_url,
            "rpc_url": rpc_url,
            "confirmations": confirmations,
            "page_size": page_size,
        }.items()
        if value is not None
    }
    settings = AuditSettings(**overrides)
    # What start-up built (modules, settings) lives as long as the process: frozen out of the
    # collector's sight, as the gateway does, no full collection walks it (the first one
    # came while the indexer opened, 80-160 ms on a loaded machine), and forked fetch workers
    # share those pages untouched.
    gc.freeze()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        indexer = Indexer.open(settings)
        try:
            summary = indexer.run(follow=follow, to_block=to_block, stop=stop, progress=not as_json)
        finally:
            indexer.close()
    except DulError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
    else:
        typer.echo(
            f"indexed {summary.events} events in {summary.pages} pages up to block "
            f"{summary.checkpoint_block} ({summary.events_per_s:.0f} events/s"
            + (f", {summary.reorgs} reorg(s) rolled back" if summary.reorgs else "")
            + (f", {summary.quarantined} event(s) QUARANTINED" if summary.quarantined else "")
            + ")"
        )


# --- regulator commands: serve, provenance, verify, export, report -------------------------


DatabaseOption = Annotated[
    str | None,
    typer.Option(help="store URL (default: DUL_AUDIT_DATABASE_URL or sqlite in DUL_HOME)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def _settings(**overrides: Any) -> AuditSettings:
    """Env (`DUL_AUDIT_…`) overridden by given options; a value out of range is one line."""
    try:
        return load_settings(AuditSettings, "DUL_AUDIT_", **overrides)
    except ConfigError as exc:
        raise _fail(exc) from None


def _fail(exc: DulError) -> typer.Exit:
    """One clear line on stderr and a non-zero exit, never a traceback."""
    typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
    return typer.Exit(2)


def _console() -> Any:
    from rich.console import Console

    return Console()


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="port to listen on (default: env DUL_AUDIT_PORT, 8600)"
        ),
    ] = None,
    database_url: DatabaseOption = None,
    rpc_url: Annotated[
        str | None, typer.Option(help="JSON-RPC endpoint verify reads (default: the chain)")
    ] = None,
) -> None:
    """Serve the audit REST API (provenance, verify, reports) on the store, read-only."""
    import uvicorn

    from audit.app import create_app
    from dul.endpoints import audit_port

    try:
        port = port or audit_port()
    except DulError as exc:
        raise _fail(exc) from None
    settings = _settings(database_url=database_url, rpc_url=rpc_url)
    try:
        served = create_app(settings)  # an identity provider half configured is refused here
    except DulError as exc:
        raise _fail(exc) from None
    log.info("audit.serve", host=host, port=port)
    uvicorn.run(served, host=host, port=port, log_config=None, access_log=False)


@app.command("provenance")
def provenance_command(
    kind: Annotated[
        str, typer.Argument(help="agreement | dataset | access | artifact | subject | organization")
    ],
    item_id: Annotated[
        str, typer.Argument(metavar="ID", help="0x id, or a slug for datasets and organizations")
    ],
    direction: Annotated[str, typer.Option(help="up | down | both")] = "both",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="neighbours per node")] = 100,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """The provenance graph of one thing: what it came from, under what, and what came of it."""
    from audit.cohorts import read_only_engine
    from audit.provenance import Direction, Kind, MalformedIdError, provenance

    settings = _settings(database_url=database_url)
    engine = read_only_engine(settings.resolved_database_url())
    try:
        try:
            parsed_kind, parsed_direction = Kind(kind), Direction(direction)
        except ValueError:
            raise MalformedIdError(
                f"kind must be one of {', '.join(k.value for k in Kind)} and direction one of "
                "up, down, both",
                code="malformed_kind",
            ) from None
        graph = provenance(engine, parsed_kind, item_id, direction=parsed_direction, limit=limit,
                           consent_lag=settings.consent_lag_s)  # fmt: skip
    except DulError as exc:
        raise _fail(exc) from None
    finally:
        engine.dispose()
    if as_json:
        typer.echo(graph.model_dump_json())
        return
    from rich.tree import Tree

    names = {n.id: n for n in graph.nodes}

    def title(node_id: str) -> str:
        node = names[node_id]
        at = f" [dim]@ block {node.chain.block} log {node.chain.log_index}[/]" if node.chain else ""
        return f"[bold]{node.type}[/] {node.label} [dim]{node_id.partition(':')[2][:18]}[/]{at}"

    tree = Tree(title(graph.root))
    for edge in graph.edges:
        if edge.source == graph.root:
            tree.add(f"[cyan]{edge.relation}[/] → {title(edge.target)}")
        elif edge.target == graph.root:
            tree.add(f"{title(edge.source)} [cyan]{edge.relation}[/] → this")
    console = _console()
    console.print(tree)
    console.print(
        f"{len(graph.nodes)} nodes, {len(graph.edges)} edges (direction "
        f"{graph.direction.value})"
        + (
            f"; more than {graph.limit} neighbours at {len(graph.truncated)} node(s): raise --limit"
            if graph.truncated
            else ""
        )
    )


@app.command("verify")
def verify_command(
    as_json: JsonOption = False,
    chain: Annotated[
        bool, typer.Option("--chain/--no-chain", help="re-read the chain and compare")
    ] = True,
    signatures: Annotated[
        bool, typer.Option("--signatures/--no-signatures", help="recompute every signature")
    ] = True,
    database_url: DatabaseOption = None,
    rpc_url: Annotated[str | None, typer.Option(help="JSON-RPC endpoint")] = None,
    from_block: Annotated[
        int | None, typer.Option(min=0, help="deployment block (default: the manifest's)")
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="directory of signed checkpoint files (`dul audit checkpoint`): each must "
            "still be on the chain, with the store's digest",
        ),
    ] = None,
) -> None:
    """Check the store against the chain, the contracts' state against their events, every
    transaction's and every request's signature, every agreement invariant and the given
    checkpoints. Exit code 1 when anything is off, 2 when the check could not run."""
    from audit.cohorts import close_sources, open_sources, read_only_engine
    from audit.verify import verify_store
    from dul.chain.rpc import RpcClient
    from dul.contracts.deployment import Deployment

    settings = _settings(database_url=database_url, rpc_url=rpc_url)
    engine = read_only_engine(settings.resolved_database_url())
    rpc = None
    sources = open_sources(settings.cohort_sources)
    try:
        if chain:
            rpc = RpcClient(settings.resolved_rpc_url(), timeout=settings.request_timeout)
        try:
            manifest: Deployment | None = Deployment.load(settings.resolved_deployment_path())
        except (DulError, OSError, KeyError, ValueError):
            manifest = None
        if from_block is None and manifest is not None and "block" in manifest.raw:
            from_block = int(manifest.raw["block"])
        report = verify_store(engine, rpc, start_block=from_block, chain=chain,
                              signatures=signatures, consent_lag=settings.consent_lag_s,
                              checkpoints=checkpoints,
                              deployment=None if manifest is None else manifest.addresses,
                              max_lag_blocks=settings.index_behind_blocks,
                              max_lag_s=settings.index_behind_s,
                              cohort_sources=sources)  # fmt: skip
    except DulError as exc:
        raise _fail(exc) from None
    finally:
        close_sources(sources)
        engine.dispose()
        if rpc is not None:
            rpc.close()
    if as_json:
        typer.echo(report.model_dump_json())
    else:
        from rich.table import Table

        from audit.provenance import iso_time, readable

        console = _console()
        checked = ", ".join(f"{v} {k}" for k, v in sorted(report.checked.items()))
        console.print(f"verified blocks {report.first_block}..{report.checkpoint_block} of "
                      f"chain {report.chain_id}: {checked}")  # fmt: skip
        for skipped in report.skipped:
            console.print(f"[yellow]skipped:[/] {skipped}")
        for note in report.notes:
            console.print(f"[dim]note:[/] {note}", highlight=False)
        if report.break_glass_unreviewed:
            glass = Table(title="Break-glass accesses awaiting the holder's review")
            glass.add_column("access", no_wrap=True, min_width=66)  # the whole id, to copy
            for column in ("reason", "holder", "review due", "state"):
                glass.add_column(column, overflow="fold")
            for case in report.break_glass_unreviewed:
                glass.add_row(case.access_id, case.reason, readable(case.holder),
                              iso_time(case.review_due),
                              "⚑ OVERDUE" if case.state == "overdue" else "unreviewed")  # fmt: skip
            console.print(glass)
        if report.findings:
            table = Table(title=f"{report.findings_total} finding(s)")
            for column in ("check", "table / contract", "position / key", "what"):
                table.add_column(column)
            for f in report.findings:
                table.add_row(f.check, f.table or f.contract or "", f.position or f.key or "",
                              f.message)  # fmt: skip
            console.print(table)
        if not report.ok:
            console.print("[red]NOT OK[/]")
        elif report.skipped:  # not a verdict on what it did not check (e.g. --no-chain)
            console.print(f"[yellow]OK as far as checked[/]: {len(report.skipped)} check(s) "
                          "skipped (above), so not that the store is the chain's")  # fmt: skip
        else:
            console.print("[green]OK[/]: the store is the chain's and every rule held")
    if not report.ok:
        raise typer.Exit(1)


@app.command("checkpoint")
def checkpoint_command(
    key: Annotated[str, typer.Option("--key", help="keystore in DUL_HOME that signs (yours)")],
    out: Annotated[
        Path,
        typer.Option("--out", file_okay=False, help="directory to write the signed file to"),
    ] = Path("."),
    block: Annotated[
        int | None,
        typer.Option(
            min=0, max=2**63 - 1, help="block to vouch for (default: the store's checkpoint)"
        ),
    ] = None,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
    rpc_url: Annotated[str | None, typer.Option(help="JSON-RPC endpoint")] = None,
) -> None:
    """Sign, with your key, the chain's block hash at the store's checkpoint and the store's
    digest up to it, into a file you keep; `dul audit verify --checkpoints DIR` later proves
    the chain still holds that block."""
    from audit.checkpoints import take_checkpoint, write_checkpoint
    from audit.cohorts import read_only_engine
    from audit.provenance import store_errors
    from dul.chain.rpc import RpcClient
    from dul.keys import KeyStore

    settings = _settings(database_url=database_url, rpc_url=rpc_url)
    engine = read_only_engine(settings.resolved_database_url())
    rpc = None
    try:
        signer = KeyStore(settings.home()).unlock(key)
        rpc = RpcClient(settings.resolved_rpc_url(), timeout=settings.request_timeout)
        with store_errors(), engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            else:
                conn.exec_driver_sql("BEGIN")  # one read snapshot (WAL) for row and digest
            node = rpc

            def node_hash(number: int) -> str | None:
                header = node.request("eth_getBlockByNumber", hex(number), False)
                return None if header is None else str(header["hash"])

            document = take_checkpoint(
                conn, node_hash, int(rpc.request("eth_chainId"), 16), block, signer
            )
        path = write_checkpoint(out, document)
    except DulError as exc:
        raise _fail(exc) from None
    finally:
        engine.dispose()
        if rpc is not None:
            rpc.close()
    message = document["typed_data"]["message"]
    facts = {
        "file": str(path), "chain_id": int(message["chainId"]),
        "block_number": int(message["blockNumber"]), "block_hash": message["blockHash"],
        "store_digest": message["storeDigest"], "signer": document["signer"],
        "taken_at": int(message["takenAt"]),
    }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(facts))
    else:
        typer.echo(f"signed checkpoint of chain {facts['chain_id']} block {facts['block_number']} "
                   f"({facts['block_hash']}), store digest {facts['store_digest']}, by "
                   f"{facts['signer']}: {path}")  # fmt: skip


@app.command("acknowledge")
def acknowledge_command(
    incident: Annotated[
        int,
        typer.Argument(
            min=1, max=2**63 - 1, help="the incident id verify names (history_rewritten)"
        ),
    ],
    reason: Annotated[
        str, typer.Option(help="why the rollback is accepted (kept with the incident)")
    ],
    by: Annotated[
        str | None, typer.Option(help="who acknowledges (default: the operating-system user)")
    ] = None,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Acknowledge a history rewrite (a rollback the indexer made): verify then lists it as a
    note with who acknowledged it, when and why, instead of a finding."""
    import getpass

    from sqlalchemy.exc import SQLAlchemyError

    from audit.provenance import StoreUnavailableError
    from audit.store import AuditStore, create_store_engine

    why = reason.strip()
    who = (by if by is not None else getpass.getuser()).strip()
    if not why or len(why) > 2_000 or not who or len(who) > 200:
        typer.echo("error [validation_error]: --reason must be 1-2000 characters and --by "
                   "1-200 (blank is empty)", err=True)  # fmt: skip
        raise typer.Exit(2)
    settings = _settings(database_url=database_url)
    url = settings.resolved_database_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise _fail(StoreUnavailableError(f"no audit store at {url.removeprefix('sqlite:///')}"))
    engine = create_store_engine(url)
    try:
        incident_row = AuditStore(engine).acknowledge(incident, by=who, reason=why)
    except KeyError:
        typer.echo(f"error [incident_not_found]: the store holds no incident {incident}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(f"error [incident_acknowledged]: {exc}", err=True)
        raise typer.Exit(2) from None
    except SQLAlchemyError as exc:
        raise _fail(StoreUnavailableError(f"the audit store: {type(exc).__name__}")) from None
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(incident_row, default=str))
    else:
        typer.echo(f"incident {incident} acknowledged by {who}: {why}")


@app.command("export")
def export_command(
    kind: Annotated[
        str,
        typer.Argument(help="agreement | dataset | access | artifact | subject | organization"),
    ],
    item_id: Annotated[str, typer.Argument(metavar="ID")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="prov-json | fhir | json")
    ] = "prov-json",
    direction: Annotated[str, typer.Option(help="up | down | both")] = "both",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file, not stdout")
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Export a provenance graph as PROV-JSON or a FHIR R4 Bundle (AuditEvent, Provenance,
    Consent)."""
    from audit.cohorts import read_only_engine
    from audit.exports import block_times, fhir_json, graph_blocks, prov_json
    from audit.provenance import Direction, Kind, MalformedIdError, provenance

    settings = _settings(database_url=database_url)
    engine = read_only_engine(settings.resolved_database_url())
    try:
        if format not in ("prov-json", "fhir", "json"):
            raise MalformedIdError("--format must be prov-json, fhir or json",
                                   code="validation_error")  # fmt: skip
        try:
            parsed_kind, parsed_direction = Kind(kind), Direction(direction)
        except ValueError:
            raise MalformedIdError(f"unknown kind {kind!r} or direction {direction!r}",
                                   code="malformed_kind") from None  # fmt: skip
        graph = provenance(engine, parsed_kind, item_id, direction=parsed_direction,
                           consent_lag=settings.consent_lag_s)  # fmt: skip
        if format == "prov-json":
            body = prov_json(graph)
        elif format == "fhir":
            body = fhir_json(graph, block_times(engine, graph_blocks(graph)))
        else:
            body = graph.model_dump_json()
    except DulError as exc:
        raise _fail(exc) from None
    finally:
        engine.dispose()
    if output is None:
        typer.echo(body)
    else:
        output.write_text(body + "\n")
        typer.echo(f"wrote {format} of {graph.root} to {output}", err=True)


def _print_report(
    database_url: str | None,
    as_json: bool,
    build: Callable[[Engine], R],
    render: Callable[[R], RenderableType],
) -> None:
    """Build a report on a read-only engine over the audit store, then print it as JSON or
    rendered for the terminal."""
    from audit.cohorts import read_only_engine

    engine = read_only_engine(_settings(database_url=database_url).resolved_database_url())
    try:
        report = build(engine)
    except DulError as exc:
        raise _fail(exc) from None
    finally:
        engine.dispose()
    if as_json:
        typer.echo(report.model_dump_json())
    else:
        _console().print(render(report))


@app.command("report")
def report_command(
    agreement_id: Annotated[str, typer.Argument(metavar="AGREEMENT_ID")],
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """An agreement's compliance report: accesses, denials by reason, quota use, releases."""
    from audit.reports import agreement_report, render_report

    _print_report(
        database_url, as_json, lambda engine: agreement_report(engine, agreement_id), render_report
    )


@app.command("subject")
def subject_command(
    ref: Annotated[
        str, typer.Argument(metavar="REF", help="the subject reference: 0x + 64 hex digits")
    ],
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, help="accesses at most, oldest first")] = 10_000,
    database_url: DatabaseOption = None,
) -> None:
    """A patient's transparency report: every access whose cohort included the subject (with
    its Merkle inclusion proof against the root on chain), its authorization codes, its
    consents and their history."""
    from audit.transparency import render_subject_report, subject_report

    _print_report(
        database_url,
        as_json,
        lambda engine: subject_report(engine, ref, limit=limit),
        render_subject_report,
    )


def main() -> None:  # pragma: no cover - `python -m audit.cli`, for subprocess tests and ops

    dul_log.configure(os.environ.get("DUL_LOG_LEVEL", "WARNING"))
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

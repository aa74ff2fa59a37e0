"""`dul audit …` commands of the indexer (registered by `dul.cli.main` as `dul audit`)."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Annotated, Any

import structlog
import typer

from audit.settings import AuditSettings
from dul import log as dul_log
from dul.errors import DulError

log = structlog.get_logger("audit.cli")

app = typer.Typer(
    help="The audit trail: index the chain into the audit store.", no_args_is_help=True
)


@app.callback()
def audit() -> None:
    """The audit trail: index the chain into the audit store."""


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
            + ")"
        )


def main() -> None:  # pragma: no cover - `python -m audit.cli`, for subprocess tests and ops

    dul_log.configure(os.environ.get("DUL_LOG_LEVEL", "WARNING"))
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

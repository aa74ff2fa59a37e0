"""`dul gateway …`: serve the gateway, and wait until one is ready."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from dul.cli.common import cli_errors, console, emit_json, load_settings

app = typer.Typer(help="The access gateway (REST API on localhost).", no_args_is_help=True)


@app.command("serve")
@cli_errors
def serve(
    org: Annotated[
        str | None, typer.Option(help="Holder organization (env DUL_GATEWAY_ORG).")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Gateway keystore (env DUL_GATEWAY_KEY).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (env DUL_GATEWAY_PORT, default 8700).")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Outbox database (env DUL_GATEWAY_DATABASE_URL; default SQLite in "
            "DUL_HOME/gateway)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="API worker processes sharing the outbox; one runs the submitter, another "
            "takes over if it dies (env DUL_GATEWAY_WORKERS, default 1).",
            min=1,
            max=32,
        ),
    ] = None,
) -> None:
    """Serve the gateway until interrupted (SIGINT/SIGTERM drain in-flight requests)."""
    import os

    import uvicorn

    from ledger_gateway.app import create_app
    from ledger_gateway.settings import GatewaySettings

    options: dict[str, Any] = {
        "org": org,
        "key": key,
        "port": port,
        "database_url": database_url,
        "workers": workers,
    }
    # Constructed, not model_validate'd, so DUL_GATEWAY_* env vars fill what options leave out.
    settings = load_settings(GatewaySettings, "DUL_GATEWAY_", **options)
    serving: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **serving)
        return
    # Each worker migrates at start-up; on a new SQLite database two doing it at once fail
    # (the second's upgrade from read to write lock is refused at once, busy timeout or not,
    # and uvicorn then stops every worker): the parent brings the store to the newest
    # revision first, so the workers find nothing to do.
    from dul.home import private_dir
    from ledger_gateway.migrations import migrate

    private_dir(settings.data_dir)
    migrate(settings.effective_database_url)
    # Worker processes build their app from the environment: hand the options on through it.
    for name, value in options.items():
        if value is not None:
            os.environ[f"DUL_GATEWAY_{name.upper()}"] = str(value)
    uvicorn.run(
        "ledger_gateway.app:app_from_env", factory=True, workers=settings.workers, **serving
    )


@app.command("ready")
@cli_errors
def ready(
    url: Annotated[
        str | None,
        typer.Option(
            "--gateway", help="Gateway URL (env DUL_GATEWAY_URL, else 127.0.0.1:DUL_GATEWAY_PORT)."
        ),
    ] = None,
    wait: Annotated[float, typer.Option(min=0, max=600, help="Seconds to wait for readiness.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Whether a gateway answers ready (chain, contracts, signer, store); exit 1 when not."""
    import time

    import httpx

    from dul.endpoints import gateway_url
    from dul.errors import DulError

    base = url or gateway_url()
    deadline = time.monotonic() + wait
    checks: dict[str, Any] = {}
    while True:
        try:
            reply = httpx.get(f"{base}/readyz", timeout=5)
            checks = (
                reply.json()
                if reply.headers.get("content-type", "").startswith("application/json")
                else {}
            )
            if reply.status_code == 200:
                break
        except httpx.HTTPError as exc:
            checks = {"error": str(exc)}
        if time.monotonic() >= deadline:
            raise DulError(
                f"the gateway at {base} is not ready ({checks or 'no answer'}): is `dul gateway "
                "serve` running with DUL_GATEWAY_ORG and DUL_GATEWAY_KEY of a GATEWAY member?",
                code="gateway_not_ready",
            )
        time.sleep(0.3)
    if json_output:
        emit_json({"url": base, "ready": True, **checks})
        return
    degraded = checks.get("degraded") or {}
    if not degraded:
        console.print(f"gateway ready at {base}", highlight=False)
        return
    # ready (it answers), but something needs an operator's eye: said, never hidden
    console.print(f"gateway ready at {base}, [bold yellow]degraded[/bold yellow]:", highlight=False)
    for name, reason in degraded.items():
        console.print(f"  {escape(str(name))}: {escape(str(reason))}", highlight=False)

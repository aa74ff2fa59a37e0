"""`dul gateway …`: serve the gateway."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dul.cli.common import cli_errors

app = typer.Typer(help="The access gateway (REST API on localhost).", no_args_is_help=True)


@app.command("serve")
@cli_errors
def serve(
    org: Annotated[
        str | None, typer.Option(help="Holder organization [env DUL_GATEWAY_ORG].")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Gateway keystore [env DUL_GATEWAY_KEY].")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port [env DUL_GATEWAY_PORT, default 8700].")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Outbox database [default: SQLite in DUL_HOME/gateway].")
    ] = None,
) -> None:
    """Serve the gateway until interrupted (SIGINT/SIGTERM drain in-flight requests)."""
    import uvicorn

    from ledger_gateway.app import create_app
    from ledger_gateway.settings import GatewaySettings

    options: dict[str, Any] = {
        "org": org,
        "key": key,
        "port": port,
        "database_url": database_url,
    }
    # Constructed, not model_validate'd, so DUL_GATEWAY_* env vars fill what options leave out.
    settings = GatewaySettings(**{k: v for k, v in options.items() if v is not None})
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )

"""`dul patient …`: the hospital's patient page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dul.cli.common import cli_errors, console, load_settings

app = typer.Typer(help="The hospital's patient page.", no_args_is_help=True)


@app.callback()
def patient() -> None:
    """The hospital's patient page (a group, so `serve` keeps its name)."""


@app.command("serve")
@cli_errors
def serve(
    org: Annotated[
        str | None, typer.Option(help="The hospital whose patients sign in (env DUL_PATIENT_ORG).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (env DUL_PATIENT_PORT, default 8640).")
    ] = None,
    gateway_url: Annotated[
        str | None, typer.Option(help="The hospital's gateway (env DUL_PATIENT_GATEWAY_URL).")
    ] = None,
    gateway_token_file: Annotated[
        Path | None,
        typer.Option(
            help="A file holding a STEWARD token of that gateway "
            "(env DUL_PATIENT_GATEWAY_TOKEN_FILE, or the token in DUL_PATIENT_GATEWAY_TOKEN)."
        ),
    ] = None,
    audit_url: Annotated[
        str | None,
        typer.Option(help="The audit service reports are read from (env DUL_PATIENT_AUDIT_URL)."),
    ] = None,
    agreements_file: Annotated[
        Path | None,
        typer.Option(
            help="A JSON list of the agreement ids patients may issue one-time codes under, "
            "re-read on every request (env DUL_PATIENT_AGREEMENTS_FILE)."
        ),
    ] = None,
) -> None:
    """Serve the patient page until interrupted: patients sign in with a patient token
    (`dul steward patient-token`), read who used their data with its proofs, withdraw consent
    and issue one-time codes, each signed in their browser with their own key."""
    import uvicorn

    from ledger_gateway.patient_page.app import SERVER_OPTIONS, create_app
    from ledger_gateway.patient_page.settings import PatientPageSettings

    options: dict[str, Any] = {
        "org": org,
        "port": port,
        "gateway_url": gateway_url,
        "gateway_token_file": gateway_token_file,
        "audit_url": audit_url,
        "agreements_file": agreements_file,
    }
    settings = load_settings(PatientPageSettings, "DUL_PATIENT_", **options)
    settings.resolved_gateway_token()  # a missing credential stops here, in one line
    console.print(f"patient page of {settings.org} on http://{settings.host}:{settings.port}/")
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=None,
        access_log=False, loop="uvloop", http="httptools", **SERVER_OPTIONS,
    )  # fmt: skip

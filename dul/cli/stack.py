"""`dul up` and `dul down`: the whole local stack in one command."""

from __future__ import annotations

import dataclasses
import signal
import threading
from typing import Annotated

import typer
from rich.markup import escape

from dul import stack
from dul.cli.common import cli_errors, console, emit_json, err_console, home


@cli_errors
def up(
    demo: Annotated[
        bool,
        typer.Option(help="The sample data space and the story of `dul demo` in it, once."),
    ] = False,
    detach: Annotated[
        bool, typer.Option(help="Return once everything is ready; stop with `dul down`.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Start the embedded chain, deploy the contracts if needed, and print the URLs.

    With `--demo`, the sample data space and, the first time, the story of `dul demo`, so the
    same world is there to explore."""
    h = home()
    token = None
    if demo:
        from dul import demo as story

        if not story.told(h):
            facts = story.tell(h, lambda line: err_console.print(f"▸ {line}", highlight=False))
            token = facts.get("access_token")
    status = stack.up(h, demo=demo)
    if token:
        status = dataclasses.replace(status, access_token=token)
    if status.chain.warning is not None:  # the node is reachable by every local user
        err_console.print(f"[bold red]WARNING[/bold red] {status.chain.warning}", highlight=False)
    from audit.health import describe, settled_health

    indexer = settled_health(h, status.chain.rpc_url)
    if json_output:
        emit_json({**status.to_json(),
                   "audit_indexer": None if indexer is None else indexer.model_dump()})  # fmt: skip
    else:
        verb = "deployed" if status.deployed_now else "verified"
        console.print(
            f"rpc_url   {status.chain.rpc_url}  (chain {status.chain.chain_id})", highlight=False
        )
        console.print(f"contracts {verb}: {h.deployment}", highlight=False)
        for name, address in status.deployment.addresses.items():
            console.print(f"  {name:<18} {address}", highlight=False)
        if status.seeded:
            console.print(f"seeded    {', '.join(status.seeded)}", highlight=False)
        if status.gateway_url:
            console.print(f"gateway_url {status.gateway_url}  (OpenAPI at /docs)", highlight=False)
        for org, why in status.gateway_skipped.items():
            err_console.print(f"note: no gateway for {org}: {why}", highlight=False)
        if status.audit_url:
            console.print(f"audit_url   {status.audit_url}  (OpenAPI at /docs)", highlight=False)
        if indexer is not None:
            colour = "green" if indexer.status == "ok" else "bold red"
            console.print(f"audit indexer [{colour}]{escape(describe(indexer))}[/{colour}]",
                          highlight=False)  # fmt: skip
        if status.access_token:
            console.print(
                f"access-service token (shown once): {status.access_token}", highlight=False
            )
        if status.audit_url and status.regulator_token:
            console.print(
                f"console     {status.audit_url}/  sign in as the regulator with this token "
                f"(shown once): {status.regulator_token}",
                highlight=False,
            )
        elif status.audit_url:
            console.print(
                f"console     {status.audit_url}/  sign in with a token from `dul admin token "
                "create NAME --service audit --role regulator`",
                highlight=False,
            )
        if status.patient_url:
            console.print(
                f"patients    {status.patient_url}/  sign in with a token from `dul steward "
                "patient-token PSEUDONYM`",
                highlight=False,
            )
    if detach:
        return
    console.print("running; Ctrl-C stops the stack", highlight=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    stack.down(h)
    console.print("stack stopped", highlight=False)


@cli_errors
def down(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Stop everything `dul up` started (the ledger state is kept)."""
    stopped = stack.down(home())
    if json_output:
        emit_json({"stopped": stopped})
    else:
        console.print("stack stopped" if stopped else "stack was not running", highlight=False)

"""`dul bench [gateway|audit|patients] [--json]`: the performance figures of SPEC §5, each
measured on a private scratch stack and printed beside the target it is held against."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dul.cli.common import cli_errors, console, emit_json

TARGETS: dict[str, dict[str, str]] = {
    "gateway": {
        "single_events_per_s": ">= 1,500",
        "batch_events_per_s": ">= 10,000",
        "decision_p99_ms": "<= 25 at 500 req/s",
    },
}


@cli_errors
def bench(
    parts: Annotated[
        list[str] | None, typer.Argument(help="gateway, audit, patients (default: all built)")
    ] = None,
    single: Annotated[int, typer.Option(help="Requests through the single API.")] = 3_000,
    batch: Annotated[int, typer.Option(help="Requests through the batch API.")] = 20_000,
    rate: Annotated[
        float, typer.Option(help="Offered load for the latency figures, req/s.")
    ] = 500.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure; every figure is printed beside its limit, all from the same run."""
    from ledger_gateway import bench as gateway_bench

    chosen = parts or ["gateway"]
    unknown = set(chosen) - {"gateway", "audit", "patients"}
    if unknown:
        raise typer.BadParameter(f"unknown part(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {}
    if "gateway" in chosen:
        sizes = gateway_bench.GatewayBenchSizes(
            single_requests=single, batch_requests=batch, offered_rate=rate
        )
        results["gateway"] = gateway_bench.run(sizes)
    if json_output:
        emit_json(results)
        return
    for part, figures in results.items():
        console.print(f"[bold]{part}[/bold]")
        for key, value in figures.items():
            target = TARGETS.get(part, {}).get(key, "")
            console.print(f"  {key:<26} {value:>12}   {target}", highlight=False)

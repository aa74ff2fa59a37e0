"""`dul network genesis|permissions`: the Besu QBFT network's files from `network.toml`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dul.chain.besu import NetworkSpec, genesis_json, load_network
from dul.cli.common import cli_errors, console, emit_json
from dul.errors import ConfigError

app = typer.Typer(
    help="The production network (Hyperledger Besu QBFT): genesis and permissioning files "
    "from a network description (deploy/besu/network.toml).",
    no_args_is_help=True,
)

NetworkArg = Annotated[
    Path,
    typer.Argument(help="The network description (TOML): chain, nodes, sending accounts."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot write {path}: {reason}", code="write_failed") from exc


def _out(network: Path, given: Path | None, name: str) -> Path:
    return given if given is not None else network.parent / name


@app.command()
@cli_errors
def genesis(
    network: NetworkArg,
    out: Annotated[
        Path | None, typer.Option(help="Where to write it (default: genesis.json beside NETWORK).")
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Write the QBFT genesis: the validators' addresses (from their node public keys) RLP-encoded
    in extraData, free gas, the embedded chain's gas and contract size limits."""
    spec = load_network(network)
    path = _out(network, out, "genesis.json")
    _write(path, genesis_json(spec))
    facts = _facts(spec)
    if json_output:
        emit_json({"genesis": str(path), **facts})
        return
    console.print(f"wrote {path}", highlight=False)
    console.print(f"  chain_id     {spec.chain_id}", highlight=False)
    for node in spec.validators:
        console.print(f"  validator    {node.address}  {node.name}", highlight=False)
    console.print(
        f"  tolerates    {spec.fault_tolerance} faulty validator(s) of {len(spec.validators)}",
        highlight=False,
    )
    console.print(f"  extraData    {facts['extra_data']}", highlight=False)


@app.command()
@cli_errors
def permissions(
    network: NetworkArg,
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write it (default: permissions_config.toml beside NETWORK)."),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Write Besu's local allowlists: every node's enode URL and every sending account."""
    spec = load_network(network)
    path = _out(network, out, "permissions_config.toml")
    _write(path, spec.permissions())
    if json_output:
        emit_json(
            {
                "permissions": str(path),
                "nodes": [n.enode for n in spec.nodes],
                "accounts": [a.address for a in spec.accounts],
            }
        )
        return
    console.print(
        f"wrote {path}: {len(spec.nodes)} nodes, {len(spec.accounts)} accounts", highlight=False
    )


def _facts(spec: NetworkSpec) -> dict[str, object]:
    return {
        "chain_id": spec.chain_id,
        "extra_data": "0x" + spec.extra_data().hex(),
        "validators": [{"name": n.name, "address": n.address} for n in spec.validators],
        "fault_tolerance": spec.fault_tolerance,
    }

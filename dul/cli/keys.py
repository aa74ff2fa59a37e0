"""`dul keys …`: create, import, list and show the encrypted keystores under DUL_HOME/keys.

The passphrase comes from DUL_KEY_PASSPHRASE or DUL_KEY_PASSPHRASE_FILE (see `dul.keys`); no
command prints or logs a private key.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dul import log
from dul.cli.common import cli_errors, console, emit_json, home
from dul.errors import KeyStoreError
from dul.keys import KeyStore, passphrase_from_env

app = typer.Typer(
    help="Encrypted signing keys (keystores under DUL_HOME/keys; passphrase from "
    "DUL_KEY_PASSPHRASE or DUL_KEY_PASSPHRASE_FILE).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Key name: a-z 0-9 . _ - (at most 64).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.callback()
def _configure_logging() -> None:
    # Unconfigured structlog prints to stdout and would corrupt `--json` output.
    log.configure()


def _store() -> KeyStore:
    return KeyStore(home())


@app.command("new")
@cli_errors
def new(name: NameArg, as_json: JsonOpt = False) -> None:
    """Create a new key and print its address."""
    store = _store()
    address = store.new(name)
    if as_json:
        emit_json({"name": name, "address": address, "path": str(store.path(name))})
    else:
        console.print(f"{name} {address}", highlight=False)


IMPORT_PASSPHRASE_ENV = "DUL_IMPORT_PASSPHRASE"  # noqa: S105 - a variable name


def _from_keystore_file(path: Path) -> bytes:
    """The private key in a standard (Web3 Secret Storage v3) JSON keystore file, as made by
    geth, ethers, eth-account or MetaMask; its passphrase from DUL_IMPORT_PASSPHRASE, a hidden
    prompt on a terminal, or else DUL_KEY_PASSPHRASE."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyStoreError(
            f"cannot read {path}: {exc.strerror}", code="keystore_corrupt"
        ) from None
    except ValueError:
        raise KeyStoreError(f"{path} is not a JSON keystore", code="keystore_corrupt") from None
    if not isinstance(document, dict) or not isinstance(
        document.get("crypto", document.get("Crypto")), dict
    ):
        raise KeyStoreError(f"{path} is not a JSON keystore (no crypto section)",
                            code="keystore_corrupt")  # fmt: skip
    passphrase = os.environ.get(IMPORT_PASSPHRASE_ENV)
    if passphrase is None and sys.stdin.isatty():
        passphrase = typer.prompt(f"Passphrase of {path.name}", hide_input=True)
    if passphrase is None:
        passphrase = passphrase_from_env()
    from eth_account import Account  # ~0.6 s to import: only to import a file

    try:
        return bytes(Account.decrypt(document, passphrase))
    except ValueError as exc:
        wrong = "mac" in str(exc).lower()
        raise KeyStoreError(
            f"cannot decrypt {path}: "
            + (f"wrong passphrase (set {IMPORT_PASSPHRASE_ENV})" if wrong else str(exc)),
            code="wrong_passphrase" if wrong else "keystore_corrupt",
        ) from None
    except (KeyError, TypeError, NotImplementedError) as exc:
        raise KeyStoreError(f"cannot decrypt {path}: unsupported keystore ({exc})",
                            code="keystore_corrupt") from None  # fmt: skip


@app.command("import")
@cli_errors
def import_(
    name: NameArg,
    keystore: Annotated[
        Path | None,
        typer.Option(
            help="A JSON keystore file (geth, ethers, MetaMask…) instead of a raw key on stdin; "
            "its passphrase from env DUL_IMPORT_PASSPHRASE (else a prompt, else "
            "DUL_KEY_PASSPHRASE). It is re-encrypted under DUL_KEY_PASSPHRASE."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a private key read from stdin (a hidden prompt on a terminal), or a keystore file."""
    secret: str | bytes
    if keystore is not None:
        secret = _from_keystore_file(keystore)
    elif sys.stdin.isatty():
        secret = typer.prompt("Private key (hex)", hide_input=True)
    else:
        secret = sys.stdin.readline()
    if isinstance(secret, str) and not secret.strip():
        raise KeyStoreError("no private key on stdin", code="invalid_private_key")
    store = _store()
    address = store.import_key(name, secret)
    if as_json:
        emit_json({"name": name, "address": address, "path": str(store.path(name))})
    else:
        console.print(f"{name} {address}", highlight=False)


@app.command("list")
@cli_errors
def list_(as_json: JsonOpt = False) -> None:
    """List key names and addresses (no passphrase needed)."""
    keys = _store().list()
    if as_json:
        emit_json([{"name": name, "address": address} for name, address in keys])
        return
    if not keys:
        console.print("no keys (create one with `dul keys new NAME`)")
        return
    table = Table("name", "address", box=None, header_style="bold")
    for name, address in keys:
        table.add_row(name, address)
    console.print(table)


@app.command("show")
@cli_errors
def show(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show a key's address and keystore file (never the secret)."""
    info = _store().show(name)
    if as_json:
        emit_json({"name": info.name, "address": info.address, "path": str(info.path)})
    else:
        console.print(f"name     {info.name}\naddress  {info.address}\npath     {info.path}")

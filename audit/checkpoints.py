"""Signed audit checkpoints: a regulator's or a hospital's own record of what the chain was.

`dul audit checkpoint` signs, with the caller's key, the statement "on chain `chainId` block
`blockNumber` had hash `blockHash`, and the audit store up to it had digest `storeDigest`" and
writes it to a file the caller keeps, out of the operator's reach. `dul audit verify
--checkpoints DIR` later checks each file: its signature, that the node still holds that block
with that hash (`checkpoint_not_on_chain`: the history was rewritten after it), and, when the
store has indexed that far, that the store up to it still has the signed digest
(`checkpoint_store_differs`). Unreadable or forged files are `checkpoint_invalid`, files of
another chain `checkpoint_other_chain`.

**Signature: EIP-712** (not EIP-191): the project signs everything as typed data, and a wallet
or hardware key shows the fields it signs. Domain `{name: "DataUseLedger.AuditCheckpoint",
version: "1", chainId}` (no verifying contract: no contract checks it), primary type
`AuditCheckpoint(uint256 chainId,uint64 blockNumber,bytes32 blockHash,bytes32 storeDigest,
uint64 takenAt)`. The file holds the standard `eth_signTypedData_v4` object, so any EIP-712
tool (ethers `verifyTypedData`, …) can check it too:

    {"format": "dul-audit-checkpoint/1", "typed_data": {types, domain, primaryType, message},
     "signer": "0x…", "signature": "0x" + r ‖ s ‖ v (65 bytes)}

**Store digest** (`store_digest`), reproducible by anyone who indexes the same chain, on
SQLite or PostgreSQL: SHA-256 over the line `dul-audit-store-digest/1`, then one line per row
of the store's `event` table with `block_number <= blockNumber`, in position order:

    {block}/{tx}/{log} {tx_hash} {block_hash} {address} {contract} {name} {args}

(hashes and addresses lowercase 0x hex, `args` the decoded arguments as JSON with sorted keys,
no spaces, ASCII only; each line ends with a newline). Every other table is a projection of
these rows, and `verify` proves the rows are the chain's logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from sqlalchemy import Connection, text

from dul.errors import DulError
from dul.signing import (
    InvalidSignatureError,
    Signer,
    TypedDataError,
    recover,
    typed_data_digest,
    typed_data_json,
)

FORMAT: Final = "dul-audit-checkpoint/1"
DIGEST_HEADER: Final = b"dul-audit-store-digest/1\n"
DOMAIN_NAME: Final = "DataUseLedger.AuditCheckpoint"
DOMAIN_VERSION: Final = "1"
PRIMARY: Final = "AuditCheckpoint"
TYPES: Final[dict[str, list[dict[str, str]]]] = {
    PRIMARY: [
        {"name": "chainId", "type": "uint256"},
        {"name": "blockNumber", "type": "uint64"},
        {"name": "blockHash", "type": "bytes32"},
        {"name": "storeDigest", "type": "bytes32"},
        {"name": "takenAt", "type": "uint64"},
    ]
}
MAX_FILES: Final = 10_000
MAX_FILE_BYTES: Final = 64 * 1024
_HEX32: Final = re.compile(r"^0x[0-9a-f]{64}$")
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_DECODE: Final = json.JSONDecoder().decode


class CheckpointError(DulError):
    code = "checkpoint_error"


class FindingSink(Protocol):
    def add(self, check: str, message: str, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class Checkpoint:
    chain_id: int
    block_number: int
    block_hash: str
    store_digest: str
    taken_at: int
    signer: str

    def typed_data(self) -> dict[str, Any]:
        return typed_data_json(
            {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": self.chain_id},
            TYPES,
            PRIMARY,
            {
                "chainId": self.chain_id,
                "blockNumber": self.block_number,
                "blockHash": self.block_hash,
                "storeDigest": self.store_digest,
                "takenAt": self.taken_at,
            },
        )


# --- the store digest ---------------------------------------------------------------------------


def store_digest(conn: Connection, blocks: Iterable[int]) -> dict[int, str]:
    """The store digest (module docstring) up to each of `blocks`, in one pass over `event`."""
    wanted = sorted(set(blocks))
    if not wanted:
        return {}
    digest = hashlib.sha256(DIGEST_HEADER)
    out: dict[int, str] = {}
    at = 0
    rows = conn.execution_options(yield_per=10_000).execute(
        text(
            "SELECT block_number, tx_index, log_index, tx_hash, block_hash, address, contract, "
            "name, args FROM event WHERE block_number <= :last "
            "ORDER BY block_number, tx_index, log_index"
        ),
        {"last": wanted[-1]},
    )
    for b, t, i, tx_hash, block_hash, address, contract, name, args in rows:
        while at < len(wanted) and int(b) > wanted[at]:
            out[wanted[at]] = "0x" + digest.copy().hexdigest()
            at += 1
        canonical = _CANONICAL.encode(_DECODE(args) if isinstance(args, str) else args)
        digest.update(
            f"{b}/{t}/{i} {tx_hash} {block_hash} {address} {contract} {name} {canonical}\n".encode()
        )
    final = "0x" + digest.hexdigest()
    for block in wanted[at:]:
        out[block] = final
    return out


# --- taking one -----------------------------------------------------------------------------------


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> dict[str, Any]:
    """The checkpoint file's content, signed by `signer` (its address must be the checkpoint's)."""
    typed = checkpoint.typed_data()
    signature = signer.sign_digest(typed_data_digest(typed))
    return {
        "format": FORMAT,
        "typed_data": typed,
        "signer": str(signer.address),
        "signature": "0x" + signature.hex(),
    }


def take_checkpoint(
    conn: Connection,
    node_block_hash: Callable[[int], str | None],
    node_chain_id: int,
    block: int | None,
    signer: Signer,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Sign the checkpoint of the store read on `conn` at `block` (default: the store's own
    checkpoint). `node_block_hash(n)` is the node's hash of block n (None: no such block),
    `node_chain_id` its chain. CheckpointError when the store is empty, not that far, of
    another chain, or disagrees with the node about that block (a checkpoint vouches only for
    what the chain holds)."""
    row = conn.execute(text("SELECT chain_id, block_number, block_hash FROM checkpoint")).first()
    if row is None:
        raise CheckpointError("the audit store is empty: index the chain first",
                              code="store_empty")  # fmt: skip
    chain_id, indexed, indexed_hash = int(row[0]), int(row[1]), str(row[2])
    number = indexed if block is None else block
    if number > indexed:
        raise CheckpointError(f"the store is indexed up to block {indexed}, not {number}",
                              code="block_not_indexed")  # fmt: skip
    if node_chain_id != chain_id:
        raise CheckpointError(f"the node serves chain {node_chain_id}, the store chain {chain_id}",
                              code="chain_mismatch")  # fmt: skip
    node_hash = node_block_hash(number)
    if node_hash is None:
        raise CheckpointError(f"the node has no block {number}", code="block_not_on_chain")
    stored = conn.execute(text("SELECT hash FROM block WHERE number = :n"), {"n": number}).scalar()
    if number == indexed:
        stored = indexed_hash
    if stored is not None and str(stored).lower() != node_hash.lower():
        raise CheckpointError(
            f"block {number}: the store has {stored}, the node {node_hash}; run "
            "`dul audit verify`", code="store_not_chain",
        )  # fmt: skip
    checkpoint = Checkpoint(
        chain_id=chain_id,
        block_number=number,
        block_hash=node_hash.lower(),
        store_digest=store_digest(conn, [number])[number],
        taken_at=int(time.time() if now is None else now),
        signer=str(signer.address).lower(),
    )
    return sign_checkpoint(checkpoint, signer)


def write_checkpoint(directory: Path, document: Mapping[str, Any]) -> Path:
    """Writes the file (0600, never over another) in `directory` (made 0700 if missing)."""
    message = document["typed_data"]["message"]
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = (f"checkpoint-{message['chainId']}-{int(message['blockNumber']):012d}-"
            f"{str(document['signer'])[2:10].lower()}-{message['takenAt']}.json")  # fmt: skip
    path = directory / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CheckpointError(f"{path} exists already", code="checkpoint_exists") from None
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}",
                              code="checkpoint_unwritable") from None  # fmt: skip
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


# --- reading one ------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint in `path` whose signature recovers to its signer; CheckpointError (with
    the reason) otherwise. The digest is recomputed from our own types and the message, so a
    file cannot smuggle in other types or another domain."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CheckpointError(f"larger than {MAX_FILE_BYTES} bytes")
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"unreadable ({exc.__class__.__name__})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"not a {FORMAT} file")
    typed, message = document.get("typed_data"), None
    if isinstance(typed, dict):
        message = typed.get("message")
    if not isinstance(message, dict) or not isinstance(typed, dict):
        raise CheckpointError("no typed_data message")
    try:
        values = {f["name"]: message[f["name"]] for f in TYPES[PRIMARY]}
        checkpoint = Checkpoint(
            chain_id=int(values["chainId"]),
            block_number=int(values["blockNumber"]),
            block_hash=str(values["blockHash"]).lower(),
            store_digest=str(values["storeDigest"]).lower(),
            taken_at=int(values["takenAt"]),
            signer=str(document.get("signer", "")).lower(),
        )
        if not (_HEX32.match(checkpoint.block_hash) and _HEX32.match(checkpoint.store_digest)):
            raise ValueError("blockHash and storeDigest are 32-byte hex")
        if not 0 <= checkpoint.block_number < 2**64:
            raise ValueError("blockNumber out of range")
        expected = checkpoint.typed_data()
        if typed.get("domain") != expected["domain"] or typed.get("primaryType") != PRIMARY:
            raise ValueError("not the AuditCheckpoint domain and type")
        signature = bytes.fromhex(str(document.get("signature", ""))[2:])
        signer = recover(typed_data_digest(expected), signature).lower()
    except (KeyError, TypeError, ValueError, TypedDataError, InvalidSignatureError) as exc:
        raise CheckpointError(f"malformed or unsigned: {exc}") from None
    if signer != checkpoint.signer:
        raise CheckpointError(f"the signature recovers to {signer}, not the signer "
                              f"{checkpoint.signer}")  # fmt: skip
    return checkpoint


def checkpoint_files(directory: Path) -> list[Path]:
    """The `*.json` files of `directory`, sorted; CheckpointError when it is not a readable
    directory or holds more than MAX_FILES of them."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory", code="checkpoints_not_found")
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix == ".json" and p.is_file())
    except OSError as exc:
        raise CheckpointError(f"cannot read {directory}: {exc.strerror}",
                              code="checkpoints_unreadable") from None  # fmt: skip
    if len(files) > MAX_FILES:
        raise CheckpointError(f"{directory} holds {len(files)} checkpoint files, more than "
                              f"{MAX_FILES}", code="too_many_checkpoints")  # fmt: skip
    return files


# --- verify -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The files of a checkpoint directory: readable (with their checkpoint) and not."""

    readable: list[tuple[Path, Checkpoint]]
    invalid: list[tuple[Path, str]]

    @property
    def blocks(self) -> list[int]:
        return sorted({c.block_number for _, c in self.readable})


def load_checkpoints(files: Iterable[Path]) -> Loaded:
    readable: list[tuple[Path, Checkpoint]] = []
    invalid: list[tuple[Path, str]] = []
    for path in files:
        try:
            readable.append((path, read_checkpoint(path)))
        except CheckpointError as exc:
            invalid.append((path, exc.message))
    return Loaded(readable, invalid)


def check_checkpoints(
    conn: Connection,
    loaded: Loaded,
    chain_id: int,
    indexed: int,
    node_hashes: Mapping[int, str | None] | None,
    out: FindingSink,
    checked: Any,
) -> None:
    """Names every checkpoint that fails (module docstring). `indexed` is the store's
    checkpoint block; `node_hashes` the node's hash of each block of `loaded.blocks` (None:
    no such block), or None without a node (then signatures and digests only)."""
    for path, reason in loaded.invalid:
        checked["checkpoints"] += 1
        out.add("checkpoint_invalid", f"checkpoint {path.name}: {reason}", key=path.name,
                details={"file": str(path), "reason": reason})  # fmt: skip
    digests = store_digest(
        conn, [c.block_number for _, c in loaded.readable if c.block_number <= indexed]
    )
    for path, c in loaded.readable:
        checked["checkpoints"] += 1
        details: dict[str, Any] = {
            "file": str(path), "block": c.block_number, "block_hash": c.block_hash,
            "store_digest": c.store_digest, "signer": c.signer, "taken_at": c.taken_at,
        }  # fmt: skip
        if c.chain_id != chain_id:
            out.add("checkpoint_other_chain", f"checkpoint {path.name} is of chain {c.chain_id}, "
                    f"the store of chain {chain_id}", key=path.name, details=details)  # fmt: skip
            continue
        if node_hashes is not None:
            node = node_hashes.get(c.block_number)
            if node is None or node.lower() != c.block_hash:
                out.add("checkpoint_not_on_chain", f"checkpoint {path.name} signed by "
                        f"{c.signer}: block {c.block_number} was {c.block_hash}, the node now "
                        f"has {node or 'no such block'}", key=path.name,
                        details={**details, "node_hash": node})  # fmt: skip
        if c.block_number > indexed:
            checked["checkpoints_beyond_store"] += 1
        elif digests[c.block_number] != c.store_digest:
            out.add("checkpoint_store_differs", f"checkpoint {path.name}: the store up to block "
                    f"{c.block_number} no longer has the signed digest", key=path.name,
                    details={**details, "digest_now": digests[c.block_number]})  # fmt: skip

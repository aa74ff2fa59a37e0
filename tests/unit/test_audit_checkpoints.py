"""`audit.checkpoints`: a signed checkpoint file round-trips, any EIP-712 implementation can
check it, every tampering is refused with its reason, files and directories are bounded, and
the store digest is exactly the documented hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak

from audit import checkpoints
from audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    checkpoint_files,
    read_checkpoint,
    sign_checkpoint,
    store_digest,
    write_checkpoint,
)
from audit.migrations import migrate
from audit.store import create_store_engine
from dul.signing import LocalSigner

SIGNER = LocalSigner(keccak(b"checkpoint unit test key"))
CHECKPOINT = Checkpoint(
    chain_id=31337,
    block_number=1234,
    block_hash="0x" + "ab" * 32,
    store_digest="0x" + "cd" * 32,
    taken_at=1_800_000_000,
    signer=SIGNER.address.lower(),
)


def written(tmp_path: Path, document: dict[str, Any] | None = None) -> Path:
    return write_checkpoint(tmp_path / "kept", document or sign_checkpoint(CHECKPOINT, SIGNER))


def test_a_signed_file_round_trips_and_is_private(tmp_path: Path) -> None:
    path = written(tmp_path)
    assert (
        path.name == f"checkpoint-31337-000000001234-{SIGNER.address[2:10].lower()}-1800000000.json"
    )
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "kept").stat().st_mode & 0o777 == 0o700
    assert read_checkpoint(path) == CHECKPOINT
    with pytest.raises(CheckpointError, match="exists already"):
        written(tmp_path)


def test_any_eip712_implementation_checks_the_file(tmp_path: Path) -> None:
    document = json.loads(written(tmp_path).read_text())
    message = encode_typed_data(full_message=document["typed_data"])
    signer = Account.recover_message(message, signature=bytes.fromhex(document["signature"][2:]))
    assert signer == SIGNER.address == document["signer"]
    assert document["typed_data"]["domain"] == {
        "name": "DataUseLedger.AuditCheckpoint", "version": "1", "chainId": 31337,
    }  # fmt: skip


def tampered(tmp_path: Path, change: Any) -> Path:
    document = sign_checkpoint(CHECKPOINT, SIGNER)
    change(document)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["typed_data"]["message"].update(blockHash="0x" + "ee" * 32),
         "the signature recovers to"),
        (lambda d: d["typed_data"]["message"].update(blockNumber="1"), "the signature recovers"),
        (lambda d: d.update(signer="0x" + "11" * 20), "not the signer 0x1111"),
        (lambda d: d["typed_data"]["domain"].update(name="Other"), "not the AuditCheckpoint"),
        (lambda d: d["typed_data"]["message"].update(blockHash="0x12"), "32-byte hex"),
        (lambda d: d["typed_data"]["message"].pop("storeDigest"), "malformed or unsigned"),
        (lambda d: d.update(signature="0x" + "00" * 65), "malformed or unsigned"),
        (lambda d: d.update(format="something/2"), "not a dul-audit-checkpoint/1 file"),
        (lambda d: d.pop("typed_data"), "no typed_data message"),
    ],
)  # fmt: skip
def test_every_tampering_is_refused_with_its_reason(
    tmp_path: Path, change: Any, reason: str
) -> None:
    with pytest.raises(CheckpointError, match=reason.replace("(", r"\(")):
        read_checkpoint(tampered(tmp_path, change))


def test_unreadable_and_oversized_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        read_checkpoint(junk)
    big = tmp_path / "big.json"
    big.write_text(" " * (checkpoints.MAX_FILE_BYTES + 1))
    with pytest.raises(CheckpointError, match="larger than"):
        read_checkpoint(big)


def test_a_checkpoint_directory_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError) as missing:
        checkpoint_files(tmp_path / "nowhere")
    assert missing.value.code == "checkpoints_not_found"
    for n in range(3):
        (tmp_path / f"{n}.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert [p.name for p in checkpoint_files(tmp_path)] == ["0.json", "1.json", "2.json"]
    monkeypatch.setattr(checkpoints, "MAX_FILES", 2)
    with pytest.raises(CheckpointError) as too_many:
        checkpoint_files(tmp_path)
    assert too_many.value.code == "too_many_checkpoints"


EVENTS = [
    # block, tx, log, name, args (as the indexer stores them: JSON text on SQLite)
    (10, 0, 0, "RoleGranted", {"role": "0x" + "00" * 32, "account": "0x" + "aa" * 20}),
    (12, 1, 3, "OrganizationRegistered", {"org": "0x" + "01" * 32, "name": "Ä", "kind": 0}),
    (12, 2, 0, "MemberRoleGranted", {"role": 2, "org": "0x" + "01" * 32}),
    (15, 0, 1, "AgreementActivated", {"id": "0x" + "02" * 32}),
]


def test_the_store_digest_is_the_documented_hash(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    with engine.begin() as conn:
        for b, t, i, name, args in reversed(EVENTS):  # stored out of order: the digest sorts
            conn.execute(
                sa.text("INSERT INTO event (block_number, tx_index, log_index, tx_hash, "
                        "block_hash, contract, address, name, args) VALUES (:b, :t, :i, :tx, "
                        ":bh, 'Membership', :a, :n, :args)"),
                {"b": b, "t": t, "i": i, "tx": f"0x{b:064x}", "bh": f"0x{b + t:064x}",
                 "a": "0x" + "cc" * 20, "n": name, "args": json.dumps(args)},
            )  # fmt: skip

    def expected(up_to: int) -> str:
        digest = hashlib.sha256(b"dul-audit-store-digest/1\n")
        for b, t, i, name, args in EVENTS:
            if b <= up_to:
                canonical = json.dumps(args, sort_keys=True, separators=(",", ":"))
                digest.update(f"{b}/{t}/{i} 0x{b:064x} 0x{b + t:064x} 0x{'cc' * 20} Membership "
                              f"{name} {canonical}\n".encode())  # fmt: skip
        return "0x" + digest.hexdigest()

    with engine.connect() as conn:
        blocks = [9, 10, 11, 12, 15, 99]
        assert store_digest(conn, blocks) == {b: expected(b) for b in blocks}
        assert store_digest(conn, [12]) == {12: expected(12)}  # one block alone: the same
        assert store_digest(conn, []) == {}
    assert expected(9) == "0x" + hashlib.sha256(b"dul-audit-store-digest/1\n").hexdigest()
    engine.dispose()

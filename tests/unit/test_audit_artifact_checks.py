"""ArtifactRegistered through the audit's fast decoder (equal to eth-abi, malformed encodings
refused, never silently shortened) and the artifact checks of `verify` on a hand-made store:
what is derived from a revoked agreement's results after the revocation, directly or through
parent artifacts, from a disallowed release, or names releases and parents the store lacks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eth_abi.abi import decode, encode
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.events import EventDecodeError, EventDecoder
from audit.migrations import migrate
from audit.store import COLUMNS, create_store_engine
from audit.verify_artifacts import check_artifacts, release_fault
from dul.domain import Decision, Operation, ReleaseKind, Tier

ADDRESS = "0x" + "42" * 20
DECODER = EventDecoder({"ArtifactRegistry": ADDRESS})
SPEC = DECODER.spec_for("ArtifactRegistry", "ArtifactRegistered")
DATA_TYPES = ["(bytes32,bytes32,bytes32)[]", "bytes32[]", "bytes32", "address"]

words = st.binary(min_size=32, max_size=32)
releases = st.lists(st.tuples(words, words, words), max_size=4)


def log(data: bytes | str, *, kind: int = 2, artifact: bytes = b"\1" * 32) -> dict[str, Any]:
    body = data if isinstance(data, str) else "0x" + data.hex()
    return {
        "address": ADDRESS,
        "topics": [SPEC.topic0, "0x" + artifact.hex(), "0x" + "0b" * 32, f"0x{kind:064x}"],
        "data": body,
        "blockNumber": "0x5",
        "transactionIndex": "0x0",
        "logIndex": "0x1",
        "blockHash": "0x" + "aa" * 32,
        "transactionHash": "0x" + "bb" * 32,
    }


def hex32(value: bytes) -> str:
    return "0x" + value.hex()


def test_the_registration_takes_the_generated_path_not_eth_abi() -> None:
    assert SPEC.word_decoder is not None
    assert SPEC.signature == (
        "ArtifactRegistered(bytes32,bytes32,uint8,(bytes32,bytes32,bytes32)[],bytes32[],"
        "bytes32,address)"
    )


@settings(max_examples=200, deadline=None)
@given(refs=releases, parents=st.lists(words, max_size=4), meta=words,
       registrant=st.binary(min_size=20, max_size=20), kind=st.integers(0, 255))  # fmt: skip
def test_the_decoder_equals_eth_abi(
    refs: list[tuple[bytes, bytes, bytes]],
    parents: list[bytes],
    meta: bytes,
    registrant: bytes,
    kind: int,
) -> None:
    data = encode(DATA_TYPES, [refs, parents, meta, "0x" + registrant.hex()])
    event = DECODER.decode(log(data, kind=kind))
    ref_list, parent_list, meta_hash, who = decode(DATA_TYPES, data, strict=True)
    assert event.args == {
        "artifactId": "0x" + "01" * 32,
        "owner": "0x" + "0b" * 32,
        "kind": kind,
        "releases": [
            {"accessId": hex32(a), "agreementId": hex32(g), "resultHash": hex32(r)}
            for a, g, r in ref_list
        ],
        "parents": [hex32(p) for p in parent_list],
        "metadataHash": hex32(meta_hash),
        "registrant": who.lower(),
    }
    assert json.loads(event.args_json) == event.args
    assert event.args_json == json.dumps(event.args, separators=(",", ":"))


def test_malformed_registrations_are_refused() -> None:
    refs = [(b"\1" * 32, b"\2" * 32, b"\3" * 32), (b"\4" * 32, b"\5" * 32, b"\6" * 32)]
    good = encode(DATA_TYPES, [refs, [b"\7" * 32], b"\x08" * 32, "0x" + "cd" * 20]).hex()
    assert len(DECODER.decode(log(good)).args["releases"]) == 2
    head = 4 * 64
    releases_at = int(good[0:64], 16) * 2
    bad = {
        "short data": good[: len(good) - 64],
        "shorter than the head": good[: head - 64],
        "releases offset past the end": f"{len(good) // 2 + 32:064x}" + good[64:],
        "releases count too big": good[:releases_at] + f"{3:064x}" + good[releases_at + 64 :],
        "huge count": good[:releases_at] + "f" * 64 + good[releases_at + 64 :],
        "dirty address padding": good[: 3 * 64] + "01" + good[3 * 64 + 2 :],
    }
    for data in bad.values():
        with pytest.raises(EventDecodeError):
            DECODER.decode(log("0x" + data))
    with pytest.raises(EventDecodeError):  # ArtifactKind is a uint8
        DECODER.decode(log("0x" + good, kind=256))


# --- verify's artifact checks on a hand-made store --------------------------------------------


class Out:
    def __init__(self) -> None:
        self.checked: Counter[str] = Counter()
        self.found: list[tuple[str, str, dict[str, Any]]] = []

    def add(self, check: str, message: str, **kwargs: Any) -> None:
        self.found.append((check, kwargs.get("key", ""), kwargs.get("details", {})))


def test_release_faults_follow_the_contracts_rules() -> None:
    train = ("0xa", int(Decision.GRANTED), int(Tier.MODEL_PARAMETERS), int(Operation.TRAIN))
    assert release_fault("0xa", ReleaseKind.MODEL_UPDATE, train) is None
    assert release_fault("0xa", ReleaseKind.AGGREGATE_RESULT, train) is not None
    assert release_fault("0xb", ReleaseKind.MODEL_UPDATE, train) == (
        "release_without_grant",
        "the access is of another agreement",
    )
    denied = ("0xa", int(Decision.DENIED), 0, int(Operation.TRAIN))
    assert release_fault("0xa", ReleaseKind.MODEL_UPDATE, denied) is not None
    assert release_fault("0xa", ReleaseKind.MODEL_UPDATE, None) == (
        "release_without_grant",
        "no such access",
    )


def test_check_artifacts_flags_what_came_after_a_revocation(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    ok, revoked = "0x" + "a1" * 32, "0x" + "a2" * 32

    def at(block: int) -> dict[str, int]:
        return {"block_number": block, "tx_index": 0, "log_index": 0}

    with engine.begin() as conn:

        def insert(table: str, **values: Any) -> None:
            columns = [c for c in COLUMNS[table] if c not in values]
            row = {**dict.fromkeys(columns, "0x"), **values}
            names = ", ".join(row)
            marks = ", ".join(f":{c}" for c in row)
            conn.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), row)  # noqa: S608 - test literals

        for n, (agreement, kind) in enumerate(
            [(ok, ReleaseKind.MODEL_UPDATE), (revoked, ReleaseKind.MODEL_UPDATE),
             (ok, ReleaseKind.IDENTIFIED_EXTRACT)]  # the last one: not releasable from TRAIN
        ):  # fmt: skip
            access = f"0x{n + 1:064x}"
            insert("access_event", **at(10 + n), access_id=access, agreement_id=agreement,
                   decision=int(Decision.GRANTED), reason=0, tier=int(Tier.MODEL_PARAMETERS),
                   operation=int(Operation.TRAIN), cohort_size=0, deadline=0, sig_v=27)  # fmt: skip
            insert("result_release", **at(20 + n), access_id=access, agreement_id=agreement,
                   result_hash=f"0x{n + 101:064x}", kind=int(kind), size=1)  # fmt: skip
        insert("agreement_status_change", **at(40), agreement_id=revoked,
               event="AgreementRevoked", status=3, related_agreement=None)  # fmt: skip

        def artifact(name: str, block: int, releases: list[int], parents: list[str]) -> None:
            insert("artifact", artifact_id=name, kind=1, **at(block))
            for n in releases:
                insert("artifact_release_parent", artifact_id=name, access_id=f"0x{n + 1:064x}",
                       result_hash=f"0x{n + 101:064x}", agreement_id=revoked if n == 1 else ok,
                       block_number=block)  # fmt: skip
            for parent in parents:
                insert("artifact_parent", artifact_id=name, parent_id=parent, block_number=block)

        artifact("early", 30, [1], [])  # before the revocation: fine
        artifact("clean", 31, [0], [])
        artifact("late", 50, [1], [])  # after it, directly
        artifact("grandchild", 51, [], ["early", "clean"])  # after it, through `early`
        artifact("bad", 52, [2], [])  # from a release no access allowed
        artifact("ghost", 53, [], ["nowhere"])
        insert("artifact_release_parent", artifact_id="ghost", access_id="0x" + "99" * 32,
               result_hash="0x" + "98" * 32, agreement_id=ok, block_number=53)  # fmt: skip
    out = Out()
    with engine.connect() as conn:
        check_artifacts(conn, out)
    engine.dispose()
    found = {(check, key) for check, key, _ in out.found}
    assert found == {
        ("artifact_from_revoked_agreement", "late"),
        ("artifact_from_revoked_agreement", "grandchild"),
        ("artifact_from_disallowed_release", "bad"),
        ("artifact_parent_unknown", "ghost"),
        ("artifact_release_unknown", "ghost"),
    }
    direct = {key: details["direct"] for check, key, details in out.found
              if check == "artifact_from_revoked_agreement"}  # fmt: skip
    assert direct == {"late": True, "grandchild": False}
    assert out.checked["artifacts"] == 6


def test_check_artifacts_flags_an_id_taken_from_another_organizations_result(
    tmp_path: Path,
) -> None:
    """Result hashes are public: an artifact registered under one released to another
    organization, without deriving from that release, is flagged; an artifact of the recipient,
    or one naming the release, is not."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    lab, squatter = "0x" + "1a" * 32, "0x" + "5e" * 32
    to_lab, to_squatter = "0x" + "a1" * 32, "0x" + "a2" * 32

    def at(block: int) -> dict[str, int]:
        return {"block_number": block, "tx_index": 0, "log_index": 0}

    def result(n: int) -> str:
        return f"0x{n + 101:064x}"

    with engine.begin() as conn:

        def insert(table: str, **values: Any) -> None:
            columns = [c for c in COLUMNS[table] if c not in values]
            row = {**dict.fromkeys(columns, "0x"), **values}
            names = ", ".join(row)
            marks = ", ".join(f":{c}" for c in row)
            conn.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), row)  # noqa: S608 - test literals

        for agreement, requester in ((to_lab, lab), (to_squatter, squatter)):
            insert("agreement", **at(1), agreement_id=agreement, requester_org=requester,
                   version=1, scenario=0, duo_codes="[]", max_tier=0, operations=0,
                   valid_from=0, valid_until=0, quota=1, consent_policy=0, deadline=0,
                   status=1)  # fmt: skip
        # releases 0..3 to the lab, 4 to the squatter's organization
        for n, agreement in enumerate([to_lab] * 4 + [to_squatter]):
            access = f"0x{n + 1:064x}"
            insert("access_event", **at(10 + n), access_id=access, agreement_id=agreement,
                   decision=int(Decision.GRANTED), reason=0, tier=int(Tier.MODEL_PARAMETERS),
                   operation=int(Operation.TRAIN), cohort_size=0, deadline=0, sig_v=27)  # fmt: skip
            insert("result_release", **at(20 + n), access_id=access, agreement_id=agreement,
                   result_hash=result(n), kind=int(ReleaseKind.MODEL_UPDATE), size=1)  # fmt: skip

        def artifact(name: str, owner: str, block: int, releases: list[int],
                     parents: list[str]) -> None:  # fmt: skip
            insert("artifact", artifact_id=name, owner_org=owner, kind=1, **at(block))
            for n in releases:
                insert("artifact_release_parent", artifact_id=name, access_id=f"0x{n + 1:064x}",
                       result_hash=result(n), agreement_id=to_squatter if n == 4 else to_lab,
                       block_number=block)  # fmt: skip
            for parent in parents:
                insert("artifact_parent", artifact_id=name, parent_id=parent, block_number=block)

        artifact(result(0), lab, 30, [0], [])  # the lab's own update, naming its release
        artifact(result(1), squatter, 31, [], [result(0)])  # the lab's result, taken
        artifact(result(2), lab, 32, [], [result(0)])  # the lab's result, registered by the lab
        artifact(result(3), squatter, 33, [3], [])  # names the release: the chain checked it
        artifact(result(4), squatter, 34, [4], [])  # its own organization's release
        artifact("0x" + "77" * 32, squatter, 35, [], [result(1)])  # not a released hash
    out = Out()
    with engine.connect() as conn:
        check_artifacts(conn, out)
    engine.dispose()
    assert [(check, key) for check, key, _ in out.found] == [
        ("artifact_claims_foreign_result", result(1))
    ]
    assert out.found[0][2] == {
        "owner": squatter,
        "access_id": f"0x{2:064x}",
        "agreement_id": to_lab,
        "result_hash": result(1),
        "recipient": lab,
        "released_at": "21/0/0",
    }
    assert out.checked["artifacts"] == 6

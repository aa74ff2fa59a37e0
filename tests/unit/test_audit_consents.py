"""The audit service's patient side without a chain: the consent registry's events decode as
eth-abi decodes them (fast paths included, malformed data refused alike) and project into rows;
cohort rows carry proofs equal to `CohortTree.proof`; a hospital's cohort store is read
read-only and an unreadable one holds nothing; the consent-coverage rule; FHIR Consents."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import structlog
from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.cohorts import (
    CohortAccess,
    CohortStatus,
    SqlCohortSource,
    audit_paths,
    authorization_rows,
    cohort_rows,
    resolve,
    split_proof,
)
from audit.consents import ConsentFacts, StudyFacts, covers
from audit.events import EventDecodeError, EventDecoder, _plain
from audit.exports import _authorization_resource, _consent_resource
from audit.provenance import ChainRef, Node
from audit.store import project
from audit.testing import COHORT_LEAVES_DDL
from dul import log as dul_log
from dul.cohort import CohortTree, leaf_hash, verify_inclusion
from dul.consent_terms import ConsentTerms
from dul.contracts.artifacts import load
from dul.contracts.bindings import event
from dul.domain import AuthorizationStatus, ConsentStatus

ADDRESSES = {"ConsentRegistry": "0x" + "42" * 20, "AgreementRegistry": "0x" + "43" * 20}
DECODER = EventDecoder(ADDRESSES)


def abi_of(contract: str, event: str) -> dict[str, Any]:
    return next(e for e in load(contract).abi if e.get("name") == event)


def canonical(param: dict[str, Any]) -> str:
    type_: str = param["type"]
    if type_.startswith("tuple"):
        return "(" + ",".join(canonical(c) for c in param["components"]) + ")" + type_[5:]
    return type_


def log_of(contract: str, topics: list[str], data: str) -> dict[str, Any]:
    return {
        "address": ADDRESSES[contract], "topics": topics, "data": data, "blockNumber": "0x9",
        "transactionIndex": "0x1", "logIndex": "0x3", "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32, "removed": False,
    }  # fmt: skip


def consent_log(
    duo: list[int],
    *,
    scenarios: int = 2,
    data: str | None = None,
    studies: tuple[bytes, ...] = (),
    requesters: tuple[bytes, ...] = (),
    disease: bytes = bytes(32),
) -> dict[str, Any]:
    from eth_abi.abi import encode

    spec = DECODER.spec_for("ConsentRegistry", "ConsentRecorded")
    terms = ConsentTerms(
        b"\x01" * 32, b"\x02" * 32, scenarios, 2**64 - 1, tuple(duo), 5, "0x" + "07" * 20,
        disease, studies, requesters,
    )  # fmt: skip
    types = event("ConsentRegistry", "ConsentRecorded").data_types
    body = encode(list(types), [terms.as_abi(), "0x" + "08" * 20, False])
    topics = [spec.topic0, "0x" + "0a" * 32, "0x" + "01" * 32, "0x" + "02" * 32]
    return log_of("ConsentRegistry", topics, data or "0x" + body.hex())


# --- decoding ---------------------------------------------------------------------------------


def test_the_registry_events_take_the_fast_paths() -> None:
    specs = DECODER.specs["ConsentRegistry"]
    paths = {
        s.name: "static" if s.static_decoder else "word" if s.word_decoder else "abi"
        for s in specs.values()
    }
    assert paths["ConsentRecorded"] == "word"
    for name in ("ConsentWithdrawn", "AuthorizationIssued", "AuthorizationRevoked",
                 "AuthorizationRedeemed"):  # fmt: skip
        assert paths[name] == "static", name


def test_a_consent_decodes_with_its_duo_codes() -> None:
    event = DECODER.decode(consent_log([42, 46, 7]))
    assert event.args["terms"]["duoCodes"] == [42, 46, 7]
    assert event.args["terms"]["validUntil"] == 2**64 - 1
    assert json.loads(event.args_json) == event.args
    assert DECODER.decode(consent_log([])).args["terms"]["duoCodes"] == []


def test_a_specific_consent_decodes_with_its_studies_requesters_and_disease() -> None:
    studies, requesters = (b"\x03" * 32, b"\x04" * 32), (b"\x05" * 32,)
    disease = b"MONDO:0007254".ljust(32, b"\0")
    event = DECODER.decode(
        consent_log([7], studies=studies, requesters=requesters, disease=disease)
    )
    terms = event.args["terms"]
    assert terms["studies"] == ["0x" + s.hex() for s in studies]
    assert terms["requesters"] == ["0x" + "05" * 32]
    assert terms["diseaseCode"] == "0x" + disease.hex()
    assert json.loads(event.args_json) == event.args


def reference(spec_contract: str, event: str, data: bytes) -> dict[str, Any] | Exception:
    """What eth-abi makes of the data part (the reference the fast path is held to)."""
    abi = abi_of(spec_contract, event)
    params = [p for p in abi["inputs"] if not p["indexed"]]
    try:
        values = abi_decode([canonical(p) for p in params], data, strict=True)
    except (DecodingError, ValueError, OverflowError) as exc:
        return exc
    return {p["name"]: _plain(p, v) for p, v in zip(params, values, strict=True)}


@settings(max_examples=200, deadline=None)
@given(
    duo=st.lists(st.integers(0, 2**32 - 1), max_size=4),
    cut=st.integers(0, 400),
    at=st.integers(0, 400),
    byte=st.integers(0, 255),
    mode=st.sampled_from(["flip", "truncate", "extend", "keep"]),
)
def test_malformed_consents_are_refused_exactly_when_eth_abi_refuses(
    duo: list[int], cut: int, at: int, byte: int, mode: str
) -> None:
    data = bytearray(bytes.fromhex(consent_log(duo)["data"][2:]))
    if mode == "flip" and data:
        data[at % len(data)] = byte
    elif mode == "truncate":
        data = data[: cut % (len(data) + 1)]
    elif mode == "extend":
        data += bytes([byte]) * (cut % 64)
    expected = reference("ConsentRegistry", "ConsentRecorded", bytes(data))
    log = consent_log(duo, data="0x" + data.hex())
    if isinstance(expected, Exception):
        with pytest.raises(EventDecodeError):
            DECODER.decode(log)
        return
    decoded = DECODER.decode(log)
    assert {k: decoded.args[k] for k in expected} == expected
    assert json.loads(decoded.args_json) == decoded.args


def test_a_huge_array_length_is_refused_without_allocating() -> None:
    data = bytes.fromhex(consent_log([1])["data"][2:])
    # word 2 of the tuple head is at 0x40 + 3*32: the duoCodes offset; its length word follows
    offset = 64 + int.from_bytes(data[64 + 96 : 64 + 128], "big")
    forged = data[:offset] + (2**255).to_bytes(32, "big") + data[offset + 32 :]
    with pytest.raises(EventDecodeError):
        DECODER.decode(consent_log([1], data="0x" + forged.hex()))


# --- projection -------------------------------------------------------------------------------


def static_log(event: str, values: dict[str, Any]) -> dict[str, Any]:
    from eth_abi.abi import encode

    spec = DECODER.spec_for("ConsentRegistry", event)
    abi = abi_of("ConsentRegistry", event)
    topics, types, data = [spec.topic0], [], []
    for param in abi["inputs"]:
        if param["indexed"]:
            topics.append("0x" + encode([canonical(param)], [values[param["name"]]]).hex())
        else:
            types.append(canonical(param))
            data.append(values[param["name"]])
    return log_of("ConsentRegistry", topics, "0x" + encode(types, data).hex())


def test_registry_events_project_into_their_tables() -> None:
    code, holder, grantee, subject = b"\x0c" * 32, b"\x01" * 32, b"\x03" * 32, b"\x02" * 32
    grant = (holder, subject, grantee, b"\x04" * 32, 6, 3, 4, 1, 99, False, bytes(32))
    events = [
        DECODER.decode(consent_log([42])),
        DECODER.decode(static_log("ConsentWithdrawn", {
            "consentId": b"\x0a" * 32, "holder": holder, "subject": subject,
            "by": "0x" + "09" * 20, "bySubject": True})),
        DECODER.decode(static_log("AuthorizationIssued", {
            "codeHash": code, "holder": holder, "grantee": grantee, "authorization": grant,
            "issuer": "0x" + "05" * 20, "bySubject": True})),
        DECODER.decode(static_log("AuthorizationRedeemed", {
            "codeHash": code, "accessId": b"\x0d" * 32, "grantee": grantee})),
        DECODER.decode(static_log("AuthorizationRevoked", {
            "codeHash": code, "holder": holder, "by": "0x" + "06" * 20, "bySubject": False})),
        DECODER.decode(static_log("SubjectKeyRegistered", {
            "holder": holder, "subject": subject, "key": "0x" + "07" * 20,
            "previous": "0x" + "00" * 20, "by": "0x" + "08" * 20})),
    ]  # fmt: skip
    page = project(events)
    (consent,) = page.rows["consent"]
    assert consent[:9] == (
        "0x" + "0a" * 32, "0x" + "01" * 32, "0x" + "02" * 32, 2, "[42]", 5, 2**64 - 1,
        "0x" + "07" * 20, "0x" + "08" * 20,
    )  # fmt: skip
    assert consent[9] == ConsentStatus.GRANTED
    (withdrawal,) = page.rows["consent_withdrawal"]
    assert withdrawal[3] == "0x" + "0a" * 32
    assert withdrawal[7] is True
    (issued,) = page.rows["patient_authorization"]
    assert issued[:9] == (
        "0x" + "0c" * 32, "0x" + "01" * 32, "0x" + "02" * 32, "0x" + "03" * 32,
        "0x" + "04" * 32, "0x6", 3, 4, 99,
    )  # fmt: skip
    assert issued[9:11] == ("0x" + "05" * 20, True)  # issued by the patient's key
    assert issued[11] == AuthorizationStatus.ISSUED
    assert page.rows["authorization_redemption"][0][3:5] == ("0x" + "0c" * 32, "0x" + "0d" * 32)
    assert page.rows["authorization_revocation"][0][3:7] == (
        "0x" + "0c" * 32, "0x" + "01" * 32, "0x" + "06" * 20, False,
    )  # fmt: skip
    assert page.rows["subject_key"][0][3:8] == (
        "0x" + "01" * 32, "0x" + "02" * 32, "0x" + "07" * 20, "0x" + "00" * 20, "0x" + "08" * 20,
    )  # fmt: skip
    assert page.consents == {"0x" + "0a" * 32}
    assert page.authorizations == {"0x" + "0c" * 32}


# --- cohort rows and proofs ------------------------------------------------------------------


def subjects(n: int, salt: int = 0) -> list[bytes]:
    return [leaf_hash(f"{salt}-{i}".encode()) for i in range(n)]


@pytest.mark.parametrize("size", [*range(1, 34), 100, 257, 1000])
def test_precomputed_paths_are_the_trees_proofs(size: int) -> None:
    tree = CohortTree.build(subjects(size))
    paths = audit_paths(tree)
    assert paths == [b"".join(tree.proof(i)) for i in range(size)]


def access_for(tree: CohortTree, **changes: Any) -> CohortAccess:
    values = {"block_number": 7, "tx_index": 0, "log_index": 2, "access_id": "0x" + "aa" * 32,
              "root": "0x" + tree.root.hex(), "size": tree.size, **changes}  # fmt: skip
    return CohortAccess(**values)


def test_a_verified_cohort_stores_every_member_with_a_proof_of_the_root() -> None:
    people = subjects(37)
    tree = CohortTree.build(people)
    rows = cohort_rows(access_for(tree), list(reversed(people)), "hospital-a")
    assert rows.status((7, 0, 2)) == CohortStatus.VERIFIED.value
    assert len(rows.members) == 37
    for b, t, i, index, subject, access_id, proof in rows.members:
        assert (b, t, i, access_id) == (7, 0, 2, "0x" + "aa" * 32)
        siblings = [bytes.fromhex(p[2:]) for p in split_proof(proof)]
        assert verify_inclusion(tree.root, 37, index, bytes.fromhex(subject[2:]), siblings)


def test_leaves_of_another_root_store_no_member() -> None:
    tree = CohortTree.build(subjects(5))
    rows = cohort_rows(access_for(tree), subjects(5, salt=1), "hospital-a")
    (row,) = rows.cohorts.values()
    assert row[4] == CohortStatus.ROOT_MISMATCH.value
    assert row[6] == 5
    assert row[7] == "0x" + CohortTree.build(subjects(5, salt=1)).root.hex()
    assert rows.members == []
    bigger = cohort_rows(access_for(tree, size=6), subjects(5), "hospital-a")
    assert bigger.status((7, 0, 2)) == CohortStatus.ROOT_MISMATCH.value
    assert cohort_rows(access_for(tree), [], "x").status((7, 0, 2)) == "root_mismatch"


def test_a_cohort_of_one_comes_from_its_authorization() -> None:
    alice = subjects(1)[0]
    access = CohortAccess(3, 1, 4, "0x" + "bb" * 32, "0x" + leaf_hash(alice).hex(), 1)
    rows = authorization_rows(access, "0x" + alice.hex())
    assert rows is not None
    assert rows.members == [(3, 1, 4, 0, "0x" + alice.hex(), "0x" + "bb" * 32, b"")]
    assert authorization_rows(access, "0x" + subjects(1, salt=9)[0].hex()) is None


# --- the hospital's cohort store ---------------------------------------------------------------


def cohort_store(path: Path, cohorts: dict[bytes, list[bytes]]) -> str:
    with sqlite3.connect(path) as db:
        db.execute(COHORT_LEAVES_DDL)
        for access_id, members in cohorts.items():
            tree = CohortTree.build(members)
            db.execute(
                "INSERT INTO cohort_leaves VALUES (?, ?, ?, ?)",
                (access_id, tree.root, tree.size, b"".join(tree.subjects)),
            )
    return f"sqlite:///{path}"


def test_a_source_reads_leaves_one_or_many(tmp_path: Path) -> None:
    first, second = b"\x01" * 32, b"\x02" * 32
    url = cohort_store(tmp_path / "gateway.db", {first: subjects(3), second: subjects(2, 1)})
    source = SqlCohortSource(url)
    got = source.leaves(first)
    assert got is not None
    root, size, leaves = got
    assert (root, size, sorted(leaves)) == (CohortTree.build(subjects(3)).root, 3,
                                            sorted(subjects(3)))  # fmt: skip
    assert source.leaves(b"\x03" * 32) is None
    many = source.leaves_many([first, second, b"\x03" * 32])
    assert set(many) == {first, second}
    source.close()


def test_the_source_never_writes_and_an_unreadable_one_holds_nothing(tmp_path: Path) -> None:
    dul_log.configure("INFO")  # an in-process CLI test before this one may have left WARNING
    missing = tmp_path / "none" / "gateway.db"
    source = SqlCohortSource(f"sqlite:///{missing}")
    with structlog.testing.capture_logs() as logs:
        assert source.leaves(b"\x01" * 32) is None
        assert source.leaves_many([b"\x01" * 32]) == {}
    assert not missing.exists()
    assert [e["event"] for e in logs] == ["audit.cohort_source_unavailable"]  # once per outage
    no_table = tmp_path / "empty.db"
    sqlite3.connect(no_table).close()
    assert SqlCohortSource(f"sqlite:///{no_table}").leaves(b"\x01" * 32) is None
    # the gateway's store appears: the same source reads it (and says so)
    missing.parent.mkdir()
    cohort_store(missing, {b"\x01" * 32: subjects(2)})
    with structlog.testing.capture_logs() as logs:
        assert source.leaves(b"\x01" * 32) is not None
    assert [e["event"] for e in logs] == ["audit.cohort_source_back"]
    with sqlite3.connect(missing) as db:
        before = db.execute("SELECT count(*) FROM cohort_leaves").fetchone()
    assert before == (1,)


def test_resolve_marks_what_no_source_holds(tmp_path: Path) -> None:
    held, lost = b"\x01" * 32, b"\x02" * 32
    tree = CohortTree.build(subjects(4))
    url = cohort_store(tmp_path / "a.db", {held: subjects(4)})
    accesses = [access_for(tree, access_id="0x" + held.hex()),
                access_for(tree, access_id="0x" + lost.hex(), log_index=3)]  # fmt: skip
    rows = resolve([SqlCohortSource(url)], accesses)
    assert rows.status((7, 0, 2)) == CohortStatus.VERIFIED.value
    assert rows.status((7, 0, 3)) == CohortStatus.LEAVES_UNAVAILABLE.value
    assert len(rows.members) == 4
    assert resolve([], accesses).cohorts == {}


def test_one_request_id_at_two_hospitals_takes_each_hospitals_own_cohort(tmp_path: Path) -> None:
    """A request id names one access per agreement: two hospitals' stores may both hold it,
    each with its own cohort. Each access gets the leaves whose tree head it recorded, in a
    page holding both and in pages holding one, whichever store is asked first."""
    same = b"\x07" * 32
    at_a, at_b = subjects(3), subjects(5, salt=2)
    tree_a, tree_b = CohortTree.build(at_a), CohortTree.build(at_b)
    store_a = SqlCohortSource(cohort_store(tmp_path / "a.db", {same: at_a}), name="hospital-a")
    store_b = SqlCohortSource(cohort_store(tmp_path / "b.db", {same: at_b}), name="hospital-b")
    access_a = access_for(tree_a, access_id="0x" + same.hex())
    access_b = access_for(tree_b, access_id="0x" + same.hex(), log_index=3)
    for sources in ([store_a, store_b], [store_b, store_a]):
        rows = resolve(sources, [access_a, access_b])
        assert rows.status((7, 0, 2)) == rows.status((7, 0, 3)) == CohortStatus.VERIFIED.value
        assert rows.cohorts[7, 0, 2][5] == "hospital-a"
        assert rows.cohorts[7, 0, 3][5] == "hospital-b"
        assert len(rows.members) == 8
        alone = resolve(sources, [access_b])
        assert alone.status((7, 0, 3)) == CohortStatus.VERIFIED.value
        assert alone.cohorts[7, 0, 3][5] == "hospital-b"


# --- when a consent covered an access ------------------------------------------------------


HOLDER = "0x" + "01" * 32
RESEARCH = 1


def consent(**changes: Any) -> ConsentFacts:
    values: dict[str, Any] = {
        "consent_id": "0xc0", "holder": HOLDER, "scenarios": 0b10, "valid_from": 1_000,
        "valid_until": 2_000, "recorded_at": (10, 0, 0), **changes,
    }  # fmt: skip
    return ConsentFacts(**values)


def covered(c: ConsentFacts, *, at: tuple[int, int, int] = (20, 0, 0), time: int | None = 1_500,
            lag: float = 60, holder: str = HOLDER, scenario: int = RESEARCH) -> bool:  # fmt: skip
    return covers(c, holder=holder, scenario=scenario, position=at, timestamp=time, lag=lag)


def test_a_granted_consent_covers_its_scenario_holder_and_window() -> None:
    assert covered(consent())
    assert not covered(consent(), scenario=2)
    assert not covered(consent(), holder="0x" + "02" * 32)
    assert not covered(consent(recorded_at=(20, 0, 1)))  # recorded after the access
    assert not covered(consent(), time=999)  # before its window
    assert covered(consent(), time=2_050)  # expired 50 s before: within the lag
    assert not covered(consent(), time=2_061)
    assert covered(consent(), time=None)  # no block times: chain order only


def test_a_withdrawal_counts_once_the_lag_has_passed() -> None:
    withdrawn = consent(withdrawn_at=(19, 0, 0), withdrawn_time=1_480)
    assert covered(withdrawn, time=1_500)  # 20 s: the gateway may not have seen it
    assert not covered(withdrawn, time=1_540)  # exactly the lag: it had
    assert not covered(withdrawn, time=1_500, lag=0)
    assert covered(consent(withdrawn_at=(21, 0, 0), withdrawn_time=1_600))  # withdrawn after
    assert not covered(consent(withdrawn_at=(19, 0, 0), withdrawn_time=None), time=1_500)


STUDY_A, STUDY_B = "0x" + "a1" * 32, "0x" + "b2" * 32
INSTITUTE, INSURER = "0x" + "1a" * 32, "0x" + "1b" * 32
CANCER = "0x" + b"MONDO:0007254".ljust(32, b"\0").hex()


def covered_in(c: ConsentFacts, study: StudyFacts) -> bool:
    return covers(c, holder=HOLDER, scenario=RESEARCH, position=(20, 0, 0), timestamp=1_500,
                  lag=60, study=study)  # fmt: skip


def test_a_specific_consent_covers_only_its_studies_requesters_and_disease() -> None:
    a_study = StudyFacts(STUDY_A, INSTITUTE)
    assert covered_in(consent(studies=(STUDY_A,)), a_study)
    assert not covered_in(consent(studies=(STUDY_A,)), StudyFacts(STUDY_B, INSTITUTE))
    assert not covered(consent(studies=(STUDY_A,)))  # no study known: a specific one is out
    assert covered_in(consent(requesters=(INSTITUTE,)), StudyFacts(STUDY_B, INSTITUTE))
    assert not covered_in(consent(requesters=(INSTITUTE,)), StudyFacts(STUDY_A, INSURER))
    assert covered_in(consent(disease_code=CANCER), StudyFacts(STUDY_A, INSTITUTE, CANCER))
    assert not covered_in(consent(disease_code=CANCER), a_study)  # the study names no disease
    assert covered_in(consent(), StudyFacts(STUDY_A, INSTITUTE, CANCER))  # general: any study


# --- FHIR -------------------------------------------------------------------------------------


def node(type_: str, **attributes: Any) -> Node:
    return Node(
        id=f"{type_}:x", type=type_, prov="entity", label=type_,
        chain=ChainRef(block=5, tx_index=0, log_index=1, tx_hash="0x" + "ee" * 32),
        attributes=attributes,
    )  # fmt: skip


def test_a_consent_becomes_a_fhir_consent() -> None:
    from fhir.resources.R4B.consent import Consent

    resource = _consent_resource(
        node("consent", consent_id="0x" + "c1" * 32, subject_ref="0x" + "5a" * 32,
             holder_org=HOLDER, status="GRANTED", scenarios=["CLINICAL_CARE"],
             duo_codes=["DUO:0000043"], valid_from=1_700_000_000, valid_until=2**64 - 1),
        {5: 1_700_000_100},
    )  # fmt: skip
    parsed = Consent.model_validate_json(resource.model_dump_json())
    assert parsed.status == "active"
    assert parsed.scope.coding is not None
    assert parsed.scope.coding[0].code == "patient-privacy"  # care, not research
    assert parsed.provision is not None
    assert parsed.provision.period is not None
    assert parsed.provision.period.end is None  # valid "forever"
    purposes = {(c.system, c.code) for c in parsed.provision.purpose or []}
    assert ("http://purl.obolibrary.org/obo/duo.owl", "DUO:0000043") in purposes
    assert ("http://terminology.hl7.org/CodeSystem/v3-ActReason", "TREAT") in purposes
    assert parsed.patient is not None
    assert parsed.patient.identifier is not None
    assert parsed.patient.identifier.value == "0x" + "5a" * 32


def test_a_specific_consent_names_its_studies_recipients_and_disease_in_fhir() -> None:
    from fhir.resources.R4B.consent import Consent

    resource = _consent_resource(
        node("consent", consent_id="0x" + "c2" * 32, subject_ref="0x" + "5a" * 32,
             holder_org=HOLDER, status="GRANTED", scenarios=["RESEARCH"],
             duo_codes=["DUO:0000007"], studies=[STUDY_A], requesters=[INSTITUTE],
             disease="MONDO:0007254", valid_from=1_700_000_000, valid_until=1_800_000_000),
        {5: 1_700_000_100},
    )  # fmt: skip
    parsed = Consent.model_validate_json(resource.model_dump_json())
    provision = parsed.provision
    assert provision is not None
    assert STUDY_A in {c.code for c in provision.purpose or []}
    assert provision.actor is not None
    [recipient] = provision.actor
    assert recipient.reference.identifier is not None
    assert recipient.reference.identifier.value == INSTITUTE
    assert provision.code is not None
    assert [c.code for c in provision.code[0].coding or []] == ["MONDO:0007254"]
    general = _consent_resource(
        node("consent", consent_id="0x" + "c3" * 32, subject_ref="0x" + "5a" * 32,
             holder_org=HOLDER, status="GRANTED", scenarios=["RESEARCH"], duo_codes=[],
             valid_from=1, valid_until=2),
        {},
    )  # fmt: skip
    assert general.provision is not None
    assert (general.provision.actor, general.provision.code) == (None, None)


def test_an_authorization_code_becomes_a_disclosure_consent() -> None:
    resource = _authorization_resource(
        node("authorization", code_hash="0x" + "c2" * 32, subject_ref="0x" + "5a" * 32,
             holder_org=HOLDER, grantee_org="0x" + "03" * 32, status="REDEEMED",
             scenario="INSURANCE_CLAIM", expires_at=1_800_000_000,
             redeemed_by_access="0x" + "ac" * 32),
        {},
    )  # fmt: skip
    assert resource.status == "inactive"
    provision = resource.provision
    assert provision is not None
    assert provision.actor is not None
    assert provision.actor[0].reference.identifier is not None
    assert provision.actor[0].reference.identifier.value == "0x" + "03" * 32
    assert provision.data is not None
    assert provision.data[0].reference.identifier is not None
    assert provision.data[0].reference.identifier.value == "0x" + "ac" * 32

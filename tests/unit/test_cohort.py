"""Cohort trees: `dul/cohort.py` is RFC 9162, and the chain agrees with it.

(a) The committed vectors in `solidity/test/vectors/cohort.json`, which the Hardhat suite
(`solidity/test/CohortTree.test.js`) checks against `ConsentRegistry.cohortIncludes`, must equal
what `dul.cohort` produces now; regenerate them with `DUL_WRITE_VECTORS=1 pytest
tests/unit/test_cohort.py`.
(b) `dul.cohort` is held to a direct, recursive transcription of RFC 9162 §2.1.1 (MTH) and
§2.1.3.1 (PATH).
"""

from __future__ import annotations

import json
import os
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dul.cohort import CohortTree, canonical, cohort_root, leaf_hash, verify_inclusion

VECTORS = Path(__file__).resolve().parents[2] / "solidity/test/vectors/cohort.json"
SMALL_SIZES = range(1, 18)
LARGE_SIZE = 1000
LARGE_INDEXES = (0, 1, 2, 255, 256, 499, 500, 511, 512, 767, 768, 991, 992, 998, 999)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def subjects(count: int) -> list[bytes]:
    """`count` deterministic subject references (hashes, as real ones are)."""
    return [sha256(f"dul cohort vector subject {i}".encode()).digest() for i in range(count)]


def _inclusion(tree: CohortTree, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "subject": _hex(tree.subjects[index]),
        "proof": [_hex(p) for p in tree.proof(index)],
    }


def _negatives() -> list[dict[str, Any]]:
    """Inclusion claims that must fail: each is a valid proof with one thing wrong."""
    outsider = sha256(b"dul cohort vector outsider").digest()
    cases: list[dict[str, Any]] = []

    def add(
        name: str, root: bytes, size: int, index: int, subject: bytes, proof: list[bytes]
    ) -> None:
        if verify_inclusion(root, size, index, subject, proof):
            return  # e.g. another size with the same path shape: not a negative case
        cases.append(
            {
                "case": name,
                "root": _hex(root),
                "size": size,
                "index": index,
                "subject": _hex(subject),
                "proof": [_hex(p) for p in proof],
            }
        )

    claims = ((1, 0), (2, 1), (7, 0), (7, 5), (7, 6), (16, 9), (17, 16), (LARGE_SIZE, 777))
    for size, index in claims:
        tree = CohortTree.build(subjects(size))
        root, subject, proof = tree.root, tree.subjects[index], tree.proof(index)
        at = f"size {size} index {index}"
        add(f"{at}: index = size", root, size, size, subject, proof)
        add(f"{at}: index beyond size", root, size, size + 5, subject, proof)
        add(f"{at}: size zero", root, 0, index, subject, proof)
        if size > 1:
            add(f"{at}: another index", root, size, (index + 1) % size, subject, proof)
            neighbour = tree.subjects[index - 1]
            add(f"{at}: another member's subject", root, size, index, neighbour, proof)
            add(f"{at}: proof without its last node", root, size, index, subject, proof[:-1])
            add(f"{at}: proof without its first node", root, size, index, subject, proof[1:])
            add(f"{at}: empty proof", root, size, index, subject, [])
            flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]
            add(f"{at}: first sibling altered", root, size, index, subject, [flipped, *proof[1:]])
            add(f"{at}: proof reversed", root, size, index, subject, proof[::-1])
            add(f"{at}: size minus one", root, size - 1, index, subject, proof)
        add(f"{at}: a subject outside the cohort", root, size, index, outsider, proof)
        leaf = leaf_hash(subject)
        add(f"{at}: the leaf hash given as the subject", root, size, index, leaf, proof)
        add(f"{at}: proof with an extra node", root, size, index, subject, [*proof, root])
        add(f"{at}: size plus one", root, size + 1, index, subject, proof)
        add(f"{at}: size doubled", root, size * 2, index, subject, proof)
        add(f"{at}: another root", bytes([root[0] ^ 0x80]) + root[1:], size, index, subject, proof)
        add(f"{at}: the zero root", bytes(32), size, index, subject, proof)
    return cases


def cohort_vectors() -> dict[str, Any]:
    trees = []
    for size in (*SMALL_SIZES, LARGE_SIZE):
        tree = CohortTree.build(subjects(size))
        indexes = range(size) if size in SMALL_SIZES else LARGE_INDEXES
        trees.append(
            {
                "size": size,
                "root": _hex(tree.root),
                "inclusions": [_inclusion(tree, i) for i in indexes],
            }
        )
    return {
        "format": "dul-cohort-vectors-1",
        "about": (
            "RFC 9162 cohort trees from dul/cohort.py: leaf sha256(0x00||subject) over subjects in "
            "ascending order, node sha256(0x01||left||right). Every inclusion verifies; every "
            "negative case does not. Generated by tests/unit/test_cohort.py."
        ),
        "trees": trees,
        "negative": _negatives(),
    }


def test_committed_vectors_match_python() -> None:
    vectors = cohort_vectors()
    text = json.dumps(vectors, indent=1) + "\n"
    if os.environ.get("DUL_WRITE_VECTORS") == "1":
        VECTORS.write_text(text)
    assert VECTORS.exists(), f"{VECTORS} missing: run DUL_WRITE_VECTORS=1 pytest {__file__}"
    assert json.loads(VECTORS.read_text()) == vectors, "cohort.json drifted from dul/cohort.py"


def test_vectors_hold_what_they_claim() -> None:
    vectors = cohort_vectors()
    sizes = [tree["size"] for tree in vectors["trees"]]
    assert sizes == [*SMALL_SIZES, LARGE_SIZE]
    for tree in vectors["trees"]:
        root = bytes.fromhex(tree["root"][2:])
        for inc in tree["inclusions"]:
            proof = [bytes.fromhex(p[2:]) for p in inc["proof"]]
            subject = bytes.fromhex(inc["subject"][2:])
            assert verify_inclusion(root, tree["size"], inc["index"], subject, proof)
    assert len(vectors["negative"]) >= 100
    names = {case["case"].split(": ", 1)[1] for case in vectors["negative"]}
    assert {"index = size", "size zero", "another index", "proof with an extra node"} <= names


# --- RFC 9162 by the letter ----------------------------------------------------------------


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 Merkle Tree Hash over the leaf inputs `leaves`."""
    n = len(leaves)
    if n == 0:
        return sha256(b"").digest()
    if n == 1:
        return sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two smaller than n
    return sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]): the audit path of leaf m, bottom up."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


cohorts = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(cohort=cohorts)
def test_root_and_every_proof_are_rfc_9162(cohort: list[bytes]) -> None:
    ordered = canonical(cohort)
    tree = CohortTree.build(cohort)
    assert tree.root == _mth(ordered)
    assert cohort_root(cohort) == (tree.root, len(ordered))
    for index, subject in enumerate(ordered):
        assert tree.index(subject) == index
        proof = tree.proof(index)
        assert proof == _path(index, ordered)
        assert verify_inclusion(tree.root, tree.size, index, subject, proof)


@settings(max_examples=150, deadline=None)
@given(cohort=cohorts, data=st.data())
def test_a_wrong_claim_never_verifies(cohort: list[bytes], data: st.DataObject) -> None:
    tree = CohortTree.build(cohort)
    index = data.draw(st.integers(0, tree.size - 1))
    subject, proof = tree.subjects[index], tree.proof(index)
    if tree.size > 1:
        other = data.draw(st.integers(0, tree.size - 1).filter(lambda i: i != index))
        assert not verify_inclusion(tree.root, tree.size, other, subject, proof)
        assert not verify_inclusion(tree.root, tree.size, index, tree.subjects[other], proof)
        at = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        node = bytearray(proof[at])
        node[bit // 8] ^= 1 << (bit % 8)
        altered = [*proof[:at], bytes(node), *proof[at + 1 :]]
        assert not verify_inclusion(tree.root, tree.size, index, subject, altered)
        assert not verify_inclusion(tree.root, tree.size, index, subject, proof[:-1])
    assert not verify_inclusion(tree.root, tree.size, index, subject, [*proof, tree.root])
    assert not verify_inclusion(tree.root, tree.size, tree.size, subject, proof)
    assert not verify_inclusion(tree.root, 0, index, subject, proof)


@given(cohort=cohorts, order=st.randoms(use_true_random=False))
def test_the_root_depends_only_on_the_set(cohort: list[bytes], order: Any) -> None:
    shuffled = [*cohort, *cohort[:3]]
    order.shuffle(shuffled)
    assert cohort_root(shuffled) == cohort_root(cohort)


def test_an_empty_cohort_and_an_outsider_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one subject"):
        CohortTree.build([])
    tree = CohortTree.build(subjects(5))
    with pytest.raises(ValueError, match="not in cohort"):
        tree.index(b"\xff" * 32)
    with pytest.raises(IndexError):
        tree.proof(5)

/*
 * Cohort trees on chain agree with dul/cohort.py: every inclusion in the committed vectors
 * verifies through ConsentRegistry.cohortIncludes (CohortTree.verifyInclusion), every negative
 * case does not.
 *
 * File: solidity/test/vectors/cohort.json (committed; tests/unit/test_cohort.py keeps it equal to
 * what Python produces). Format:
 *   {
 *     "format": "dul-cohort-vectors-1",
 *     "trees": [ { "size": 7, "root": "0x..",
 *                  "inclusions": [ { "index": 0, "subject": "0x..", "proof": ["0x..", ...] } ] } ],
 *     "negative": [ { "case": "...", "root": "0x..", "size": 7, "index": 0, "subject": "0x..",
 *                     "proof": [...] } ]
 *   }
 * Sizes 1..17 with every index, and 1000 with some; leaves sha256(0x00 || subject) in ascending
 * subject order, nodes sha256(0x01 || left || right) (RFC 9162).
 */
const fs = require("node:fs");
const path = require("node:path");
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployFixture, leafOf } = require("./helpers/fixtures");

const vectors = JSON.parse(fs.readFileSync(path.join(__dirname, "vectors", "cohort.json"), "utf8"));

describe("CohortTree (RFC 9162 cohort inclusion, vectors from dul/cohort.py)", function () {
  it("reads the vector format it knows, with sizes 1..17 and 1000", function () {
    expect(vectors.format).to.equal("dul-cohort-vectors-1");
    expect(vectors.trees.map((t) => t.size)).to.deep.equal([...Array.from({ length: 17 }, (_, i) => i + 1), 1000]);
  });

  it("hashes a cohort of one to its leaf", async function () {
    const { consents } = await loadFixture(deployFixture);
    const [one] = vectors.trees;
    const { subject } = one.inclusions[0];
    expect(one.root).to.equal(leafOf(subject));
    expect(await consents.cohortIncludes(one.root, 1, 0, subject, [])).to.equal(true);
  });

  for (const tree of vectors.trees) {
    it(`verifies ${tree.inclusions.length} inclusion(s) in a cohort of ${tree.size}`, async function () {
      const { consents } = await loadFixture(deployFixture);
      for (const { index, subject, proof } of tree.inclusions) {
        expect(await consents.cohortIncludes(tree.root, tree.size, index, subject, proof), `index ${index}`).to.equal(true);
      }
    });
  }

  it(`refuses all ${vectors.negative.length} negative cases`, async function () {
    const { consents } = await loadFixture(deployFixture);
    for (const c of vectors.negative) {
      expect(await consents.cohortIncludes(c.root, c.size, c.index, c.subject, c.proof), c.case).to.equal(false);
    }
  });

  it("refuses an index and a size beyond 2^64 without overflowing", async function () {
    const { consents } = await loadFixture(deployFixture);
    const tree = vectors.trees[6];
    const { index, subject, proof } = tree.inclusions[3];
    expect(await consents.cohortIncludes(tree.root, ethers.MaxUint256, index, subject, proof)).to.equal(false);
    expect(await consents.cohortIncludes(tree.root, tree.size, ethers.MaxUint256, subject, proof)).to.equal(false);
  });
});

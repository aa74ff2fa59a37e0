const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { ArtifactKind, DenyReason, Operation, ReleaseKind, Role, Tier } = require("./helpers/enums");
const {
  CLINIC,
  ORG,
  activate,
  deniedRecord,
  federatedFixture,
  researchTerms,
  signed,
  signedGranted,
  sortIds,
  sortReleases,
  tag,
  trainAndRelease,
} = require("./helpers/fixtures");
const { ZERO32 } = require("./helpers/typed-data");
const { shouldBeDisabledBySuspension } = require("./helpers/membership.behavior");

const MAX_PARENTS = 256;
const METADATA = tag("metadata:model-card:chest-xray-cnn");
const MODEL_V1 = tag("model:chest-xray-cnn:v1");
const MODEL_V2 = tag("model:chest-xray-cnn:v2");
const TX_GAS_CAP = 2n ** 24n; // EIP-7825

const update = (round, site) => tag(`model-update:chest-xray-cnn:round-${round}:site-${site}`);

/** A predicate for `withArgs`: the event's ReleaseRef[] is exactly `expected`, in order. */
function sameReleases(expected) {
  return (actual) => {
    expect(actual.length, "release count").to.equal(expected.length);
    expected.forEach((release, i) => {
      expect(actual[i].accessId, `releases[${i}].accessId`).to.equal(release.accessId);
      expect(actual[i].agreementId, `releases[${i}].agreementId`).to.equal(release.agreementId);
      expect(actual[i].resultHash, `releases[${i}].resultHash`).to.equal(release.resultHash);
    });
    return true;
  };
}

/** A predicate for `withArgs`: the event's bytes32[] is exactly `expected`, in order. */
const sameIds = (expected) => (actual) => {
  expect([...actual]).to.deep.equal(expected);
  return true;
};

/** The federated fixture with one MODEL_UPDATE released to the AI company by St. Mary. */
async function releasedUpdateFixture() {
  const ctx = await federatedFixture();
  const release = await trainAndRelease(ctx, ctx.sites[0], update(1, 0));
  return { ...ctx, release };
}

/** Round 1 at all three hospitals, each update registered by the AI company as a MODEL_UPDATE. */
async function registeredUpdatesFixture() {
  const ctx = await federatedFixture();
  const releases = [];
  for (const [i, site] of ctx.sites.entries()) releases.push(await trainAndRelease(ctx, site, update(1, i)));
  const registry = ctx.artifactRegistry.connect(ctx.aiRequester);
  for (const release of releases) {
    await registry.registerArtifact(release.resultHash, ArtifactKind.MODEL_UPDATE, [release], [], ZERO32);
  }
  return { ...ctx, releases, updates: releases.map((r) => r.resultHash) };
}

const register = (ctx, { id, kind = ArtifactKind.MODEL, releases = [], parents = [], metadata = ZERO32, by } = {}) =>
  ctx.artifactRegistry.connect(by ?? ctx.aiRequester).registerArtifact(id, kind, releases, parents, metadata);

/** Registers and expects its ArtifactRegistered event, owned by `owner`, with every argument. */
async function expectRegistered(ctx, registration, owner = ORG.AI_COMPANY) {
  const { id, kind = ArtifactKind.MODEL, releases = [], parents = [], metadata = ZERO32, by } = registration;
  await expect(register(ctx, registration))
    .to.emit(ctx.artifactRegistry, "ArtifactRegistered")
    .withArgs(id, owner, kind, sameReleases(releases), sameIds(parents), metadata, (by ?? ctx.aiRequester).address);
}

/** Expects the registration to revert with `errorName(...args)` and to leave `id` unregistered. */
async function expectRefused(ctx, registration, errorName, args) {
  await expect(register(ctx, registration))
    .to.be.revertedWithCustomError(ctx.artifactRegistry, errorName)
    .withArgs(...args);
  if (registration.id !== ZERO32) expect(await ctx.artifactRegistry.isRegistered(registration.id)).to.equal(false);
}

describe("ArtifactRegistry", function () {
  it("knows its membership, agreement registry and access log and takes up to 256 parents of each kind", async function () {
    const { artifactRegistry, membership, agreements, accessLog } = await loadFixture(federatedFixture);
    expect(await artifactRegistry.MEMBERSHIP()).to.equal(await membership.getAddress());
    expect(await artifactRegistry.AGREEMENTS()).to.equal(await agreements.getAddress());
    expect(await artifactRegistry.ACCESS_LOG()).to.equal(await accessLog.getAddress());
    expect(await artifactRegistry.maxParents()).to.equal(MAX_PARENTS);
    expect(await artifactRegistry.MAX_PARENTS()).to.equal(MAX_PARENTS);
  });

  it("reports an unknown artifact as unregistered with a zero owner", async function () {
    const { artifactRegistry } = await loadFixture(federatedFixture);
    expect(await artifactRegistry.isRegistered(MODEL_V1)).to.equal(false);
    const stored = await artifactRegistry.artifact(MODEL_V1);
    expect(stored.owner).to.equal(ZERO32);
    expect(stored.registrant).to.equal(ethers.ZeroAddress);
  });

  describe("a federated model across three hospitals, two rounds", function () {
    it("registers each hospital's MODEL_UPDATE under its release's result hash, owned by the AI company", async function () {
      const ctx = await loadFixture(federatedFixture);
      const release = await trainAndRelease(ctx, ctx.sites[1], update(1, 1));
      await expectRegistered(ctx, { id: release.resultHash, kind: ArtifactKind.MODEL_UPDATE, releases: [release] });
      const stored = await ctx.artifactRegistry.artifact(release.resultHash);
      expect(stored.owner).to.equal(ORG.AI_COMPANY);
      expect(stored.kind).to.equal(ArtifactKind.MODEL_UPDATE);
      expect(stored.registrant).to.equal(ctx.aiRequester.address);
      expect(stored.registeredAt).to.equal(await time.latest());
      expect(stored.releaseCount).to.equal(1);
      expect(stored.parentCount).to.equal(0);
      expect(await ctx.artifactRegistry.isRegistered(release.resultHash)).to.equal(true);
    });

    it("registers MODEL v1 from round 1's updates and v2 from v1 and round 2's updates", async function () {
      const ctx = await loadFixture(registeredUpdatesFixture);
      const v1Parents = sortIds(ctx.updates);
      await expectRegistered(ctx, { id: MODEL_V1, parents: v1Parents, metadata: METADATA });

      const round2 = [];
      for (const [i, site] of ctx.sites.entries()) {
        const release = await trainAndRelease(ctx, site, update(2, i));
        await register(ctx, { id: release.resultHash, kind: ArtifactKind.MODEL_UPDATE, releases: [release] });
        round2.push(release.resultHash);
      }
      const v2Parents = sortIds([MODEL_V1, ...round2]);
      await expectRegistered(ctx, { id: MODEL_V2, parents: v2Parents, metadata: METADATA });
      const stored = await ctx.artifactRegistry.artifact(MODEL_V2);
      expect(stored.kind).to.equal(ArtifactKind.MODEL);
      expect(stored.releaseCount).to.equal(0);
      expect(stored.parentCount).to.equal(4);
    });

    it("lets a regulator trace MODEL v2 back to every hospital, agreement and access from the events alone", async function () {
      const ctx = await loadFixture(registeredUpdatesFixture);
      await register(ctx, { id: MODEL_V1, parents: sortIds(ctx.updates) });
      const round2 = [];
      for (const [i, site] of ctx.sites.entries()) {
        const release = await trainAndRelease(ctx, site, update(2, i));
        await register(ctx, { id: release.resultHash, kind: ArtifactKind.MODEL_UPDATE, releases: [release] });
        round2.push(release);
      }
      await register(ctx, { id: MODEL_V2, parents: sortIds([MODEL_V1, ...round2.map((r) => r.resultHash)]) });

      const registered = await ctx.artifactRegistry.queryFilter(ctx.artifactRegistry.filters.ArtifactRegistered());
      const byId = new Map(registered.map((event) => [event.args.artifactId, event.args]));
      const accesses = new Set();
      const agreementIds = new Set();
      const walk = (id) => {
        const args = byId.get(id);
        for (const release of args.releases) {
          accesses.add(release.accessId);
          agreementIds.add(release.agreementId);
        }
        for (const parent of args.parents) walk(parent);
      };
      walk(MODEL_V2);

      expect(accesses.size).to.equal(6);
      expect([...agreementIds].sort()).to.deep.equal(ctx.sites.map((s) => s.id).sort());
      const holders = [];
      for (const id of agreementIds) holders.push((await ctx.agreements.accessTerms(id)).holder);
      expect(holders.sort()).to.deep.equal([ORG.HOSPITAL, ORG.HOSPITAL_B, CLINIC.ORG].sort());
      // Each access is on the chain as granted by its hospital's gateway, with the requester's signature.
      const recorded = await ctx.accessLog.queryFilter(ctx.accessLog.filters.AccessRecorded());
      const recordedIds = new Set(recorded.map((event) => event.args.accessId));
      for (const accessId of accesses) expect(recordedIds.has(accessId), accessId).to.equal(true);
    });

    it("registers a MODEL from releases and artifacts at once", async function () {
      const ctx = await loadFixture(registeredUpdatesFixture);
      const fresh = await trainAndRelease(ctx, ctx.sites[2], update(2, 2));
      const parents = sortIds(ctx.updates.slice(0, 2));
      await expectRegistered(ctx, { id: MODEL_V1, releases: [fresh], parents });
    });

    it("takes two results released from one access, ordered by result hash", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const second = tag("model-update:chest-xray-cnn:round-1:site-0:epoch-2");
      await ctx.accessLog
        .connect(ctx.hospitalGateway)
        .releaseResult(ctx.release.accessId, ctx.release.agreementId, second, ReleaseKind.MODEL_UPDATE, 1);
      const releases = sortReleases([ctx.release, { ...ctx.release, resultHash: second }]);
      await expectRegistered(ctx, { id: MODEL_V1, releases });
    });

    it("takes one request id and one result released under two agreements: two accesses, two releases", async function () {
      const ctx = await loadFixture(federatedFixture);
      // The same federated round at two hospitals, named by one request id, each returning the
      // same update (e.g. a converged model): two accesses on chain, so two releases.
      const requestId = tag("request:federated-round-7");
      const result = update(7, "all");
      const releases = sortReleases([
        await trainAndRelease(ctx, ctx.sites[0], result, { requestId }),
        await trainAndRelease(ctx, ctx.sites[1], result, { requestId }),
      ]);
      expect(releases[0].agreementId).to.not.equal(releases[1].agreementId);
      await expectRegistered(ctx, { id: MODEL_V1, releases });
      expect((await ctx.artifactRegistry.artifact(MODEL_V1)).releaseCount).to.equal(2);
    });

    it("orders releases by agreement first: a lower access id under a higher agreement comes after", async function () {
      const ctx = await loadFixture(federatedFixture);
      const [low, high] = [...ctx.sites].sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
      const [lowId, highId] = sortIds([tag("request:a"), tag("request:b")]);
      // the higher request id under the lower agreement: the access order would be the reverse
      const first = await trainAndRelease(ctx, low, update(1, "low"), { requestId: highId });
      const second = await trainAndRelease(ctx, high, update(1, "high"), { requestId: lowId });
      await expectRefused(ctx, { id: MODEL_V1, releases: [second, first] }, "ArtifactRegistryUnorderedRelease", [
        first.accessId,
        first.agreementId,
        first.resultHash,
      ]);
      await expect(register(ctx, { id: MODEL_V1, releases: [first, second] })).to.emit(
        ctx.artifactRegistry,
        "ArtifactRegistered",
      );
    });

    it("still registers from a release whose agreement was revoked since: what left stays traceable", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      await ctx.agreements.connect(ctx.regulator).revoke(ctx.sites[0].id, tag("reason:audit"));
      await expect(register(ctx, { id: MODEL_V1, releases: [ctx.release] })).to.emit(
        ctx.artifactRegistry,
        "ArtifactRegistered",
      );
    });

    it("takes exactly 256 releases and 256 parent artifacts within the transaction gas cap", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const gateway = ctx.accessLog.connect(ctx.hospitalGateway);
      const releases = [ctx.release];
      for (let i = 1; i < MAX_PARENTS; i++) {
        const resultHash = tag(`model-update:epoch:${i}`);
        await gateway.releaseResult(ctx.release.accessId, ctx.release.agreementId, resultHash, ReleaseKind.MODEL_UPDATE, 1);
        releases.push({ ...ctx.release, resultHash });
      }
      const base = ctx.release.resultHash;
      await register(ctx, { id: base, kind: ArtifactKind.MODEL_UPDATE, releases: [ctx.release] });
      const parents = [base];
      for (let i = 1; i < MAX_PARENTS; i++) {
        const id = tag(`model:checkpoint:${i}`);
        await register(ctx, { id, parents: [base] });
        parents.push(id);
      }
      const tx = await register(ctx, { id: MODEL_V1, releases: sortReleases(releases), parents: sortIds(parents) });
      const receipt = await tx.wait();
      expect(receipt.gasUsed).to.be.lessThan(TX_GAS_CAP);
      const stored = await ctx.artifactRegistry.artifact(MODEL_V1);
      expect(stored.releaseCount).to.equal(MAX_PARENTS);
      expect(stored.parentCount).to.equal(MAX_PARENTS);
    });
  });

  describe("registrant", function () {
    for (const who of ["aiSteward", "hospitalGateway", "hospitalSteward", "regulator", "operator", "stranger"]) {
      it(`refuses a registration by the ${who}, not a requester of any organization`, async function () {
        const ctx = await loadFixture(releasedUpdateFixture);
        const signer = ctx[who];
        await expectRefused(ctx, { id: MODEL_V1, releases: [ctx.release], by: signer }, "ArtifactRegistryUnauthorizedRegistrant", [
          signer.address,
        ]);
      });
    }

    it("refuses a registration by a requester whose role was revoked", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      await ctx.membership.revokeMemberRole(ctx.aiRequester.address, Role.REQUESTER);
      await expectRefused(ctx, { id: MODEL_V1, releases: [ctx.release] }, "ArtifactRegistryUnauthorizedRegistrant", [
        ctx.aiRequester.address,
      ]);
    });

    describe("when the requester's organization is suspended", function () {
      shouldBeDisabledBySuspension(releasedUpdateFixture, {
        memberKey: "aiRequester",
        org: ORG.AI_COMPANY,
        call: (ctx, signer) => register(ctx, { id: MODEL_V1, releases: [ctx.release], by: signer }),
        contractKey: "artifactRegistry",
        errorName: "ArtifactRegistryUnauthorizedRegistrant",
        args: (ctx) => [ctx.aiRequester.address],
      });
    });
  });

  describe("artifact id", function () {
    it("refuses the zero id", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      await expectRefused(ctx, { id: ZERO32, releases: [ctx.release] }, "ArtifactRegistryInvalidArtifact", [ZERO32]);
    });

    it("refuses an id registered before, by the same or another organization, and keeps the first", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      await register(ctx, { id: MODEL_V1, releases: [ctx.release] });
      await expect(register(ctx, { id: MODEL_V1, releases: [ctx.release], kind: ArtifactKind.RESULT }))
        .to.be.revertedWithCustomError(ctx.artifactRegistry, "ArtifactRegistryInvalidArtifact")
        .withArgs(MODEL_V1);
      await expect(register(ctx, { id: MODEL_V1, parents: [MODEL_V1], by: ctx.instituteRequester }))
        .to.be.revertedWithCustomError(ctx.artifactRegistry, "ArtifactRegistryInvalidArtifact")
        .withArgs(MODEL_V1);
      const stored = await ctx.artifactRegistry.artifact(MODEL_V1);
      expect(stored.kind).to.equal(ArtifactKind.MODEL);
      expect(stored.owner).to.equal(ORG.AI_COMPANY);
    });

    it("refuses a kind outside ArtifactKind", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      await expect(register(ctx, { id: MODEL_V1, kind: 3, releases: [ctx.release] })).to.be.reverted;
    });
  });

  describe("parent counts", function () {
    const refs = (n) =>
      Array.from({ length: n }, (_, i) => ({ accessId: tag(`access:${i}`), agreementId: ZERO32, resultHash: ZERO32 }));
    const ids = (n) => Array.from({ length: n }, (_, i) => tag(`artifact:${i}`));

    it("refuses an artifact derived from nothing", async function () {
      const ctx = await loadFixture(federatedFixture);
      await expectRefused(ctx, { id: MODEL_V1 }, "ArtifactRegistryInvalidParentCount", [0, 0, MAX_PARENTS]);
    });

    it("refuses more than 256 releases", async function () {
      const ctx = await loadFixture(federatedFixture);
      await expectRefused(ctx, { id: MODEL_V1, releases: refs(257) }, "ArtifactRegistryInvalidParentCount", [
        257,
        0,
        MAX_PARENTS,
      ]);
    });

    it("refuses more than 256 parent artifacts", async function () {
      const ctx = await loadFixture(federatedFixture);
      await expectRefused(ctx, { id: MODEL_V1, parents: ids(257) }, "ArtifactRegistryInvalidParentCount", [
        0,
        257,
        MAX_PARENTS,
      ]);
    });
  });

  describe("releases", function () {
    it("refuses a release the registrant's organization did not receive", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      await expectRefused(
        ctx,
        { id: MODEL_V1, releases: [ctx.release], by: ctx.instituteRequester },
        "ArtifactRegistryReleaseNotReceived",
        [ctx.release.accessId, ORG.AI_COMPANY, ORG.INSTITUTE],
      );
    });

    it("refuses another organization's aggregate result among the registrant's own releases", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const researchId = await activate(ctx, researchTerms(ctx.now));
      const access = await signedGranted(ctx, { agreementId: researchId });
      await ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(access);
      const resultHash = tag("result:survival-curve.json");
      await ctx.accessLog
        .connect(ctx.hospitalGateway)
        .releaseResult(access.requestId, researchId, resultHash, ReleaseKind.AGGREGATE_RESULT, 1);
      const theirs = { accessId: access.requestId, agreementId: researchId, resultHash };
      await expectRefused(
        ctx,
        { id: MODEL_V1, releases: sortReleases([ctx.release, theirs]) },
        "ArtifactRegistryReleaseNotReceived",
        [access.requestId, ORG.INSTITUTE, ORG.AI_COMPANY],
      );
    });

    it("refuses a release from a denied access, which never released anything", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const site = ctx.sites[0];
      const denied = await signed(
        ctx,
        deniedRecord(ctx, DenyReason.TIER_ABOVE_CEILING, {
          agreementId: site.id,
          requester: ctx.aiRequester.address,
          tier: Tier.DEIDENTIFIED,
          operation: Operation.TRAIN,
        }),
        ctx.aiRequester,
      );
      await ctx.accessLog.connect(site.gateway).recordAccess(denied);
      const ghost = { accessId: denied.requestId, agreementId: site.id, resultHash: update(1, 9) };
      await expectRefused(ctx, { id: MODEL_V1, releases: [ghost] }, "ArtifactRegistryUnknownRelease", [
        ghost.accessId,
        ghost.agreementId,
        ghost.resultHash,
      ]);
    });

    it("refuses a result hash never released from the access", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const other = { ...ctx.release, resultHash: update(1, 9) };
      await expectRefused(ctx, { id: MODEL_V1, releases: [other] }, "ArtifactRegistryUnknownRelease", [
        other.accessId,
        other.agreementId,
        other.resultHash,
      ]);
    });

    it("refuses a release named under another agreement than its access's", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const wrong = { ...ctx.release, agreementId: ctx.sites[1].id };
      await expectRefused(ctx, { id: MODEL_V1, releases: [wrong] }, "ArtifactRegistryUnknownRelease", [
        wrong.accessId,
        wrong.agreementId,
        wrong.resultHash,
      ]);
    });

    it("refuses a release named under an id that shares its agreement's upper 224 bits", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const forged = ethers.toBeHex(BigInt(ctx.release.agreementId) ^ 1n, 32);
      const wrong = { ...ctx.release, agreementId: forged };
      await expectRefused(ctx, { id: MODEL_V1, releases: [wrong] }, "ArtifactRegistryUnknownRelease", [
        wrong.accessId,
        forged,
        wrong.resultHash,
      ]);
    });

    it("refuses an unknown access", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const unknown = { ...ctx.release, accessId: tag("request:unknown") };
      await expectRefused(ctx, { id: MODEL_V1, releases: [unknown] }, "ArtifactRegistryUnknownRelease", [
        unknown.accessId,
        unknown.agreementId,
        unknown.resultHash,
      ]);
    });

    it("refuses the same release twice", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      await expectRefused(ctx, { id: MODEL_V1, releases: [ctx.release, ctx.release] }, "ArtifactRegistryUnorderedRelease", [
        ctx.release.accessId,
        ctx.release.agreementId,
        ctx.release.resultHash,
      ]);
    });

    it("refuses releases out of order", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const other = await trainAndRelease(ctx, ctx.sites[1], update(1, 1));
      const [first, second] = sortReleases([ctx.release, other]);
      await expectRefused(ctx, { id: MODEL_V1, releases: [second, first] }, "ArtifactRegistryUnorderedRelease", [
        first.accessId,
        first.agreementId,
        first.resultHash,
      ]);
    });

    it("refuses one access's results out of order", async function () {
      const ctx = await loadFixture(releasedUpdateFixture);
      const second = tag("model-update:chest-xray-cnn:round-1:site-0:epoch-2");
      await ctx.accessLog
        .connect(ctx.hospitalGateway)
        .releaseResult(ctx.release.accessId, ctx.release.agreementId, second, ReleaseKind.MODEL_UPDATE, 1);
      const [first, last] = sortReleases([ctx.release, { ...ctx.release, resultHash: second }]);
      await expectRefused(ctx, { id: MODEL_V1, releases: [last, first] }, "ArtifactRegistryUnorderedRelease", [
        first.accessId,
        first.agreementId,
        first.resultHash,
      ]);
    });

    describe("one request id and one result under two agreements", function () {
      async function twoAgreementsFixture() {
        const ctx = await federatedFixture();
        const requestId = tag("request:federated-round-7");
        const result = update(7, "all");
        const releases = sortReleases([
          await trainAndRelease(ctx, ctx.sites[0], result, { requestId }),
          await trainAndRelease(ctx, ctx.sites[1], result, { requestId }),
        ]);
        return { ...ctx, releases };
      }

      it("refuses them in descending agreement order", async function () {
        const ctx = await loadFixture(twoAgreementsFixture);
        const [first, second] = ctx.releases;
        await expectRefused(ctx, { id: MODEL_V1, releases: [second, first] }, "ArtifactRegistryUnorderedRelease", [
          first.accessId,
          first.agreementId,
          first.resultHash,
        ]);
      });

      it("refuses either named twice", async function () {
        const ctx = await loadFixture(twoAgreementsFixture);
        const [first, second] = ctx.releases;
        for (const [releases, repeated] of [
          [[first, first, second], first],
          [[first, second, second], second],
        ]) {
          await expectRefused(ctx, { id: MODEL_V1, releases }, "ArtifactRegistryUnorderedRelease", [
            repeated.accessId,
            repeated.agreementId,
            repeated.resultHash,
          ]);
        }
      });

      it("refuses the id under a third agreement, where it released nothing", async function () {
        const ctx = await loadFixture(twoAgreementsFixture);
        const ghost = { ...ctx.releases[0], agreementId: ctx.sites[2].id };
        const releases = sortReleases([...ctx.releases, ghost]);
        await expectRefused(ctx, { id: MODEL_V1, releases }, "ArtifactRegistryUnknownRelease", [
          ghost.accessId,
          ghost.agreementId,
          ghost.resultHash,
        ]);
      });
    });
  });

  describe("parent artifacts", function () {
    it("refuses an artifact derived from itself (derivations stay acyclic)", async function () {
      const ctx = await loadFixture(registeredUpdatesFixture);
      await expectRefused(ctx, { id: MODEL_V1, parents: [MODEL_V1] }, "ArtifactRegistryCyclicDerivation", [MODEL_V1]);
      const parents = sortIds([...ctx.updates, MODEL_V1]);
      await expectRefused(ctx, { id: MODEL_V1, parents }, "ArtifactRegistryCyclicDerivation", [MODEL_V1]);
    });

    it("refuses a parent that is not registered (a parent must exist before its child)", async function () {
      const ctx = await loadFixture(registeredUpdatesFixture);
      const parents = sortIds([...ctx.updates, MODEL_V2]);
      await expectRefused(ctx, { id: MODEL_V1, parents }, "ArtifactRegistryUnknownParent", [MODEL_V2]);
    });

    it("refuses the same parent twice", async function () {
      const ctx = await loadFixture(registeredUpdatesFixture);
      const [first] = ctx.updates;
      await expectRefused(ctx, { id: MODEL_V1, parents: [first, first] }, "ArtifactRegistryUnorderedParent", [first]);
    });

    it("refuses parents out of order", async function () {
      const ctx = await loadFixture(registeredUpdatesFixture);
      const [low, high] = sortIds(ctx.updates.slice(0, 2));
      await expectRefused(ctx, { id: MODEL_V1, parents: [high, low] }, "ArtifactRegistryUnorderedParent", [low]);
    });

    it("lets any requester derive from another organization's registered artifact", async function () {
      const ctx = await loadFixture(registeredUpdatesFixture);
      const derived = tag("result:institute-benchmark-of-v1");
      await register(ctx, { id: MODEL_V1, parents: sortIds(ctx.updates) });
      await expectRegistered(
        ctx,
        { id: derived, kind: ArtifactKind.RESULT, parents: [MODEL_V1], by: ctx.instituteRequester },
        ORG.INSTITUTE,
      );
    });
  });
});

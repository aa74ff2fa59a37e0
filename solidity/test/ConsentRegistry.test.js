const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const {
  AuthorizationFault,
  AuthorizationStatus,
  ConsentStatus,
  Role,
  Scenario,
  Tier,
} = require("./helpers/enums");
const {
  DATASET,
  DAY,
  ORG,
  PATIENT,
  authorizationTerms,
  codeHashOf,
  consentTerms,
  deployFixture,
  fieldsMask,
  leafOf,
  sameStruct,
  tag,
} = require("./helpers/fixtures");
const {
  AUTHORIZATION_TYPES,
  CONSENT_GRANT_TYPES,
  CONSENT_WITHDRAWAL_TYPES,
  authorizationMessage,
  consentGrantMessage,
  consentDomain,
  consentIdOf,
  signAuthorization,
  signAuthorizationRevocation,
  signConsentGrant,
  signWithdrawal,
} = require("./helpers/typed-data");
const { shouldBeDisabledBySuspension } = require("./helpers/membership.behavior");

const MAX_BATCH = 128;
const MAX_CONSENTS = 64;
const YEAR = 365 * DAY;
const OTHER_PATIENT = tag("subject:patient-0815");
const CODE = codeHashOf("QQQQQ-RRRRR-SSSSS-TTTTT");
const ACCESS_ID = tag("request:insurance-claim-1");

const bits = (...scenarios) => scenarios.reduce((mask, s) => mask | (1 << s), 0);
const RESEARCH = bits(Scenario.RESEARCH);
const AI = bits(Scenario.AI_TRAINING);
const TEACHING = bits(Scenario.TEACHING);

/** The data space plus a patient key (a wallet outside the data space) and a far deadline. */
async function registryFixture() {
  const ctx = await deployFixture();
  const patient = new ethers.Wallet(ethers.id("test patient key"));
  return { ...ctx, patient };
}

/** One GRANTED consent of PATIENT (research + AI training, a year), with the patient's key. */
async function consentedFixture() {
  const ctx = await registryFixture();
  const terms = consentTerms(ctx.now, { subjectKey: ctx.patient.address });
  const at = ctx.now + 10;
  await time.setNextBlockTimestamp(at);
  await ctx.consents.connect(ctx.hospitalSteward).recordConsent(terms);
  const consentId = consentIdOf(ORG.HOSPITAL, PATIENT, 0);
  return { ...ctx, terms, consentId, recordedAt: at };
}

/** An issued authorization `CODE` for the insurer. */
async function issuedFixture() {
  const ctx = await registryFixture();
  const authorization = authorizationTerms(ctx.now);
  await ctx.consents.connect(ctx.hospitalSteward).issueAuthorization(CODE, authorization);
  return { ...ctx, authorization };
}

/**
 * A second registry over the same membership and datasets whose "access log" is the `relayer`
 * account, so redemption faults can be read directly; with `CODE` issued on it.
 */
async function directRedeemFixture() {
  const ctx = await registryFixture();
  const registry = await ethers.deployContract("ConsentRegistry", [
    await ctx.membership.getAddress(),
    await ctx.datasets.getAddress(),
  ]);
  await registry.bindAccessLog(ctx.relayer.address);
  const authorization = authorizationTerms(ctx.now);
  await registry.connect(ctx.hospitalSteward).issueAuthorization(CODE, authorization);
  return { ...ctx, registry, authorization };
}

const record = (ctx, terms, signer = ctx.hospitalSteward) => ctx.consents.connect(signer).recordConsent(terms);
const recordMany = (ctx, terms, signer = ctx.hospitalSteward) => ctx.consents.connect(signer).recordConsents(terms);
const issue = (ctx, overrides = {}, { code = CODE, signer = ctx.hospitalSteward } = {}) =>
  ctx.consents.connect(signer).issueAuthorization(code, authorizationTerms(ctx.now, overrides));

/** The consent as `consent()` returns it, for comparison. */
const stored = async (ctx, id) => {
  const c = await ctx.consents.consent(id);
  return {
    holder: c.holder,
    subject: c.subject,
    scenarios: Number(c.scenarios),
    status: Number(c.status),
    validFrom: Number(c.validFrom),
    validUntil: Number(c.validUntil),
    subjectKey: c.subjectKey,
  };
};

describe("ConsentRegistry", function () {
  describe("deployment and binding", function () {
    it("knows its membership and dataset registry, its limits and the bound access log", async function () {
      const ctx = await loadFixture(registryFixture);
      expect(await ctx.consents.MEMBERSHIP()).to.equal(await ctx.membership.getAddress());
      expect(await ctx.consents.DATASETS()).to.equal(await ctx.datasets.getAddress());
      expect(await ctx.consents.MAX_BATCH_SIZE()).to.equal(MAX_BATCH);
      expect(await ctx.consents.MAX_CONSENTS_PER_SUBJECT()).to.equal(MAX_CONSENTS);
      expect(await ctx.consents.MAX_AUTHORIZATION_LIFETIME()).to.equal(YEAR);
      expect(await ctx.consents.CONSENT_WITHDRAWAL_TYPEHASH()).to.equal(
        ethers.id("ConsentWithdrawal(bytes32 consentId,uint64 deadline)"),
      );
      expect(await ctx.consents.accessLog()).to.equal(await ctx.accessLog.getAddress());
      expect(await ctx.accessLog.CONSENTS()).to.equal(await ctx.consents.getAddress());
    });

    async function unboundFixture() {
      const ctx = await registryFixture();
      const registry = await ethers.deployContract("ConsentRegistry", [
        await ctx.membership.getAddress(),
        await ctx.datasets.getAddress(),
      ]);
      return { ...ctx, registry };
    }

    it("starts unbound and lets its deployer bind the access log, with an event", async function () {
      const ctx = await loadFixture(unboundFixture);
      expect(await ctx.registry.accessLog()).to.equal(ethers.ZeroAddress);
      await expect(ctx.registry.bindAccessLog(ctx.relayer.address))
        .to.emit(ctx.registry, "AccessLogBound")
        .withArgs(ctx.relayer.address);
      expect(await ctx.registry.accessLog()).to.equal(ctx.relayer.address);
    });

    it("binds only once, even for its deployer", async function () {
      const ctx = await loadFixture(unboundFixture);
      await ctx.registry.bindAccessLog(ctx.relayer.address);
      await expect(ctx.registry.bindAccessLog(ctx.stranger.address))
        .to.be.revertedWithCustomError(ctx.registry, "ConsentRegistryAccessLogBindingRefused")
        .withArgs(ctx.operator.address);
      expect(await ctx.registry.accessLog()).to.equal(ctx.relayer.address);
    });

    for (const who of ["stranger", "hospitalSteward", "regulator"]) {
      it(`refuses binding by the ${who}, not the deployer`, async function () {
        const ctx = await loadFixture(unboundFixture);
        await expect(ctx.registry.connect(ctx[who]).bindAccessLog(ctx[who].address))
          .to.be.revertedWithCustomError(ctx.registry, "ConsentRegistryAccessLogBindingRefused")
          .withArgs(ctx[who].address);
      });
    }

    it("refuses binding the zero address", async function () {
      const ctx = await loadFixture(unboundFixture);
      await expect(ctx.registry.bindAccessLog(ethers.ZeroAddress))
        .to.be.revertedWithCustomError(ctx.registry, "ConsentRegistryAccessLogBindingRefused")
        .withArgs(ctx.operator.address);
    });

    it("lets nobody redeem before the access log is bound", async function () {
      const ctx = await loadFixture(unboundFixture);
      for (const who of ["operator", "stranger"]) {
        await expect(
          ctx.registry
            .connect(ctx[who])
            .redeemAuthorization(
              CODE,
              ACCESS_ID,
              ORG.HOSPITAL,
              ORG.INSURER,
              DATASET.EHR,
              1,
              Tier.AGGREGATE,
              leafOf(PATIENT),
              Scenario.INSURANCE_CLAIM,
            ),
        )
          .to.be.revertedWithCustomError(ctx.registry, "ConsentRegistryUnauthorizedRedeemer")
          .withArgs(ctx[who].address);
      }
    });
  });

  describe("recordConsent", function () {
    it("records a consent from the recording block, emits the terms and returns the id", async function () {
      const ctx = await loadFixture(registryFixture);
      const terms = consentTerms(ctx.now, { subjectKey: ctx.patient.address });
      const id = consentIdOf(ORG.HOSPITAL, PATIENT, 0);
      expect(await ctx.consents.connect(ctx.hospitalSteward).recordConsent.staticCall(terms)).to.equal(id);
      const at = (await time.latest()) + 5;
      await time.setNextBlockTimestamp(at);
      await expect(record(ctx, terms))
        .to.emit(ctx.consents, "ConsentRecorded")
        .withArgs(id, ORG.HOSPITAL, PATIENT, sameStruct({ ...terms, validFrom: at }), ctx.hospitalSteward.address, false);
      expect(await stored(ctx, id)).to.deep.equal({
        holder: ORG.HOSPITAL,
        subject: PATIENT,
        scenarios: terms.scenarios,
        status: ConsentStatus.GRANTED,
        validFrom: at,
        validUntil: terms.validUntil,
        subjectKey: ctx.patient.address,
      });
      expect(await ctx.consents.consentIds(ORG.HOSPITAL, PATIENT)).to.deep.equal([id]);
    });

    it("keeps an explicit start in the future, and one at the recording block itself", async function () {
      const ctx = await loadFixture(registryFixture);
      const later = ctx.now + 10 * DAY;
      const future = consentTerms(ctx.now, { validFrom: later, validUntil: later + DAY, scenarios: RESEARCH });
      await expect(record(ctx, future))
        .to.emit(ctx.consents, "ConsentRecorded")
        .withArgs(consentIdOf(ORG.HOSPITAL, PATIENT, 0), ORG.HOSPITAL, PATIENT, sameStruct(future), ctx.hospitalSteward.address, false);
      const at = (await time.latest()) + 3;
      const now = consentTerms(ctx.now, { validFrom: at, validUntil: at + DAY, scenarios: AI });
      await time.setNextBlockTimestamp(at);
      await record(ctx, now);
      expect((await stored(ctx, consentIdOf(ORG.HOSPITAL, PATIENT, 1))).validFrom).to.equal(at);
      expect((await stored(ctx, consentIdOf(ORG.HOSPITAL, PATIENT, 0))).validFrom).to.equal(later);
    });

    it("derives ids from holder, subject and sequence, per holder", async function () {
      const ctx = await loadFixture(registryFixture);
      await record(ctx, consentTerms(ctx.now, { scenarios: RESEARCH }));
      await record(ctx, consentTerms(ctx.now, { scenarios: AI }));
      await record(ctx, consentTerms(ctx.now, { subject: OTHER_PATIENT }));
      // The same subject reference at another hospital is another consent line altogether.
      await record(ctx, consentTerms(ctx.now, { holder: ORG.HOSPITAL_B }), ctx.hospitalBSteward);
      expect(await ctx.consents.consentIds(ORG.HOSPITAL, PATIENT)).to.deep.equal([
        consentIdOf(ORG.HOSPITAL, PATIENT, 0),
        consentIdOf(ORG.HOSPITAL, PATIENT, 1),
      ]);
      expect(await ctx.consents.consentIds(ORG.HOSPITAL, OTHER_PATIENT)).to.deep.equal([
        consentIdOf(ORG.HOSPITAL, OTHER_PATIENT, 0),
      ]);
      expect(await ctx.consents.consentIds(ORG.HOSPITAL_B, PATIENT)).to.deep.equal([
        consentIdOf(ORG.HOSPITAL_B, PATIENT, 0),
      ]);
      expect(await ctx.consents.consentIds(ORG.INSURER, PATIENT)).to.deep.equal([]);
    });

    it("accepts every scenario bit, alone and all together", async function () {
      const ctx = await loadFixture(registryFixture);
      for (const scenario of Object.values(Scenario)) {
        await record(ctx, consentTerms(ctx.now, { subject: tag(`subject:${scenario}`), scenarios: bits(scenario) }));
      }
      await record(ctx, consentTerms(ctx.now, { subject: tag("subject:all"), scenarios: 0x1f }));
    });

    it("reports status NONE for an unknown consent", async function () {
      const ctx = await loadFixture(registryFixture);
      expect((await stored(ctx, tag("consent:none"))).status).to.equal(ConsentStatus.NONE);
    });

    describe("refusals", function () {
      async function expectRefused(ctx, tx, errorName, args) {
        await expect(tx)
          .to.be.revertedWithCustomError(ctx.consents, errorName)
          .withArgs(...args);
        expect(await ctx.consents.consentIds(ORG.HOSPITAL, PATIENT)).to.deep.equal([]);
      }

      it("refuses an unknown holder", async function () {
        const ctx = await loadFixture(registryFixture);
        const holder = tag("org:unknown");
        await expectRefused(ctx, record(ctx, consentTerms(ctx.now, { holder })), "ConsentRegistryUnknownHolder", [holder]);
      });

      for (const who of ["hospitalGateway", "hospitalBSteward", "insurerSteward", "regulator", "operator", "stranger"]) {
        it(`refuses the ${who}, not a steward of the holder`, async function () {
          const ctx = await loadFixture(registryFixture);
          await expectRefused(ctx, record(ctx, consentTerms(ctx.now), ctx[who]), "ConsentRegistryUnauthorizedSteward", [
            ctx[who].address,
            ORG.HOSPITAL,
          ]);
        });
      }

      it("refuses a steward whose role was revoked", async function () {
        const ctx = await loadFixture(registryFixture);
        await ctx.membership.revokeMemberRole(ctx.hospitalSteward.address, Role.STEWARD);
        await expectRefused(ctx, record(ctx, consentTerms(ctx.now)), "ConsentRegistryUnauthorizedSteward", [
          ctx.hospitalSteward.address,
          ORG.HOSPITAL,
        ]);
      });

      describe("when the hospital is suspended", function () {
        shouldBeDisabledBySuspension(registryFixture, {
          memberKey: "hospitalSteward",
          org: ORG.HOSPITAL,
          call: (ctx, signer) => record(ctx, consentTerms(ctx.now), signer),
          contractKey: "consents",
          errorName: "ConsentRegistryUnauthorizedSteward",
          args: (ctx) => [ctx.hospitalSteward.address, ORG.HOSPITAL],
        });
      });

      it("refuses the zero subject", async function () {
        const ctx = await loadFixture(registryFixture);
        await expectRefused(ctx, record(ctx, consentTerms(ctx.now, { subject: ethers.ZeroHash })), "ConsentRegistryZeroSubject", []);
      });

      for (const scenarios of [0, 0x20, 0x21, 0x80, 0xff]) {
        it(`refuses the scenario set 0x${scenarios.toString(16)}`, async function () {
          const ctx = await loadFixture(registryFixture);
          await expectRefused(ctx, record(ctx, consentTerms(ctx.now, { scenarios })), "ConsentRegistryInvalidScenarios", [
            scenarios,
          ]);
        });
      }

      it("refuses a consent backdated before the recording block", async function () {
        const ctx = await loadFixture(registryFixture);
        const at = (await time.latest()) + 10;
        await time.setNextBlockTimestamp(at);
        await expectRefused(ctx, record(ctx, consentTerms(ctx.now, { validFrom: at - 1 })), "ConsentRegistryBackdated", [
          at - 1,
          at,
        ]);
      });

      it("refuses an empty or inverted window, the resolved start included", async function () {
        const ctx = await loadFixture(registryFixture);
        const start = ctx.now + DAY;
        for (const validUntil of [start, start - 1]) {
          await expectRefused(
            ctx,
            record(ctx, consentTerms(ctx.now, { validFrom: start, validUntil })),
            "ConsentRegistryInvalidValidity",
            [start, validUntil],
          );
        }
        const at = (await time.latest()) + 10;
        await time.setNextBlockTimestamp(at);
        await expectRefused(ctx, record(ctx, consentTerms(ctx.now, { validUntil: at })), "ConsentRegistryInvalidValidity", [
          at,
          at,
        ]);
      });
    });

    describe("overlap with a granted consent", function () {
      const START = 100 * DAY; // relative to the fixture's `now`

      /** A first consent: RESEARCH over [now + START, now + START + 10 days]. */
      async function windowFixture() {
        const ctx = await registryFixture();
        const from = ctx.now + START;
        const until = from + 10 * DAY;
        await record(ctx, consentTerms(ctx.now, { scenarios: RESEARCH, validFrom: from, validUntil: until }));
        return { ...ctx, from, until, first: consentIdOf(ORG.HOSPITAL, PATIENT, 0) };
      }

      const cases = [
        ["the same window", (c) => [c.from, c.until], RESEARCH, true],
        ["a window inside it", (c) => [c.from + DAY, c.until - DAY], RESEARCH, true],
        ["a window around it", (c) => [c.from - DAY, c.until + DAY], RESEARCH, true],
        ["a window starting on its last second", (c) => [c.until, c.until + DAY], RESEARCH, true],
        ["a window ending on its first second", (c) => [c.from - DAY, c.from], RESEARCH, true],
        ["a shared scenario among others", (c) => [c.from, c.until], RESEARCH | AI | TEACHING, true],
        ["the window right after it (adjacent)", (c) => [c.until + 1, c.until + DAY], RESEARCH, false],
        ["the window right before it (adjacent)", (c) => [c.from - DAY, c.from - 1], RESEARCH, false],
        ["disjoint scenarios in the same window", (c) => [c.from, c.until], AI | TEACHING, false],
      ];
      for (const [name, window, scenarios, overlaps] of cases) {
        it(`${overlaps ? "refuses" : "accepts"} ${name}`, async function () {
          const ctx = await loadFixture(windowFixture);
          const [validFrom, validUntil] = window(ctx);
          const tx = record(ctx, consentTerms(ctx.now, { scenarios, validFrom, validUntil }));
          if (overlaps) {
            await expect(tx).to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryOverlappingConsent").withArgs(ctx.first);
          } else {
            await expect(tx).to.emit(ctx.consents, "ConsentRecorded");
          }
        });
      }

      it("names the overlapping consent among several", async function () {
        const ctx = await loadFixture(windowFixture);
        await record(ctx, consentTerms(ctx.now, { scenarios: AI, validFrom: ctx.from, validUntil: ctx.until }));
        await record(ctx, consentTerms(ctx.now, { scenarios: TEACHING, validFrom: ctx.from, validUntil: ctx.until }));
        await expect(record(ctx, consentTerms(ctx.now, { scenarios: TEACHING, validFrom: ctx.until, validUntil: ctx.until + 1 })))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryOverlappingConsent")
          .withArgs(consentIdOf(ORG.HOSPITAL, PATIENT, 2));
      });

      it("does not count another subject's or another holder's consents", async function () {
        const ctx = await loadFixture(windowFixture);
        const window = { scenarios: RESEARCH, validFrom: ctx.from, validUntil: ctx.until };
        await expect(record(ctx, consentTerms(ctx.now, { ...window, subject: OTHER_PATIENT }))).to.emit(
          ctx.consents,
          "ConsentRecorded",
        );
        await expect(record(ctx, consentTerms(ctx.now, { ...window, holder: ORG.HOSPITAL_B }), ctx.hospitalBSteward)).to.emit(
          ctx.consents,
          "ConsentRecorded",
        );
      });

      it("grants again after a withdrawal, under a new id", async function () {
        const ctx = await loadFixture(windowFixture);
        await ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(ctx.first);
        const again = consentTerms(ctx.now, { scenarios: RESEARCH, validFrom: ctx.from, validUntil: ctx.until });
        const second = consentIdOf(ORG.HOSPITAL, PATIENT, 1);
        await expect(record(ctx, again))
          .to.emit(ctx.consents, "ConsentRecorded")
          .withArgs(second, ORG.HOSPITAL, PATIENT, sameStruct(again), ctx.hospitalSteward.address, false);
        expect((await stored(ctx, ctx.first)).status).to.equal(ConsentStatus.WITHDRAWN);
        expect((await stored(ctx, second)).status).to.equal(ConsentStatus.GRANTED);
        expect(await ctx.consents.consentIds(ORG.HOSPITAL, PATIENT)).to.deep.equal([ctx.first, second]);
      });
    });

    describe("consents per subject", function () {
      /** 64 consents of PATIENT in consecutive one-day windows, recorded in one batch. */
      async function fullFixture() {
        const ctx = await registryFixture();
        const base = ctx.now + DAY;
        const terms = Array.from({ length: MAX_CONSENTS }, (_, i) =>
          consentTerms(ctx.now, { scenarios: RESEARCH, validFrom: base + i * DAY, validUntil: base + i * DAY + DAY - 1 }),
        );
        await recordMany(ctx, terms);
        return { ...ctx, nextFrom: base + MAX_CONSENTS * DAY };
      }

      it(`takes ${MAX_CONSENTS} consents, then refuses the next, withdrawn ones counted`, async function () {
        const ctx = await loadFixture(fullFixture);
        const ids = await ctx.consents.consentIds(ORG.HOSPITAL, PATIENT);
        expect(ids).to.deep.equal(Array.from({ length: MAX_CONSENTS }, (_, i) => consentIdOf(ORG.HOSPITAL, PATIENT, i)));
        await ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(ids[5]);
        await expect(record(ctx, consentTerms(ctx.now, { scenarios: RESEARCH, validFrom: ctx.nextFrom, validUntil: ctx.nextFrom + DAY })))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryTooManyConsents")
          .withArgs(PATIENT, MAX_CONSENTS);
        // Another subject is not affected.
        await expect(record(ctx, consentTerms(ctx.now, { subject: OTHER_PATIENT }))).to.emit(ctx.consents, "ConsentRecorded");
      });

      it("finds a granted consent that is the last of many", async function () {
        const ctx = await loadFixture(fullFixture);
        const last = consentIdOf(ORG.HOSPITAL, PATIENT, MAX_CONSENTS - 1);
        expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(false);
        const lastStored = await stored(ctx, last);
        await time.increaseTo(lastStored.validFrom);
        expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(true);
      });
    });
  });

  describe("recordConsents", function () {
    it("records a batch in order, one event each", async function () {
      const ctx = await loadFixture(registryFixture);
      const batch = [
        consentTerms(ctx.now, { scenarios: RESEARCH }),
        consentTerms(ctx.now, { subject: OTHER_PATIENT, duoCodes: [] }),
        consentTerms(ctx.now, { scenarios: AI, subjectKey: ctx.patient.address }),
      ];
      const at = (await time.latest()) + 5;
      await time.setNextBlockTimestamp(at);
      const tx = recordMany(ctx, batch);
      const ids = [
        consentIdOf(ORG.HOSPITAL, PATIENT, 0),
        consentIdOf(ORG.HOSPITAL, OTHER_PATIENT, 0),
        consentIdOf(ORG.HOSPITAL, PATIENT, 1),
      ];
      for (const [i, terms] of batch.entries()) {
        await expect(tx)
          .to.emit(ctx.consents, "ConsentRecorded")
          .withArgs(ids[i], ORG.HOSPITAL, terms.subject, sameStruct({ ...terms, validFrom: at }), ctx.hospitalSteward.address, false);
      }
      expect((await stored(ctx, ids[2])).subjectKey).to.equal(ctx.patient.address);
      expect((await stored(ctx, ids[0])).subjectKey).to.equal(ethers.ZeroAddress);
    });

    it(`takes a batch of ${MAX_BATCH} consents`, async function () {
      const ctx = await loadFixture(registryFixture);
      // The worst case within the gas cap: every consent with a patient key and four DUO codes.
      const batch = Array.from({ length: MAX_BATCH }, (_, i) =>
        consentTerms(ctx.now, {
          subject: tag(`subject:batch:${i}`),
          subjectKey: ethers.computeAddress(ethers.id(`patient key ${i}`)),
          duoCodes: [42, 46, 25, 28],
        }),
      );
      const receipt = await (await recordMany(ctx, batch)).wait();
      expect(receipt.gasUsed).to.be.below(2n ** 24n);
      expect(await ctx.consents.consentIds(ORG.HOSPITAL, tag(`subject:batch:${MAX_BATCH - 1}`))).to.have.length(1);
    });

    for (const size of [0, MAX_BATCH + 1]) {
      it(`refuses a batch of ${size}`, async function () {
        const ctx = await loadFixture(registryFixture);
        const batch = Array.from({ length: size }, (_, i) => consentTerms(ctx.now, { subject: tag(`subject:batch:${i}`) }));
        await expect(recordMany(ctx, batch))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidBatchSize")
          .withArgs(size, MAX_BATCH);
      });
    }

    async function expectNoneRecorded(ctx, subjects) {
      for (const subject of subjects) expect(await ctx.consents.consentIds(ORG.HOSPITAL, subject)).to.deep.equal([]);
    }

    it("records all or none: one bad consent refuses the batch", async function () {
      const ctx = await loadFixture(registryFixture);
      const batch = [consentTerms(ctx.now), consentTerms(ctx.now, { subject: OTHER_PATIENT, scenarios: 0 })];
      await expect(recordMany(ctx, batch))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidScenarios")
        .withArgs(0);
      await expectNoneRecorded(ctx, [PATIENT, OTHER_PATIENT]);
    });

    it("refuses a batch whose consents overlap each other", async function () {
      const ctx = await loadFixture(registryFixture);
      const batch = [consentTerms(ctx.now, { scenarios: RESEARCH }), consentTerms(ctx.now, { scenarios: RESEARCH | AI })];
      await expect(recordMany(ctx, batch))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryOverlappingConsent")
        .withArgs(consentIdOf(ORG.HOSPITAL, PATIENT, 0));
      await expectNoneRecorded(ctx, [PATIENT]);
    });

    it("checks the steward of every holder in the batch", async function () {
      const ctx = await loadFixture(registryFixture);
      const batch = [consentTerms(ctx.now), consentTerms(ctx.now, { holder: ORG.HOSPITAL_B, subject: OTHER_PATIENT })];
      await expect(recordMany(ctx, batch))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnauthorizedSteward")
        .withArgs(ctx.hospitalSteward.address, ORG.HOSPITAL_B);
      await expectNoneRecorded(ctx, [PATIENT]);
    });

    it("checks the steward again when the holder changes back and forth", async function () {
      const ctx = await loadFixture(registryFixture);
      const unknown = tag("org:unknown");
      const batch = [consentTerms(ctx.now), consentTerms(ctx.now, { holder: unknown, subject: OTHER_PATIENT })];
      await expect(recordMany(ctx, batch)).to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnknownHolder").withArgs(unknown);
      await expect(recordMany(ctx, [consentTerms(ctx.now)], ctx.stranger))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnauthorizedSteward")
        .withArgs(ctx.stranger.address, ORG.HOSPITAL);
    });
  });

  describe("withdrawConsent (steward)", function () {
    it("withdraws a granted consent: later checks see it gone", async function () {
      const ctx = await loadFixture(consentedFixture);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(true);
      await expect(ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(ctx.consentId))
        .to.emit(ctx.consents, "ConsentWithdrawn")
        .withArgs(ctx.consentId, ORG.HOSPITAL, PATIENT, ctx.hospitalSteward.address, false);
      expect((await stored(ctx, ctx.consentId)).status).to.equal(ConsentStatus.WITHDRAWN);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(false);
    });

    it("refuses an unknown consent", async function () {
      const ctx = await loadFixture(consentedFixture);
      const unknown = tag("consent:unknown");
      await expect(ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(unknown))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnknownConsent")
        .withArgs(unknown);
    });

    for (const who of ["hospitalBSteward", "hospitalGateway", "regulator", "stranger"]) {
      it(`refuses the ${who}, not a steward of the holder`, async function () {
        const ctx = await loadFixture(consentedFixture);
        await expect(ctx.consents.connect(ctx[who]).withdrawConsent(ctx.consentId))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnauthorizedSteward")
          .withArgs(ctx[who].address, ORG.HOSPITAL);
      });
    }

    it("refuses a consent withdrawn already", async function () {
      const ctx = await loadFixture(consentedFixture);
      await ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(ctx.consentId);
      await expect(ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(ctx.consentId))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryConsentNotGranted")
        .withArgs(ctx.consentId, ConsentStatus.WITHDRAWN);
    });
  });

  describe("withdrawConsentBySubject (patient's key)", function () {
    const far = (ctx) => ctx.now + 30 * DAY;

    it("computes the EIP-712 digest the patient signs", async function () {
      const ctx = await loadFixture(consentedFixture);
      const expected = ethers.TypedDataEncoder.hash(await consentDomain(ctx.consents), CONSENT_WITHDRAWAL_TYPES, {
        consentId: ctx.consentId,
        deadline: far(ctx),
      });
      expect(await ctx.consents.withdrawalDigest(ctx.consentId, far(ctx))).to.equal(expected);
    });

    it("withdraws on the patient's signature, relayed by a non-member", async function () {
      const ctx = await loadFixture(consentedFixture);
      const signature = await signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx));
      await expect(ctx.consents.connect(ctx.stranger).withdrawConsentBySubject(ctx.consentId, far(ctx), signature))
        .to.emit(ctx.consents, "ConsentWithdrawn")
        .withArgs(ctx.consentId, ORG.HOSPITAL, PATIENT, ctx.patient.address, true);
      expect((await stored(ctx, ctx.consentId)).status).to.equal(ConsentStatus.WITHDRAWN);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(false);
    });

    it("takes the registered key once a steward registered one: a removed or rotated key cannot withdraw", async function () {
      const ctx = await loadFixture(consentedFixture);
      const steward = ctx.consents.connect(ctx.hospitalSteward);
      const lost = await signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx));
      // the patient lost the key the consent was recorded with: the hospital removes it
      await steward.registerSubjectKey(ORG.HOSPITAL, PATIENT, ethers.ZeroAddress);
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, far(ctx), lost))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
        .withArgs(ctx.consentId);
      // and registers the patient's new key, which withdraws it; the lost one still cannot
      await steward.registerSubjectKey(ORG.HOSPITAL, PATIENT, ctx.stranger.address);
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, far(ctx), lost))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
        .withArgs(ctx.consentId);
      const renewed = await signWithdrawal(ctx.stranger, ctx.consents, ctx.consentId, far(ctx));
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, far(ctx), renewed))
        .to.emit(ctx.consents, "ConsentWithdrawn")
        .withArgs(ctx.consentId, ORG.HOSPITAL, PATIENT, ctx.stranger.address, true);
    });

    it("accepts a signature up to and including its deadline", async function () {
      const ctx = await loadFixture(consentedFixture);
      const deadline = (await time.latest()) + 100;
      const signature = await signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, deadline);
      await time.setNextBlockTimestamp(deadline);
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, deadline, signature)).to.emit(
        ctx.consents,
        "ConsentWithdrawn",
      );
    });

    it("refuses an expired signature", async function () {
      const ctx = await loadFixture(consentedFixture);
      const deadline = (await time.latest()) + 100;
      const signature = await signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, deadline);
      await time.setNextBlockTimestamp(deadline + 1);
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, deadline, signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistrySignatureExpired")
        .withArgs(ctx.consentId, deadline);
    });

    const forgeries = [
      ["a key that is not the patient's", async (ctx) => signWithdrawal(ctx.stranger, ctx.consents, ctx.consentId, far(ctx))],
      ["the steward's key", async (ctx) => signWithdrawal(ctx.hospitalSteward, ctx.consents, ctx.consentId, far(ctx))],
      [
        "another consent id",
        async (ctx) => signWithdrawal(ctx.patient, ctx.consents, consentIdOf(ORG.HOSPITAL, PATIENT, 1), far(ctx)),
      ],
      ["another deadline", async (ctx) => signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx) + 1)],
      [
        "another registry",
        async (ctx) =>
          signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx), { verifyingContract: ctx.relayer.address }),
      ],
      ["another chain", async (ctx) => signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx), { chainId: 1 })],
      [
        "a truncated signature (64 bytes)",
        async (ctx) => ethers.dataSlice(await signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx)), 0, 64),
      ],
      ["no signature at all", async () => "0x"],
      [
        "a malleable (high-s) signature",
        async (ctx) => {
          const sig = ethers.Signature.from(await signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx)));
          const n = BigInt("0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
          const highS = ethers.toBeHex(n - BigInt(sig.s), 32);
          return ethers.concat([sig.r, highS, ethers.toBeHex(sig.v === 27 ? 28 : 27, 1)]);
        },
      ],
    ];
    for (const [name, forge] of forgeries) {
      it(`refuses a withdrawal signed for ${name}`, async function () {
        const ctx = await loadFixture(consentedFixture);
        const signature = await forge(ctx);
        await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, far(ctx), signature))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
          .withArgs(ctx.consentId);
        expect((await stored(ctx, ctx.consentId)).status).to.equal(ConsentStatus.GRANTED);
      });
    }

    it("refuses any signature for a consent recorded without a patient key", async function () {
      const ctx = await loadFixture(registryFixture);
      await record(ctx, consentTerms(ctx.now));
      const id = consentIdOf(ORG.HOSPITAL, PATIENT, 0);
      for (const signer of [ctx.patient, ctx.hospitalSteward]) {
        const signature = await signWithdrawal(signer, ctx.consents, id, far(ctx));
        await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(id, far(ctx), signature))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
          .withArgs(id);
      }
    });

    it("refuses an unknown consent", async function () {
      const ctx = await loadFixture(consentedFixture);
      const unknown = tag("consent:unknown");
      const signature = await signWithdrawal(ctx.patient, ctx.consents, unknown, far(ctx));
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(unknown, far(ctx), signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnknownConsent")
        .withArgs(unknown);
    });

    it("refuses a replay, and the old signature never reaches a re-granted consent", async function () {
      const ctx = await loadFixture(consentedFixture);
      const signature = await signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx));
      await ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, far(ctx), signature);
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, far(ctx), signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryConsentNotGranted")
        .withArgs(ctx.consentId, ConsentStatus.WITHDRAWN);
      await record(ctx, ctx.terms);
      const regranted = consentIdOf(ORG.HOSPITAL, PATIENT, 1);
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(regranted, far(ctx), signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
        .withArgs(regranted);
    });

    it("refuses a consent the steward withdrew already", async function () {
      const ctx = await loadFixture(consentedFixture);
      await ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(ctx.consentId);
      const signature = await signWithdrawal(ctx.patient, ctx.consents, ctx.consentId, far(ctx));
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(ctx.consentId, far(ctx), signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryConsentNotGranted")
        .withArgs(ctx.consentId, ConsentStatus.WITHDRAWN);
    });
  });

  describe("recordConsentBySubject (patient's key)", function () {
    const far = (ctx) => ctx.now + 30 * DAY;
    const FIRST = consentIdOf(ORG.HOSPITAL, PATIENT, 0);

    /** The registry with the patient's key registered for PATIENT (no consent yet). */
    async function keyedFixture() {
      const ctx = await registryFixture();
      await ctx.consents.connect(ctx.hospitalSteward).registerSubjectKey(ORG.HOSPITAL, PATIENT, ctx.patient.address);
      return { ...ctx, terms: consentTerms(ctx.now, { scenarios: RESEARCH }) };
    }

    const grant = async (ctx, { id = FIRST, terms = ctx.terms, deadline = far(ctx), signer = ctx.patient } = {}) => {
      const signature = await signConsentGrant(signer, ctx.consents, id, terms, deadline);
      return ctx.consents.connect(ctx.relayer).recordConsentBySubject(id, terms, deadline, signature);
    };

    it("computes the EIP-712 digest the patient signs, and the next consent id", async function () {
      const ctx = await loadFixture(keyedFixture);
      const expected = ethers.TypedDataEncoder.hash(
        await consentDomain(ctx.consents),
        CONSENT_GRANT_TYPES,
        consentGrantMessage(FIRST, ctx.terms, far(ctx)),
      );
      expect(await ctx.consents.consentGrantDigest(FIRST, ctx.terms, far(ctx))).to.equal(expected);
      expect(await ctx.consents.nextConsentId(ORG.HOSPITAL, PATIENT)).to.equal(FIRST);
      await record(ctx, consentTerms(ctx.now, { scenarios: AI }));
      expect(await ctx.consents.nextConsentId(ORG.HOSPITAL, PATIENT)).to.equal(consentIdOf(ORG.HOSPITAL, PATIENT, 1));
    });

    it("records the consent on the patient's signature, relayed by a non-member, as the patient's", async function () {
      const ctx = await loadFixture(keyedFixture);
      const signature = await signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, far(ctx));
      const at = (await time.latest()) + 5;
      await time.setNextBlockTimestamp(at);
      await expect(ctx.consents.connect(ctx.stranger).recordConsentBySubject(FIRST, ctx.terms, far(ctx), signature))
        .to.emit(ctx.consents, "ConsentRecorded")
        .withArgs(
          FIRST,
          ORG.HOSPITAL,
          PATIENT,
          sameStruct({ ...ctx.terms, validFrom: at, subjectKey: ctx.patient.address }),
          ctx.patient.address,
          true,
        );
      expect(await stored(ctx, FIRST)).to.deep.include({
        status: ConsentStatus.GRANTED,
        validFrom: at,
        subjectKey: ctx.patient.address,
      });
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(true);
      // the key it was granted with withdraws it
      const withdrawal = await signWithdrawal(ctx.patient, ctx.consents, FIRST, far(ctx));
      await expect(ctx.consents.connect(ctx.relayer).withdrawConsentBySubject(FIRST, far(ctx), withdrawal))
        .to.emit(ctx.consents, "ConsentWithdrawn")
        .withArgs(FIRST, ORG.HOSPITAL, PATIENT, ctx.patient.address, true);
    });

    it("takes the key of the patient's newest consent when none is registered, and a terms key equal to it", async function () {
      const ctx = await loadFixture(consentedFixture);
      const next = consentIdOf(ORG.HOSPITAL, PATIENT, 1);
      const terms = consentTerms(ctx.now, { scenarios: TEACHING, subjectKey: ctx.patient.address });
      const signature = await signConsentGrant(ctx.patient, ctx.consents, next, terms, far(ctx));
      const at = (await time.latest()) + 5;
      await time.setNextBlockTimestamp(at);
      await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(next, terms, far(ctx), signature))
        .to.emit(ctx.consents, "ConsentRecorded")
        .withArgs(next, ORG.HOSPITAL, PATIENT, sameStruct({ ...terms, validFrom: at }), ctx.patient.address, true);
    });

    it("accepts a signature up to and including its deadline", async function () {
      const ctx = await loadFixture(keyedFixture);
      const deadline = (await time.latest()) + 100;
      const signature = await signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, deadline);
      await time.setNextBlockTimestamp(deadline);
      await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(FIRST, ctx.terms, deadline, signature)).to.emit(
        ctx.consents,
        "ConsentRecorded",
      );
    });

    it("refuses an expired signature", async function () {
      const ctx = await loadFixture(keyedFixture);
      const deadline = (await time.latest()) + 100;
      const signature = await signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, deadline);
      await time.setNextBlockTimestamp(deadline + 1);
      await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(FIRST, ctx.terms, deadline, signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistrySignatureExpired")
        .withArgs(FIRST, deadline);
      expect(await ctx.consents.consentIds(ORG.HOSPITAL, PATIENT)).to.deep.equal([]);
    });

    it("refuses a replay, after a withdrawal too, and a signature for an id already taken", async function () {
      const ctx = await loadFixture(keyedFixture);
      const signature = await signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, far(ctx));
      await ctx.consents.connect(ctx.relayer).recordConsentBySubject(FIRST, ctx.terms, far(ctx), signature);
      const next = consentIdOf(ORG.HOSPITAL, PATIENT, 1);
      await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(FIRST, ctx.terms, far(ctx), signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryStaleConsentGrant")
        .withArgs(FIRST, next);
      await ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(FIRST);
      await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(FIRST, ctx.terms, far(ctx), signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryStaleConsentGrant")
        .withArgs(FIRST, next);
      // the same signature under the next id is not the patient's
      await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(next, ctx.terms, far(ctx), signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
        .withArgs(next);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(false);
    });

    it("refuses a signature overtaken by a consent the steward recorded", async function () {
      const ctx = await loadFixture(keyedFixture);
      const signature = await signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, far(ctx));
      await record(ctx, consentTerms(ctx.now, { scenarios: AI }));
      await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(FIRST, ctx.terms, far(ctx), signature))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryStaleConsentGrant")
        .withArgs(FIRST, consentIdOf(ORG.HOSPITAL, PATIENT, 1));
    });

    const forgeries = [
      ["a key that is not the patient's", async (ctx) => signConsentGrant(ctx.stranger, ctx.consents, FIRST, ctx.terms, far(ctx))],
      ["the steward's key", async (ctx) => signConsentGrant(ctx.hospitalSteward, ctx.consents, FIRST, ctx.terms, far(ctx))],
      [
        "other scenarios",
        async (ctx) => signConsentGrant(ctx.patient, ctx.consents, FIRST, { ...ctx.terms, scenarios: AI }, far(ctx)),
      ],
      [
        "a longer window",
        async (ctx) =>
          signConsentGrant(ctx.patient, ctx.consents, FIRST, { ...ctx.terms, validUntil: ctx.terms.validUntil + 1 }, far(ctx)),
      ],
      [
        "other studies",
        async (ctx) =>
          signConsentGrant(ctx.patient, ctx.consents, FIRST, { ...ctx.terms, studies: [tag("agreement:other")] }, far(ctx)),
      ],
      ["another deadline", async (ctx) => signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, far(ctx) + 1)],
      [
        "another registry",
        async (ctx) =>
          signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, far(ctx), { verifyingContract: ctx.relayer.address }),
      ],
      ["another chain", async (ctx) => signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, far(ctx), { chainId: 1 })],
      [
        "a truncated signature (64 bytes)",
        async (ctx) => ethers.dataSlice(await signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, far(ctx)), 0, 64),
      ],
      ["no signature at all", async () => "0x"],
      [
        "a malleable (high-s) signature",
        async (ctx) => {
          const sig = ethers.Signature.from(await signConsentGrant(ctx.patient, ctx.consents, FIRST, ctx.terms, far(ctx)));
          const n = BigInt("0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
          const highS = ethers.toBeHex(n - BigInt(sig.s), 32);
          return ethers.concat([sig.r, highS, ethers.toBeHex(sig.v === 27 ? 28 : 27, 1)]);
        },
      ],
    ];
    for (const [name, forge] of forgeries) {
      it(`refuses a grant signed for ${name}`, async function () {
        const ctx = await loadFixture(keyedFixture);
        const signature = await forge(ctx);
        await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(FIRST, ctx.terms, far(ctx), signature))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
          .withArgs(FIRST);
        expect(await ctx.consents.consentIds(ORG.HOSPITAL, PATIENT)).to.deep.equal([]);
      });
    }

    it("refuses any signature for a subject without a key", async function () {
      const ctx = await loadFixture(registryFixture);
      const terms = consentTerms(ctx.now, { scenarios: RESEARCH });
      for (const signer of [ctx.patient, ctx.hospitalSteward]) {
        await expect(grant(ctx, { terms, signer }))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
          .withArgs(FIRST);
      }
    });

    it("refuses terms naming another key than the signing one", async function () {
      const ctx = await loadFixture(keyedFixture);
      const terms = { ...ctx.terms, subjectKey: ctx.stranger.address };
      await expect(grant(ctx, { terms }))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistrySubjectKeyMismatch")
        .withArgs(ctx.stranger.address, ctx.patient.address);
    });

    it("refuses an unknown holder and the zero subject", async function () {
      const ctx = await loadFixture(keyedFixture);
      const unknown = tag("org:unknown");
      await expect(grant(ctx, { terms: { ...ctx.terms, holder: unknown } }))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnknownHolder")
        .withArgs(unknown);
      await expect(grant(ctx, { terms: { ...ctx.terms, subject: ethers.ZeroHash } })).to.be.revertedWithCustomError(
        ctx.consents,
        "ConsentRegistryZeroSubject",
      );
    });

    it("applies the steward's rules: overlap, scenarios, back-dating, disease code", async function () {
      const ctx = await loadFixture(keyedFixture);
      await grant(ctx);
      const next = consentIdOf(ORG.HOSPITAL, PATIENT, 1);
      await expect(grant(ctx, { id: next }))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryOverlappingConsent")
        .withArgs(FIRST);
      await expect(grant(ctx, { id: next, terms: { ...ctx.terms, scenarios: 0 } }))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidScenarios")
        .withArgs(0);
      await expect(
        grant(ctx, { id: next, terms: { ...ctx.terms, scenarios: AI, duoCodes: [7] } }),
      ).to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryDiseaseCodeMismatch");
      await expect(
        grant(ctx, { id: next, terms: { ...ctx.terms, scenarios: AI, validFrom: ctx.now - 1 } }),
      ).to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryBackdated");
    });
  });

  describe("specific consent (studies, requesters, disease)", function () {
    const STUDY_A = tag("agreement:breast-cancer-cohort");
    const STUDY_B = tag("agreement:diabetes-registry");
    const [LOW, HIGH] = [STUDY_A, STUDY_B].sort();
    const MONDO_BREAST_CANCER = ethers.encodeBytes32String("MONDO:0007254");
    const scopeOf = (diseaseCode, studies, requesters) =>
      ethers.keccak256(
        ethers.AbiCoder.defaultAbiCoder().encode(["bytes32", "bytes32[]", "bytes32[]"], [diseaseCode, studies, requesters]),
      );
    const ZERO = ethers.ZeroHash;

    it("records studies, requesters and a disease code in the event, and their hash as the scope", async function () {
      const ctx = await loadFixture(registryFixture);
      const requesters = [ORG.INSTITUTE, ORG.AI_COMPANY].sort();
      const terms = consentTerms(ctx.now, {
        scenarios: RESEARCH,
        duoCodes: [7, 46],
        diseaseCode: MONDO_BREAST_CANCER,
        studies: [LOW, HIGH],
        requesters,
      });
      const id = consentIdOf(ORG.HOSPITAL, PATIENT, 0);
      const at = (await time.latest()) + 5;
      await time.setNextBlockTimestamp(at);
      await expect(record(ctx, terms))
        .to.emit(ctx.consents, "ConsentRecorded")
        .withArgs(id, ORG.HOSPITAL, PATIENT, sameStruct({ ...terms, validFrom: at }), ctx.hospitalSteward.address, false);
      expect(await ctx.consents.consentScope(id)).to.equal(scopeOf(MONDO_BREAST_CANCER, [LOW, HIGH], requesters));
      // a specific consent is not a general one: hasConsent answers for unrestricted consents only
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(false);
    });

    it("keeps a zero scope for an unrestricted consent", async function () {
      const ctx = await loadFixture(consentedFixture);
      expect(await ctx.consents.consentScope(ctx.consentId)).to.equal(ZERO);
      expect(await ctx.consents.MAX_SCOPE_ENTRIES()).to.equal(16);
      expect(await ctx.consents.MAX_DUO_CODES()).to.equal(16);
    });

    it("takes another study's consent in an overlapping window, refuses the same scope twice", async function () {
      const ctx = await loadFixture(registryFixture);
      await record(ctx, consentTerms(ctx.now, { scenarios: RESEARCH, studies: [STUDY_A] }));
      await expect(record(ctx, consentTerms(ctx.now, { scenarios: RESEARCH, studies: [STUDY_B] }))).to.emit(
        ctx.consents,
        "ConsentRecorded",
      );
      await expect(record(ctx, consentTerms(ctx.now, { scenarios: RESEARCH }))).to.emit(ctx.consents, "ConsentRecorded");
      await expect(record(ctx, consentTerms(ctx.now, { scenarios: RESEARCH, studies: [STUDY_A] })))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryOverlappingConsent")
        .withArgs(consentIdOf(ORG.HOSPITAL, PATIENT, 0));
    });

    it("takes 16 studies and 16 requesters, refuses 17 of either", async function () {
      const ctx = await loadFixture(registryFixture);
      const studies = Array.from({ length: 17 }, (_, i) => tag(`agreement:study-${i}`)).sort();
      await expect(record(ctx, consentTerms(ctx.now, { studies: studies.slice(0, 16) }))).to.emit(
        ctx.consents,
        "ConsentRecorded",
      );
      await expect(record(ctx, consentTerms(ctx.now, { subject: OTHER_PATIENT, studies })))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryTooManyStudies")
        .withArgs(17, 16);
      const requesters = Array.from({ length: 17 }, () => ORG.INSTITUTE);
      await expect(record(ctx, consentTerms(ctx.now, { subject: OTHER_PATIENT, requesters })))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryTooManyRequesters")
        .withArgs(17, 16);
      const duoCodes = Array.from({ length: 17 }, (_, i) => 100 + i);
      await expect(record(ctx, consentTerms(ctx.now, { subject: OTHER_PATIENT, duoCodes })))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryTooManyDuoCodes")
        .withArgs(17, 16);
    });

    const unordered = [
      ["studies out of order", { studies: [HIGH, LOW] }, HIGH < LOW ? HIGH : LOW],
      ["a repeated study", { studies: [LOW, LOW] }, LOW],
      ["the zero study", { studies: [ZERO] }, ZERO],
      ["a repeated requester", { requesters: [ORG.INSTITUTE, ORG.INSTITUTE] }, ORG.INSTITUTE],
    ];
    for (const [name, overrides, value] of unordered) {
      it(`refuses ${name}`, async function () {
        const ctx = await loadFixture(registryFixture);
        await expect(record(ctx, consentTerms(ctx.now, overrides)))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryScopeNotAscending")
          .withArgs(value);
      });
    }

    it("refuses an unknown requesting organization", async function () {
      const ctx = await loadFixture(registryFixture);
      const stranger = tag("org:nobody");
      await expect(record(ctx, consentTerms(ctx.now, { requesters: [stranger] })))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnknownRequester")
        .withArgs(stranger);
    });

    it("wants DUO:0000007 and a disease code together", async function () {
      const ctx = await loadFixture(registryFixture);
      await expect(record(ctx, consentTerms(ctx.now, { duoCodes: [7] })))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryDiseaseCodeMismatch")
        .withArgs(true, ZERO);
      await expect(record(ctx, consentTerms(ctx.now, { diseaseCode: MONDO_BREAST_CANCER })))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryDiseaseCodeMismatch")
        .withArgs(false, MONDO_BREAST_CANCER);
      await expect(record(ctx, consentTerms(ctx.now, { duoCodes: [7], diseaseCode: MONDO_BREAST_CANCER }))).to.emit(
        ctx.consents,
        "ConsentRecorded",
      );
    });

    it("is withdrawn by the patient's signature like any consent", async function () {
      const ctx = await loadFixture(registryFixture);
      await record(ctx, consentTerms(ctx.now, { studies: [STUDY_A], subjectKey: ctx.patient.address }));
      const id = consentIdOf(ORG.HOSPITAL, PATIENT, 0);
      const deadline = ctx.now + DAY;
      const signature = await signWithdrawal(ctx.patient, ctx.consents, id, deadline);
      await expect(ctx.consents.connect(ctx.stranger).withdrawConsentBySubject(id, deadline, signature))
        .to.emit(ctx.consents, "ConsentWithdrawn")
        .withArgs(id, ORG.HOSPITAL, PATIENT, ctx.patient.address, true);
    });
  });

  describe("hasConsent", function () {
    it("holds from the first to the last second of the window, for the consented scenarios only", async function () {
      const ctx = await loadFixture(registryFixture);
      const from = ctx.now + DAY;
      const until = from + DAY;
      await record(ctx, consentTerms(ctx.now, { scenarios: RESEARCH | AI, validFrom: from, validUntil: until }));
      const has = (scenario) => ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, scenario);
      expect(await has(Scenario.RESEARCH)).to.equal(false);
      await time.increaseTo(from - 1);
      expect(await has(Scenario.RESEARCH)).to.equal(false);
      await time.increaseTo(from);
      expect(await has(Scenario.RESEARCH)).to.equal(true);
      expect(await has(Scenario.AI_TRAINING)).to.equal(true);
      for (const other of [Scenario.CLINICAL_CARE, Scenario.TEACHING, Scenario.INSURANCE_CLAIM]) {
        expect(await has(other)).to.equal(false);
      }
      await time.increaseTo(until);
      expect(await has(Scenario.RESEARCH)).to.equal(true);
      await time.increaseTo(until + 1);
      expect(await has(Scenario.RESEARCH)).to.equal(false);
    });

    it("is false for another subject, another holder and an unknown subject", async function () {
      const ctx = await loadFixture(consentedFixture);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(true);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, OTHER_PATIENT, Scenario.RESEARCH)).to.equal(false);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL_B, PATIENT, Scenario.RESEARCH)).to.equal(false);
    });

    it("finds a later granted consent after an earlier one was withdrawn", async function () {
      const ctx = await loadFixture(consentedFixture);
      await record(ctx, consentTerms(ctx.now, { scenarios: TEACHING }));
      await ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(ctx.consentId);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.RESEARCH)).to.equal(false);
      expect(await ctx.consents.hasConsent(ORG.HOSPITAL, PATIENT, Scenario.TEACHING)).to.equal(true);
    });
  });

  describe("issueAuthorization", function () {
    it("issues an authorization by its code hash, ignoring the input's status and redemption", async function () {
      const ctx = await loadFixture(registryFixture);
      const input = authorizationTerms(ctx.now, { status: AuthorizationStatus.REDEEMED, redeemedBy: tag("forged") });
      const expected = { ...input, status: AuthorizationStatus.ISSUED, redeemedBy: ethers.ZeroHash };
      await expect(ctx.consents.connect(ctx.hospitalSteward).issueAuthorization(CODE, input))
        .to.emit(ctx.consents, "AuthorizationIssued")
        .withArgs(CODE, ORG.HOSPITAL, ORG.INSURER, sameStruct(expected), ctx.hospitalSteward.address, false);
      const kept = await ctx.consents.authorization(CODE);
      expect(sameStruct(expected)(kept)).to.equal(true);
    });

    it("reports status NONE for an unknown code", async function () {
      const ctx = await loadFixture(registryFixture);
      expect((await ctx.consents.authorization(CODE)).status).to.equal(AuthorizationStatus.NONE);
    });

    it("accepts an expiry exactly one lifetime ahead, and a suspended grantee", async function () {
      const ctx = await loadFixture(registryFixture);
      await ctx.membership.suspendOrganization(ORG.INSURER);
      const at = (await time.latest()) + 10;
      await time.setNextBlockTimestamp(at);
      await expect(issue(ctx, { expiresAt: at + YEAR })).to.emit(ctx.consents, "AuthorizationIssued");
    });

    it("accepts every tier up to identified on a dataset that offers it", async function () {
      const ctx = await loadFixture(registryFixture);
      for (const tier of Object.values(Tier)) {
        await issue(ctx, { tier }, { code: tag(`code:${tier}`) });
      }
    });

    async function expectRefused(ctx, tx, errorName, args) {
      await expect(tx)
        .to.be.revertedWithCustomError(ctx.consents, errorName)
        .withArgs(...args);
    }

    it("refuses the zero code hash and a code hash in use", async function () {
      const ctx = await loadFixture(issuedFixture);
      await expectRefused(ctx, issue(ctx, {}, { code: ethers.ZeroHash }), "ConsentRegistryAuthorizationExists", [ethers.ZeroHash]);
      await expectRefused(ctx, issue(ctx, { subject: OTHER_PATIENT }), "ConsentRegistryAuthorizationExists", [CODE]);
      await ctx.consents.connect(ctx.hospitalSteward).revokeAuthorization(CODE);
      await expectRefused(ctx, issue(ctx), "ConsentRegistryAuthorizationExists", [CODE]);
    });

    it("refuses an unknown holder", async function () {
      const ctx = await loadFixture(registryFixture);
      const holder = tag("org:unknown");
      await expectRefused(ctx, issue(ctx, { holder }), "ConsentRegistryUnknownHolder", [holder]);
    });

    for (const who of ["hospitalBSteward", "hospitalGateway", "insurerSteward", "insurerRequester", "regulator", "stranger"]) {
      it(`refuses the ${who}, not a steward of the holder`, async function () {
        const ctx = await loadFixture(registryFixture);
        await expectRefused(ctx, issue(ctx, {}, { signer: ctx[who] }), "ConsentRegistryUnauthorizedSteward", [
          ctx[who].address,
          ORG.HOSPITAL,
        ]);
      });
    }

    it("refuses an unknown grantee", async function () {
      const ctx = await loadFixture(registryFixture);
      const grantee = tag("org:unknown-insurer");
      await expectRefused(ctx, issue(ctx, { grantee }), "ConsentRegistryUnknownGrantee", [grantee]);
    });

    for (const scenario of [Scenario.CLINICAL_CARE, Scenario.RESEARCH, Scenario.AI_TRAINING, Scenario.TEACHING]) {
      it(`refuses scenario ${scenario}, which does not work through codes`, async function () {
        const ctx = await loadFixture(registryFixture);
        await expectRefused(ctx, issue(ctx, { scenario, tier: Tier.AGGREGATE }), "ConsentRegistryScenarioNotAuthorizable", [
          scenario,
        ]);
      });
    }

    it("refuses another hospital's dataset and an unknown dataset", async function () {
      const ctx = await loadFixture(registryFixture);
      await expectRefused(ctx, issue(ctx, { dataset: DATASET.OTHER_HOSPITAL }), "ConsentRegistryDatasetNotHeld", [
        DATASET.OTHER_HOSPITAL,
        ORG.HOSPITAL,
      ]);
      const unknown = tag("dataset:unknown");
      await expectRefused(ctx, issue(ctx, { dataset: unknown }), "ConsentRegistryDatasetNotHeld", [unknown, ORG.HOSPITAL]);
    });

    for (const [name, fieldMask] of [
      ["no field", 0n],
      ["field 8 of an 8-field dataset", fieldsMask(1, 8)],
      ["field 255", 1n << 255n],
    ]) {
      it(`refuses a field mask with ${name}`, async function () {
        const ctx = await loadFixture(registryFixture);
        await expectRefused(ctx, issue(ctx, { fieldMask }), "ConsentRegistryInvalidFieldMask", [fieldMask, 8]);
      });
    }

    it("accepts all fields of the dataset", async function () {
      const ctx = await loadFixture(registryFixture);
      await expect(issue(ctx, { fieldMask: fieldsMask(0, 1, 2, 3, 4, 5, 6, 7) })).to.emit(ctx.consents, "AuthorizationIssued");
    });

    it("refuses a tier above the dataset's maximum", async function () {
      const ctx = await loadFixture(registryFixture);
      const overrides = { dataset: DATASET.IMAGING, fieldMask: fieldsMask(0, 1), tier: Tier.PSEUDONYMIZED };
      await expectRefused(ctx, issue(ctx, overrides), "ConsentRegistryTierAboveCeiling", [Tier.PSEUDONYMIZED, Tier.DEIDENTIFIED]);
      await expect(issue(ctx, { ...overrides, tier: Tier.DEIDENTIFIED })).to.emit(ctx.consents, "AuthorizationIssued");
    });

    it("refuses the zero subject", async function () {
      const ctx = await loadFixture(registryFixture);
      await expectRefused(ctx, issue(ctx, { subject: ethers.ZeroHash }), "ConsentRegistryZeroSubject", []);
    });

    it("refuses an expiry that is not in the future or beyond the longest lifetime", async function () {
      const ctx = await loadFixture(registryFixture);
      for (const offset of [0, -1, YEAR + 1]) {
        const at = (await time.latest()) + 10;
        await time.setNextBlockTimestamp(at);
        await expectRefused(ctx, issue(ctx, { expiresAt: at + offset }), "ConsentRegistryInvalidExpiry", [at + offset, at + YEAR]);
      }
      const at = (await time.latest()) + 10;
      await time.setNextBlockTimestamp(at);
      await expectRefused(ctx, issue(ctx, { expiresAt: 0 }), "ConsentRegistryInvalidExpiry", [0, at + YEAR]);
    });
  });

  describe("revokeAuthorization", function () {
    it("revokes an issued code", async function () {
      const ctx = await loadFixture(issuedFixture);
      await expect(ctx.consents.connect(ctx.hospitalSteward).revokeAuthorization(CODE))
        .to.emit(ctx.consents, "AuthorizationRevoked")
        .withArgs(CODE, ORG.HOSPITAL, ctx.hospitalSteward.address, false);
      expect((await ctx.consents.authorization(CODE)).status).to.equal(AuthorizationStatus.REVOKED);
    });

    it("refuses an unknown code", async function () {
      const ctx = await loadFixture(issuedFixture);
      const unknown = tag("code:unknown");
      await expect(ctx.consents.connect(ctx.hospitalSteward).revokeAuthorization(unknown))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnknownAuthorization")
        .withArgs(unknown);
    });

    for (const who of ["hospitalBSteward", "insurerSteward", "regulator", "stranger"]) {
      it(`refuses the ${who}, not a steward of the holder`, async function () {
        const ctx = await loadFixture(issuedFixture);
        await expect(ctx.consents.connect(ctx[who]).revokeAuthorization(CODE))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnauthorizedSteward")
          .withArgs(ctx[who].address, ORG.HOSPITAL);
      });
    }

    it("refuses a code revoked already", async function () {
      const ctx = await loadFixture(issuedFixture);
      await ctx.consents.connect(ctx.hospitalSteward).revokeAuthorization(CODE);
      await expect(ctx.consents.connect(ctx.hospitalSteward).revokeAuthorization(CODE))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryAuthorizationNotIssued")
        .withArgs(CODE, AuthorizationStatus.REVOKED);
    });

    it("refuses a redeemed code", async function () {
      const ctx = await loadFixture(directRedeemFixture);
      const a = ctx.authorization;
      await ctx.registry
        .connect(ctx.relayer)
        .redeemAuthorization(CODE, ACCESS_ID, a.holder, a.grantee, a.dataset, a.fieldMask, a.tier, leafOf(a.subject), a.scenario);
      await expect(ctx.registry.connect(ctx.hospitalSteward).revokeAuthorization(CODE))
        .to.be.revertedWithCustomError(ctx.registry, "ConsentRegistryAuthorizationNotIssued")
        .withArgs(CODE, AuthorizationStatus.REDEEMED);
    });
  });

  describe("redeemAuthorization", function () {
    /** The redemption arguments of an access that fits the authorization; `overrides` replace some. */
    const fits = (ctx, overrides = {}) => {
      const a = ctx.authorization;
      const args = {
        code: CODE,
        accessId: ACCESS_ID,
        holder: a.holder,
        grantee: a.grantee,
        dataset: a.dataset,
        fieldMask: fieldsMask(1, 3),
        tier: a.tier,
        cohortRoot: leafOf(a.subject),
        scenario: a.scenario,
        ...overrides,
      };
      return [
        args.code,
        args.accessId,
        args.holder,
        args.grantee,
        args.dataset,
        args.fieldMask,
        args.tier,
        args.cohortRoot,
        args.scenario,
      ];
    };
    const redeem = (ctx, overrides) => ctx.registry.connect(ctx.relayer).redeemAuthorization(...fits(ctx, overrides));
    const faultOf = (ctx, overrides) => ctx.registry.connect(ctx.relayer).redeemAuthorization.staticCall(...fits(ctx, overrides));

    it("redeems a fitting access once, linking the code to the access", async function () {
      const ctx = await loadFixture(directRedeemFixture);
      expect(await faultOf(ctx)).to.equal(AuthorizationFault.NONE);
      await expect(redeem(ctx)).to.emit(ctx.registry, "AuthorizationRedeemed").withArgs(CODE, ACCESS_ID, ORG.INSURER);
      const kept = await ctx.registry.authorization(CODE);
      expect(kept.status).to.equal(AuthorizationStatus.REDEEMED);
      expect(kept.redeemedBy).to.equal(ACCESS_ID);
      expect(await faultOf(ctx, { accessId: tag("request:again") })).to.equal(AuthorizationFault.REDEEMED);
    });

    describe("a multi-use code", function () {
      /** `CODE` issued by the steward as multi-use on the directly redeemed registry. */
      async function multiUseFixture() {
        const ctx = await registryFixture();
        const registry = await ethers.deployContract("ConsentRegistry", [
          await ctx.membership.getAddress(),
          await ctx.datasets.getAddress(),
        ]);
        await registry.bindAccessLog(ctx.relayer.address);
        const authorization = authorizationTerms(ctx.now, { multiUse: true });
        await expect(registry.connect(ctx.hospitalSteward).issueAuthorization(CODE, authorization))
          .to.emit(registry, "AuthorizationIssued")
          .withArgs(
            CODE,
            ORG.HOSPITAL,
            ORG.INSURER,
            sameStruct({ ...authorization, status: AuthorizationStatus.ISSUED }),
            ctx.hospitalSteward.address,
            false,
          );
        return { ...ctx, registry, authorization };
      }

      it("redeems every fitting access until it expires, staying ISSUED, the latest access linked", async function () {
        const ctx = await loadFixture(multiUseFixture);
        const second = tag("request:insurance-claim-2");
        await expect(redeem(ctx)).to.emit(ctx.registry, "AuthorizationRedeemed").withArgs(CODE, ACCESS_ID, ORG.INSURER);
        await expect(redeem(ctx, { accessId: second }))
          .to.emit(ctx.registry, "AuthorizationRedeemed")
          .withArgs(CODE, second, ORG.INSURER);
        const kept = await ctx.registry.authorization(CODE);
        expect([kept.status, kept.multiUse, kept.redeemedBy]).to.deep.equal([AuthorizationStatus.ISSUED, true, second]);
        // still only within its scope, and not past its expiry
        expect(await faultOf(ctx, { grantee: ORG.INSTITUTE })).to.equal(AuthorizationFault.WRONG_GRANTEE);
        await time.increaseTo(ctx.authorization.expiresAt + 1);
        expect(await faultOf(ctx, { accessId: tag("request:late") })).to.equal(AuthorizationFault.EXPIRED);
      });

      it("is stopped by a revocation after it was used", async function () {
        const ctx = await loadFixture(multiUseFixture);
        await redeem(ctx);
        await expect(ctx.registry.connect(ctx.hospitalSteward).revokeAuthorization(CODE)).to.emit(
          ctx.registry,
          "AuthorizationRevoked",
        );
        expect(await faultOf(ctx, { accessId: tag("request:after-revocation") })).to.equal(AuthorizationFault.REVOKED);
      });
    });

    it("redeems exactly the authorized scope: every field, the tier itself, on the last second", async function () {
      const ctx = await loadFixture(directRedeemFixture);
      await time.setNextBlockTimestamp(ctx.authorization.expiresAt);
      await expect(redeem(ctx, { fieldMask: ctx.authorization.fieldMask })).to.emit(ctx.registry, "AuthorizationRedeemed");
    });

    it("redeems below the authorized tier", async function () {
      const ctx = await loadFixture(directRedeemFixture);
      await expect(redeem(ctx, { tier: Tier.AGGREGATE })).to.emit(ctx.registry, "AuthorizationRedeemed");
    });

    const PSEUDONYMIZED_CODE = tag("code:pseudonymized");
    /** A second authorization one tier below the top, so that a tier above its scope exists. */
    const issuePseudonymized = (ctx) =>
      ctx.registry
        .connect(ctx.hospitalSteward)
        .issueAuthorization(PSEUDONYMIZED_CODE, { ...ctx.authorization, tier: Tier.PSEUDONYMIZED });
    const faults = [
      ["an unknown code", AuthorizationFault.UNKNOWN, { code: tag("code:unknown") }],
      ["another holder", AuthorizationFault.WRONG_HOLDER, { holder: ORG.HOSPITAL_B }],
      ["another grantee", AuthorizationFault.WRONG_GRANTEE, { grantee: ORG.INSTITUTE }],
      ["another dataset", AuthorizationFault.DATASET_NOT_IN_SCOPE, { dataset: DATASET.IMAGING }],
      ["no field", AuthorizationFault.FIELDS_NOT_IN_SCOPE, { fieldMask: 0n }],
      ["a field outside the scope", AuthorizationFault.FIELDS_NOT_IN_SCOPE, { fieldMask: fieldsMask(0, 1) }],
      ["a tier above the scope", AuthorizationFault.TIER_ABOVE_SCOPE, { code: PSEUDONYMIZED_CODE, tier: Tier.IDENTIFIED }],
      ["another patient", AuthorizationFault.WRONG_SUBJECT, { cohortRoot: leafOf(OTHER_PATIENT) }],
      ["the subject itself instead of its leaf", AuthorizationFault.WRONG_SUBJECT, { cohortRoot: PATIENT }],
      ["a zero cohort root", AuthorizationFault.WRONG_SUBJECT, { cohortRoot: ethers.ZeroHash }],
      ["another scenario", AuthorizationFault.WRONG_SCENARIO, { scenario: Scenario.CLINICAL_CARE }],
    ];
    for (const [name, fault, overrides] of faults) {
      it(`reports ${name} and changes nothing`, async function () {
        const ctx = await loadFixture(directRedeemFixture);
        await issuePseudonymized(ctx);
        expect(await faultOf(ctx, overrides)).to.equal(fault);
        await expect(redeem(ctx, overrides)).not.to.emit(ctx.registry, "AuthorizationRedeemed");
        const kept = await ctx.registry.authorization(overrides.code ?? CODE);
        expect(kept.redeemedBy).to.equal(ethers.ZeroHash);
        const unchanged = fault === AuthorizationFault.UNKNOWN ? AuthorizationStatus.NONE : AuthorizationStatus.ISSUED;
        expect(kept.status).to.equal(unchanged);
      });
    }

    it("reports a revoked code", async function () {
      const ctx = await loadFixture(directRedeemFixture);
      await ctx.registry.connect(ctx.hospitalSteward).revokeAuthorization(CODE);
      expect(await faultOf(ctx)).to.equal(AuthorizationFault.REVOKED);
    });

    it("reports an expired code from the second after its expiry", async function () {
      const ctx = await loadFixture(directRedeemFixture);
      await time.increaseTo(ctx.authorization.expiresAt + 1);
      expect(await faultOf(ctx)).to.equal(AuthorizationFault.EXPIRED);
    });

    it("reports the first fault in order when several apply", async function () {
      const ctx = await loadFixture(directRedeemFixture);
      const everythingWrong = {
        holder: ORG.HOSPITAL_B,
        grantee: ORG.INSTITUTE,
        dataset: DATASET.IMAGING,
        fieldMask: 0n,
        cohortRoot: ethers.ZeroHash,
      };
      expect(await faultOf(ctx, everythingWrong)).to.equal(AuthorizationFault.WRONG_HOLDER);
      expect(await faultOf(ctx, { ...everythingWrong, holder: ORG.HOSPITAL })).to.equal(AuthorizationFault.WRONG_GRANTEE);
      expect(await faultOf(ctx, { ...everythingWrong, holder: ORG.HOSPITAL, grantee: ORG.INSURER })).to.equal(
        AuthorizationFault.DATASET_NOT_IN_SCOPE,
      );
      expect(
        await faultOf(ctx, { ...everythingWrong, holder: ORG.HOSPITAL, grantee: ORG.INSURER, dataset: DATASET.EHR }),
      ).to.equal(AuthorizationFault.FIELDS_NOT_IN_SCOPE);
      await time.increaseTo(ctx.authorization.expiresAt + 1);
      expect(await faultOf(ctx, everythingWrong)).to.equal(AuthorizationFault.EXPIRED);
      await ctx.registry.connect(ctx.hospitalSteward).revokeAuthorization(CODE);
      expect(await faultOf(ctx, everythingWrong)).to.equal(AuthorizationFault.REVOKED);
    });

    for (const who of ["operator", "hospitalGateway", "hospitalSteward", "stranger"]) {
      it(`refuses the ${who}, not the bound access log`, async function () {
        const ctx = await loadFixture(directRedeemFixture);
        await expect(ctx.registry.connect(ctx[who]).redeemAuthorization(...fits(ctx)))
          .to.be.revertedWithCustomError(ctx.registry, "ConsentRegistryUnauthorizedRedeemer")
          .withArgs(ctx[who].address);
      });
    }

    it("refuses anyone but the access log on the deployed registry, the gateway included", async function () {
      const ctx = await loadFixture(issuedFixture);
      const a = ctx.authorization;
      const args = [CODE, ACCESS_ID, a.holder, a.grantee, a.dataset, a.fieldMask, a.tier, leafOf(a.subject), a.scenario];
      for (const who of ["hospitalGateway", "operator"]) {
        await expect(ctx.consents.connect(ctx[who]).redeemAuthorization(...args))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnauthorizedRedeemer")
          .withArgs(ctx[who].address);
      }
      expect((await ctx.consents.authorization(CODE)).status).to.equal(AuthorizationStatus.ISSUED);
    });
  });
  describe("patient-held authorization", function () {
    const PATIENT_CODE = codeHashOf("PPPPP-QQQQQ-RRRRR-SSSSS");

    /** The patient's key registered by the hospital's steward, without any consent. */
    async function keyedFixture() {
      const ctx = await registryFixture();
      await ctx.consents.connect(ctx.hospitalSteward).registerSubjectKey(ORG.HOSPITAL, PATIENT, ctx.patient.address);
      return { ...ctx, authorization: authorizationTerms(ctx.now) };
    }

    /** `authorization` signed by `signer` (default: the patient) and relayed by a non-member. */
    async function issueSigned(ctx, { authorization = ctx.authorization, code = PATIENT_CODE, signer = ctx.patient, signed } = {}) {
      const signature = await signAuthorization(signer, ctx.consents, code, signed ?? authorization);
      return ctx.consents.connect(ctx.relayer).issueAuthorizationBySubject(code, authorization, signature);
    }

    describe("registerSubjectKey", function () {
      it("registers, rotates and removes a subject's key, with or without a consent", async function () {
        const ctx = await loadFixture(registryFixture);
        const steward = ctx.consents.connect(ctx.hospitalSteward);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ethers.ZeroAddress);
        await expect(steward.registerSubjectKey(ORG.HOSPITAL, PATIENT, ctx.patient.address))
          .to.emit(ctx.consents, "SubjectKeyRegistered")
          .withArgs(ORG.HOSPITAL, PATIENT, ctx.patient.address, ethers.ZeroAddress, ctx.hospitalSteward.address);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ctx.patient.address);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL_B, PATIENT)).to.equal(ethers.ZeroAddress);
        await expect(steward.registerSubjectKey(ORG.HOSPITAL, PATIENT, ctx.stranger.address))
          .to.emit(ctx.consents, "SubjectKeyRegistered")
          .withArgs(ORG.HOSPITAL, PATIENT, ctx.stranger.address, ctx.patient.address, ctx.hospitalSteward.address);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ctx.stranger.address);
        await steward.registerSubjectKey(ORG.HOSPITAL, PATIENT, ethers.ZeroAddress);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ethers.ZeroAddress);
      });

      it("removes a key for good: a consent the removed key granted does not bring it back", async function () {
        const ctx = await loadFixture(keyedFixture);
        const steward = ctx.consents.connect(ctx.hospitalSteward);
        // the patient grants a consent with their key: the consent names that key
        const first = consentIdOf(ORG.HOSPITAL, PATIENT, 0);
        const terms = consentTerms(ctx.now, { scenarios: RESEARCH });
        const deadline = ctx.now + 30 * DAY;
        const grant = await signConsentGrant(ctx.patient, ctx.consents, first, terms, deadline);
        await ctx.consents.connect(ctx.relayer).recordConsentBySubject(first, terms, deadline, grant);
        // the patient reports the key lost: the hospital removes it
        await expect(steward.registerSubjectKey(ORG.HOSPITAL, PATIENT, ethers.ZeroAddress))
          .to.emit(ctx.consents, "SubjectKeyRegistered")
          .withArgs(ORG.HOSPITAL, PATIENT, ethers.ZeroAddress, ctx.patient.address, ctx.hospitalSteward.address);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ethers.ZeroAddress);
        // whoever holds the lost key can neither issue a code nor grant a consent in the patient's name
        await expect(issueSigned({ ...ctx, authorization: { ...ctx.authorization, multiUse: true } }))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidAuthorizationSignature")
          .withArgs(PATIENT_CODE);
        const next = consentIdOf(ORG.HOSPITAL, PATIENT, 1);
        const teaching = consentTerms(ctx.now, { scenarios: TEACHING });
        const stolen = await signConsentGrant(ctx.patient, ctx.consents, next, teaching, deadline);
        await expect(ctx.consents.connect(ctx.relayer).recordConsentBySubject(next, teaching, deadline, stolen))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidSubjectSignature")
          .withArgs(next);
        // a new key registered speaks for the patient again
        await steward.registerSubjectKey(ORG.HOSPITAL, PATIENT, ctx.stranger.address);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ctx.stranger.address);
      });

      it("falls back to the newest consent naming a key, and a registered key wins", async function () {
        const ctx = await loadFixture(consentedFixture);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ctx.patient.address);
        await ctx.consents.connect(ctx.hospitalSteward).withdrawConsent(ctx.consentId);
        await record(ctx, consentTerms(ctx.now, { subjectKey: ctx.stranger.address }));
        await record(ctx, consentTerms(ctx.now, { scenarios: TEACHING }));
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ctx.stranger.address);
        await ctx.consents.connect(ctx.hospitalSteward).registerSubjectKey(ORG.HOSPITAL, PATIENT, ctx.operator.address);
        expect(await ctx.consents.subjectKeyOf(ORG.HOSPITAL, PATIENT)).to.equal(ctx.operator.address);
      });

      for (const who of ["hospitalBSteward", "hospitalGateway", "regulator", "stranger"]) {
        it(`refuses the ${who}, not a steward of the holder`, async function () {
          const ctx = await loadFixture(registryFixture);
          await expect(ctx.consents.connect(ctx[who]).registerSubjectKey(ORG.HOSPITAL, PATIENT, ctx.patient.address))
            .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnauthorizedSteward")
            .withArgs(ctx[who].address, ORG.HOSPITAL);
        });
      }

      it("refuses the zero subject and an unknown holder", async function () {
        const ctx = await loadFixture(registryFixture);
        const steward = ctx.consents.connect(ctx.hospitalSteward);
        await expect(steward.registerSubjectKey(ORG.HOSPITAL, ethers.ZeroHash, ctx.patient.address)).to.be.revertedWithCustomError(
          ctx.consents,
          "ConsentRegistryZeroSubject",
        );
        const unknown = tag("org:unknown");
        await expect(steward.registerSubjectKey(unknown, PATIENT, ctx.patient.address))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnknownHolder")
          .withArgs(unknown);
      });
    });

    describe("issueAuthorizationBySubject", function () {
      it("computes the EIP-712 digest the patient signs", async function () {
        const ctx = await loadFixture(keyedFixture);
        const digest = ethers.TypedDataEncoder.hash(
          await consentDomain(ctx.consents),
          AUTHORIZATION_TYPES,
          authorizationMessage(PATIENT_CODE, ctx.authorization),
        );
        expect(await ctx.consents.authorizationDigest(PATIENT_CODE, ctx.authorization)).to.equal(digest);
        // status and redeemedBy are not signed
        const noise = { ...ctx.authorization, status: AuthorizationStatus.REDEEMED, redeemedBy: tag("x") };
        expect(await ctx.consents.authorizationDigest(PATIENT_CODE, noise)).to.equal(digest);
      });

      it("issues on the patient's signature, relayed by a non-member, and says the patient issued it", async function () {
        const ctx = await loadFixture(keyedFixture);
        const expected = { ...ctx.authorization, status: AuthorizationStatus.ISSUED, redeemedBy: ethers.ZeroHash };
        await expect(issueSigned(ctx))
          .to.emit(ctx.consents, "AuthorizationIssued")
          .withArgs(PATIENT_CODE, ORG.HOSPITAL, ORG.INSURER, sameStruct(expected), ctx.patient.address, true);
        expect(sameStruct(expected)(await ctx.consents.authorization(PATIENT_CODE))).to.equal(true);
      });

      it("issues a multi-use code the patient signed as such", async function () {
        const ctx = await loadFixture(keyedFixture);
        const authorization = { ...ctx.authorization, multiUse: true };
        const expected = { ...authorization, status: AuthorizationStatus.ISSUED, redeemedBy: ethers.ZeroHash };
        await expect(issueSigned({ ...ctx, authorization }))
          .to.emit(ctx.consents, "AuthorizationIssued")
          .withArgs(PATIENT_CODE, ORG.HOSPITAL, ORG.INSURER, sameStruct(expected), ctx.patient.address, true);
        expect((await ctx.consents.authorization(PATIENT_CODE)).multiUse).to.equal(true);
      });

      it("takes the key of the patient's consent when none is registered", async function () {
        const ctx = await loadFixture(consentedFixture);
        await expect(issueSigned({ ...ctx, authorization: authorizationTerms(ctx.now) }))
          .to.emit(ctx.consents, "AuthorizationIssued");
      });

      it("refuses a forged signature, a tampered authorization and a subject without a key", async function () {
        const ctx = await loadFixture(keyedFixture);
        const forger = new ethers.Wallet(ethers.id("forger"));
        await expect(issueSigned(ctx, { signer: forger }))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidAuthorizationSignature")
          .withArgs(PATIENT_CODE);
        const tampered = [
          { grantee: ORG.INSTITUTE },
          { tier: Tier.PSEUDONYMIZED },
          { fieldMask: fieldsMask(1, 2, 3, 4, 5, 6) },
          { expiresAt: ctx.authorization.expiresAt + 1 },
          { subject: OTHER_PATIENT },
          { multiUse: true }, // a single-use code relayed as a multi-use one
        ];
        for (const change of tampered) {
          await expect(issueSigned(ctx, { authorization: { ...ctx.authorization, ...change }, signed: ctx.authorization }))
            .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidAuthorizationSignature")
            .withArgs(PATIENT_CODE);
        }
        // signed for another code hash
        const signature = await signAuthorization(ctx.patient, ctx.consents, CODE, ctx.authorization);
        await expect(ctx.consents.connect(ctx.relayer).issueAuthorizationBySubject(PATIENT_CODE, ctx.authorization, signature))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidAuthorizationSignature");
        // another registry (domain) or a malformed signature
        const other = await signAuthorization(ctx.patient, ctx.consents, PATIENT_CODE, ctx.authorization, {
          verifyingContract: ctx.stranger.address,
        });
        for (const bad of [other, "0x1234"]) {
          await expect(ctx.consents.connect(ctx.relayer).issueAuthorizationBySubject(PATIENT_CODE, ctx.authorization, bad))
            .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidAuthorizationSignature");
        }
        // the same patient's key names no key for another subject
        const foreign = { ...ctx.authorization, subject: OTHER_PATIENT };
        await expect(issueSigned(ctx, { authorization: foreign }))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidAuthorizationSignature");
        expect((await ctx.consents.authorization(PATIENT_CODE)).status).to.equal(AuthorizationStatus.NONE);
      });

      it("refuses the old key after a rotation", async function () {
        const ctx = await loadFixture(keyedFixture);
        const fresh = new ethers.Wallet(ethers.id("rotated patient key"));
        await ctx.consents.connect(ctx.hospitalSteward).registerSubjectKey(ORG.HOSPITAL, PATIENT, fresh.address);
        await expect(issueSigned(ctx)).to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidAuthorizationSignature");
        await expect(issueSigned(ctx, { signer: fresh })).to.emit(ctx.consents, "AuthorizationIssued");
      });

      it("refuses an expired signature: its expiry is its deadline", async function () {
        const ctx = await loadFixture(keyedFixture);
        const authorization = { ...ctx.authorization, expiresAt: ctx.now + DAY };
        const signature = await signAuthorization(ctx.patient, ctx.consents, PATIENT_CODE, authorization);
        await time.setNextBlockTimestamp(ctx.now + DAY);
        await expect(ctx.consents.connect(ctx.relayer).issueAuthorizationBySubject(PATIENT_CODE, authorization, signature))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryAuthorizationSignatureExpired")
          .withArgs(PATIENT_CODE, ctx.now + DAY);
      });

      it("refuses a relayed signature a second time, and a lifetime beyond a year", async function () {
        const ctx = await loadFixture(keyedFixture);
        await issueSigned(ctx);
        await expect(issueSigned(ctx))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryAuthorizationExists")
          .withArgs(PATIENT_CODE);
        const far = { ...ctx.authorization, expiresAt: ctx.now + 2 * YEAR };
        await expect(issueSigned(ctx, { authorization: far, code: CODE })).to.be.revertedWithCustomError(
          ctx.consents,
          "ConsentRegistryInvalidExpiry",
        );
      });

      it("applies the steward's scope rules: scenario, dataset, grantee", async function () {
        const ctx = await loadFixture(keyedFixture);
        const cases = [
          [{ scenario: Scenario.RESEARCH, tier: Tier.DEIDENTIFIED }, "ConsentRegistryScenarioNotAuthorizable"],
          [{ dataset: DATASET.OTHER_HOSPITAL }, "ConsentRegistryDatasetNotHeld"],
          [{ grantee: tag("org:unknown") }, "ConsentRegistryUnknownGrantee"],
        ];
        for (const [change, error] of cases) {
          await expect(issueSigned(ctx, { authorization: { ...ctx.authorization, ...change } })).to.be.revertedWithCustomError(
            ctx.consents,
            error,
          );
        }
      });
    });

    describe("revokeAuthorizationBySubject", function () {
      async function patientIssuedFixture() {
        const ctx = await keyedFixture();
        const signature = await signAuthorization(ctx.patient, ctx.consents, PATIENT_CODE, ctx.authorization);
        await ctx.consents.connect(ctx.relayer).issueAuthorizationBySubject(PATIENT_CODE, ctx.authorization, signature);
        return ctx;
      }
      const revokeSigned = async (ctx, { signer = ctx.patient, deadline = ctx.now + DAY, code = PATIENT_CODE } = {}) =>
        ctx.consents
          .connect(ctx.relayer)
          .revokeAuthorizationBySubject(code, deadline, await signAuthorizationRevocation(signer, ctx.consents, code, deadline));

      it("revokes on the patient's signature, relayed by anyone, a steward's code too", async function () {
        const ctx = await loadFixture(patientIssuedFixture);
        expect(await ctx.consents.authorizationRevocationDigest(PATIENT_CODE, ctx.now + DAY)).to.not.equal(ethers.ZeroHash);
        await expect(revokeSigned(ctx))
          .to.emit(ctx.consents, "AuthorizationRevoked")
          .withArgs(PATIENT_CODE, ORG.HOSPITAL, ctx.patient.address, true);
        expect((await ctx.consents.authorization(PATIENT_CODE)).status).to.equal(AuthorizationStatus.REVOKED);
        await issue(ctx);
        await expect(revokeSigned(ctx, { code: CODE })).to.emit(ctx.consents, "AuthorizationRevoked");
      });

      it("refuses a forged or expired signature, an unknown code and a code not issued", async function () {
        const ctx = await loadFixture(patientIssuedFixture);
        await expect(revokeSigned(ctx, { signer: ctx.stranger }))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryInvalidAuthorizationSignature")
          .withArgs(PATIENT_CODE);
        const deadline = (await time.latest()) - 1;
        await expect(revokeSigned(ctx, { deadline }))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryAuthorizationSignatureExpired")
          .withArgs(PATIENT_CODE, deadline);
        const unknown = tag("code:unknown");
        await expect(revokeSigned(ctx, { code: unknown }))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryUnknownAuthorization")
          .withArgs(unknown);
        await ctx.consents.connect(ctx.hospitalSteward).revokeAuthorization(PATIENT_CODE);
        await expect(revokeSigned(ctx))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryAuthorizationNotIssued")
          .withArgs(PATIENT_CODE, AuthorizationStatus.REVOKED);
      });
    });
  });
});

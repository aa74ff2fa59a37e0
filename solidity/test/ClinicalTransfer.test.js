// Clinical transfers ("data follows the patient") and break-glass: across organizations, identified
// clinical care needs the patient's code; an agreement may allow emergency access without one, each
// such access flagged and reviewed by a steward of the holder within the agreement's window.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const {
  AuthorizationFault,
  AuthorizationStatus,
  BreakGlassOutcome,
  BreakGlassReason,
  ConsentPolicy,
  Decision,
  Scenario,
  Tier,
} = require("./helpers/enums");
const {
  ORG,
  PATIENT,
  activate,
  authorizationTerms,
  breakGlassRef,
  codeHashOf,
  deployFixture,
  leafOf,
  researchTerms,
  signedGranted,
  tag,
  transferFixture,
} = require("./helpers/fixtures");
const { agreementIdOf } = require("./helpers/typed-data");

const HOUR = 3600;
const FINDING = tag("finding:unconscious-on-arrival-reviewed");

/** A GRANTED identified record of hospital B's clinician for PATIENT under the transfer agreement. */
const transferRecord = (ctx, overrides = {}) =>
  signedGranted(
    ctx,
    {
      agreementId: ctx.transferId,
      requester: ctx.clinicianB.address,
      tier: Tier.IDENTIFIED,
      cohortRoot: leafOf(PATIENT),
      cohortSize: 1,
      authorizationRef: ctx.clinicalCode,
      ...overrides,
    },
    ctx.clinicianB,
  );
const record = (ctx, r) => ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(r);
const emergency = BreakGlassReason.PATIENT_INCAPACITATED;

describe("Clinical transfers", function () {
  describe("the consent policy clinical care needs (AccessRules.requiredConsent)", function () {
    const clinical = (now, overrides) =>
      researchTerms(now, {
        scenario: Scenario.CLINICAL_CARE,
        maxTier: Tier.IDENTIFIED,
        consentPolicy: ConsentPolicy.NONE,
        requester: ORG.HOSPITAL_B,
        duoCodes: [43],
        ...overrides,
      });

    it("needs the patient's code for identified clinical care by another organization", async function () {
      const ctx = await loadFixture(deployFixture);
      await expect(ctx.agreements.connect(ctx.hospitalSteward).propose(clinical(ctx.now)))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryConsentPolicyMismatch")
        .withArgs(Scenario.CLINICAL_CARE, ConsentPolicy.PATIENT_AUTHORIZATION, ConsentPolicy.NONE);
      const terms = clinical(ctx.now, { consentPolicy: ConsentPolicy.PATIENT_AUTHORIZATION });
      await expect(ctx.agreements.connect(ctx.hospitalSteward).propose(terms)).to.emit(ctx.agreements, "AgreementProposed");
    });

    it("needs none within the holder (no transfer) nor below IDENTIFIED", async function () {
      const ctx = await loadFixture(deployFixture);
      for (const [i, overrides] of [{ requester: ORG.HOSPITAL }, { maxTier: Tier.PSEUDONYMIZED }].entries()) {
        const terms = clinical(ctx.now, { ...overrides, nonce: 10 + i });
        await expect(ctx.agreements.connect(ctx.hospitalSteward).propose(terms)).to.emit(ctx.agreements, "AgreementProposed");
        const demanding = clinical(ctx.now, { ...overrides, nonce: 20 + i, consentPolicy: ConsentPolicy.PATIENT_AUTHORIZATION });
        await expect(ctx.agreements.connect(ctx.hospitalSteward).propose(demanding))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryConsentPolicyMismatch")
          .withArgs(Scenario.CLINICAL_CARE, ConsentPolicy.NONE, ConsentPolicy.PATIENT_AUTHORIZATION);
      }
    });

    it("allows break-glass only on a code-needing clinical agreement, with 1 to 720 review hours", async function () {
      const ctx = await loadFixture(deployFixture);
      const transfer = { consentPolicy: ConsentPolicy.PATIENT_AUTHORIZATION };
      const refused = [
        [clinical(ctx.now, { ...transfer, breakGlassReviewHours: 721, nonce: 31 }), Scenario.CLINICAL_CARE, 721],
        [clinical(ctx.now, { requester: ORG.HOSPITAL, breakGlassReviewHours: 24, nonce: 32 }), Scenario.CLINICAL_CARE, 24],
        [researchTerms(ctx.now, { breakGlassReviewHours: 24, nonce: 33 }), Scenario.RESEARCH, 24],
        [
          researchTerms(ctx.now, {
            requester: ORG.INSURER,
            scenario: Scenario.INSURANCE_CLAIM,
            maxTier: Tier.IDENTIFIED,
            consentPolicy: ConsentPolicy.PATIENT_AUTHORIZATION,
            breakGlassReviewHours: 24,
            nonce: 34,
          }),
          Scenario.INSURANCE_CLAIM,
          24,
        ],
      ];
      for (const [terms, scenario, hours] of refused) {
        await expect(ctx.agreements.connect(ctx.hospitalSteward).propose(terms))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidBreakGlass")
          .withArgs(scenario, hours);
      }
      for (const [i, hours] of [1, 720].entries()) {
        const terms = clinical(ctx.now, { ...transfer, breakGlassReviewHours: hours, nonce: 40 + i });
        await ctx.agreements.connect(ctx.hospitalSteward).propose(terms);
        expect((await ctx.agreements.accessTerms(agreementIdOf(terms))).breakGlassReviewHours).to.equal(hours);
      }
    });
  });

  describe("codes for clinical care (ConsentRegistry)", function () {
    const issue = (ctx, code, overrides) =>
      ctx.consents.connect(ctx.hospitalSteward).issueAuthorization(code, authorizationTerms(ctx.now, overrides));

    it("issues an identified clinical-care code to another organization only", async function () {
      const ctx = await loadFixture(deployFixture);
      const clinical = { scenario: Scenario.CLINICAL_CARE, grantee: ORG.HOSPITAL_B };
      await expect(issue(ctx, tag("code:b"), clinical)).to.emit(ctx.consents, "AuthorizationIssued");
      for (const [i, overrides] of [{ grantee: ORG.HOSPITAL }, { tier: Tier.PSEUDONYMIZED }].entries()) {
        await expect(issue(ctx, tag(`code:${i}`), { ...clinical, ...overrides }))
          .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryScenarioNotAuthorizable")
          .withArgs(Scenario.CLINICAL_CARE);
      }
    });

    it("refuses a code hash of the break-glass form", async function () {
      const ctx = await loadFixture(deployFixture);
      const ref = breakGlassRef(emergency);
      await expect(issue(ctx, ref, {}))
        .to.be.revertedWithCustomError(ctx.consents, "ConsentRegistryAuthorizationExists")
        .withArgs(ref);
    });
  });

  describe("accesses under a transfer agreement", function () {
    it("refuses a GRANTED record without the patient's code", async function () {
      const ctx = await loadFixture(transferFixture);
      const r = await transferRecord(ctx, { authorizationRef: ethers.ZeroHash });
      await expect(record(ctx, r))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogAuthorizationMissing")
        .withArgs(r.requestId);
    });

    it("grants with the patient's code once, redeeming it", async function () {
      const ctx = await loadFixture(transferFixture);
      const r = await transferRecord(ctx);
      await expect(record(ctx, r))
        .to.emit(ctx.consents, "AuthorizationRedeemed")
        .withArgs(ctx.clinicalCode, r.requestId, ORG.HOSPITAL_B)
        .and.not.to.emit(ctx.accessLog, "BreakGlassAccess");
      const again = await transferRecord(ctx);
      await expect(record(ctx, again))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogAuthorizationRefused")
        .withArgs(again.requestId, ctx.clinicalCode, AuthorizationFault.REDEEMED);
    });

    it("refuses a code the patient gave for another scenario", async function () {
      const ctx = await loadFixture(transferFixture);
      const insuranceCode = codeHashOf("INSUR-ANCEC-ODEFO-RB001");
      await ctx.consents
        .connect(ctx.hospitalSteward)
        .issueAuthorization(insuranceCode, authorizationTerms(ctx.now, { grantee: ORG.HOSPITAL_B }));
      const r = await transferRecord(ctx, { authorizationRef: insuranceCode });
      await expect(record(ctx, r))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogAuthorizationRefused")
        .withArgs(r.requestId, insuranceCode, AuthorizationFault.WRONG_SCENARIO);
      expect((await ctx.consents.authorization(insuranceCode)).status).to.equal(AuthorizationStatus.ISSUED);
    });
  });

  describe("break-glass", function () {
    it("grants one patient's access without a code, flagged with its reason and review deadline", async function () {
      const ctx = await loadFixture(transferFixture);
      const r = await transferRecord(ctx, { authorizationRef: breakGlassRef(emergency) });
      const tx = await record(ctx, r);
      const at = BigInt((await ethers.provider.getBlock(tx.blockNumber)).timestamp);
      const due = at + 72n * BigInt(HOUR);
      await expect(tx)
        .to.emit(ctx.accessLog, "BreakGlassAccess")
        .withArgs(r.requestId, ctx.transferId, ORG.HOSPITAL, emergency, due)
        .and.not.to.emit(ctx.consents, "AuthorizationRedeemed");
      expect(await ctx.accessLog.decisionOf(r.requestId, r.agreementId)).to.equal(Decision.GRANTED);
      const [reviewDue, outcome] = await ctx.accessLog.breakGlassOf(r.requestId, r.agreementId);
      expect(reviewDue).to.equal(due);
      expect(outcome).to.equal(BreakGlassOutcome.NONE);
      expect((await ctx.consents.authorization(ctx.clinicalCode)).status).to.equal(AuthorizationStatus.ISSUED);
      expect(await ctx.accessLog.accessesUsed(ctx.transferId)).to.equal(1);
    });

    it("refuses break-glass where the agreement allows none, beyond one patient, or without a known reason", async function () {
      const ctx = await loadFixture(transferFixture);
      const strict = researchTerms(ctx.now, {
        ...ctx.transferTerms,
        nonce: 301,
        breakGlassReviewHours: 0,
      });
      const strictId = await activate(ctx, strict, { requesterSigner: ctx.hospitalBSteward });
      const cases = [
        [strictId, { authorizationRef: breakGlassRef(emergency) }],
        [ctx.transferId, { authorizationRef: breakGlassRef(emergency), cohortSize: 2 }],
        [ctx.transferId, { authorizationRef: breakGlassRef(emergency), cohortRoot: ethers.ZeroHash }],
        [ctx.transferId, { authorizationRef: breakGlassRef(0) }],
        [ctx.transferId, { authorizationRef: breakGlassRef(200) }],
      ];
      for (const [agreementId, overrides] of cases) {
        const r = await transferRecord(ctx, { agreementId, ...overrides });
        await expect(record(ctx, r))
          .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogBreakGlassRefused")
          .withArgs(r.requestId, agreementId);
      }
    });

    it("refuses break-glass under an agreement that needs no code", async function () {
      const ctx = await loadFixture(transferFixture);
      const researchId = await activate(ctx, researchTerms(ctx.now, { nonce: 302 }));
      const research = await signedGranted(ctx, {
        agreementId: researchId,
        authorizationRef: breakGlassRef(emergency),
        cohortSize: 1,
      });
      await expect(record(ctx, research))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogBreakGlassRefused")
        .withArgs(research.requestId, researchId);
    });

    /** A recorded break-glass access. */
    async function brokenGlassFixture() {
      const ctx = await transferFixture();
      const access = await transferRecord(ctx, { authorizationRef: breakGlassRef(emergency) });
      await record(ctx, access);
      const [reviewDue] = await ctx.accessLog.breakGlassOf(access.requestId, access.agreementId);
      return { ...ctx, access, reviewDue };
    }
    const review = (ctx, outcome, by = ctx.hospitalSteward, accessId = ctx.access.requestId, agreementId = ctx.transferId) =>
      ctx.accessLog.connect(by).reviewBreakGlass(accessId, agreementId, outcome, FINDING);

    for (const outcome of [BreakGlassOutcome.UPHELD, BreakGlassOutcome.REFERRED]) {
      it(`records the holder steward's review (${outcome === 1 ? "upheld" : "referred"}), once`, async function () {
        const ctx = await loadFixture(brokenGlassFixture);
        await expect(review(ctx, outcome))
          .to.emit(ctx.accessLog, "BreakGlassReviewed")
          .withArgs(ctx.access.requestId, ctx.transferId, ORG.HOSPITAL, outcome, ctx.hospitalSteward.address, FINDING, ctx.reviewDue);
        expect((await ctx.accessLog.breakGlassOf(ctx.access.requestId, ctx.access.agreementId))[1]).to.equal(outcome);
        await expect(review(ctx, BreakGlassOutcome.UPHELD))
          .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogBreakGlassReviewed")
          .withArgs(ctx.access.requestId, outcome);
      });
    }

    it("records a late review too (its block time is past the deadline)", async function () {
      const ctx = await loadFixture(brokenGlassFixture);
      await time.increaseTo(ctx.reviewDue + 10n);
      await expect(review(ctx, BreakGlassOutcome.REFERRED)).to.emit(ctx.accessLog, "BreakGlassReviewed");
    });

    it("refuses a review by anyone but a steward of the holder", async function () {
      const ctx = await loadFixture(brokenGlassFixture);
      for (const who of ["hospitalBSteward", "hospitalGateway", "regulator", "stranger"]) {
        await expect(review(ctx, BreakGlassOutcome.UPHELD, ctx[who]))
          .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnauthorizedReviewer")
          .withArgs(ctx[who].address, ORG.HOSPITAL);
      }
    });

    it("refuses no outcome, another agreement and an access that broke no glass", async function () {
      const ctx = await loadFixture(brokenGlassFixture);
      await expect(review(ctx, BreakGlassOutcome.NONE))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogBreakGlassReviewed")
        .withArgs(ctx.access.requestId, BreakGlassOutcome.NONE);
      const other = tag("agreement:other");
      await expect(review(ctx, BreakGlassOutcome.UPHELD, ctx.hospitalSteward, ctx.access.requestId, other))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogNotBreakGlass")
        .withArgs(ctx.access.requestId, other);
      const coded = await transferRecord(ctx);
      await record(ctx, coded);
      await expect(review(ctx, BreakGlassOutcome.UPHELD, ctx.hospitalSteward, coded.requestId))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogNotBreakGlass")
        .withArgs(coded.requestId, ctx.transferId);
      expect(await ctx.accessLog.breakGlassOf(coded.requestId, coded.agreementId)).to.deep.equal([0n, 0n]);
    });
  });
});

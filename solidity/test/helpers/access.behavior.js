// The grant rules AccessLog enforces, shared by recordAccess (one record) and recordAccesses
// (a batch): the chain refuses any GRANTED record that breaks its agreement.
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { ethers } = require("hardhat");
const { AgreementStatus, Decision, Operation, Role, Tier } = require("./enums");
const {
  DATASET,
  ORG,
  PATIENT,
  activeAgreementFixture,
  fieldsMask,
  futureWindowFixture,
  insuranceAgreementFixture,
  leafOf,
  proposedAgreementFixture,
  researchTerms,
  sameStruct,
  signAsParties,
  signed,
  signedGranted,
  smallQuotaFixture,
  tag,
} = require("./fixtures");
const { agreementIdOf } = require("./typed-data");
const { shouldBeDisabledBySuspension } = require("./membership.behavior");

const REASON = tag("reason:audit");

/**
 * `submit(ctx, records, recorder = ctx.hospitalGateway)` records signed records, one
 * transaction. Every rule is checked on a record that is valid but for that one rule.
 */
function shouldEnforceGrantRules(submit) {
  async function expectRefused(ctx, record, errorName, args) {
    await expect(submit(ctx, [record]))
      .to.be.revertedWithCustomError(ctx.accessLog, errorName)
      .withArgs(...args);
    expect(await ctx.accessLog.decisionOf(record.requestId, record.agreementId)).to.equal(Decision.NONE);
  }

  it("records a granted access, counts it against the quota and emits the exact record", async function () {
    const ctx = await loadFixture(activeAgreementFixture);
    const record = await signedGranted(ctx);
    await expect(submit(ctx, [record]))
      .to.emit(ctx.accessLog, "AccessRecorded")
      .withArgs(record.requestId, ctx.id, DATASET.EHR, ctx.hospitalGateway.address, sameStruct(record));
    expect(await ctx.accessLog.decisionOf(record.requestId, record.agreementId)).to.equal(Decision.GRANTED);
    expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(1);
  });

  describe("request", function () {
    it("refuses a granted access whose request deadline has passed", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { deadline: ctx.now - 1 });
      await expectRefused(ctx, record, "AccessLogRequestExpired", [record.requestId, ctx.now - 1]);
    });

    it("refuses a request signed to live past the chain's longest lifetime, up to 2^64 - 1", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const lifetime = await ctx.accessLog.MAX_REQUEST_LIFETIME();
      expect(lifetime).to.equal(90n * 24n * 3600n);
      for (const deadline of [2n ** 64n - 1n, 2n ** 63n]) {
        const record = await signedGranted(ctx, { deadline });
        const at = (await time.latest()) + 1;
        await time.setNextBlockTimestamp(at);
        await expectRefused(ctx, record, "AccessLogDeadlineTooFar", [record.requestId, deadline, BigInt(at) + lifetime]);
      }
    });

    it("grants a request signed up to exactly the longest lifetime, not a second more", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const lifetime = Number(await ctx.accessLog.MAX_REQUEST_LIFETIME());
      const at = (await time.latest()) + 10;
      const beyond = await signedGranted(ctx, { deadline: at + lifetime + 1 });
      await time.setNextBlockTimestamp(at);
      await expectRefused(ctx, beyond, "AccessLogDeadlineTooFar", [beyond.requestId, at + lifetime + 1, at + lifetime]);
      const exact = await signedGranted(ctx, { deadline: at + 1 + lifetime });
      await time.setNextBlockTimestamp(at + 1);
      await expect(submit(ctx, [exact])).to.emit(ctx.accessLog, "AccessRecorded");
    });

    it("grants up to and including the request deadline", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const deadline = (await time.latest()) + 100;
      const record = await signedGranted(ctx, { deadline });
      await time.setNextBlockTimestamp(deadline);
      await expect(submit(ctx, [record])).to.emit(ctx.accessLog, "AccessRecorded");
    });
  });

  describe("agreement status", function () {
    const cases = [
      ["suspended", AgreementStatus.SUSPENDED, (ctx) => ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON)],
      ["revoked", AgreementStatus.REVOKED, (ctx) => ctx.agreements.connect(ctx.hospitalSteward).revoke(ctx.id, REASON)],
      [
        "superseded",
        AgreementStatus.SUPERSEDED,
        async (ctx) => {
          const amended = researchTerms(ctx.now, { nonce: 2 });
          await ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, amended);
          await signAsParties(ctx, agreementIdOf(amended), amended, { version: 2, previous: ctx.id });
        },
      ],
      [
        "expired (expire() recorded)",
        AgreementStatus.EXPIRED,
        async (ctx) => {
          await time.increaseTo(ctx.terms.validUntil + 1);
          await ctx.agreements.expire(ctx.id);
        },
      ],
    ];
    for (const [state, status, change] of cases) {
      it(`refuses a granted access under a ${state} agreement`, async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        await change(ctx);
        const record = await signedGranted(ctx);
        await expectRefused(ctx, record, "AccessLogAgreementNotActive", [ctx.id, status]);
      });
    }

    it("refuses a granted access under a proposed (unsigned) agreement", async function () {
      const ctx = await loadFixture(proposedAgreementFixture);
      const record = await signedGranted(ctx);
      await expectRefused(ctx, record, "AccessLogAgreementNotActive", [ctx.id, AgreementStatus.PROPOSED]);
    });

    it("grants again once a suspended agreement is resumed", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON);
      await ctx.agreements.connect(ctx.regulator).resume(ctx.id);
      await expect(submit(ctx, [await signedGranted(ctx)])).to.emit(ctx.accessLog, "AccessRecorded");
    });
  });

  describe("validity window", function () {
    it("refuses a granted access before the window opens", async function () {
      const ctx = await loadFixture(futureWindowFixture);
      const record = await signedGranted(ctx);
      const at = ctx.terms.validFrom - 1;
      await time.setNextBlockTimestamp(at);
      await expectRefused(ctx, record, "AccessLogOutsideWindow", [ctx.id, at, ctx.terms.validFrom, ctx.terms.validUntil]);
    });

    it("grants from the first second of the window", async function () {
      const ctx = await loadFixture(futureWindowFixture);
      const record = await signedGranted(ctx);
      await time.setNextBlockTimestamp(ctx.terms.validFrom);
      await expect(submit(ctx, [record])).to.emit(ctx.accessLog, "AccessRecorded");
    });

    it("grants until the last second of the window", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx);
      await time.setNextBlockTimestamp(ctx.terms.validUntil);
      await expect(submit(ctx, [record])).to.emit(ctx.accessLog, "AccessRecorded");
    });

    it("refuses a granted access after the window closed, before anyone called expire()", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx);
      const at = ctx.terms.validUntil + 1;
      await time.setNextBlockTimestamp(at);
      await expectRefused(ctx, record, "AccessLogOutsideWindow", [ctx.id, at, ctx.terms.validFrom, ctx.terms.validUntil]);
    });
  });

  describe("requester", function () {
    for (const who of ["stranger", "insurerRequester", "instituteSteward", "hospitalSteward"]) {
      it(`refuses a granted access requested by the ${who}, not a requester of the requesting organization`, async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        const requester = ctx[who];
        const record = await signedGranted(ctx, { requester: requester.address }, requester);
        await expectRefused(ctx, record, "AccessLogRequesterNotAuthorized", [ctx.id, requester.address]);
      });
    }

    it("refuses a granted access requested by a member of a suspended requesting organization", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await ctx.membership.suspendOrganization(ORG.INSTITUTE);
      const record = await signedGranted(ctx);
      await expectRefused(ctx, record, "AccessLogRequesterNotAuthorized", [ctx.id, ctx.instituteRequester.address]);
    });

    it("refuses a granted access requested by a requester whose role was revoked", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await ctx.membership.revokeMemberRole(ctx.instituteRequester.address, Role.REQUESTER);
      const record = await signedGranted(ctx);
      await expectRefused(ctx, record, "AccessLogRequesterNotAuthorized", [ctx.id, ctx.instituteRequester.address]);
    });
  });

  describe("scope (minimum necessary)", function () {
    it("refuses a granted access to a dataset the agreement does not cover", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { datasetId: DATASET.IMAGING, fieldMask: fieldsMask(1) });
      await expectRefused(ctx, record, "AccessLogDatasetNotInScope", [ctx.id, DATASET.IMAGING]);
    });

    it("refuses a granted access to fields outside the allowed ones", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const mask = fieldsMask(0, 1); // person_id is not allowed
      const record = await signedGranted(ctx, { fieldMask: mask });
      await expectRefused(ctx, record, "AccessLogFieldsNotInScope", [ctx.id, mask, ctx.terms.fieldMasks[0]]);
    });

    it("refuses a granted access that names no field at all (fieldMask 0)", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { fieldMask: 0 });
      await expectRefused(ctx, record, "AccessLogFieldsNotInScope", [ctx.id, 0, ctx.terms.fieldMasks[0]]);
    });

    it("grants exactly the allowed fields", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { fieldMask: ctx.terms.fieldMasks[0] });
      await expect(submit(ctx, [record])).to.emit(ctx.accessLog, "AccessRecorded");
    });

    it("refuses a granted access above the agreement's tier ceiling", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { tier: Tier.IDENTIFIED });
      await expectRefused(ctx, record, "AccessLogTierAboveCeiling", [ctx.id, Tier.IDENTIFIED, Tier.PSEUDONYMIZED]);
    });

    it("refuses a granted access for an operation the agreement does not allow", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { operation: Operation.TRAIN });
      await expectRefused(ctx, record, "AccessLogOperationNotAllowed", [ctx.id, Operation.TRAIN]);
    });
  });

  describe("consent", function () {
    it("refuses a granted access without a cohort root when cohort consent is required", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { cohortRoot: ethers.ZeroHash });
      await expectRefused(ctx, record, "AccessLogCohortMissing", [record.requestId]);
    });

    it("refuses a granted access over an empty cohort when cohort consent is required", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { cohortSize: 0 });
      await expectRefused(ctx, record, "AccessLogCohortMissing", [record.requestId]);
    });

    const insuranceRecord = (ctx, overrides) =>
      signedGranted(
        ctx,
        {
          agreementId: ctx.insuranceId,
          requester: ctx.insurerRequester.address,
          tier: Tier.IDENTIFIED,
          cohortRoot: leafOf(PATIENT),
          cohortSize: 1,
          authorizationRef: ctx.codeHash,
          ...overrides,
        },
        ctx.insurerRequester,
      );

    it("grants an identified insurance-claim access for one patient with an authorization", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      const record = await insuranceRecord(ctx);
      await expect(submit(ctx, [record]))
        .to.emit(ctx.accessLog, "AccessRecorded")
        .withArgs(record.requestId, ctx.insuranceId, DATASET.EHR, ctx.hospitalGateway.address, sameStruct(record));
    });

    it("refuses a granted insurance-claim access without an authorization", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      const record = await insuranceRecord(ctx, { authorizationRef: ethers.ZeroHash });
      await expectRefused(ctx, record, "AccessLogAuthorizationMissing", [record.requestId]);
    });

    for (const cohortSize of [0, 2]) {
      it(`refuses a granted insurance-claim access for ${cohortSize} patients instead of one`, async function () {
        const ctx = await loadFixture(insuranceAgreementFixture);
        const record = await insuranceRecord(ctx, { cohortSize });
        await expectRefused(ctx, record, "AccessLogAuthorizationMissing", [record.requestId]);
      });
    }
  });

  describe("quota", function () {
    it("grants exactly the quota, then refuses a granted access over the quota", async function () {
      const ctx = await loadFixture(smallQuotaFixture);
      for (let i = 0; i < 3; i++) await submit(ctx, [await signedGranted(ctx)]);
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(3);
      const record = await signedGranted(ctx);
      await expectRefused(ctx, record, "AccessLogQuotaExhausted", [ctx.id, 3]);
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(3);
    });

    it("keeps the quota of a new agreement version separate", async function () {
      const ctx = await loadFixture(smallQuotaFixture);
      for (let i = 0; i < 3; i++) await submit(ctx, [await signedGranted(ctx)]);
      const amended = researchTerms(ctx.now, { nonce: 2, quota: 3 });
      const amendedId = agreementIdOf(amended);
      await ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, amended);
      await signAsParties(ctx, amendedId, amended, { version: 2, previous: ctx.id });
      await expect(submit(ctx, [await signedGranted(ctx, { agreementId: amendedId })])).to.emit(
        ctx.accessLog,
        "AccessRecorded",
      );
      expect(await ctx.accessLog.accessesUsed(amendedId)).to.equal(1);
    });
  });

  describe("recorder, agreement and signature", function () {
    for (const who of ["hospitalSteward", "hospitalBGateway", "instituteRequester", "regulator", "operator", "stranger"]) {
      it(`refuses a record by the ${who}, not a gateway of the holder`, async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        const record = await signedGranted(ctx);
        await expect(submit(ctx, [record], ctx[who]))
          .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnauthorizedRecorder")
          .withArgs(ctx[who].address, ORG.HOSPITAL);
      });
    }

    describe("when the hospital is suspended", function () {
      shouldBeDisabledBySuspension(activeAgreementFixture, {
        memberKey: "hospitalGateway",
        org: ORG.HOSPITAL,
        call: async (ctx, signer) => submit(ctx, [await signedGranted(ctx)], signer),
        contractKey: "accessLog",
        errorName: "AccessLogUnauthorizedRecorder",
        args: (ctx) => [ctx.hospitalGateway.address, ORG.HOSPITAL],
      });
    });

    it("refuses a record under an unknown agreement", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const unknown = tag("agreement:unknown");
      const record = await signedGranted(ctx, { agreementId: unknown });
      await expectRefused(ctx, record, "AccessLogUnknownAgreement", [unknown]);
    });

    it("refuses a request id that was recorded before", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx);
      await submit(ctx, [record]);
      await expect(submit(ctx, [record]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogDuplicateRequest")
        .withArgs(record.requestId, ctx.id);
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(1);
    });

    it("refuses a request signed by someone else than the named requester", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, {}, ctx.stranger);
      await expectRefused(ctx, record, "AccessLogInvalidRequesterSignature", [
        record.requestId,
        ctx.instituteRequester.address,
      ]);
    });

    it("refuses a request altered after the requester signed it", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = { ...(await signedGranted(ctx)), fieldMask: ctx.terms.fieldMasks[0] };
      await expectRefused(ctx, record, "AccessLogInvalidRequesterSignature", [
        record.requestId,
        ctx.instituteRequester.address,
      ]);
    });
  });
}

module.exports = { shouldEnforceGrantRules };

const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const {
  AgreementStatus,
  AuthorizationFault,
  AuthorizationStatus,
  Decision,
  DenyReason,
  Operation,
  ReleaseKind,
  Tier,
} = require("./helpers/enums");
const {
  DATASET,
  DAY,
  ORG,
  PATIENT,
  activate,
  activeAgreementFixture,
  authorizationTerms,
  fieldsMask,
  insuranceAgreementFixture,
  leafOf,
  clinicalCareFixture,
  deniedRecord,
  federatedFixture,
  grantedRecord,
  researchTerms,
  sameStruct,
  signed,
  signedGranted,
  smallQuotaFixture,
  tag,
} = require("./helpers/fixtures");
const {
  ACCESS_REQUEST_TYPES,
  accessLogDomain,
  accessRequestMessage,
  agreementIdOf,
  signAccessRecord,
  signAgreement,
  signAuthorization,
} = require("./helpers/typed-data");
const { shouldEnforceGrantRules } = require("./helpers/access.behavior");
const { shouldBeDisabledBySuspension } = require("./helpers/membership.behavior");

const REASON = tag("reason:audit");
const RESULT = tag("result:kaplan-meier-curve.json");

const recordOne = (ctx, records, recorder = ctx.hospitalGateway) =>
  ctx.accessLog.connect(recorder).recordAccess(records[0]);
const recordBatch = (ctx, records, recorder = ctx.hospitalGateway) =>
  ctx.accessLog.connect(recorder).recordAccesses(records);

/** Mirrors AccessRules.releasable. */
function releasable(kind, tier, operation) {
  if (kind === ReleaseKind.AGGREGATE_RESULT) return operation !== Operation.TRAIN;
  if (kind === ReleaseKind.MODEL_UPDATE) return operation === Operation.TRAIN;
  if (operation !== Operation.EXPORT_RESULT) return false;
  if (kind === ReleaseKind.DEIDENTIFIED_EXTRACT) return tier >= Tier.DEIDENTIFIED;
  if (kind === ReleaseKind.PSEUDONYMIZED_EXTRACT) return tier >= Tier.PSEUDONYMIZED;
  return tier === Tier.IDENTIFIED;
}

/** The active research agreement with one granted QUERY access and one denied access recorded. */
async function recordedAccessesFixture() {
  const ctx = await activeAgreementFixture();
  const granted = await signedGranted(ctx);
  const denied = await signed(ctx, deniedRecord(ctx, DenyReason.TIER_ABOVE_CEILING, { tier: Tier.IDENTIFIED }));
  await ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([granted, denied]);
  return { ...ctx, granted, denied };
}

describe("AccessLog", function () {
  it("knows its membership, agreement and consent registries and takes batches of up to 256", async function () {
    const { accessLog, membership, agreements, consents } = await loadFixture(activeAgreementFixture);
    expect(await accessLog.MEMBERSHIP()).to.equal(await membership.getAddress());
    expect(await accessLog.AGREEMENTS()).to.equal(await agreements.getAddress());
    expect(await accessLog.CONSENTS()).to.equal(await consents.getAddress());
    expect(await accessLog.maxBatchSize()).to.equal(256);
    expect(await accessLog.MAX_BATCH_SIZE()).to.equal(256);
  });

  it("computes the EIP-712 digest a requester signs", async function () {
    const ctx = await loadFixture(activeAgreementFixture);
    const record = grantedRecord(ctx);
    const expected = ethers.TypedDataEncoder.hash(
      await accessLogDomain(ctx.accessLog),
      ACCESS_REQUEST_TYPES,
      accessRequestMessage(record),
    );
    expect(await ctx.accessLog.requestDigest(record)).to.equal(expected);
  });

  it("reports decision NONE and no usage before anything is recorded", async function () {
    const ctx = await loadFixture(activeAgreementFixture);
    expect(await ctx.accessLog.decisionOf(tag("request:none"), ctx.id)).to.equal(Decision.NONE);
    expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(0);
  });

  describe("recordAccess: grant rules", function () {
    shouldEnforceGrantRules(recordOne);
  });

  describe("recordAccesses: grant rules, one record per batch", function () {
    shouldEnforceGrantRules(recordBatch);
  });

  describe("denied accesses", function () {
    it("records a denied access with its reason, without using quota", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signed(ctx, deniedRecord(ctx, DenyReason.FIELDS_NOT_IN_SCOPE, { fieldMask: 1 }));
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
        .to.emit(ctx.accessLog, "AccessRecorded")
        .withArgs(record.requestId, ctx.id, DATASET.EHR, ctx.hospitalGateway.address, sameStruct(record));
      expect(await ctx.accessLog.decisionOf(record.requestId, record.agreementId)).to.equal(Decision.DENIED);
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(0);
    });

    const inactive = [
      ["suspended", (ctx) => ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON)],
      ["revoked", (ctx) => ctx.agreements.connect(ctx.regulator).revoke(ctx.id, REASON)],
      [
        "expired",
        async (ctx) => {
          await time.increaseTo(ctx.terms.validUntil + 1);
          await ctx.agreements.expire(ctx.id);
        },
      ],
    ];
    for (const [state, change] of inactive) {
      it(`records a denied access under a ${state} agreement`, async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        await change(ctx);
        const record = await signed(ctx, deniedRecord(ctx, DenyReason.AGREEMENT_NOT_ACTIVE));
        await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
          .to.emit(ctx.accessLog, "AccessRecorded")
          .withArgs(record.requestId, ctx.id, DATASET.EHR, ctx.hospitalGateway.address, sameStruct(record));
      });
    }

    it("records denials over the quota once it is spent", async function () {
      const ctx = await loadFixture(smallQuotaFixture);
      const granted = await Promise.all([0, 1, 2].map(() => signedGranted(ctx)));
      const denied = await Promise.all([0, 1].map(() => signed(ctx, deniedRecord(ctx, DenyReason.QUOTA_EXHAUSTED))));
      await ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([...granted, ...denied]);
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(3);
      expect(await ctx.accessLog.decisionOf(denied[1].requestId, denied[1].agreementId)).to.equal(Decision.DENIED);
    });

    it("records a denial of a request that is expired or names an outsider as requester", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const expired = await signed(ctx, deniedRecord(ctx, DenyReason.POLICY_OTHER, { deadline: ctx.now - 1 }));
      const outsider = await signed(
        ctx,
        deniedRecord(ctx, DenyReason.REQUESTER_NOT_AUTHORIZED, { requester: ctx.stranger.address }),
        ctx.stranger,
      );
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([expired, outsider]))
        .to.emit(ctx.accessLog, "AccessRecorded")
        .withArgs(outsider.requestId, ctx.id, DATASET.EHR, ctx.hospitalGateway.address, sameStruct(outsider));
    });

    it("refuses a denial whose request is signed to live past the longest lifetime", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const deadline = 2n ** 64n - 1n;
      const record = await signed(ctx, deniedRecord(ctx, DenyReason.POLICY_OTHER, { deadline }));
      const at = (await time.latest()) + 1;
      await time.setNextBlockTimestamp(at);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([record]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogDeadlineTooFar")
        .withArgs(record.requestId, deadline, BigInt(at) + (await ctx.accessLog.MAX_REQUEST_LIFETIME()));
      expect(await ctx.accessLog.decisionOf(record.requestId, record.agreementId)).to.equal(Decision.NONE);
    });

    it("refuses a denial without a reason", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signed(ctx, deniedRecord(ctx, DenyReason.NONE));
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidDecision")
        .withArgs(record.requestId, Decision.DENIED, DenyReason.NONE);
    });

    it("refuses a grant that carries a deny reason", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx, { reason: DenyReason.POLICY_OTHER });
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidDecision")
        .withArgs(record.requestId, Decision.GRANTED, DenyReason.POLICY_OTHER);
    });

    it("refuses a record without a decision", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      for (const reason of [DenyReason.NONE, DenyReason.POLICY_OTHER]) {
        const record = await signedGranted(ctx, { decision: Decision.NONE, reason });
        await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
          .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidDecision")
          .withArgs(record.requestId, Decision.NONE, reason);
      }
    });

    it("refuses a denial the requester did not sign", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signed(ctx, deniedRecord(ctx, DenyReason.POLICY_OTHER), ctx.stranger);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidRequesterSignature")
        .withArgs(record.requestId, ctx.instituteRequester.address);
    });

    it("refuses a denial recorded by someone else than the holder's gateway", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signed(ctx, deniedRecord(ctx, DenyReason.POLICY_OTHER));
      await expect(ctx.accessLog.connect(ctx.hospitalBGateway).recordAccess(record))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnauthorizedRecorder")
        .withArgs(ctx.hospitalBGateway.address, ORG.HOSPITAL);
    });

    it("refuses a denial reusing a request id", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      const record = await signed(ctx, deniedRecord(ctx, DenyReason.POLICY_OTHER, { requestId: ctx.granted.requestId }));
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogDuplicateRequest")
        .withArgs(ctx.granted.requestId, ctx.id);
    });
  });

  describe("request ids: one name space per agreement", function () {
    /** The same request id, signed by one requester for training at two hospitals. */
    async function sameIdAtTwoHospitalsFixture() {
      const ctx = await federatedFixture();
      const requestId = tag("request:reused-at-two-hospitals");
      const [a, b] = await Promise.all(
        ctx.sites.slice(0, 2).map((site) =>
          signedGranted(
            ctx,
            {
              requestId,
              agreementId: site.id,
              datasetId: site.dataset,
              requester: ctx.aiRequester.address,
              tier: Tier.MODEL_PARAMETERS,
              operation: Operation.TRAIN,
              fieldMask: fieldsMask(1, 2, 3, 6, 7),
              cohortRoot: ethers.ZeroHash,
              cohortSize: 0,
            },
            ctx.aiRequester,
          ),
        ),
      );
      return { ...ctx, requestId, a, b };
    }

    it("records the same request id at two hospitals, one access under each agreement", async function () {
      const ctx = await loadFixture(sameIdAtTwoHospitalsFixture);
      const [siteA, siteB] = ctx.sites;
      await expect(ctx.accessLog.connect(siteA.gateway).recordAccess(ctx.a))
        .to.emit(ctx.accessLog, "AccessRecorded")
        .withArgs(ctx.requestId, siteA.id, siteA.dataset, siteA.gateway.address, sameStruct(ctx.a));
      await expect(ctx.accessLog.connect(siteB.gateway).recordAccess(ctx.b))
        .to.emit(ctx.accessLog, "AccessRecorded")
        .withArgs(ctx.requestId, siteB.id, siteB.dataset, siteB.gateway.address, sameStruct(ctx.b));
      expect(await ctx.accessLog.decisionOf(ctx.requestId, siteA.id)).to.equal(Decision.GRANTED);
      expect(await ctx.accessLog.decisionOf(ctx.requestId, siteB.id)).to.equal(Decision.GRANTED);
      expect(await ctx.accessLog.decisionOf(ctx.requestId, ctx.sites[2].id)).to.equal(Decision.NONE);
      expect(await ctx.accessLog.accessesUsed(siteA.id)).to.equal(1);
      expect(await ctx.accessLog.accessesUsed(siteB.id)).to.equal(1);
    });

    it("still refuses the same gateway recording the id twice under one agreement", async function () {
      const ctx = await loadFixture(sameIdAtTwoHospitalsFixture);
      const [siteA, siteB] = ctx.sites;
      await ctx.accessLog.connect(siteB.gateway).recordAccess(ctx.b);
      await ctx.accessLog.connect(siteA.gateway).recordAccess(ctx.a);
      await expect(ctx.accessLog.connect(siteA.gateway).recordAccess(ctx.a))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogDuplicateRequest")
        .withArgs(ctx.requestId, siteA.id);
      await expect(ctx.accessLog.connect(siteB.gateway).recordAccesses([ctx.b]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogDuplicateRequest")
        .withArgs(ctx.requestId, siteB.id);
    });

    it("lets no other hospital's gateway take an id under an agreement it does not hold", async function () {
      const ctx = await loadFixture(sameIdAtTwoHospitalsFixture);
      const [siteA, siteB] = ctx.sites;
      await expect(ctx.accessLog.connect(siteB.gateway).recordAccess(ctx.a))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnauthorizedRecorder")
        .withArgs(siteB.gateway.address, siteA.holder);
      await ctx.accessLog.connect(siteA.gateway).recordAccess(ctx.a);
    });

    it("keeps releases, and what they allow, apart under each agreement", async function () {
      const ctx = await loadFixture(sameIdAtTwoHospitalsFixture);
      const [siteA, siteB] = ctx.sites;
      await ctx.accessLog.connect(siteA.gateway).recordAccess(ctx.a);
      await expect(
        ctx.accessLog.connect(siteB.gateway).releaseResult(ctx.requestId, siteB.id, RESULT, ReleaseKind.MODEL_UPDATE, 1),
      )
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnknownAccess")
        .withArgs(ctx.requestId, siteB.id);
      await ctx.accessLog.connect(siteB.gateway).recordAccess(ctx.b);
      for (const site of [siteA, siteB]) {
        await expect(
          ctx.accessLog.connect(site.gateway).releaseResult(ctx.requestId, site.id, RESULT, ReleaseKind.MODEL_UPDATE, 1),
        )
          .to.emit(ctx.accessLog, "ResultReleased")
          .withArgs(ctx.requestId, site.id, RESULT, ReleaseKind.MODEL_UPDATE, 1, site.gateway.address);
        expect(await ctx.accessLog.isReleased(ctx.requestId, site.id, RESULT)).to.equal(true);
      }
      expect(await ctx.accessLog.isReleased(ctx.requestId, ctx.sites[2].id, RESULT)).to.equal(false);
    });
  });

  describe("requester signatures", function () {
    it("refuses a signature made for another chain id", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signAccessRecord(ctx.instituteRequester, ctx.accessLog, grantedRecord(ctx), { chainId: 1 });
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidRequesterSignature")
        .withArgs(record.requestId, ctx.instituteRequester.address);
    });

    it("refuses a signature made for another contract", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signAccessRecord(
        ctx.instituteRequester,
        await ctx.agreements.getAddress(),
        grantedRecord(ctx),
      );
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidRequesterSignature")
        .withArgs(record.requestId, ctx.instituteRequester.address);
    });

    it("refuses a missing signature", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = grantedRecord(ctx);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(record))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidRequesterSignature")
        .withArgs(record.requestId, ctx.instituteRequester.address);
    });

    it("refuses a signature with a high s value (malleated)", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx);
      const n = ethers.N;
      const malleated = {
        ...record,
        sigS: ethers.toBeHex(n - BigInt(record.sigS), 32),
        sigV: record.sigV === 27 ? 28 : 27,
      };
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(malleated))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidRequesterSignature")
        .withArgs(record.requestId, ctx.instituteRequester.address);
    });
  });

  describe("recordAccesses", function () {
    it("refuses an empty batch", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidBatchSize")
        .withArgs(0, 256);
    });

    it("refuses a batch of more than 256 records", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses(Array(257).fill(record)))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogInvalidBatchSize")
        .withArgs(257, 256);
    });

    it("accepts a full batch of 256 denials", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const records = await Promise.all(
        Array.from({ length: 256 }, () => signed(ctx, deniedRecord(ctx, DenyReason.QUOTA_EXHAUSTED))),
      );
      const tx = await ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses(records);
      const receipt = await tx.wait();
      expect(receipt.logs.length).to.equal(256);
      expect(await ctx.accessLog.decisionOf(records[255].requestId, records[255].agreementId)).to.equal(Decision.DENIED);
    });

    it("records mixed decisions in order, one event each, counting only grants", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const records = [
        await signedGranted(ctx),
        await signed(ctx, deniedRecord(ctx, DenyReason.OPERATION_NOT_ALLOWED, { operation: Operation.TRAIN })),
        await signedGranted(ctx, { operation: Operation.EXPORT_RESULT, tier: Tier.DEIDENTIFIED }),
      ];
      const tx = ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses(records);
      for (const record of records) {
        await expect(tx)
          .to.emit(ctx.accessLog, "AccessRecorded")
          .withArgs(record.requestId, ctx.id, DATASET.EHR, ctx.hospitalGateway.address, sameStruct(record));
      }
      const receipt = await (await tx).wait();
      const ids = receipt.logs.map((log) => ctx.accessLog.interface.parseLog(log).args.accessId);
      expect(ids).to.deep.equal(records.map((r) => r.requestId));
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(2);
    });

    it("records nothing when one record of the batch is refused (all or nothing)", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const good = [await signedGranted(ctx), await signed(ctx, deniedRecord(ctx, DenyReason.POLICY_OTHER))];
      const bad = await signedGranted(ctx, { tier: Tier.IDENTIFIED });
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([...good, bad]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogTierAboveCeiling")
        .withArgs(ctx.id, Tier.IDENTIFIED, Tier.PSEUDONYMIZED);
      for (const record of good) expect(await ctx.accessLog.decisionOf(record.requestId, record.agreementId)).to.equal(Decision.NONE);
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(0);
    });

    it("refuses a batch whose grants exceed the quota within the batch", async function () {
      const ctx = await loadFixture(smallQuotaFixture);
      await ctx.accessLog.connect(ctx.hospitalGateway).recordAccess(await signedGranted(ctx));
      const records = await Promise.all([0, 1, 2].map(() => signedGranted(ctx)));
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses(records))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogQuotaExhausted")
        .withArgs(ctx.id, 3);
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(1);
      await ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses(records.slice(0, 2));
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(3);
    });

    it("refuses a request id repeated within one batch", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const record = await signedGranted(ctx);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([record, record]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogDuplicateRequest")
        .withArgs(record.requestId, ctx.id);
    });

    it("counts each agreement's quota separately in a batch that switches agreements", async function () {
      const ctx = await loadFixture(smallQuotaFixture);
      const otherTerms = researchTerms(ctx.now, { nonce: 2, quota: 1 });
      const otherId = await activate(ctx, otherTerms);
      const a = () => signedGranted(ctx);
      const b = () => signedGranted(ctx, { agreementId: otherId });
      await ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([await a(), await b(), await a()]);
      expect(await ctx.accessLog.accessesUsed(ctx.id)).to.equal(2);
      expect(await ctx.accessLog.accessesUsed(otherId)).to.equal(1);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([await a(), await b()]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogQuotaExhausted")
        .withArgs(otherId, 1);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([await a(), await a()]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogQuotaExhausted")
        .withArgs(ctx.id, 3);
    });

    it("checks every requester in a batch, not only the first", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const outsider = await signedGranted(ctx, { requester: ctx.stranger.address }, ctx.stranger);
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([await signedGranted(ctx), outsider]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogRequesterNotAuthorized")
        .withArgs(ctx.id, ctx.stranger.address);
    });

    it("checks every dataset in a batch, not only the first", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const outOfScope = await signedGranted(ctx, { datasetId: DATASET.IMAGING });
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([await signedGranted(ctx), outOfScope]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogDatasetNotInScope")
        .withArgs(ctx.id, DATASET.IMAGING);
    });

    it("checks the recorder against every agreement's holder in a batch", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const otherTerms = researchTerms(ctx.now, {
        holder: ORG.HOSPITAL_B,
        datasets: [DATASET.OTHER_HOSPITAL],
        nonce: 3,
      });
      await ctx.agreements.connect(ctx.hospitalBSteward).propose(otherTerms);
      const otherId = agreementIdOf(otherTerms);
      for (const signer of [ctx.hospitalBSteward, ctx.instituteSteward]) {
        await ctx.agreements.sign(otherId, signer.address, await signAgreement(signer, ctx.agreements, otherTerms));
      }
      const foreign = await signedGranted(ctx, { agreementId: otherId, datasetId: DATASET.OTHER_HOSPITAL });
      await expect(ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses([await signedGranted(ctx), foreign]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnauthorizedRecorder")
        .withArgs(ctx.hospitalGateway.address, ORG.HOSPITAL_B);
    });
  });

  describe("patient authorization codes (insurance claims)", function () {
    /** A signed GRANTED insurance-claim record for PATIENT redeeming `ctx.codeHash`. */
    const insuranceRecord = (ctx, overrides = {}) =>
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
    const issue = (ctx, code, overrides = {}, steward = ctx.hospitalSteward) =>
      ctx.consents.connect(steward).issueAuthorization(code, authorizationTerms(ctx.now, overrides));
    const statusOf = async (ctx, code = ctx.codeHash) => (await ctx.consents.authorization(code)).status;

    async function expectRefused(ctx, records, record, fault, code = ctx.codeHash) {
      await expect(recordBatch(ctx, records))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogAuthorizationRefused")
        .withArgs(record.requestId, code, fault);
      for (const r of records) expect(await ctx.accessLog.decisionOf(r.requestId, r.agreementId)).to.equal(Decision.NONE);
      expect(await ctx.accessLog.accessesUsed(ctx.insuranceId)).to.equal(0);
    }

    for (const [name, submit] of [
      ["recordAccess", recordOne],
      ["recordAccesses", recordBatch],
    ]) {
      it(`${name}: a granted access redeems the code, linked to the access`, async function () {
        const ctx = await loadFixture(insuranceAgreementFixture);
        const record = await insuranceRecord(ctx);
        const tx = submit(ctx, [record]);
        await expect(tx)
          .to.emit(ctx.consents, "AuthorizationRedeemed")
          .withArgs(ctx.codeHash, record.requestId, ORG.INSURER);
        await expect(tx)
          .to.emit(ctx.accessLog, "AccessRecorded")
          .withArgs(record.requestId, ctx.insuranceId, DATASET.EHR, ctx.hospitalGateway.address, sameStruct(record));
        const kept = await ctx.consents.authorization(ctx.codeHash);
        expect(kept.status).to.equal(AuthorizationStatus.REDEEMED);
        expect(kept.redeemedBy).to.equal(record.requestId);
        expect(await ctx.accessLog.accessesUsed(ctx.insuranceId)).to.equal(1);
      });
    }

    it("refuses a second access with the same code", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      await recordOne(ctx, [await insuranceRecord(ctx)]);
      const again = await insuranceRecord(ctx);
      await expect(recordOne(ctx, [again]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogAuthorizationRefused")
        .withArgs(again.requestId, ctx.codeHash, AuthorizationFault.REDEEMED);
      expect(await ctx.accessLog.accessesUsed(ctx.insuranceId)).to.equal(1);
    });

    describe("a code the patient signed in their own wallet", function () {
      const PATIENT_CODE = tag("code:patient-signed");
      /** The patient's key registered without a consent; `grantee` the code's grantee. */
      async function patientSigned(ctx, overrides = {}) {
        const patient = new ethers.Wallet(ethers.id("access log patient key"));
        await ctx.consents.connect(ctx.hospitalSteward).registerSubjectKey(ORG.HOSPITAL, PATIENT, patient.address);
        const authorization = authorizationTerms(ctx.now, overrides);
        const signature = await signAuthorization(patient, ctx.consents, PATIENT_CODE, authorization);
        await expect(ctx.consents.connect(ctx.relayer).issueAuthorizationBySubject(PATIENT_CODE, authorization, signature))
          .to.emit(ctx.consents, "AuthorizationIssued")
          .withArgs(PATIENT_CODE, ORG.HOSPITAL, authorization.grantee, sameStruct({ ...authorization, status: AuthorizationStatus.ISSUED }), patient.address, true);
      }

      it("opens exactly one access for its grantee", async function () {
        const ctx = await loadFixture(insuranceAgreementFixture);
        await patientSigned(ctx);
        const first = await insuranceRecord(ctx, { authorizationRef: PATIENT_CODE });
        await expect(recordOne(ctx, [first]))
          .to.emit(ctx.consents, "AuthorizationRedeemed")
          .withArgs(PATIENT_CODE, first.requestId, ORG.INSURER);
        const again = await insuranceRecord(ctx, { authorizationRef: PATIENT_CODE });
        await expect(recordOne(ctx, [again]))
          .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogAuthorizationRefused")
          .withArgs(again.requestId, PATIENT_CODE, AuthorizationFault.REDEEMED);
        expect(await ctx.accessLog.accessesUsed(ctx.insuranceId)).to.equal(1);
      });

      it("opens nothing for another grantee", async function () {
        const ctx = await loadFixture(insuranceAgreementFixture);
        await patientSigned(ctx, { grantee: ORG.INSTITUTE });
        const record = await insuranceRecord(ctx, { authorizationRef: PATIENT_CODE });
        await expectRefused(ctx, [record], record, AuthorizationFault.WRONG_GRANTEE, PATIENT_CODE);
        expect(await statusOf(ctx, PATIENT_CODE)).to.equal(AuthorizationStatus.ISSUED);
      });
    });

    it("refuses a batch that uses one code twice, recording none of it", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      const first = await insuranceRecord(ctx);
      const second = await insuranceRecord(ctx);
      await expectRefused(ctx, [first, second], second, AuthorizationFault.REDEEMED);
      expect(await statusOf(ctx)).to.equal(AuthorizationStatus.ISSUED);
    });

    it("redeems two codes in one batch", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      const otherCode = tag("code:second");
      await issue(ctx, otherCode);
      const records = [await insuranceRecord(ctx), await insuranceRecord(ctx, { authorizationRef: otherCode })];
      await expect(recordBatch(ctx, records)).to.emit(ctx.consents, "AuthorizationRedeemed");
      expect(await statusOf(ctx)).to.equal(AuthorizationStatus.REDEEMED);
      expect(await statusOf(ctx, otherCode)).to.equal(AuthorizationStatus.REDEEMED);
      expect(await ctx.accessLog.accessesUsed(ctx.insuranceId)).to.equal(2);
    });

    const CODE = tag("code:fault");
    const faults = [
      ["an unknown code", AuthorizationFault.UNKNOWN, async () => {}, {}],
      [
        "a revoked code",
        AuthorizationFault.REVOKED,
        async (ctx) => {
          await issue(ctx, CODE);
          await ctx.consents.connect(ctx.hospitalSteward).revokeAuthorization(CODE);
        },
        {},
      ],
      [
        "an expired code",
        AuthorizationFault.EXPIRED,
        async (ctx) => {
          await issue(ctx, CODE, { expiresAt: ctx.now + DAY });
          await time.increaseTo(ctx.now + DAY + 1);
        },
        {},
      ],
      [
        "another hospital's code",
        AuthorizationFault.WRONG_HOLDER,
        (ctx) => issue(ctx, CODE, { holder: ORG.HOSPITAL_B, dataset: DATASET.OTHER_HOSPITAL }, ctx.hospitalBSteward),
        {},
      ],
      ["a code for another grantee", AuthorizationFault.WRONG_GRANTEE, (ctx) => issue(ctx, CODE, { grantee: ORG.INSTITUTE }), {}],
      [
        "a code for another dataset",
        AuthorizationFault.DATASET_NOT_IN_SCOPE,
        (ctx) => issue(ctx, CODE, { dataset: DATASET.IMAGING, fieldMask: fieldsMask(1, 3), tier: Tier.DEIDENTIFIED }),
        {},
      ],
      ["a code for fewer fields", AuthorizationFault.FIELDS_NOT_IN_SCOPE, (ctx) => issue(ctx, CODE, { fieldMask: fieldsMask(1) }), {}],
      ["a code for a lower tier", AuthorizationFault.TIER_ABOVE_SCOPE, (ctx) => issue(ctx, CODE, { tier: Tier.PSEUDONYMIZED }), {}],
      [
        "another patient's cohort",
        AuthorizationFault.WRONG_SUBJECT,
        (ctx) => issue(ctx, CODE),
        { cohortRoot: leafOf(tag("subject:patient-0815")) },
      ],
      ["a zero cohort root", AuthorizationFault.WRONG_SUBJECT, (ctx) => issue(ctx, CODE), { cohortRoot: ethers.ZeroHash }],
    ];
    for (const [name, fault, setUp, overrides] of faults) {
      it(`refuses a granted access with ${name}`, async function () {
        const ctx = await loadFixture(insuranceAgreementFixture);
        await setUp(ctx);
        const before = await ctx.consents.authorization(CODE);
        const record = await insuranceRecord(ctx, { authorizationRef: CODE, ...overrides });
        await expectRefused(ctx, [record], record, fault, CODE);
        const after = await ctx.consents.authorization(CODE);
        expect(after.status).to.equal(before.status);
        expect(after.redeemedBy).to.equal(ethers.ZeroHash);
      });
    }

    it("records a DENIED access that names a code without redeeming it", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      const record = await signed(
        ctx,
        deniedRecord(ctx, DenyReason.AUTHORIZATION_INVALID, {
          agreementId: ctx.insuranceId,
          requester: ctx.insurerRequester.address,
          tier: Tier.IDENTIFIED,
          authorizationRef: ctx.codeHash,
        }),
        ctx.insurerRequester,
      );
      await expect(recordOne(ctx, [record]))
        .to.emit(ctx.accessLog, "AccessRecorded")
        .and.not.to.emit(ctx.consents, "AuthorizationRedeemed");
      expect(await statusOf(ctx)).to.equal(AuthorizationStatus.ISSUED);
    });

    it("does not redeem when the quota is spent", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      const terms = { ...ctx.insuranceTerms, quota: 1, nonce: 101 };
      const agreementId = await activate(ctx, terms);
      const otherCode = tag("code:second");
      await issue(ctx, otherCode);
      await recordOne(ctx, [await insuranceRecord(ctx, { agreementId })]);
      const over = await insuranceRecord(ctx, { agreementId, authorizationRef: otherCode });
      await expect(recordOne(ctx, [over]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogQuotaExhausted")
        .withArgs(agreementId, 1);
      expect(await statusOf(ctx, otherCode)).to.equal(AuthorizationStatus.ISSUED);
    });

    it("checks every agreement rule before the code", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      const record = await insuranceRecord(ctx, { authorizationRef: tag("code:unknown"), operation: Operation.TRAIN });
      await expect(recordOne(ctx, [record]))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogOperationNotAllowed")
        .withArgs(ctx.insuranceId, Operation.TRAIN);
    });

    it("ignores a code on a record under an agreement that needs none", async function () {
      const ctx = await loadFixture(insuranceAgreementFixture);
      const record = await signedGranted(ctx, { authorizationRef: ctx.codeHash });
      await expect(recordOne(ctx, [record])).not.to.emit(ctx.consents, "AuthorizationRedeemed");
      expect(await ctx.accessLog.decisionOf(record.requestId, record.agreementId)).to.equal(Decision.GRANTED);
      expect(await statusOf(ctx)).to.equal(AuthorizationStatus.ISSUED);
    });
  });

  describe("releaseResult", function () {
    it("records a result released from a granted access", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      await expect(
        ctx.accessLog
          .connect(ctx.hospitalGateway)
          .releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 2048),
      )
        .to.emit(ctx.accessLog, "ResultReleased")
        .withArgs(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 2048, ctx.hospitalGateway.address);
    });

    it("releases several distinct results from one access", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      const gateway = ctx.accessLog.connect(ctx.hospitalGateway);
      await gateway.releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1);
      await expect(
        gateway.releaseResult(ctx.granted.requestId, ctx.id, tag("result:other"), ReleaseKind.AGGREGATE_RESULT, 1),
      ).to.emit(ctx.accessLog, "ResultReleased");
    });

    it("refuses the same result released twice from one access", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      const gateway = ctx.accessLog.connect(ctx.hospitalGateway);
      await gateway.releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1);
      await expect(gateway.releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1))
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogDuplicateRelease")
        .withArgs(ctx.granted.requestId, RESULT);
    });

    it("refuses a release from an unknown access", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      const unknown = tag("request:unknown");
      await expect(
        ctx.accessLog.connect(ctx.hospitalGateway).releaseResult(unknown, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1),
      )
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnknownAccess")
        .withArgs(unknown, ctx.id);
    });

    it("refuses a release that names another agreement than the access's (no such access there)", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      const otherTerms = researchTerms(ctx.now, { nonce: 2 });
      const otherId = await activate(ctx, otherTerms);
      await expect(
        ctx.accessLog
          .connect(ctx.hospitalGateway)
          .releaseResult(ctx.granted.requestId, otherId, RESULT, ReleaseKind.AGGREGATE_RESULT, 1),
      )
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnknownAccess")
        .withArgs(ctx.granted.requestId, otherId);
    });

    it("refuses a release from a denied access", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      await expect(
        ctx.accessLog
          .connect(ctx.hospitalGateway)
          .releaseResult(ctx.denied.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1),
      )
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogReleaseNotAllowed")
        .withArgs(ctx.denied.requestId, ReleaseKind.AGGREGATE_RESULT);
    });

    for (const who of ["hospitalSteward", "hospitalBGateway", "instituteRequester", "regulator", "stranger"]) {
      it(`refuses a release recorded by the ${who}, not a gateway of the holder`, async function () {
        const ctx = await loadFixture(recordedAccessesFixture);
        await expect(
          ctx.accessLog
            .connect(ctx[who])
            .releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1),
        )
          .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogUnauthorizedRecorder")
          .withArgs(ctx[who].address, ORG.HOSPITAL);
      });
    }

    describe("when the hospital is suspended", function () {
      shouldBeDisabledBySuspension(recordedAccessesFixture, {
        memberKey: "hospitalGateway",
        org: ORG.HOSPITAL,
        call: (ctx, signer) =>
          ctx.accessLog
            .connect(signer)
            .releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1),
        contractKey: "accessLog",
        errorName: "AccessLogUnauthorizedRecorder",
        args: (ctx) => [ctx.hospitalGateway.address, ORG.HOSPITAL],
      });
    });

    const stops = [
      ["suspended", AgreementStatus.SUSPENDED, (ctx) => ctx.agreements.connect(ctx.instituteSteward).suspend(ctx.id, REASON)],
      ["revoked", AgreementStatus.REVOKED, (ctx) => ctx.agreements.connect(ctx.regulator).revoke(ctx.id, REASON)],
      [
        "expired (expire() recorded)",
        AgreementStatus.EXPIRED,
        async (ctx) => {
          await time.increaseTo(ctx.terms.validUntil + 1);
          await ctx.agreements.expire(ctx.id);
        },
      ],
    ];
    for (const [state, status, change] of stops) {
      it(`refuses a release once the agreement is ${state}, even from an earlier grant`, async function () {
        const ctx = await loadFixture(recordedAccessesFixture);
        await change(ctx);
        await expect(
          ctx.accessLog
            .connect(ctx.hospitalGateway)
            .releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1),
        )
          .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogAgreementNotActive")
          .withArgs(ctx.id, status);
      });
    }

    // Regression: egress ends with the window itself, not when someone calls expire().
    it("refuses a release after the window closed, before anyone called expire()", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      const at = ctx.terms.validUntil + 1;
      await time.setNextBlockTimestamp(at);
      await expect(
        ctx.accessLog
          .connect(ctx.hospitalGateway)
          .releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 1),
      )
        .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogOutsideWindow")
        .withArgs(ctx.id, at, ctx.terms.validFrom, ctx.terms.validUntil);
    });

    describe("what each access may release (AccessRules.releasable)", function () {
      /** One granted access for every tier and operation under the clinical-care agreement. */
      async function everyAccessFixture() {
        const ctx = await clinicalCareFixture();
        const accesses = [];
        for (const tier of Object.values(Tier)) {
          for (const operation of Object.values(Operation)) {
            const request = { tier, operation, fieldMask: 1, requester: ctx.clinician.address };
            accesses.push(await signedGranted(ctx, request, ctx.clinician));
          }
        }
        await ctx.accessLog.connect(ctx.hospitalGateway).recordAccesses(accesses);
        return { ...ctx, accesses };
      }

      for (const [kindName, kind] of Object.entries(ReleaseKind)) {
        it(`releases ${kindName} only from the accesses whose tier and operation allow it`, async function () {
          const ctx = await loadFixture(everyAccessFixture);
          const gateway = ctx.accessLog.connect(ctx.hospitalGateway);
          let allowed = 0;
          for (const access of ctx.accesses) {
            const release = gateway.releaseResult(access.requestId, ctx.id, RESULT, kind, 10);
            if (releasable(kind, access.tier, access.operation)) {
              allowed++;
              await expect(release)
                .to.emit(ctx.accessLog, "ResultReleased")
                .withArgs(access.requestId, ctx.id, RESULT, kind, 10, ctx.hospitalGateway.address);
            } else {
              await expect(release)
                .to.be.revertedWithCustomError(ctx.accessLog, "AccessLogReleaseNotAllowed")
                .withArgs(access.requestId, kind);
            }
          }
          expect(allowed).to.be.greaterThan(0);
        });
      }
    });
  });

  describe("isReleased", function () {
    /** The recorded accesses with RESULT released from the granted one. */
    async function releasedFixture() {
      const ctx = await recordedAccessesFixture();
      await ctx.accessLog
        .connect(ctx.hospitalGateway)
        .releaseResult(ctx.granted.requestId, ctx.id, RESULT, ReleaseKind.AGGREGATE_RESULT, 2048);
      return ctx;
    }

    it("is true for a released result under its access's own agreement", async function () {
      const ctx = await loadFixture(releasedFixture);
      expect(await ctx.accessLog.isReleased(ctx.granted.requestId, ctx.id, RESULT)).to.equal(true);
    });

    it("is false before the result is released", async function () {
      const ctx = await loadFixture(recordedAccessesFixture);
      expect(await ctx.accessLog.isReleased(ctx.granted.requestId, ctx.id, RESULT)).to.equal(false);
    });

    it("is false for a result never released from the access", async function () {
      const ctx = await loadFixture(releasedFixture);
      expect(await ctx.accessLog.isReleased(ctx.granted.requestId, ctx.id, tag("result:other"))).to.equal(false);
    });

    it("is false under another agreement, even one sharing the access's upper 224 bits", async function () {
      const ctx = await loadFixture(releasedFixture);
      const otherId = await activate(ctx, researchTerms(ctx.now, { nonce: 2 }));
      const lookalike = ethers.toBeHex(BigInt(ctx.id) ^ 1n, 32);
      expect(await ctx.accessLog.isReleased(ctx.granted.requestId, otherId, RESULT)).to.equal(false);
      expect(await ctx.accessLog.isReleased(ctx.granted.requestId, lookalike, RESULT)).to.equal(false);
    });

    it("is false for a denied or unknown access", async function () {
      const ctx = await loadFixture(releasedFixture);
      expect(await ctx.accessLog.isReleased(ctx.denied.requestId, ctx.id, RESULT)).to.equal(false);
      expect(await ctx.accessLog.isReleased(tag("request:unknown"), ctx.id, RESULT)).to.equal(false);
    });

    it("stays true after the agreement is revoked: the release happened", async function () {
      const ctx = await loadFixture(releasedFixture);
      await ctx.agreements.connect(ctx.regulator).revoke(ctx.id, REASON);
      expect(await ctx.accessLog.isReleased(ctx.granted.requestId, ctx.id, RESULT)).to.equal(true);
    });
  });
});

// Proposal rules shared by AgreementRegistry.propose and .amend: every malformed term is refused
// with its own error before anything is stored.
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { ethers } = require("hardhat");
const { Tier, Scenario, ConsentPolicy, Operation } = require("./enums");
const { DAY, DATASET, ORG, fieldsMask, ops, tag } = require("./fixtures");
const { shouldBeDisabledBySuspension } = require("./membership.behavior");

/**
 * `fixture` yields a ctx; `baseTerms(ctx)` valid terms (a fresh nonce); `submit(ctx, terms, signer)`
 * sends the proposal (default signer: the hospital's steward). `partiesFixed`: amendments keep
 * their parties, so rules about other parties do not apply.
 */
function shouldValidateProposedTerms(fixture, baseTerms, submit, { partiesFixed = false } = {}) {
  const refuse = (title, overrides, errorName, args, signerKey) =>
    it(title, async function () {
      const ctx = await loadFixture(fixture);
      const terms = { ...baseTerms(ctx), ...(typeof overrides === "function" ? overrides(ctx) : overrides) };
      const signer = signerKey ? ctx[signerKey] : ctx.hospitalSteward;
      const expected = typeof args === "function" ? args(ctx, terms) : args;
      await expect(submit(ctx, terms, signer))
        .to.be.revertedWithCustomError(ctx.agreements, errorName)
        .withArgs(...expected);
    });

  describe("proposer", function () {
    for (const who of ["hospitalGateway", "instituteSteward", "hospitalBSteward", "regulator", "operator", "stranger"]) {
      refuse(`refuses a proposal by the ${who}`, {}, "AgreementRegistryUnauthorizedProposer", (ctx) => [
        ctx[who].address,
        ORG.HOSPITAL,
      ], who);
    }

    describe("when the holder organization is suspended", function () {
      shouldBeDisabledBySuspension(fixture, {
        memberKey: "hospitalSteward",
        org: ORG.HOSPITAL,
        call: (ctx, signer) => submit(ctx, baseTerms(ctx), signer),
        contractKey: "agreements",
        errorName: "AgreementRegistryUnauthorizedProposer",
        args: (ctx) => [ctx.hospitalSteward.address, ORG.HOSPITAL],
      });
    });
  });

  describe("requester", function () {
    // An amendment cannot change its requester, so only a proposal can name an unknown one.
    if (!partiesFixed) {
      const unknownOrg = tag("org:unregistered");
      refuse("refuses an unknown requesting organization", { requester: unknownOrg }, "AgreementRegistryInvalidRequester", [
        unknownOrg,
      ]);
    }

    it("refuses a suspended requesting organization", async function () {
      const ctx = await loadFixture(fixture);
      await ctx.membership.suspendOrganization(ORG.INSTITUTE);
      await expect(submit(ctx, baseTerms(ctx), ctx.hospitalSteward))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidRequester")
        .withArgs(ORG.INSTITUTE);
    });
  });

  describe("scenario ceilings and consent", function () {
    refuse(
      "refuses identified research (research stops at pseudonymized)",
      { maxTier: Tier.IDENTIFIED },
      "AgreementRegistryTierAboveCeiling",
      [Tier.IDENTIFIED, Tier.PSEUDONYMIZED],
    );
    refuse(
      "refuses de-identified data for AI training (training stops at model parameters)",
      { scenario: Scenario.AI_TRAINING, maxTier: Tier.DEIDENTIFIED, consentPolicy: ConsentPolicy.NONE },
      "AgreementRegistryTierAboveCeiling",
      [Tier.DEIDENTIFIED, Tier.MODEL_PARAMETERS],
    );
    refuse(
      "refuses pseudonymized data for teaching (teaching stops at de-identified)",
      { scenario: Scenario.TEACHING, maxTier: Tier.PSEUDONYMIZED, consentPolicy: ConsentPolicy.NONE },
      "AgreementRegistryTierAboveCeiling",
      [Tier.PSEUDONYMIZED, Tier.DEIDENTIFIED],
    );
    refuse(
      "refuses pseudonymized research without cohort consent",
      { consentPolicy: ConsentPolicy.NONE },
      "AgreementRegistryConsentPolicyMismatch",
      [Scenario.RESEARCH, ConsentPolicy.COHORT_CONSENT, ConsentPolicy.NONE],
    );
    refuse(
      "refuses de-identified research that claims a consent policy it does not need",
      { maxTier: Tier.DEIDENTIFIED, consentPolicy: ConsentPolicy.COHORT_CONSENT },
      "AgreementRegistryConsentPolicyMismatch",
      [Scenario.RESEARCH, ConsentPolicy.NONE, ConsentPolicy.COHORT_CONSENT],
    );
    refuse(
      "refuses an insurance claim without patient authorization",
      { scenario: Scenario.INSURANCE_CLAIM, maxTier: Tier.IDENTIFIED, consentPolicy: ConsentPolicy.COHORT_CONSENT },
      "AgreementRegistryConsentPolicyMismatch",
      [Scenario.INSURANCE_CLAIM, ConsentPolicy.PATIENT_AUTHORIZATION, ConsentPolicy.COHORT_CONSENT],
    );
  });

  describe("operations, quota and time", function () {
    refuse("refuses an empty operation set", { operations: 0 }, "AgreementRegistryInvalidOperations", [0]);
    refuse("refuses unknown operation bits", { operations: 0x0f }, "AgreementRegistryInvalidOperations", [0x0f]);
    refuse("refuses a zero access quota", { quota: 0 }, "AgreementRegistryZeroQuota", []);
    refuse(
      "refuses an empty validity window",
      (ctx) => ({ validFrom: ctx.now + DAY, validUntil: ctx.now + DAY }),
      "AgreementRegistryInvalidWindow",
      (ctx) => [ctx.now + DAY, ctx.now + DAY],
    );
    refuse(
      "refuses a window that ends before it starts",
      (ctx) => ({ validFrom: ctx.now + 2 * DAY, validUntil: ctx.now + DAY }),
      "AgreementRegistryInvalidWindow",
      (ctx) => [ctx.now + 2 * DAY, ctx.now + DAY],
    );
    refuse(
      "refuses a window that is already over",
      (ctx) => ({ validFrom: ctx.now - 10 * DAY, validUntil: ctx.now - DAY }),
      "AgreementRegistryInvalidWindow",
      (ctx) => [ctx.now - 10 * DAY, ctx.now - DAY],
    );
    refuse(
      "refuses a signing deadline in the past",
      (ctx) => ({ deadline: ctx.now - 1 }),
      "AgreementRegistryDeadlinePassed",
      (ctx) => [ctx.now - 1],
    );
  });

  describe("datasets and fields (minimum necessary)", function () {
    refuse("refuses an agreement without datasets", { datasets: [], fieldMasks: [] }, "AgreementRegistryInvalidScope", [
      0, 0,
    ]);
    refuse(
      "refuses datasets and field masks of different lengths",
      { fieldMasks: [fieldsMask(1), fieldsMask(2)] },
      "AgreementRegistryInvalidScope",
      [1, 2],
    );
    const unknownDataset = tag("dataset:unregistered");
    refuse(
      "refuses an unknown dataset",
      { datasets: [unknownDataset] },
      "AgreementRegistryInvalidDataset",
      [unknownDataset],
    );
    refuse(
      "refuses another organization's dataset",
      { datasets: [DATASET.OTHER_HOSPITAL] },
      "AgreementRegistryInvalidDataset",
      [DATASET.OTHER_HOSPITAL],
    );
    refuse(
      "refuses a dataset listed twice",
      { datasets: [DATASET.EHR, DATASET.EHR], fieldMasks: [fieldsMask(1), fieldsMask(2)] },
      "AgreementRegistryInvalidDataset",
      [DATASET.EHR],
    );
    refuse(
      "refuses an empty field mask",
      { fieldMasks: [0] },
      "AgreementRegistryInvalidFieldMask",
      [DATASET.EHR, 0, 8],
    );
    refuse(
      "refuses a field mask naming a field the dataset does not have",
      { fieldMasks: [fieldsMask(1, 8)] },
      "AgreementRegistryInvalidFieldMask",
      [DATASET.EHR, fieldsMask(1, 8), 8],
    );
    refuse(
      "refuses a tier above a dataset's maximum tier",
      { datasets: [DATASET.EHR, DATASET.IMAGING], fieldMasks: [fieldsMask(1), fieldsMask(1)] },
      "AgreementRegistryTierAboveCeiling",
      [Tier.PSEUDONYMIZED, Tier.DEIDENTIFIED],
    );
  });

  it("accepts several datasets within their tiers and stores each field mask", async function () {
    const ctx = await loadFixture(fixture);
    const terms = {
      ...baseTerms(ctx),
      datasets: [DATASET.EHR, DATASET.IMAGING],
      fieldMasks: [fieldsMask(1, 2), fieldsMask(0, 1, 2, 3)],
      maxTier: Tier.DEIDENTIFIED,
      consentPolicy: ConsentPolicy.NONE,
      operations: ops(Operation.QUERY, Operation.TRAIN, Operation.EXPORT_RESULT),
    };
    await expect(submit(ctx, terms, ctx.hospitalSteward)).to.emit(ctx.agreements, "AgreementProposed");
    const id = ethers.keccak256(
      ethers.AbiCoder.defaultAbiCoder().encode(["bytes32", "bytes32", "uint256"], [terms.holder, terms.requester, terms.nonce]),
    );
    expect(await ctx.agreements.allowedFields(id, DATASET.EHR)).to.equal(fieldsMask(1, 2));
    expect(await ctx.agreements.allowedFields(id, DATASET.IMAGING)).to.equal(fieldsMask(0, 1, 2, 3));
    expect(await ctx.agreements.allowedFields(id, DATASET.OTHER_HOSPITAL)).to.equal(0);
  });
}

module.exports = { shouldValidateProposedTerms };

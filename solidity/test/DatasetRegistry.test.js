const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { ethers } = require("hardhat");
const { Tier } = require("./helpers/enums");
const { DATASET, EHR_FIELDS, ORG, SCHEMA, deployFixture, tag } = require("./helpers/fixtures");
const { shouldBeDisabledBySuspension } = require("./helpers/membership.behavior");

const NEW_DATASET = tag("dataset:st-mary/oncology-registry");
const ONCOLOGY_FIELDS = ["person_id", "episode_concept_id", "episode_start_date", "stage_concept_id"];

const register = (ctx, signer, overrides = {}) => {
  const args = {
    id: NEW_DATASET,
    holder: ORG.HOSPITAL,
    schemaRef: SCHEMA.OMOP_54,
    fields: ONCOLOGY_FIELDS,
    maxTier: Tier.PSEUDONYMIZED,
    ...overrides,
  };
  return ctx.datasets
    .connect(signer ?? ctx.hospitalSteward)
    .registerDataset(args.id, args.holder, args.schemaRef, args.fields, args.maxTier);
};

describe("DatasetRegistry", function () {
  it("knows its membership contract", async function () {
    const { datasets, membership } = await loadFixture(deployFixture);
    expect(await datasets.MEMBERSHIP()).to.equal(await membership.getAddress());
  });

  describe("registerDataset", function () {
    it("registers a holder's dataset and publishes its field names in index order", async function () {
      const ctx = await loadFixture(deployFixture);
      await expect(register(ctx))
        .to.emit(ctx.datasets, "DatasetRegistered")
        .withArgs(NEW_DATASET, ORG.HOSPITAL, SCHEMA.OMOP_54, Tier.PSEUDONYMIZED, ONCOLOGY_FIELDS);
      const dataset = await ctx.datasets.dataset(NEW_DATASET);
      expect(dataset.holder).to.equal(ORG.HOSPITAL);
      expect(dataset.schemaRef).to.equal(SCHEMA.OMOP_54);
      expect(dataset.fieldCount).to.equal(ONCOLOGY_FIELDS.length);
      expect(dataset.maxTier).to.equal(Tier.PSEUDONYMIZED);
    });

    it("accepts the maximum of 256 fields", async function () {
      const ctx = await loadFixture(deployFixture);
      const fields = Array.from({ length: 256 }, (_, i) => `field_${i}`);
      await expect(register(ctx, undefined, { fields })).to.emit(ctx.datasets, "DatasetRegistered");
      expect((await ctx.datasets.dataset(NEW_DATASET)).fieldCount).to.equal(256);
    });

    it("reports a zero holder for an unknown dataset", async function () {
      const { datasets } = await loadFixture(deployFixture);
      expect((await datasets.dataset(NEW_DATASET)).holder).to.equal(ethers.ZeroHash);
    });

    it("refuses the zero dataset id", async function () {
      const ctx = await loadFixture(deployFixture);
      await expect(register(ctx, undefined, { id: ethers.ZeroHash })).to.be.revertedWithCustomError(
        ctx.datasets,
        "DatasetRegistryZeroId",
      );
    });

    it("refuses an id that is already registered", async function () {
      const ctx = await loadFixture(deployFixture);
      await expect(register(ctx, undefined, { id: DATASET.EHR, fields: EHR_FIELDS }))
        .to.be.revertedWithCustomError(ctx.datasets, "DatasetRegistryDatasetExists")
        .withArgs(DATASET.EHR);
    });

    it("refuses a dataset without fields", async function () {
      const ctx = await loadFixture(deployFixture);
      await expect(register(ctx, undefined, { fields: [] }))
        .to.be.revertedWithCustomError(ctx.datasets, "DatasetRegistryInvalidFieldCount")
        .withArgs(0);
    });

    it("refuses a dataset with more than 256 fields", async function () {
      const ctx = await loadFixture(deployFixture);
      const fields = Array.from({ length: 257 }, (_, i) => `field_${i}`);
      await expect(register(ctx, undefined, { fields }))
        .to.be.revertedWithCustomError(ctx.datasets, "DatasetRegistryInvalidFieldCount")
        .withArgs(257);
    });

    for (const who of ["hospitalGateway", "hospitalBSteward", "instituteSteward", "regulator", "operator", "stranger"]) {
      it(`refuses registration for the hospital by the ${who}`, async function () {
        const ctx = await loadFixture(deployFixture);
        await expect(register(ctx, ctx[who]))
          .to.be.revertedWithCustomError(ctx.datasets, "DatasetRegistryUnauthorizedSteward")
          .withArgs(ctx[who].address, ORG.HOSPITAL);
      });
    }

    describe("when the holder organization is suspended", function () {
      shouldBeDisabledBySuspension(deployFixture, {
        memberKey: "hospitalSteward",
        org: ORG.HOSPITAL,
        call: (ctx, signer) => register(ctx, signer),
        contractKey: "datasets",
        errorName: "DatasetRegistryUnauthorizedSteward",
        args: (ctx) => [ctx.hospitalSteward.address, ORG.HOSPITAL],
      });
    });
  });
});

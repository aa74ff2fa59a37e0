const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { AgreementStatus, ConsentPolicy, OrgKind, Party, Role, Scenario, Tier } = require("./helpers/enums");
const {
  ORG,
  activeAgreementFixture,
  deployFixture,
  proposedAgreementFixture,
  researchTerms,
  signAsParties,
  sameStruct,
  tag,
} = require("./helpers/fixtures");
const {
  AGREEMENT_TYPES,
  ZERO32,
  agreementDomain,
  agreementIdOf,
  agreementMessage,
  signAgreement,
} = require("./helpers/typed-data");
const { shouldValidateProposedTerms } = require("./helpers/agreement.behavior");
const { shouldBeDisabledBySuspension } = require("./helpers/membership.behavior");

const REASON = tag("reason:breach-of-minimum-necessary");

/** The active agreement plus its proposed (unsigned) amendment, version 2. */
async function amendmentProposedFixture() {
  const ctx = await activeAgreementFixture();
  const amendedTerms = researchTerms(ctx.now, { nonce: 2, quota: 50, termsHash: tag("terms:dua-v2.pdf") });
  const amendmentId = agreementIdOf(amendedTerms);
  await ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, amendedTerms);
  return { ...ctx, amendedTerms, amendmentId };
}

const sign = (ctx, signer, { id = ctx.id, terms = ctx.terms, ...options } = {}) =>
  signAgreement(signer, ctx.agreements, terms, { id, ...options });

describe("AgreementRegistry", function () {
  it("knows its membership and dataset registry", async function () {
    const { agreements, membership, datasets } = await loadFixture(deployFixture);
    expect(await agreements.MEMBERSHIP()).to.equal(await membership.getAddress());
    expect(await agreements.DATASETS()).to.equal(await datasets.getAddress());
  });

  describe("propose", function () {
    it("proposes version 1 under id keccak256(holder, requester, nonce) with the EIP-712 digest", async function () {
      const { agreements, hospitalSteward, now } = await loadFixture(deployFixture);
      const terms = researchTerms(now);
      const id = agreementIdOf(terms);
      const digest = ethers.TypedDataEncoder.hash(
        await agreementDomain(agreements),
        AGREEMENT_TYPES,
        agreementMessage(terms, { id }),
      );
      expect(await agreements.connect(hospitalSteward).propose.staticCall(terms)).to.equal(id);
      await expect(agreements.connect(hospitalSteward).propose(terms))
        .to.emit(agreements, "AgreementProposed")
        .withArgs(id, ORG.HOSPITAL, ORG.INSTITUTE, 1, ZERO32, digest, sameStruct(terms));
      expect(await agreements.status(id)).to.equal(AgreementStatus.PROPOSED);
      expect(await agreements.digest(id)).to.equal(digest);
      const [version, previous] = await agreements.versionOf(id);
      expect(version).to.equal(1);
      expect(previous).to.equal(ZERO32);
      const [holderSigner, requesterSigner] = await agreements.signers(id);
      expect(holderSigner).to.equal(ethers.ZeroAddress);
      expect(requesterSigner).to.equal(ethers.ZeroAddress);
    });

    it("exposes what access decisions need in accessTerms", async function () {
      const { agreements, id, terms } = await loadFixture(proposedAgreementFixture);
      const accessTerms = await agreements.accessTerms(id);
      expect(accessTerms.status).to.equal(AgreementStatus.PROPOSED);
      expect(accessTerms.scenario).to.equal(terms.scenario);
      expect(accessTerms.maxTier).to.equal(terms.maxTier);
      expect(accessTerms.operations).to.equal(terms.operations);
      expect(accessTerms.consentPolicy).to.equal(terms.consentPolicy);
      expect(accessTerms.validFrom).to.equal(terms.validFrom);
      expect(accessTerms.validUntil).to.equal(terms.validUntil);
      expect(accessTerms.quota).to.equal(terms.quota);
      expect(accessTerms.holder).to.equal(terms.holder);
      expect(accessTerms.requester).to.equal(terms.requester);
      expect(await agreements.allowedFields(id, terms.datasets[0])).to.equal(terms.fieldMasks[0]);
    });

    it("accepts an insurance claim agreement with patient authorization at the identified tier", async function () {
      const { agreements, hospitalSteward, now } = await loadFixture(deployFixture);
      const terms = researchTerms(now, {
        requester: ORG.INSURER,
        scenario: Scenario.INSURANCE_CLAIM,
        maxTier: Tier.IDENTIFIED,
        consentPolicy: ConsentPolicy.PATIENT_AUTHORIZATION,
      });
      await expect(agreements.connect(hospitalSteward).propose(terms)).to.emit(agreements, "AgreementProposed");
    });

    it("refuses a second agreement with the same holder, requester and nonce", async function () {
      const { agreements, hospitalSteward, id, terms } = await loadFixture(proposedAgreementFixture);
      await expect(agreements.connect(hospitalSteward).propose({ ...terms, quota: 99 }))
        .to.be.revertedWithCustomError(agreements, "AgreementRegistryAgreementExists")
        .withArgs(id);
    });

    shouldValidateProposedTerms(
      deployFixture,
      (ctx) => researchTerms(ctx.now, { nonce: 7 }),
      (ctx, terms, signer) => ctx.agreements.connect(signer).propose(terms),
    );
  });

  describe("sign", function () {
    it("records the holder's signature, relayed by anyone, and keeps the agreement proposed", async function () {
      const ctx = await loadFixture(proposedAgreementFixture);
      const { agreements, hospitalSteward, relayer, id } = ctx;
      const signature = await sign(ctx, hospitalSteward);
      await expect(agreements.connect(relayer).sign(id, hospitalSteward.address, signature))
        .to.emit(agreements, "AgreementSigned")
        .withArgs(id, hospitalSteward.address, Party.HOLDER, signature)
        .and.not.to.emit(agreements, "AgreementActivated");
      expect(await agreements.status(id)).to.equal(AgreementStatus.PROPOSED);
      expect(await agreements.signers(id)).to.deep.equal([hospitalSteward.address, ethers.ZeroAddress]);
    });

    it("activates the agreement once the requesting side has signed too", async function () {
      const ctx = await loadFixture(proposedAgreementFixture);
      const { agreements, hospitalSteward, instituteSteward, id } = ctx;
      await agreements.sign(id, hospitalSteward.address, await sign(ctx, hospitalSteward));
      const signature = await sign(ctx, instituteSteward);
      await expect(agreements.sign(id, instituteSteward.address, signature))
        .to.emit(agreements, "AgreementSigned")
        .withArgs(id, instituteSteward.address, Party.REQUESTER, signature)
        .and.to.emit(agreements, "AgreementActivated")
        .withArgs(id);
      expect(await agreements.status(id)).to.equal(AgreementStatus.ACTIVE);
      expect(await agreements.signers(id)).to.deep.equal([hospitalSteward.address, instituteSteward.address]);
    });

    it("accepts a requester member's signature for the requesting side, signed first", async function () {
      const ctx = await loadFixture(proposedAgreementFixture);
      const { agreements, hospitalSteward, instituteRequester, id } = ctx;
      await expect(agreements.sign(id, instituteRequester.address, await sign(ctx, instituteRequester)))
        .to.emit(agreements, "AgreementSigned")
        .withArgs(id, instituteRequester.address, Party.REQUESTER, (s) => ethers.isHexString(s, 65));
      await expect(agreements.sign(id, hospitalSteward.address, await sign(ctx, hospitalSteward)))
        .to.emit(agreements, "AgreementActivated")
        .withArgs(id);
    });

    it("accepts a signature up to and including the deadline", async function () {
      const ctx = await loadFixture(proposedAgreementFixture);
      const signature = await sign(ctx, ctx.hospitalSteward);
      await time.setNextBlockTimestamp(ctx.terms.deadline);
      await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, signature)).to.emit(
        ctx.agreements,
        "AgreementSigned",
      );
    });

    describe("bad signatures", function () {
      it("refuses a signature made by another key than the claimed signer", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        const forged = await sign(ctx, ctx.stranger);
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, forged))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidSignature")
          .withArgs(ctx.id, ctx.hospitalSteward.address);
      });

      it("refuses a malformed signature", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, "0x1234"))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidSignature")
          .withArgs(ctx.id, ctx.hospitalSteward.address);
      });

      it("refuses a signature over different terms", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        const signature = await sign(ctx, ctx.hospitalSteward, { terms: { ...ctx.terms, quota: 1000 } });
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, signature))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidSignature")
          .withArgs(ctx.id, ctx.hospitalSteward.address);
      });

      it("refuses a signature made for another chain id", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        const signature = await sign(ctx, ctx.hospitalSteward, { chainId: 1 });
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, signature))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidSignature")
          .withArgs(ctx.id, ctx.hospitalSteward.address);
      });

      it("refuses a signature made for another registry contract", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        const signature = await sign(ctx, ctx.hospitalSteward, { verifyingContract: await ctx.accessLog.getAddress() });
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, signature))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidSignature")
          .withArgs(ctx.id, ctx.hospitalSteward.address);
      });

      it("refuses a signature for agreement A replayed on agreement B with identical terms", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        const termsB = { ...ctx.terms, nonce: 2 };
        const idB = agreementIdOf(termsB);
        await ctx.agreements.connect(ctx.hospitalSteward).propose(termsB);
        const signatureForA = await sign(ctx, ctx.hospitalSteward);
        await expect(ctx.agreements.sign(idB, ctx.hospitalSteward.address, signatureForA))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidSignature")
          .withArgs(idB, ctx.hospitalSteward.address);
      });
    });

    describe("who signs", function () {
      for (const who of ["hospitalGateway", "hospitalBSteward", "insurerSteward", "regulator", "stranger"]) {
        it(`refuses a valid signature by the ${who}, who is no party`, async function () {
          const ctx = await loadFixture(proposedAgreementFixture);
          const signer = ctx[who];
          await expect(ctx.agreements.sign(ctx.id, signer.address, await sign(ctx, signer)))
            .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnauthorizedSigner")
            .withArgs(ctx.id, signer.address);
        });
      }

      it("refuses a second signature for the holder, by the same steward", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        const signature = await sign(ctx, ctx.hospitalSteward);
        await ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, signature);
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, signature))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryAlreadySigned")
          .withArgs(ctx.id, Party.HOLDER);
      });

      it("refuses a second signature for the holder, by another steward", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        await ctx.membership.grantMemberRole(ORG.HOSPITAL, ctx.stranger.address, Role.STEWARD);
        await ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, await sign(ctx, ctx.hospitalSteward));
        await expect(ctx.agreements.sign(ctx.id, ctx.stranger.address, await sign(ctx, ctx.stranger)))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryAlreadySigned")
          .withArgs(ctx.id, Party.HOLDER);
      });

      it("refuses a second signature for the requesting side", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        await ctx.agreements.sign(ctx.id, ctx.instituteSteward.address, await sign(ctx, ctx.instituteSteward));
        await expect(ctx.agreements.sign(ctx.id, ctx.instituteRequester.address, await sign(ctx, ctx.instituteRequester)))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryAlreadySigned")
          .withArgs(ctx.id, Party.REQUESTER);
      });

      describe("when the requesting organization is suspended", function () {
        shouldBeDisabledBySuspension(proposedAgreementFixture, {
          memberKey: "instituteSteward",
          org: ORG.INSTITUTE,
          call: async (ctx, signer) => ctx.agreements.sign(ctx.id, signer.address, await sign(ctx, signer)),
          contractKey: "agreements",
          errorName: "AgreementRegistryUnauthorizedSigner",
          args: (ctx) => [ctx.id, ctx.instituteSteward.address],
        });
      });
    });

    describe("when signing is no longer possible", function () {
      it("refuses a signature after the deadline", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        const signature = await sign(ctx, ctx.hospitalSteward);
        await time.increaseTo(ctx.terms.deadline + 1);
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, signature))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistrySignatureExpired")
          .withArgs(ctx.id, ctx.terms.deadline);
      });

      it("refuses a signature on an active agreement", async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, await sign(ctx, ctx.hospitalSteward)))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
          .withArgs(ctx.id, AgreementStatus.ACTIVE);
      });

      it("refuses a signature on a revoked proposal", async function () {
        const ctx = await loadFixture(proposedAgreementFixture);
        await ctx.agreements.connect(ctx.hospitalSteward).revoke(ctx.id, REASON);
        await expect(ctx.agreements.sign(ctx.id, ctx.hospitalSteward.address, await sign(ctx, ctx.hospitalSteward)))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
          .withArgs(ctx.id, AgreementStatus.REVOKED);
      });

      it("refuses a signature on an unknown agreement", async function () {
        const ctx = await loadFixture(deployFixture);
        const terms = researchTerms(ctx.now);
        const id = agreementIdOf(terms);
        await expect(ctx.agreements.sign(id, ctx.hospitalSteward.address, await sign(ctx, ctx.hospitalSteward, { id, terms })))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnknownAgreement")
          .withArgs(id);
      });
    });
  });

  describe("suspend", function () {
    for (const who of ["hospitalSteward", "instituteSteward", "regulator"]) {
      it(`lets the ${who} suspend an active agreement`, async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        await expect(ctx.agreements.connect(ctx[who]).suspend(ctx.id, REASON))
          .to.emit(ctx.agreements, "AgreementSuspended")
          .withArgs(ctx.id, ctx[who].address, REASON);
        expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.SUSPENDED);
      });
    }

    for (const who of ["hospitalGateway", "instituteRequester", "hospitalBSteward", "operator", "stranger"]) {
      it(`refuses a suspension by the ${who}`, async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        await expect(ctx.agreements.connect(ctx[who]).suspend(ctx.id, REASON))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnauthorizedAccount")
          .withArgs(ctx.id, ctx[who].address);
      });
    }

    describe("when the steward's organization is suspended", function () {
      shouldBeDisabledBySuspension(activeAgreementFixture, {
        memberKey: "instituteSteward",
        org: ORG.INSTITUTE,
        call: (ctx, signer) => ctx.agreements.connect(signer).suspend(ctx.id, REASON),
        contractKey: "agreements",
        errorName: "AgreementRegistryUnauthorizedAccount",
        args: (ctx) => [ctx.id, ctx.instituteSteward.address],
      });
    });

    it("refuses to suspend a proposed agreement", async function () {
      const ctx = await loadFixture(proposedAgreementFixture);
      await expect(ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.PROPOSED);
    });

    it("refuses to suspend a suspended agreement", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON);
      await expect(ctx.agreements.connect(ctx.hospitalSteward).suspend(ctx.id, REASON))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.SUSPENDED);
    });

    it("refuses to suspend an agreement whose window is over", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await time.increaseTo(ctx.terms.validUntil + 1);
      await expect(ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.EXPIRED);
    });
  });

  describe("resume", function () {
    async function suspendedByStewardFixture() {
      const ctx = await activeAgreementFixture();
      await ctx.agreements.connect(ctx.hospitalSteward).suspend(ctx.id, REASON);
      return ctx;
    }
    async function suspendedByRegulatorFixture() {
      const ctx = await activeAgreementFixture();
      await ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON);
      return ctx;
    }

    for (const who of ["hospitalSteward", "regulator"]) {
      it(`lets the ${who} resume an agreement the holder's steward suspended`, async function () {
        const ctx = await loadFixture(suspendedByStewardFixture);
        await expect(ctx.agreements.connect(ctx[who]).resume(ctx.id))
          .to.emit(ctx.agreements, "AgreementResumed")
          .withArgs(ctx.id, ctx[who].address);
        expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.ACTIVE);
      });
    }

    // Regression: the party a suspension supervises could lift it at once (the requester's
    // steward resumed the holder's suspension, and its accesses were granted again).
    it("lets only the suspending party's steward or a regulator lift a steward's suspension", async function () {
      const ctx = await loadFixture(suspendedByStewardFixture);
      await expect(ctx.agreements.connect(ctx.instituteSteward).resume(ctx.id))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnauthorizedAccount")
        .withArgs(ctx.id, ctx.instituteSteward.address);
      await ctx.agreements.connect(ctx.hospitalSteward).resume(ctx.id);
      await ctx.agreements.connect(ctx.instituteSteward).suspend(ctx.id, REASON);
      await expect(ctx.agreements.connect(ctx.hospitalSteward).resume(ctx.id))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnauthorizedAccount")
        .withArgs(ctx.id, ctx.hospitalSteward.address);
      await expect(ctx.agreements.connect(ctx.instituteSteward).resume(ctx.id))
        .to.emit(ctx.agreements, "AgreementResumed")
        .withArgs(ctx.id, ctx.instituteSteward.address);
      await ctx.agreements.connect(ctx.instituteSteward).suspend(ctx.id, REASON);
      await expect(ctx.agreements.connect(ctx.regulator).resume(ctx.id))
        .to.emit(ctx.agreements, "AgreementResumed")
        .withArgs(ctx.id, ctx.regulator.address);
      expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.ACTIVE);
    });

    it("lets only a regulator resume an agreement a regulator suspended", async function () {
      const ctx = await loadFixture(suspendedByRegulatorFixture);
      for (const steward of [ctx.hospitalSteward, ctx.instituteSteward]) {
        await expect(ctx.agreements.connect(steward).resume(ctx.id))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnauthorizedAccount")
          .withArgs(ctx.id, steward.address);
      }
      await expect(ctx.agreements.connect(ctx.regulator).resume(ctx.id))
        .to.emit(ctx.agreements, "AgreementResumed")
        .withArgs(ctx.id, ctx.regulator.address);
      expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.ACTIVE);
    });

    it("forgets the regulator's suspension once resumed: a later steward suspension is that steward's party's to lift", async function () {
      const ctx = await loadFixture(suspendedByRegulatorFixture);
      await ctx.agreements.connect(ctx.regulator).resume(ctx.id);
      await ctx.agreements.connect(ctx.instituteSteward).suspend(ctx.id, REASON);
      await expect(ctx.agreements.connect(ctx.instituteSteward).resume(ctx.id))
        .to.emit(ctx.agreements, "AgreementResumed")
        .withArgs(ctx.id, ctx.instituteSteward.address);
    });

    for (const who of ["hospitalGateway", "instituteRequester", "operator", "stranger"]) {
      it(`refuses a resumption by the ${who}`, async function () {
        const ctx = await loadFixture(suspendedByStewardFixture);
        await expect(ctx.agreements.connect(ctx[who]).resume(ctx.id))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnauthorizedAccount")
          .withArgs(ctx.id, ctx[who].address);
      });
    }

    it("refuses to resume an active agreement", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await expect(ctx.agreements.connect(ctx.regulator).resume(ctx.id))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.ACTIVE);
    });

    it("refuses to resume a suspended agreement whose window is over", async function () {
      const ctx = await loadFixture(suspendedByStewardFixture);
      await time.increaseTo(ctx.terms.validUntil + 1);
      await expect(ctx.agreements.connect(ctx.regulator).resume(ctx.id))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.EXPIRED);
    });
  });

  describe("revoke", function () {
    const revocable = {
      proposed: proposedAgreementFixture,
      active: activeAgreementFixture,
      suspended: async () => {
        const ctx = await activeAgreementFixture();
        await ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON);
        return ctx;
      },
    };
    for (const [state, fixture] of Object.entries(revocable)) {
      for (const who of ["hospitalSteward", "regulator"]) {
        it(`lets the ${who} revoke a ${state} agreement for good`, async function () {
          const ctx = await loadFixture(fixture);
          await expect(ctx.agreements.connect(ctx[who]).revoke(ctx.id, REASON))
            .to.emit(ctx.agreements, "AgreementRevoked")
            .withArgs(ctx.id, ctx[who].address, REASON);
          expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.REVOKED);
          await expect(ctx.agreements.connect(ctx.regulator).resume(ctx.id))
            .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
            .withArgs(ctx.id, AgreementStatus.REVOKED);
        });
      }
    }

    for (const who of ["instituteSteward", "instituteRequester", "hospitalGateway", "operator", "stranger"]) {
      it(`refuses a revocation by the ${who}`, async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        await expect(ctx.agreements.connect(ctx[who]).revoke(ctx.id, REASON))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnauthorizedAccount")
          .withArgs(ctx.id, ctx[who].address);
      });
    }

    it("refuses to revoke twice", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await ctx.agreements.connect(ctx.regulator).revoke(ctx.id, REASON);
      await expect(ctx.agreements.connect(ctx.hospitalSteward).revoke(ctx.id, REASON))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.REVOKED);
    });

    it("refuses to revoke an agreement whose window is over", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await time.increaseTo(ctx.terms.validUntil + 1);
      await expect(ctx.agreements.connect(ctx.regulator).revoke(ctx.id, REASON))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.EXPIRED);
    });
  });

  describe("expiry", function () {
    it("reports EXPIRED as soon as the window is over, before anyone calls expire()", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await time.increaseTo(ctx.terms.validUntil);
      expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.ACTIVE);
      await time.increaseTo(ctx.terms.validUntil + 1);
      expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.EXPIRED);
      expect((await ctx.agreements.accessTerms(ctx.id)).status).to.equal(AgreementStatus.ACTIVE);
    });

    it("lets anyone record the expiry once the window is over", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await time.increaseTo(ctx.terms.validUntil + 1);
      await expect(ctx.agreements.connect(ctx.stranger).expire(ctx.id))
        .to.emit(ctx.agreements, "AgreementExpired")
        .withArgs(ctx.id);
      expect((await ctx.agreements.accessTerms(ctx.id)).status).to.equal(AgreementStatus.EXPIRED);
    });

    it("expires a suspended agreement too", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON);
      await time.increaseTo(ctx.terms.validUntil + 1);
      await expect(ctx.agreements.expire(ctx.id)).to.emit(ctx.agreements, "AgreementExpired").withArgs(ctx.id);
    });

    it("refuses to expire an agreement up to and including its last valid second", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await expect(ctx.agreements.expire(ctx.id))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryNotExpired")
        .withArgs(ctx.id, ctx.terms.validUntil);
      await time.setNextBlockTimestamp(ctx.terms.validUntil);
      await expect(ctx.agreements.expire(ctx.id))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryNotExpired")
        .withArgs(ctx.id, ctx.terms.validUntil);
    });

    it("refuses to expire a proposed, revoked or already expired agreement", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const proposedTerms = researchTerms(ctx.now, { nonce: 9 });
      const proposedId = agreementIdOf(proposedTerms);
      await ctx.agreements.connect(ctx.hospitalSteward).propose(proposedTerms);
      const revokedTerms = researchTerms(ctx.now, { nonce: 10 });
      const revokedId = agreementIdOf(revokedTerms);
      await ctx.agreements.connect(ctx.hospitalSteward).propose(revokedTerms);
      await ctx.agreements.connect(ctx.hospitalSteward).revoke(revokedId, REASON);
      await time.increaseTo(ctx.terms.validUntil + 1);
      await ctx.agreements.expire(ctx.id);
      for (const [id, status] of [
        [proposedId, AgreementStatus.PROPOSED],
        [revokedId, AgreementStatus.REVOKED],
        [ctx.id, AgreementStatus.EXPIRED],
      ]) {
        await expect(ctx.agreements.expire(id))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
          .withArgs(id, status);
      }
    });
  });

  describe("amend", function () {
    it("proposes version 2 pointing at version 1, which stays active meanwhile", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      const amendedTerms = researchTerms(ctx.now, { nonce: 2, quota: 50 });
      const amendmentId = agreementIdOf(amendedTerms);
      const digest = ethers.TypedDataEncoder.hash(
        await agreementDomain(ctx.agreements),
        AGREEMENT_TYPES,
        agreementMessage(amendedTerms, { id: amendmentId, version: 2, previous: ctx.id }),
      );
      await expect(ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, amendedTerms))
        .to.emit(ctx.agreements, "AgreementProposed")
        .withArgs(amendmentId, ORG.HOSPITAL, ORG.INSTITUTE, 2, ctx.id, digest, sameStruct(amendedTerms));
      expect(await ctx.agreements.versionOf(amendmentId)).to.deep.equal([2n, ctx.id]);
      expect(await ctx.agreements.status(amendmentId)).to.equal(AgreementStatus.PROPOSED);
      expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.ACTIVE);
    });

    it("supersedes version 1 once version 2 is active", async function () {
      const ctx = await loadFixture(amendmentProposedFixture);
      const { agreements, hospitalSteward, instituteSteward, amendmentId, amendedTerms } = ctx;
      await agreements.sign(
        amendmentId,
        hospitalSteward.address,
        await sign(ctx, hospitalSteward, { id: amendmentId, terms: amendedTerms, version: 2, previous: ctx.id }),
      );
      await expect(
        agreements.sign(
          amendmentId,
          instituteSteward.address,
          await sign(ctx, instituteSteward, { id: amendmentId, terms: amendedTerms, version: 2, previous: ctx.id }),
        ),
      )
        .to.emit(agreements, "AgreementActivated")
        .withArgs(amendmentId)
        .and.to.emit(agreements, "AgreementSuperseded")
        .withArgs(ctx.id, amendmentId);
      expect(await agreements.status(ctx.id)).to.equal(AgreementStatus.SUPERSEDED);
      expect(await agreements.status(amendmentId)).to.equal(AgreementStatus.ACTIVE);
      await expect(agreements.connect(ctx.regulator).suspend(ctx.id, REASON))
        .to.be.revertedWithCustomError(agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.SUPERSEDED);
    });

    it("amends a suspended agreement and supersedes it on activation", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await ctx.agreements.connect(ctx.instituteSteward).suspend(ctx.id, REASON);
      const amendedTerms = researchTerms(ctx.now, { nonce: 2 });
      const amendmentId = agreementIdOf(amendedTerms);
      await ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, amendedTerms);
      await signAsParties(ctx, amendmentId, amendedTerms, { version: 2, previous: ctx.id });
      expect(await ctx.agreements.status(ctx.id)).to.equal(AgreementStatus.SUPERSEDED);
    });

    it("refuses a version-1 signature replayed on the version-2 amendment", async function () {
      const ctx = await loadFixture(amendmentProposedFixture);
      const { agreements, hospitalSteward, amendmentId, amendedTerms } = ctx;
      const v1Signature = await sign(ctx, hospitalSteward);
      await expect(agreements.sign(amendmentId, hospitalSteward.address, v1Signature))
        .to.be.revertedWithCustomError(agreements, "AgreementRegistryInvalidSignature")
        .withArgs(amendmentId, hospitalSteward.address);
      // Same id and terms, but signed as version 1 without a previous version: still refused.
      const asVersion1 = await sign(ctx, hospitalSteward, { id: amendmentId, terms: amendedTerms });
      await expect(agreements.sign(amendmentId, hospitalSteward.address, asVersion1))
        .to.be.revertedWithCustomError(agreements, "AgreementRegistryInvalidSignature")
        .withArgs(amendmentId, hospitalSteward.address);
    });

    it("refuses an amendment that changes the parties", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      for (const parties of [{ requester: ORG.INSURER }, { holder: ORG.HOSPITAL_B }]) {
        await expect(ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, researchTerms(ctx.now, { nonce: 2, ...parties })))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryAmendmentPartiesChanged")
          .withArgs(ctx.id);
      }
    });

    it("refuses an amendment that reuses the amended version's id (same nonce)", async function () {
      const ctx = await loadFixture(activeAgreementFixture);
      await expect(ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, ctx.terms))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryAgreementExists")
        .withArgs(ctx.id);
    });

    it("refuses to amend an unknown agreement", async function () {
      const ctx = await loadFixture(deployFixture);
      const unknown = tag("agreement:unknown");
      await expect(ctx.agreements.connect(ctx.hospitalSteward).amend(unknown, researchTerms(ctx.now)))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryUnknownAgreement")
        .withArgs(unknown);
    });

    it("refuses to amend a proposed agreement", async function () {
      const ctx = await loadFixture(proposedAgreementFixture);
      await expect(ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, researchTerms(ctx.now, { nonce: 2 })))
        .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(ctx.id, AgreementStatus.PROPOSED);
    });

    it("refuses to amend a revoked, expired or superseded agreement", async function () {
      const revoked = await loadFixture(activeAgreementFixture);
      await revoked.agreements.connect(revoked.regulator).revoke(revoked.id, REASON);
      await expect(revoked.agreements.connect(revoked.hospitalSteward).amend(revoked.id, researchTerms(revoked.now, { nonce: 2 })))
        .to.be.revertedWithCustomError(revoked.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(revoked.id, AgreementStatus.REVOKED);

      const superseded = await loadFixture(amendmentProposedFixture);
      await signAsParties(superseded, superseded.amendmentId, superseded.amendedTerms, { version: 2, previous: superseded.id });
      await expect(
        superseded.agreements.connect(superseded.hospitalSteward).amend(superseded.id, researchTerms(superseded.now, { nonce: 3 })),
      )
        .to.be.revertedWithCustomError(superseded.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(superseded.id, AgreementStatus.SUPERSEDED);

      const expired = await loadFixture(activeAgreementFixture);
      await time.increaseTo(expired.terms.validUntil + 1);
      await expect(
        expired.agreements
          .connect(expired.hospitalSteward)
          .amend(expired.id, researchTerms(await time.latest(), { nonce: 2 })),
      )
        .to.be.revertedWithCustomError(expired.agreements, "AgreementRegistryInvalidStatus")
        .withArgs(expired.id, AgreementStatus.EXPIRED);
    });

    describe("amendment chain integrity", function () {
      // Regression: amending used to be a way out of a regulator's suspension.
      it("does not let the parties escape a regulator's suspension by amending", async function () {
        const ctx = await loadFixture(activeAgreementFixture);
        await ctx.agreements.connect(ctx.regulator).suspend(ctx.id, REASON);
        await expect(ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, researchTerms(ctx.now, { nonce: 2 })))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
          .withArgs(ctx.id, AgreementStatus.SUSPENDED);
      });

      // Regression: a pending amendment used to activate over a revoked previous version.
      it("refuses to activate an amendment of a version revoked meanwhile", async function () {
        const ctx = await loadFixture(amendmentProposedFixture);
        await ctx.agreements.connect(ctx.regulator).revoke(ctx.id, REASON);
        await expect(signAsParties(ctx, ctx.amendmentId, ctx.amendedTerms, { version: 2, previous: ctx.id }))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
          .withArgs(ctx.id, AgreementStatus.REVOKED);
      });

      // Regression: two rival amendments of one version used to both activate (two quotas).
      it("refuses to activate a second amendment of an already superseded version", async function () {
        const ctx = await loadFixture(amendmentProposedFixture);
        const rivalTerms = researchTerms(ctx.now, { nonce: 3, quota: 1000 });
        const rivalId = agreementIdOf(rivalTerms);
        await ctx.agreements.connect(ctx.hospitalSteward).amend(ctx.id, rivalTerms);
        await signAsParties(ctx, ctx.amendmentId, ctx.amendedTerms, { version: 2, previous: ctx.id });
        await expect(signAsParties(ctx, rivalId, rivalTerms, { version: 2, previous: ctx.id }))
          .to.be.revertedWithCustomError(ctx.agreements, "AgreementRegistryInvalidStatus")
          .withArgs(ctx.id, AgreementStatus.SUPERSEDED);
      });
    });

    shouldValidateProposedTerms(
      activeAgreementFixture,
      (ctx) => researchTerms(ctx.now, { nonce: 2 }),
      (ctx, terms, signer) => ctx.agreements.connect(signer).amend(ctx.id, terms),
      { partiesFixed: true },
    );
  });

  describe("unknown agreements", function () {
    const unknown = tag("agreement:unknown");
    const calls = {
      suspend: (a) => a.suspend(unknown, REASON),
      resume: (a) => a.resume(unknown),
      revoke: (a) => a.revoke(unknown, REASON),
      expire: (a) => a.expire(unknown),
      digest: (a) => a.digest(unknown),
      versionOf: (a) => a.versionOf(unknown),
      signers: (a) => a.signers(unknown),
    };
    for (const [name, call] of Object.entries(calls)) {
      it(`refuses ${name} of an unknown agreement`, async function () {
        const { agreements, regulator } = await loadFixture(deployFixture);
        await expect(call(agreements.connect(regulator)))
          .to.be.revertedWithCustomError(agreements, "AgreementRegistryUnknownAgreement")
          .withArgs(unknown);
      });
    }

    it("reports status NONE and empty access terms for an unknown agreement", async function () {
      const { agreements } = await loadFixture(deployFixture);
      expect(await agreements.status(unknown)).to.equal(AgreementStatus.NONE);
      expect((await agreements.accessTerms(unknown)).status).to.equal(AgreementStatus.NONE);
      expect(await agreements.allowedFields(unknown, tag("dataset:any"))).to.equal(0);
    });
  });

  it("lets a requester organization of any kind be a party (an AI company for training)", async function () {
    const ctx = await loadFixture(deployFixture);
    const terms = researchTerms(ctx.now, {
      requester: ORG.AI_COMPANY,
      scenario: Scenario.AI_TRAINING,
      maxTier: Tier.MODEL_PARAMETERS,
      consentPolicy: ConsentPolicy.NONE,
      operations: 2,
    });
    const id = agreementIdOf(terms);
    await ctx.agreements.connect(ctx.hospitalSteward).propose(terms);
    await signAsParties(ctx, id, terms);
    expect(await ctx.agreements.status(id)).to.equal(AgreementStatus.ACTIVE);
    expect((await ctx.membership.organization(ORG.AI_COMPANY))[0]).to.equal(OrgKind.AI_COMPANY);
  });
});

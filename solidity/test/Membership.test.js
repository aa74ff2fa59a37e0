const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { OrgKind, OrgStatus, Role } = require("./helpers/enums");
const { ADMIN_DELAY, ORG, deployFixture, tag } = require("./helpers/fixtures");
const { DEFAULT_ADMIN_ROLE, shouldBehaveLikeOperatorOnly } = require("./helpers/membership.behavior");

const NEW_ORG = tag("org:university-hospital-north");
const bit = (role) => 1 << role;

describe("Membership", function () {
  describe("deployment", function () {
    it("makes the operator the default admin with the configured transfer delay", async function () {
      const { membership, operator } = await loadFixture(deployFixture);
      expect(await membership.defaultAdmin()).to.equal(operator.address);
      expect(await membership.defaultAdminDelay()).to.equal(ADMIN_DELAY);
      expect(await membership.hasRole(DEFAULT_ADMIN_ROLE, operator.address)).to.equal(true);
    });
  });

  describe("registerOrganization", function () {
    it("registers an active organization of the given kind", async function () {
      const { membership } = await loadFixture(deployFixture);
      await expect(membership.registerOrganization(NEW_ORG, OrgKind.HOSPITAL, "University Hospital North"))
        .to.emit(membership, "OrganizationRegistered")
        .withArgs(NEW_ORG, OrgKind.HOSPITAL, "University Hospital North");
      const [kind, status] = await membership.organization(NEW_ORG);
      expect(kind).to.equal(OrgKind.HOSPITAL);
      expect(status).to.equal(OrgStatus.ACTIVE);
    });

    it("reports status NONE for an unknown organization", async function () {
      const { membership } = await loadFixture(deployFixture);
      expect((await membership.organization(NEW_ORG))[1]).to.equal(OrgStatus.NONE);
    });

    it("refuses the zero organization id", async function () {
      const { membership } = await loadFixture(deployFixture);
      await expect(membership.registerOrganization(ethers.ZeroHash, OrgKind.HOSPITAL, "Nobody"))
        .to.be.revertedWithCustomError(membership, "MembershipInvalidOrganization")
        .withArgs(ethers.ZeroHash);
    });

    it("refuses an id that is already registered", async function () {
      const { membership } = await loadFixture(deployFixture);
      await expect(membership.registerOrganization(ORG.HOSPITAL, OrgKind.RESEARCH, "Again"))
        .to.be.revertedWithCustomError(membership, "MembershipInvalidOrganization")
        .withArgs(ORG.HOSPITAL);
    });

    shouldBehaveLikeOperatorOnly(deployFixture, ({ membership }, signer) =>
      membership.connect(signer).registerOrganization(NEW_ORG, OrgKind.HOSPITAL, "Rogue"),
    );
  });

  describe("suspendOrganization and reinstateOrganization", function () {
    it("suspends an organization and names the operator", async function () {
      const { membership, operator } = await loadFixture(deployFixture);
      await expect(membership.suspendOrganization(ORG.HOSPITAL))
        .to.emit(membership, "OrganizationSuspended")
        .withArgs(ORG.HOSPITAL, operator.address);
      expect((await membership.organization(ORG.HOSPITAL))[1]).to.equal(OrgStatus.SUSPENDED);
    });

    it("reinstates a suspended organization and names the operator", async function () {
      const { membership, operator } = await loadFixture(deployFixture);
      await membership.suspendOrganization(ORG.HOSPITAL);
      await expect(membership.reinstateOrganization(ORG.HOSPITAL))
        .to.emit(membership, "OrganizationReinstated")
        .withArgs(ORG.HOSPITAL, operator.address);
      expect((await membership.organization(ORG.HOSPITAL))[1]).to.equal(OrgStatus.ACTIVE);
    });

    it("refuses to suspend an organization twice", async function () {
      const { membership } = await loadFixture(deployFixture);
      await membership.suspendOrganization(ORG.HOSPITAL);
      await expect(membership.suspendOrganization(ORG.HOSPITAL))
        .to.be.revertedWithCustomError(membership, "MembershipOrganizationStatusUnchanged")
        .withArgs(ORG.HOSPITAL, OrgStatus.SUSPENDED);
    });

    it("refuses to reinstate an active organization", async function () {
      const { membership } = await loadFixture(deployFixture);
      await expect(membership.reinstateOrganization(ORG.HOSPITAL))
        .to.be.revertedWithCustomError(membership, "MembershipOrganizationStatusUnchanged")
        .withArgs(ORG.HOSPITAL, OrgStatus.ACTIVE);
    });

    it("refuses to suspend or reinstate an unknown organization", async function () {
      const { membership } = await loadFixture(deployFixture);
      await expect(membership.suspendOrganization(NEW_ORG))
        .to.be.revertedWithCustomError(membership, "MembershipUnknownOrganization")
        .withArgs(NEW_ORG);
      await expect(membership.reinstateOrganization(NEW_ORG))
        .to.be.revertedWithCustomError(membership, "MembershipUnknownOrganization")
        .withArgs(NEW_ORG);
    });

    describe("suspendOrganization", function () {
      shouldBehaveLikeOperatorOnly(deployFixture, ({ membership }, signer) =>
        membership.connect(signer).suspendOrganization(ORG.INSURER),
      );
    });

    describe("reinstateOrganization", function () {
      async function suspendedInsurer() {
        const ctx = await deployFixture();
        await ctx.membership.suspendOrganization(ORG.INSURER);
        return ctx;
      }
      shouldBehaveLikeOperatorOnly(suspendedInsurer, ({ membership }, signer) =>
        membership.connect(signer).reinstateOrganization(ORG.INSURER),
      );
    });
  });

  describe("grantMemberRole", function () {
    it("grants a role and records the account's organization and role bits", async function () {
      const { membership, stranger } = await loadFixture(deployFixture);
      await expect(membership.grantMemberRole(ORG.INSTITUTE, stranger.address, Role.REQUESTER))
        .to.emit(membership, "MemberRoleGranted")
        .withArgs(ORG.INSTITUTE, stranger.address, Role.REQUESTER);
      const [org, roles] = await membership.memberOf(stranger.address);
      expect(org).to.equal(ORG.INSTITUTE);
      expect(roles).to.equal(bit(Role.REQUESTER));
    });

    it("adds a second role in the same organization to the role bits", async function () {
      const { membership, instituteRequester } = await loadFixture(deployFixture);
      await membership.grantMemberRole(ORG.INSTITUTE, instituteRequester.address, Role.STEWARD);
      const [, roles] = await membership.memberOf(instituteRequester.address);
      expect(roles).to.equal(bit(Role.REQUESTER) | bit(Role.STEWARD));
    });

    it("refuses the zero account", async function () {
      const { membership } = await loadFixture(deployFixture);
      await expect(
        membership.grantMemberRole(ORG.HOSPITAL, ethers.ZeroAddress, Role.STEWARD),
      ).to.be.revertedWithCustomError(membership, "MembershipZeroAccount");
    });

    it("refuses an unknown organization", async function () {
      const { membership, stranger } = await loadFixture(deployFixture);
      await expect(membership.grantMemberRole(NEW_ORG, stranger.address, Role.STEWARD))
        .to.be.revertedWithCustomError(membership, "MembershipUnknownOrganization")
        .withArgs(NEW_ORG);
    });

    const forbidden = [
      ["a gateway outside a hospital", ORG.INSTITUTE, OrgKind.RESEARCH, Role.GATEWAY],
      ["a gateway in an insurer", ORG.INSURER, OrgKind.INSURER, Role.GATEWAY],
      ["the regulator role outside a regulator", ORG.HOSPITAL, OrgKind.HOSPITAL, Role.REGULATOR],
      ["a steward in a regulator", ORG.REGULATOR, OrgKind.REGULATOR, Role.STEWARD],
      ["a requester in a regulator", ORG.REGULATOR, OrgKind.REGULATOR, Role.REQUESTER],
      ["a gateway in a regulator", ORG.REGULATOR, OrgKind.REGULATOR, Role.GATEWAY],
    ];
    for (const [what, org, kind, role] of forbidden) {
      it(`refuses ${what}`, async function () {
        const { membership, stranger } = await loadFixture(deployFixture);
        await expect(membership.grantMemberRole(org, stranger.address, role))
          .to.be.revertedWithCustomError(membership, "MembershipRoleNotAllowed")
          .withArgs(kind, role);
      });
    }

    it("refuses an account that belongs to another organization", async function () {
      const { membership, hospitalSteward } = await loadFixture(deployFixture);
      await expect(membership.grantMemberRole(ORG.INSTITUTE, hospitalSteward.address, Role.REQUESTER))
        .to.be.revertedWithCustomError(membership, "MembershipAccountInOtherOrganization")
        .withArgs(hospitalSteward.address, ORG.HOSPITAL);
    });

    it("refuses a role the account already holds", async function () {
      const { membership, hospitalSteward } = await loadFixture(deployFixture);
      await expect(membership.grantMemberRole(ORG.HOSPITAL, hospitalSteward.address, Role.STEWARD))
        .to.be.revertedWithCustomError(membership, "MembershipRoleAlreadyGranted")
        .withArgs(hospitalSteward.address, Role.STEWARD);
    });

    shouldBehaveLikeOperatorOnly(deployFixture, ({ membership }, signer) =>
      membership.connect(signer).grantMemberRole(ORG.HOSPITAL, signer.address, Role.GATEWAY),
    );
  });

  describe("revokeMemberRole", function () {
    it("revokes one role and keeps the others", async function () {
      const { membership, instituteRequester } = await loadFixture(deployFixture);
      await membership.grantMemberRole(ORG.INSTITUTE, instituteRequester.address, Role.STEWARD);
      await expect(membership.revokeMemberRole(instituteRequester.address, Role.REQUESTER))
        .to.emit(membership, "MemberRoleRevoked")
        .withArgs(ORG.INSTITUTE, instituteRequester.address, Role.REQUESTER);
      const [org, roles] = await membership.memberOf(instituteRequester.address);
      expect(org).to.equal(ORG.INSTITUTE);
      expect(roles).to.equal(bit(Role.STEWARD));
    });

    it("lets an account without roles leave its organization and join another", async function () {
      const { membership, hospitalGateway } = await loadFixture(deployFixture);
      await expect(membership.revokeMemberRole(hospitalGateway.address, Role.GATEWAY))
        .to.emit(membership, "MemberRoleRevoked")
        .withArgs(ORG.HOSPITAL, hospitalGateway.address, Role.GATEWAY);
      const [org, roles] = await membership.memberOf(hospitalGateway.address);
      expect(org).to.equal(ethers.ZeroHash);
      expect(roles).to.equal(0);
      await expect(membership.grantMemberRole(ORG.INSTITUTE, hospitalGateway.address, Role.REQUESTER))
        .to.emit(membership, "MemberRoleGranted")
        .withArgs(ORG.INSTITUTE, hospitalGateway.address, Role.REQUESTER);
    });

    it("refuses a role the account does not hold", async function () {
      const { membership, hospitalSteward, stranger } = await loadFixture(deployFixture);
      await expect(membership.revokeMemberRole(hospitalSteward.address, Role.GATEWAY))
        .to.be.revertedWithCustomError(membership, "MembershipRoleNotHeld")
        .withArgs(hospitalSteward.address, Role.GATEWAY);
      await expect(membership.revokeMemberRole(stranger.address, Role.STEWARD))
        .to.be.revertedWithCustomError(membership, "MembershipRoleNotHeld")
        .withArgs(stranger.address, Role.STEWARD);
    });

    shouldBehaveLikeOperatorOnly(deployFixture, ({ membership, hospitalGateway }, signer) =>
      membership.connect(signer).revokeMemberRole(hospitalGateway.address, Role.GATEWAY),
    );
  });

  describe("role queries", function () {
    it("answers hasOrgRole for the held role in the account's organization only", async function () {
      const { membership, hospitalGateway } = await loadFixture(deployFixture);
      expect(await membership.hasOrgRole(hospitalGateway.address, ORG.HOSPITAL, Role.GATEWAY)).to.equal(true);
      expect(await membership.hasOrgRole(hospitalGateway.address, ORG.HOSPITAL, Role.STEWARD)).to.equal(false);
      expect(await membership.hasOrgRole(hospitalGateway.address, ORG.HOSPITAL_B, Role.GATEWAY)).to.equal(false);
    });

    it("disables every member of a suspended organization until it is reinstated", async function () {
      const { membership, hospitalSteward, hospitalGateway } = await loadFixture(deployFixture);
      await membership.suspendOrganization(ORG.HOSPITAL);
      expect(await membership.hasOrgRole(hospitalSteward.address, ORG.HOSPITAL, Role.STEWARD)).to.equal(false);
      expect(await membership.hasOrgRole(hospitalGateway.address, ORG.HOSPITAL, Role.GATEWAY)).to.equal(false);
      expect(await membership.isAuthorizedSender(hospitalGateway.address)).to.equal(false);
      await membership.reinstateOrganization(ORG.HOSPITAL);
      expect(await membership.hasOrgRole(hospitalSteward.address, ORG.HOSPITAL, Role.STEWARD)).to.equal(true);
      expect(await membership.isAuthorizedSender(hospitalGateway.address)).to.equal(true);
    });

    it("recognizes only active regulators as regulators", async function () {
      const { membership, regulator, hospitalSteward, stranger } = await loadFixture(deployFixture);
      expect(await membership.isRegulator(regulator.address)).to.equal(true);
      expect(await membership.isRegulator(hospitalSteward.address)).to.equal(false);
      expect(await membership.isRegulator(stranger.address)).to.equal(false);
      await membership.suspendOrganization(ORG.REGULATOR);
      expect(await membership.isRegulator(regulator.address)).to.equal(false);
    });

    it("authorizes the operator and members as senders, not strangers", async function () {
      const { membership, operator, instituteRequester, stranger } = await loadFixture(deployFixture);
      expect(await membership.isAuthorizedSender(operator.address)).to.equal(true);
      expect(await membership.isAuthorizedSender(instituteRequester.address)).to.equal(true);
      expect(await membership.isAuthorizedSender(stranger.address)).to.equal(false);
      expect(await membership.isAuthorizedSender(ethers.ZeroAddress)).to.equal(false);
    });
  });

  describe("operator transfer (two steps, delayed)", function () {
    async function transferBegun() {
      const ctx = await deployFixture();
      await ctx.membership.beginDefaultAdminTransfer(ctx.newOperator.address);
      const [, schedule] = await ctx.membership.pendingDefaultAdmin();
      return { ...ctx, schedule };
    }

    it("schedules the transfer one delay ahead and authorizes the pending operator as sender", async function () {
      const { membership, newOperator } = await loadFixture(deployFixture);
      const tx = await membership.beginDefaultAdminTransfer(newOperator.address);
      const { timestamp } = await ethers.provider.getBlock((await tx.wait()).blockNumber);
      await expect(tx)
        .to.emit(membership, "DefaultAdminTransferScheduled")
        .withArgs(newOperator.address, timestamp + ADMIN_DELAY);
      const [pending, schedule] = await membership.pendingDefaultAdmin();
      expect(pending).to.equal(newOperator.address);
      expect(schedule).to.equal(timestamp + ADMIN_DELAY);
      expect(await membership.isAuthorizedSender(newOperator.address)).to.equal(true);
    });

    it("refuses to accept before the delay has passed", async function () {
      const { membership, newOperator, schedule } = await loadFixture(transferBegun);
      await expect(membership.connect(newOperator).acceptDefaultAdminTransfer())
        .to.be.revertedWithCustomError(membership, "AccessControlEnforcedDefaultAdminDelay")
        .withArgs(schedule);
      await time.increaseTo(schedule - 1n);
      await expect(membership.connect(newOperator).acceptDefaultAdminTransfer())
        .to.be.revertedWithCustomError(membership, "AccessControlEnforcedDefaultAdminDelay")
        .withArgs(schedule);
    });

    it("refuses acceptance by anyone but the pending operator", async function () {
      const { membership, stranger, schedule } = await loadFixture(transferBegun);
      await time.increaseTo(schedule);
      await expect(membership.connect(stranger).acceptDefaultAdminTransfer())
        .to.be.revertedWithCustomError(membership, "AccessControlInvalidDefaultAdmin")
        .withArgs(stranger.address);
    });

    it("hands the operator role over once the delay has passed", async function () {
      const { membership, operator, newOperator, schedule } = await loadFixture(transferBegun);
      await time.increaseTo(schedule);
      await expect(membership.connect(newOperator).acceptDefaultAdminTransfer())
        .to.emit(membership, "RoleGranted")
        .withArgs(DEFAULT_ADMIN_ROLE, newOperator.address, newOperator.address)
        .and.to.emit(membership, "RoleRevoked")
        .withArgs(DEFAULT_ADMIN_ROLE, operator.address, newOperator.address);
      expect(await membership.defaultAdmin()).to.equal(newOperator.address);
      await expect(membership.connect(newOperator).registerOrganization(NEW_ORG, OrgKind.RESEARCH, "New Lab"))
        .to.emit(membership, "OrganizationRegistered")
        .withArgs(NEW_ORG, OrgKind.RESEARCH, "New Lab");
      await expect(membership.connect(operator).suspendOrganization(ORG.HOSPITAL))
        .to.be.revertedWithCustomError(membership, "AccessControlUnauthorizedAccount")
        .withArgs(operator.address, DEFAULT_ADMIN_ROLE);
      expect(await membership.isAuthorizedSender(operator.address)).to.equal(false);
    });

    it("lets the operator cancel a pending transfer", async function () {
      const { membership, newOperator, schedule } = await loadFixture(transferBegun);
      await expect(membership.cancelDefaultAdminTransfer()).to.emit(membership, "DefaultAdminTransferCanceled");
      await time.increaseTo(schedule);
      await expect(membership.connect(newOperator).acceptDefaultAdminTransfer())
        .to.be.revertedWithCustomError(membership, "AccessControlInvalidDefaultAdmin")
        .withArgs(newOperator.address);
    });

    it("refuses to grant the operator role in one step", async function () {
      const { membership, newOperator } = await loadFixture(deployFixture);
      await expect(
        membership.grantRole(DEFAULT_ADMIN_ROLE, newOperator.address),
      ).to.be.revertedWithCustomError(membership, "AccessControlEnforcedDefaultAdminRules");
    });

    it("refuses to begin a transfer from anyone but the operator", async function () {
      const { membership, stranger } = await loadFixture(deployFixture);
      await expect(membership.connect(stranger).beginDefaultAdminTransfer(stranger.address))
        .to.be.revertedWithCustomError(membership, "AccessControlUnauthorizedAccount")
        .withArgs(stranger.address, DEFAULT_ADMIN_ROLE);
    });
  });
});

// Behaviours shared by tests of different contracts.
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { ethers } = require("hardhat");

const DEFAULT_ADMIN_ROLE = ethers.ZeroHash;

/**
 * `call(ctx, signer)` sends an operator-only Membership transaction as `signer`.
 * A member of any organization, the regulator and a stranger are all refused.
 */
function shouldBehaveLikeOperatorOnly(fixture, call) {
  for (const who of ["stranger", "hospitalSteward", "regulator"]) {
    it(`refuses the call from the ${who} (not the operator)`, async function () {
      const ctx = await loadFixture(fixture);
      await expect(call(ctx, ctx[who]))
        .to.be.revertedWithCustomError(ctx.membership, "AccessControlUnauthorizedAccount")
        .withArgs(ctx[who].address, DEFAULT_ADMIN_ROLE);
    });
  }
}

/**
 * Suspending the organization of `ctx[memberKey]` disables it for `call(ctx, signer)`, which must
 * revert with `errorName` and `args(ctx)` (`contractKey` names the reverting contract); reinstating
 * the organization re-enables it.
 */
function shouldBeDisabledBySuspension(fixture, { memberKey, org, call, contractKey, errorName, args }) {
  it("refuses the call while the member's organization is suspended", async function () {
    const ctx = await loadFixture(fixture);
    await ctx.membership.suspendOrganization(org);
    await expect(call(ctx, ctx[memberKey]))
      .to.be.revertedWithCustomError(ctx[contractKey], errorName)
      .withArgs(...args(ctx));
  });

  it("accepts the call again once the organization is reinstated", async function () {
    const ctx = await loadFixture(fixture);
    await ctx.membership.suspendOrganization(org);
    await ctx.membership.reinstateOrganization(org);
    await expect(call(ctx, ctx[memberKey])).not.to.be.reverted;
  });
}

module.exports = { DEFAULT_ADMIN_ROLE, shouldBehaveLikeOperatorOnly, shouldBeDisabledBySuspension };

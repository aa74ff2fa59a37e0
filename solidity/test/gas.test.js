// Gas report: what activating an agreement and recording accesses cost. Prints a table; asserts
// the design target of at most 60,000 gas per granted access in a batch of 100.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { ArtifactKind, DenyReason, Operation, ReleaseKind, Tier } = require("./helpers/enums");
const {
  ORG,
  PATIENT,
  authorizationTerms,
  consentTerms,
  deployFixture,
  deniedRecord,
  federatedFixture,
  fieldsMask,
  insuranceAgreementFixture,
  leafOf,
  researchTerms,
  signed,
  signedGranted,
  sortIds,
  sortReleases,
  tag,
  trainAndRelease,
} = require("./helpers/fixtures");
const { agreementIdOf, consentIdOf, signAgreement, signAuthorization, signConsentGrant } = require("./helpers/typed-data");

const BATCH = 100;
const TARGET_PER_GRANTED_ACCESS = 60_000n;

const gasOf = async (txPromise) => (await (await txPromise).wait()).gasUsed;

/** A realistic granted request: its own query hash, cohort root and size, two to four fields. */
function realisticGranted(ctx, i) {
  return signedGranted(ctx, {
    requestId: tag(`gas:request:${i}`),
    requestHash: tag(`sql:cohort-query:${i}`),
    cohortRoot: tag(`merkle-root:cohort:${i}`),
    cohortSize: 50 + i,
    fieldMask: i % 2 === 0 ? fieldsMask(1, 3) : fieldsMask(1, 2, 4, 5),
    tier: i % 3 === 0 ? Tier.DEIDENTIFIED : Tier.PSEUDONYMIZED,
    operation: i % 4 === 0 ? Operation.EXPORT_RESULT : Operation.QUERY,
  });
}

describe("Gas report", function () {
  const rows = [];

  after(function () {
    if (rows.length === 0) return;
    const width = Math.max(...rows.map(([label]) => label.length));
    console.log("\n      Gas used (hardhat, prague, optimizer 200 runs)");
    for (const [label, gas] of rows) console.log(`        ${label.padEnd(width)}  ${gas.toLocaleString("en-US").padStart(10)}`);
  });

  it(`measures activation, single and batched (${BATCH}) records and a release`, async function () {
    const ctx = await loadFixture(deployFixture);
    const { agreements, accessLog, hospitalSteward, instituteSteward, hospitalGateway, relayer } = ctx;
    const terms = researchTerms(ctx.now, { quota: 1000 });
    const id = agreementIdOf(terms);

    const propose = await gasOf(agreements.connect(hospitalSteward).propose(terms));
    const holderSig = await signAgreement(hospitalSteward, agreements, terms);
    const signHolder = await gasOf(agreements.connect(relayer).sign(id, hospitalSteward.address, holderSig));
    const requesterSig = await signAgreement(instituteSteward, agreements, terms);
    const signRequester = await gasOf(agreements.connect(relayer).sign(id, instituteSteward.address, requesterSig));
    const run = { ...ctx, id, terms };

    const gateway = accessLog.connect(hospitalGateway);
    const firstSingle = await gasOf(gateway.recordAccess(await realisticGranted(run, 100_000)));
    const laterSingle = await gasOf(gateway.recordAccess(await realisticGranted(run, 100_001)));

    const granted = await Promise.all(Array.from({ length: BATCH }, (_, i) => realisticGranted(run, i)));
    const grantedBatch = await gasOf(gateway.recordAccesses(granted));
    expect(await accessLog.accessesUsed(id)).to.equal(BATCH + 2);

    const denied = await Promise.all(
      Array.from({ length: BATCH }, (_, i) =>
        signed(run, deniedRecord(run, DenyReason.FIELDS_NOT_IN_SCOPE, { requestId: tag(`gas:denied:${i}`), fieldMask: 1 })),
      ),
    );
    const deniedBatch = await gasOf(gateway.recordAccesses(denied));

    const release = await gasOf(
      gateway.releaseResult(granted[1].requestId, id, tag("result:aggregate"), ReleaseKind.AGGREGATE_RESULT, 4096),
    );

    const perGranted = grantedBatch / BigInt(BATCH);
    const perDenied = deniedBatch / BigInt(BATCH);
    rows.push(
      ["propose", propose],
      ["sign (holder)", signHolder],
      ["sign (requester, activates)", signRequester],
      ["activation total (propose + 2 signs)", propose + signHolder + signRequester],
      ["recordAccess GRANTED (first of agreement)", firstSingle],
      ["recordAccess GRANTED (later)", laterSingle],
      [`recordAccesses ${BATCH} GRANTED (whole tx)`, grantedBatch],
      [`  per granted access`, perGranted],
      [`recordAccesses ${BATCH} DENIED (whole tx)`, deniedBatch],
      [`  per denied access`, perDenied],
      ["releaseResult", release],
    );

    expect(perGranted).to.be.at.most(TARGET_PER_GRANTED_ACCESS);
  });

  it(`measures consents (single and batched ${BATCH}), an authorization and a redeeming access`, async function () {
    const ctx = await loadFixture(insuranceAgreementFixture);
    const { consents, accessLog, hospitalSteward, hospitalGateway, insurerRequester } = ctx;
    const steward = consents.connect(hospitalSteward);
    // Realistic consents: research and AI training for a year under DUO codes, for new subjects.
    const consent = (i, overrides) => consentTerms(ctx.now, { subject: tag(`gas:subject:${i}`), duoCodes: [42, 46, 25], ...overrides });

    const single = await gasOf(steward.recordConsent(consent(1_000_000)));
    const withKey = await gasOf(
      steward.recordConsent(consent(1_000_001, { subjectKey: ethers.computeAddress(ethers.id("gas patient key")) })),
    );
    const secondOfSubject = await gasOf(
      steward.recordConsent(consent(1_000_000, { scenarios: 1 << 3, duoCodes: [42] })), // TEACHING, no overlap
    );
    const batch = await gasOf(steward.recordConsents(Array.from({ length: BATCH }, (_, i) => consent(i))));
    // Specific consent: one study; and the most a consent names (16 studies, every registered
    // organization as a requester, a disease term).
    const oneStudy = await gasOf(steward.recordConsent(consent(1_000_002, { studies: [tag("gas:study:0")] })));
    const widest = await gasOf(
      steward.recordConsent(
        consent(1_000_003, {
          duoCodes: [42, 7],
          diseaseCode: ethers.encodeBytes32String("MONDO:0007254"),
          studies: Array.from({ length: 16 }, (_, i) => tag(`gas:study:${i}`)).sort(),
          requesters: Object.values(ORG).sort(),
        }),
      ),
    );

    const code = tag("gas:authorization-code");
    const issue = await gasOf(steward.issueAuthorization(code, authorizationTerms(ctx.now)));
    const patient = new ethers.Wallet(ethers.id("gas patient key"));
    const registerKey = await gasOf(steward.registerSubjectKey(ctx.authorization.holder, PATIENT, patient.address));
    const patientCode = tag("gas:patient-signed-code");
    const patientSignature = await signAuthorization(patient, consents, patientCode, authorizationTerms(ctx.now));
    const issueBySubject = await gasOf(
      consents.connect(ctx.relayer).issueAuthorizationBySubject(patientCode, authorizationTerms(ctx.now), patientSignature),
    );
    // The patient grants a consent with the key just registered (PATIENT has none yet).
    const granted = consentTerms(ctx.now, { duoCodes: [42, 46, 25], subjectKey: patient.address });
    const grantId = consentIdOf(ORG.HOSPITAL, PATIENT, 0);
    const grantSignature = await signConsentGrant(patient, consents, grantId, granted, ctx.now + 86_400);
    const grantBySubject = await gasOf(
      consents.connect(ctx.relayer).recordConsentBySubject(grantId, granted, ctx.now + 86_400, grantSignature),
    );

    const insuranceRecord = (i, authorizationRef) =>
      signedGranted(
        ctx,
        {
          requestId: tag(`gas:insurance:${i}`),
          agreementId: ctx.insuranceId,
          requester: insurerRequester.address,
          tier: Tier.IDENTIFIED,
          cohortRoot: leafOf(PATIENT),
          cohortSize: 1,
          authorizationRef,
        },
        insurerRequester,
      );
    const gateway = accessLog.connect(hospitalGateway);
    await gateway.recordAccess(await insuranceRecord(0, ctx.codeHash)); // the agreement's first access
    const redeeming = await gasOf(gateway.recordAccess(await insuranceRecord(1, code)));

    rows.push(
      ["recordConsent (new subject)", single],
      ["recordConsent (new subject, patient key)", withKey],
      ["recordConsent (subject's second consent)", secondOfSubject],
      ["recordConsent (specific: one study)", oneStudy],
      [`recordConsent (specific: 16 studies, ${Object.keys(ORG).length} requesters, disease)`, widest],
      [`recordConsents ${BATCH} (whole tx)`, batch],
      [`  per consent`, batch / BigInt(BATCH)],
      ["issueAuthorization", issue],
      ["registerSubjectKey (first key)", registerKey],
      ["issueAuthorizationBySubject (patient-signed, relayed)", issueBySubject],
      ["recordConsentBySubject (patient-signed, relayed; new subject)", grantBySubject],
      ["recordAccess GRANTED redeeming a code (later)", redeeming],
    );
  });

  it("measures artifact registrations: a MODEL from 3 hospitals' releases and from 2 artifacts", async function () {
    const ctx = await loadFixture(federatedFixture);
    const registry = ctx.artifactRegistry.connect(ctx.aiRequester);
    const releases = [];
    for (const [i, site] of ctx.sites.entries()) {
      releases.push(await trainAndRelease(ctx, site, tag(`gas:model-update:${i}`)));
    }
    const metadata = tag("gas:model-card");

    const fromReleases = await gasOf(
      registry.registerArtifact(tag("gas:model:from-releases"), ArtifactKind.MODEL, sortReleases(releases), [], metadata),
    );
    const [first, second] = releases;
    const update = await gasOf(
      registry.registerArtifact(first.resultHash, ArtifactKind.MODEL_UPDATE, [first], [], ethers.ZeroHash),
    );
    await registry.registerArtifact(second.resultHash, ArtifactKind.MODEL_UPDATE, [second], [], ethers.ZeroHash);
    const fromArtifacts = await gasOf(
      registry.registerArtifact(
        tag("gas:model:from-artifacts"),
        ArtifactKind.MODEL,
        [],
        sortIds([first.resultHash, second.resultHash]),
        metadata,
      ),
    );

    rows.push(
      ["registerArtifact MODEL_UPDATE (1 release)", update],
      ["registerArtifact MODEL (3 releases, 3 agreements)", fromReleases],
      ["registerArtifact MODEL (2 parent artifacts)", fromArtifacts],
    );
  });
});

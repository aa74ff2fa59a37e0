// Shared fixtures: a data space with five organizations, their members and three datasets,
// and builders for agreement terms and access records. Use with `loadFixture`.
const { ethers } = require("hardhat");
const { time } = require("@nomicfoundation/hardhat-network-helpers");
const {
  OrgKind,
  Role,
  Tier,
  Scenario,
  Operation,
  ConsentPolicy,
  Decision,
  DenyReason,
  ReleaseKind,
} = require("./enums");
const { ZERO32, agreementIdOf, signAgreement, signAccessRecord } = require("./typed-data");

const DAY = 24 * 60 * 60;
const ADMIN_DELAY = 3 * DAY;

const tag = (text) => ethers.id(text);

const ORG = Object.freeze({
  HOSPITAL: tag("org:st-mary-hospital"),
  HOSPITAL_B: tag("org:city-general-hospital"),
  INSTITUTE: tag("org:cancer-research-institute"),
  INSURER: tag("org:health-insurer"),
  AI_COMPANY: tag("org:imaging-ai"),
  REGULATOR: tag("org:data-protection-authority"),
});

// OMOP CDM 5.4-like field lists; agreements and requests address them by index.
const EHR_FIELDS = [
  "person_id",
  "year_of_birth",
  "gender_concept_id",
  "condition_concept_id",
  "condition_start_date",
  "drug_concept_id",
  "measurement_concept_id",
  "value_as_number",
];
const IMAGING_FIELDS = ["image_occurrence_id", "modality_concept_id", "anatomic_site_concept_id", "image_study_uid"];

const DATASET = Object.freeze({
  EHR: tag("dataset:st-mary/omop-ehr"),
  IMAGING: tag("dataset:st-mary/imaging"),
  OTHER_HOSPITAL: tag("dataset:city-general/omop-ehr"),
});

const SCHEMA = Object.freeze({
  OMOP_54: tag("schema:omop-cdm-5.4:person,condition_occurrence,drug_exposure,measurement"),
  IMAGING: tag("schema:omop-cdm-5.4:image_occurrence"),
});

const ops = (...operations) => operations.reduce((bits, op) => bits | (1 << op), 0);
const fieldsMask = (...indices) => indices.reduce((mask, i) => mask | (1n << BigInt(i)), 0n);

/** Contracts, organizations, members and datasets. Role holders are named after what they do. */
async function deployFixture() {
  const [
    operator,
    hospitalSteward,
    hospitalGateway,
    instituteSteward,
    instituteRequester,
    insurerSteward,
    insurerRequester,
    aiSteward,
    aiRequester,
    regulator,
    hospitalBSteward,
    hospitalBGateway,
    stranger,
    newOperator,
    relayer,
  ] = await ethers.getSigners();

  const membership = await ethers.deployContract("Membership", [ADMIN_DELAY, operator.address]);
  const datasets = await ethers.deployContract("DatasetRegistry", [await membership.getAddress()]);
  const agreements = await ethers.deployContract("AgreementRegistry", [
    await membership.getAddress(),
    await datasets.getAddress(),
  ]);
  const consents = await ethers.deployContract("ConsentRegistry", [
    await membership.getAddress(),
    await datasets.getAddress(),
  ]);
  const accessLog = await ethers.deployContract("AccessLog", [
    await membership.getAddress(),
    await agreements.getAddress(),
    await consents.getAddress(),
  ]);
  await consents.bindAccessLog(await accessLog.getAddress());
  const artifactRegistry = await ethers.deployContract("ArtifactRegistry", [
    await membership.getAddress(),
    await agreements.getAddress(),
    await accessLog.getAddress(),
  ]);

  const orgs = [
    [ORG.HOSPITAL, OrgKind.HOSPITAL, "St. Mary Hospital"],
    [ORG.HOSPITAL_B, OrgKind.HOSPITAL, "City General Hospital"],
    [ORG.INSTITUTE, OrgKind.RESEARCH, "Cancer Research Institute"],
    [ORG.INSURER, OrgKind.INSURER, "Health Insurer"],
    [ORG.AI_COMPANY, OrgKind.AI_COMPANY, "Imaging AI"],
    [ORG.REGULATOR, OrgKind.REGULATOR, "Data Protection Authority"],
  ];
  for (const [id, kind, name] of orgs) await membership.registerOrganization(id, kind, name);

  const members = [
    [ORG.HOSPITAL, hospitalSteward, Role.STEWARD],
    [ORG.HOSPITAL, hospitalGateway, Role.GATEWAY],
    [ORG.HOSPITAL_B, hospitalBSteward, Role.STEWARD],
    [ORG.HOSPITAL_B, hospitalBGateway, Role.GATEWAY],
    [ORG.INSTITUTE, instituteSteward, Role.STEWARD],
    [ORG.INSTITUTE, instituteRequester, Role.REQUESTER],
    [ORG.INSURER, insurerSteward, Role.STEWARD],
    [ORG.INSURER, insurerRequester, Role.REQUESTER],
    [ORG.AI_COMPANY, aiSteward, Role.STEWARD],
    [ORG.AI_COMPANY, aiRequester, Role.REQUESTER],
    [ORG.REGULATOR, regulator, Role.REGULATOR],
  ];
  for (const [org, account, role] of members) await membership.grantMemberRole(org, account.address, role);

  await datasets
    .connect(hospitalSteward)
    .registerDataset(DATASET.EHR, ORG.HOSPITAL, SCHEMA.OMOP_54, EHR_FIELDS, Tier.IDENTIFIED);
  await datasets
    .connect(hospitalSteward)
    .registerDataset(DATASET.IMAGING, ORG.HOSPITAL, SCHEMA.IMAGING, IMAGING_FIELDS, Tier.DEIDENTIFIED);
  await datasets
    .connect(hospitalBSteward)
    .registerDataset(DATASET.OTHER_HOSPITAL, ORG.HOSPITAL_B, SCHEMA.OMOP_54, EHR_FIELDS, Tier.IDENTIFIED);

  return {
    membership,
    datasets,
    agreements,
    consents,
    accessLog,
    artifactRegistry,
    operator,
    hospitalSteward,
    hospitalGateway,
    instituteSteward,
    instituteRequester,
    insurerSteward,
    insurerRequester,
    aiSteward,
    aiRequester,
    regulator,
    hospitalBSteward,
    hospitalBGateway,
    stranger,
    newOperator,
    relayer,
    now: await time.latest(),
  };
}

/**
 * Terms of a research agreement between the hospital and the institute: pseudonymized EHR fields
 * 1..5 for queries and exports, cohort consent, 30 days, quota 10. `overrides` replace fields.
 */
function researchTerms(now, overrides = {}) {
  return {
    holder: ORG.HOSPITAL,
    requester: ORG.INSTITUTE,
    datasets: [DATASET.EHR],
    fieldMasks: [fieldsMask(1, 2, 3, 4, 5)],
    scenario: Scenario.RESEARCH,
    duoCodes: [42, 46, 25],
    diseaseCode: tag("ICD-10:C50"),
    ethicsApproval: tag("ethics:IRB-2026-117"),
    maxTier: Tier.PSEUDONYMIZED,
    operations: ops(Operation.QUERY, Operation.EXPORT_RESULT),
    validFrom: now,
    validUntil: now + 30 * DAY,
    quota: 10,
    consentPolicy: ConsentPolicy.COHORT_CONSENT,
    termsHash: tag("terms:dua-v1.pdf"),
    nonce: 1,
    deadline: now + 7 * DAY,
    breakGlassReviewHours: 0,
    ...overrides,
  };
}

/** Proposes `terms` as the hospital's steward and has both parties sign them. */
async function activate(ctx, terms, { proposer = ctx.hospitalSteward, requesterSigner } = {}) {
  const { agreements } = ctx;
  const id = agreementIdOf(terms);
  await agreements.connect(proposer).propose(terms);
  await signAsParties(ctx, id, terms, { requesterSigner });
  return id;
}

/** Signs version `version` of `terms` by the holder's steward and the requester side, relayed. */
async function signAsParties(ctx, id, terms, { version = 1, previous = ZERO32, requesterSigner } = {}) {
  const { agreements, hospitalSteward, relayer } = ctx;
  const requesterSide = requesterSigner ?? requesterSignerFor(ctx, terms.requester);
  for (const signer of [hospitalSteward, requesterSide]) {
    const signature = await signAgreement(signer, agreements, terms, { id, version, previous });
    await agreements.connect(relayer).sign(id, signer.address, signature);
  }
}

function requesterSignerFor(ctx, org) {
  if (org === ORG.INSURER) return ctx.insurerSteward;
  if (org === ORG.AI_COMPANY) return ctx.aiSteward;
  return ctx.instituteSteward;
}

/** The data space with a proposed (unsigned) research agreement. */
async function proposedAgreementFixture() {
  const ctx = await deployFixture();
  const terms = researchTerms(ctx.now);
  const id = agreementIdOf(terms);
  await ctx.agreements.connect(ctx.hospitalSteward).propose(terms);
  return { ...ctx, terms, id };
}

/** The data space with an active research agreement. */
async function activeAgreementFixture() {
  const ctx = await deployFixture();
  const terms = researchTerms(ctx.now);
  const id = await activate(ctx, terms);
  return { ...ctx, terms, id };
}

/** A patient's subject reference (a keyed hash of a hospital pseudonym, never an identity). */
const PATIENT = tag("subject:patient-4711");

/** The RFC 9162 leaf of a subject reference: the cohort root of a cohort of one. */
const leafOf = (subject) => ethers.sha256(ethers.concat(["0x00", subject]));

/** A patient's authorization code as the patient hands it over, and the hash the chain keeps. */
const AUTH_CODE = "7K3QF-ZC0XH-M4N2P-9TRVW";
const codeHashOf = (code) => ethers.keccak256(ethers.toUtf8Bytes(code.replaceAll("-", "")));

/**
 * An authorization for the insurer: one identified access to EHR fields 1..5 of PATIENT, for an
 * insurance claim, valid 30 days from `now`. `overrides` replace fields.
 */
function authorizationTerms(now, overrides = {}) {
  return {
    holder: ORG.HOSPITAL,
    subject: PATIENT,
    grantee: ORG.INSURER,
    dataset: DATASET.EHR,
    fieldMask: fieldsMask(1, 2, 3, 4, 5),
    tier: Tier.IDENTIFIED,
    scenario: Scenario.INSURANCE_CLAIM,
    status: 0,
    expiresAt: now + 30 * DAY,
    multiUse: false,
    redeemedBy: ZERO32,
    ...overrides,
  };
}

/**
 * A consent of PATIENT at the hospital for research and AI training, from the recording block for
 * a year, with DUO codes and no patient key. `overrides` replace fields.
 */
function consentTerms(now, overrides = {}) {
  return {
    holder: ORG.HOSPITAL,
    subject: PATIENT,
    scenarios: (1 << Scenario.RESEARCH) | (1 << Scenario.AI_TRAINING),
    duoCodes: [42, 46],
    validFrom: 0,
    validUntil: now + 365 * DAY,
    subjectKey: ethers.ZeroAddress,
    diseaseCode: ZERO32,
    studies: [],
    requesters: [],
    ...overrides,
  };
}

/**
 * The active research agreement plus an insurance-claim agreement with the insurer (quota 5) and
 * an issued authorization code (`codeHash`) of PATIENT for it.
 */
async function insuranceAgreementFixture() {
  const ctx = await activeAgreementFixture();
  const insuranceTerms = researchTerms(ctx.now, {
    requester: ORG.INSURER,
    scenario: Scenario.INSURANCE_CLAIM,
    maxTier: Tier.IDENTIFIED,
    consentPolicy: ConsentPolicy.PATIENT_AUTHORIZATION,
    duoCodes: [],
    diseaseCode: ZERO32,
    ethicsApproval: ZERO32,
    quota: 5,
    nonce: 100,
  });
  const insuranceId = await activate(ctx, insuranceTerms);
  const codeHash = codeHashOf(AUTH_CODE);
  const authorization = authorizationTerms(ctx.now);
  await ctx.consents.connect(ctx.hospitalSteward).issueAuthorization(codeHash, authorization);
  return { ...ctx, insuranceTerms, insuranceId, codeHash, authorization };
}

/** The active research agreement with a quota of 3 accesses. */
async function smallQuotaFixture() {
  const ctx = await deployFixture();
  const terms = researchTerms(ctx.now, { quota: 3 });
  const id = await activate(ctx, terms);
  return { ...ctx, terms, id };
}

/** An active research agreement whose window opens in 10 days and closes 30 days later. */
async function futureWindowFixture() {
  const ctx = await deployFixture();
  const terms = researchTerms(ctx.now, { validFrom: ctx.now + 10 * DAY, validUntil: ctx.now + 40 * DAY });
  const id = await activate(ctx, terms);
  return { ...ctx, terms, id };
}

/**
 * A same-organization clinical-care agreement (the hospital's own clinician, a REQUESTER of the
 * hospital, treating its own patients: no transfer, so no patient code) that allows every tier and
 * operation (quota 100), for release rules. Records are signed by `ctx.clinician`.
 */
async function clinicalCareFixture() {
  const ctx = await deployFixture();
  const clinician = (await ethers.getSigners())[15];
  await ctx.membership.grantMemberRole(ORG.HOSPITAL, clinician.address, Role.REQUESTER);
  const terms = researchTerms(ctx.now, {
    requester: ORG.HOSPITAL,
    scenario: Scenario.CLINICAL_CARE,
    maxTier: Tier.IDENTIFIED,
    consentPolicy: ConsentPolicy.NONE,
    operations: ops(Operation.QUERY, Operation.TRAIN, Operation.EXPORT_RESULT),
    fieldMasks: [fieldsMask(0, 1, 2, 3, 4, 5, 6, 7)],
    duoCodes: [43],
    quota: 100,
  });
  const id = await activate(ctx, terms, { requesterSigner: clinician });
  return { ...ctx, terms, id, clinician };
}

/** The tag-and-reason `authorizationRef` of a break-glass request (AccessRules.BREAK_GLASS_TAG). */
const breakGlassRef = (reason) =>
  ethers.concat([ethers.encodeBytes32String("DUL:break-glass").slice(0, 64), ethers.toBeHex(reason, 1)]);

/**
 * A transfer: hospital B's clinician treats PATIENT, whose records the hospital holds, under a
 * cross-organization clinical-care agreement at IDENTIFIED (so every access needs PATIENT's code)
 * that allows break-glass with a 72-hour review window (quota 20). `ctx.clinicalCode` is a code of
 * PATIENT for hospital B, issued by the hospital's steward.
 */
async function transferFixture() {
  const ctx = await deployFixture();
  const clinicianB = (await ethers.getSigners())[16];
  await ctx.membership.grantMemberRole(ORG.HOSPITAL_B, clinicianB.address, Role.REQUESTER);
  const transferTerms = researchTerms(ctx.now, {
    requester: ORG.HOSPITAL_B,
    scenario: Scenario.CLINICAL_CARE,
    maxTier: Tier.IDENTIFIED,
    consentPolicy: ConsentPolicy.PATIENT_AUTHORIZATION,
    duoCodes: [43],
    diseaseCode: ZERO32,
    ethicsApproval: ZERO32,
    quota: 20,
    nonce: 300,
    breakGlassReviewHours: 72,
  });
  const transferId = await activate(ctx, transferTerms, { requesterSigner: ctx.hospitalBSteward });
  const clinicalCode = codeHashOf("CLIN1-CAREB-TRANS-FER01");
  await ctx.consents
    .connect(ctx.hospitalSteward)
    .issueAuthorization(clinicalCode, authorizationTerms(ctx.now, { grantee: ORG.HOSPITAL_B, scenario: Scenario.CLINICAL_CARE }));
  return { ...ctx, clinicianB, transferTerms, transferId, clinicalCode };
}

let requestCounter = 0;
/** A fresh request id. */
const newRequestId = () => tag(`request:${++requestCounter}:${Date.now()}`);

/**
 * An unsigned GRANTED access record for the active research agreement: pseudonymized query of EHR
 * fields 1 and 3 over a consented cohort of 120 subjects. `overrides` replace fields.
 */
function grantedRecord(ctx, overrides = {}) {
  return {
    requestId: newRequestId(),
    agreementId: ctx.id,
    datasetId: DATASET.EHR,
    requester: ctx.instituteRequester.address,
    decision: Decision.GRANTED,
    reason: DenyReason.NONE,
    tier: Tier.PSEUDONYMIZED,
    operation: Operation.QUERY,
    fieldMask: fieldsMask(1, 3),
    requestHash: tag("sql:SELECT year_of_birth, condition_concept_id FROM cohort"),
    cohortRoot: tag("merkle-root:cohort-2026-11"),
    cohortSize: 120,
    authorizationRef: ZERO32,
    deadline: ctx.now + 60 * DAY,
    sigR: ZERO32,
    sigS: ZERO32,
    sigV: 0,
    ...overrides,
  };
}

/** A DENIED record: nothing left the hospital, no cohort. */
function deniedRecord(ctx, reason, overrides = {}) {
  return grantedRecord(ctx, {
    decision: Decision.DENIED,
    reason,
    cohortRoot: ZERO32,
    cohortSize: 0,
    ...overrides,
  });
}

/** Signs `record` by `signer` (default: the institute's requester). */
const signed = (ctx, record, signer = ctx.instituteRequester) => signAccessRecord(signer, ctx.accessLog, record);

/** A granted record, signed. */
const signedGranted = (ctx, overrides, signer) => signed(ctx, grantedRecord(ctx, overrides), signer);

function sameValue(actual, expected) {
  if (Array.isArray(expected)) {
    return actual.length === expected.length && expected.every((e, i) => sameValue(actual[i], e));
  }
  if (typeof actual === "bigint") return actual === BigInt(expected);
  return String(actual).toLowerCase() === String(expected).toLowerCase();
}

/**
 * A predicate for `withArgs` that checks every field of a struct argument (the AccessRecorded
 * `record`, the AgreementProposed `terms`) against `expected`, arrays element by element.
 * On a mismatch it throws, naming the field, so the failure says what differs.
 */
function sameStruct(expected) {
  return (actual) => {
    for (const [field, value] of Object.entries(expected)) {
      if (!sameValue(actual[field], value)) {
        throw new Error(`struct field ${field}: expected ${value}, got ${actual[field]}`);
      }
    }
    return true;
  };
}

// --- artifacts: a federated training story -------------------------------------------------

/** A third hospital for federated training, with its own OMOP dataset. */
const CLINIC = Object.freeze({
  ORG: tag("org:harbor-clinic"),
  DATASET: tag("dataset:harbor-clinic/omop-ehr"),
});

/**
 * Terms of an AI-training agreement between `holder` and the AI company over `dataset`: only
 * trained parameters leave (MODEL_PARAMETERS, TRAIN), EHR fields 1..7, 90 days, quota 20.
 */
function trainingTerms(now, holder, dataset, overrides = {}) {
  return researchTerms(now, {
    holder,
    requester: ORG.AI_COMPANY,
    datasets: [dataset],
    fieldMasks: [fieldsMask(1, 2, 3, 4, 5, 6, 7)],
    scenario: Scenario.AI_TRAINING,
    duoCodes: [42],
    diseaseCode: ZERO32,
    maxTier: Tier.MODEL_PARAMETERS,
    operations: ops(Operation.TRAIN),
    validUntil: now + 90 * DAY,
    quota: 20,
    consentPolicy: ConsentPolicy.NONE,
    termsHash: tag("terms:federated-training-v1.pdf"),
    ...overrides,
  });
}

/**
 * Three hospitals (St. Mary, City General and the Harbor Clinic) each with an active AI-training
 * agreement with the AI company: `sites[i]` is { holder, dataset, gateway, steward, id }.
 */
async function federatedFixture() {
  const ctx = await deployFixture();
  const signers = await ethers.getSigners();
  const [clinicSteward, clinicGateway] = signers.slice(15, 17);
  await ctx.membership.registerOrganization(CLINIC.ORG, OrgKind.HOSPITAL, "Harbor Clinic");
  await ctx.membership.grantMemberRole(CLINIC.ORG, clinicSteward.address, Role.STEWARD);
  await ctx.membership.grantMemberRole(CLINIC.ORG, clinicGateway.address, Role.GATEWAY);
  await ctx.datasets
    .connect(clinicSteward)
    .registerDataset(CLINIC.DATASET, CLINIC.ORG, SCHEMA.OMOP_54, EHR_FIELDS, Tier.IDENTIFIED);

  const sites = [
    { holder: ORG.HOSPITAL, dataset: DATASET.EHR, steward: ctx.hospitalSteward, gateway: ctx.hospitalGateway },
    {
      holder: ORG.HOSPITAL_B,
      dataset: DATASET.OTHER_HOSPITAL,
      steward: ctx.hospitalBSteward,
      gateway: ctx.hospitalBGateway,
    },
    { holder: CLINIC.ORG, dataset: CLINIC.DATASET, steward: clinicSteward, gateway: clinicGateway },
  ];
  for (const [i, site] of sites.entries()) {
    const terms = trainingTerms(ctx.now, site.holder, site.dataset, { nonce: 500 + i });
    site.id = agreementIdOf(terms);
    await ctx.agreements.connect(site.steward).propose(terms);
    for (const signer of [site.steward, ctx.aiSteward]) {
      const signature = await signAgreement(signer, ctx.agreements, terms, { id: site.id });
      await ctx.agreements.connect(ctx.relayer).sign(site.id, signer.address, signature);
    }
  }
  return { ...ctx, clinicSteward, clinicGateway, sites };
}

/**
 * One training run at `site` for the AI company, granted and recorded by the site's gateway, and
 * the MODEL_UPDATE it released under `resultHash`. Returns its ReleaseRef. `requestId` names the
 * run (default: a fresh id); one id may name a run at each site, one access per agreement.
 */
async function trainAndRelease(ctx, site, resultHash, { size = 1_048_576, requestId = newRequestId() } = {}) {
  const record = await signedGranted(
    ctx,
    {
      requestId,
      agreementId: site.id,
      datasetId: site.dataset,
      requester: ctx.aiRequester.address,
      tier: Tier.MODEL_PARAMETERS,
      operation: Operation.TRAIN,
      fieldMask: fieldsMask(1, 2, 3, 6, 7),
      requestHash: tag(`algorithm:federated-cnn:${resultHash}`),
      cohortRoot: ZERO32,
      cohortSize: 0,
    },
    ctx.aiRequester,
  );
  await ctx.accessLog.connect(site.gateway).recordAccess(record);
  await ctx.accessLog
    .connect(site.gateway)
    .releaseResult(record.requestId, site.id, resultHash, ReleaseKind.MODEL_UPDATE, size);
  return { accessId: record.requestId, agreementId: site.id, resultHash };
}

/** Releases sorted as the registry wants them: by agreement id, then access id, then result hash. */
const sortReleases = (releases) =>
  [...releases].sort(
    (a, b) =>
      compareHex(a.agreementId, b.agreementId) || compareHex(a.accessId, b.accessId) || compareHex(a.resultHash, b.resultHash),
  );
/** Artifact ids sorted as the registry wants them: ascending. */
const sortIds = (ids) => [...ids].sort(compareHex);

function compareHex(a, b) {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

module.exports = {
  DAY,
  ADMIN_DELAY,
  ORG,
  DATASET,
  SCHEMA,
  EHR_FIELDS,
  IMAGING_FIELDS,
  PATIENT,
  AUTH_CODE,
  tag,
  ops,
  fieldsMask,
  leafOf,
  codeHashOf,
  authorizationTerms,
  consentTerms,
  deployFixture,
  proposedAgreementFixture,
  activeAgreementFixture,
  insuranceAgreementFixture,
  smallQuotaFixture,
  futureWindowFixture,
  clinicalCareFixture,
  transferFixture,
  breakGlassRef,
  researchTerms,
  activate,
  signAsParties,
  newRequestId,
  grantedRecord,
  deniedRecord,
  signed,
  signedGranted,
  sameStruct,
  CLINIC,
  trainingTerms,
  federatedFixture,
  trainAndRelease,
  sortReleases,
  sortIds,
};

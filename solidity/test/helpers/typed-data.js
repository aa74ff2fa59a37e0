// EIP-712 typed data exactly as solidity/contracts/libraries/TypedData.sol declares it
// (enums travel as uint8, arrays as bytes32[] / uint256[] / uint32[]).
const { ethers } = require("hardhat");

const AGREEMENT_TYPES = {
  Agreement: [
    { name: "id", type: "bytes32" },
    { name: "version", type: "uint64" },
    { name: "previous", type: "bytes32" },
    { name: "holder", type: "bytes32" },
    { name: "requester", type: "bytes32" },
    { name: "datasets", type: "bytes32[]" },
    { name: "fieldMasks", type: "uint256[]" },
    { name: "scenario", type: "uint8" },
    { name: "duoCodes", type: "uint32[]" },
    { name: "diseaseCode", type: "bytes32" },
    { name: "ethicsApproval", type: "bytes32" },
    { name: "maxTier", type: "uint8" },
    { name: "operations", type: "uint8" },
    { name: "validFrom", type: "uint64" },
    { name: "validUntil", type: "uint64" },
    { name: "quota", type: "uint64" },
    { name: "consentPolicy", type: "uint8" },
    { name: "termsHash", type: "bytes32" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint64" },
    { name: "breakGlassReviewHours", type: "uint16" },
  ],
};

const ACCESS_REQUEST_TYPES = {
  AccessRequest: [
    { name: "requestId", type: "bytes32" },
    { name: "agreementId", type: "bytes32" },
    { name: "datasetId", type: "bytes32" },
    { name: "fieldMask", type: "uint256" },
    { name: "tier", type: "uint8" },
    { name: "operation", type: "uint8" },
    { name: "requestHash", type: "bytes32" },
    { name: "authorizationRef", type: "bytes32" },
    { name: "deadline", type: "uint64" },
  ],
};

const CONSENT_WITHDRAWAL_TYPES = {
  ConsentWithdrawal: [
    { name: "consentId", type: "bytes32" },
    { name: "deadline", type: "uint64" },
  ],
};

const CONSENT_GRANT_TYPES = {
  ConsentGrant: [
    { name: "consentId", type: "bytes32" },
    { name: "holder", type: "bytes32" },
    { name: "subject", type: "bytes32" },
    { name: "scenarios", type: "uint8" },
    { name: "duoCodes", type: "uint32[]" },
    { name: "validFrom", type: "uint64" },
    { name: "validUntil", type: "uint64" },
    { name: "subjectKey", type: "address" },
    { name: "diseaseCode", type: "bytes32" },
    { name: "studies", type: "bytes32[]" },
    { name: "requesters", type: "bytes32[]" },
    { name: "deadline", type: "uint64" },
  ],
};

const AUTHORIZATION_TYPES = {
  Authorization: [
    { name: "codeHash", type: "bytes32" },
    { name: "holder", type: "bytes32" },
    { name: "subject", type: "bytes32" },
    { name: "grantee", type: "bytes32" },
    { name: "dataset", type: "bytes32" },
    { name: "fieldMask", type: "uint256" },
    { name: "tier", type: "uint8" },
    { name: "scenario", type: "uint8" },
    { name: "expiresAt", type: "uint64" },
    { name: "multiUse", type: "bool" },
  ],
};

const AUTHORIZATION_REVOCATION_TYPES = {
  AuthorizationRevocation: [
    { name: "codeHash", type: "bytes32" },
    { name: "deadline", type: "uint64" },
  ],
};

const ZERO32 = ethers.ZeroHash;

async function domainOf(name, contract, chainId) {
  return {
    name,
    version: "1",
    chainId: chainId ?? (await ethers.provider.getNetwork()).chainId,
    verifyingContract: typeof contract === "string" ? contract : await contract.getAddress(),
  };
}

const agreementDomain = (registry, chainId) => domainOf("DataUseLedger.AgreementRegistry", registry, chainId);
const accessLogDomain = (accessLog, chainId) => domainOf("DataUseLedger.AccessLog", accessLog, chainId);
const consentDomain = (registry, chainId) => domainOf("DataUseLedger.ConsentRegistry", registry, chainId);

/** consentId = keccak256(abi.encode(holder, subject, sequence)), sequence 0-based per (holder, subject). */
function consentIdOf(holder, subject, sequence) {
  return ethers.keccak256(
    ethers.AbiCoder.defaultAbiCoder().encode(["bytes32", "bytes32", "uint256"], [holder, subject, sequence]),
  );
}

/** The patient's EIP-712 `ConsentWithdrawal` signature; `options`: `chainId`, `verifyingContract`. */
async function signWithdrawal(signer, registry, consentId, deadline, options = {}) {
  const domain = await consentDomain(options.verifyingContract ?? registry, options.chainId);
  return signer.signTypedData(domain, CONSENT_WITHDRAWAL_TYPES, { consentId, deadline });
}

/** The `ConsentGrant` message a patient signs to grant `terms` (ConsentTerms) as consent `consentId`. */
function consentGrantMessage(consentId, terms, deadline) {
  return {
    consentId,
    holder: terms.holder,
    subject: terms.subject,
    scenarios: terms.scenarios,
    duoCodes: terms.duoCodes,
    validFrom: terms.validFrom,
    validUntil: terms.validUntil,
    subjectKey: terms.subjectKey,
    diseaseCode: terms.diseaseCode,
    studies: terms.studies,
    requesters: terms.requesters,
    deadline,
  };
}

/** The patient's EIP-712 `ConsentGrant` signature; `options`: `chainId`, `verifyingContract`. */
async function signConsentGrant(signer, registry, consentId, terms, deadline, options = {}) {
  const domain = await consentDomain(options.verifyingContract ?? registry, options.chainId);
  return signer.signTypedData(domain, CONSENT_GRANT_TYPES, consentGrantMessage(consentId, terms, deadline));
}

/** The `Authorization` message a patient signs for `authorization` (a ConsentRegistry struct) under `codeHash`. */
function authorizationMessage(codeHash, a) {
  return {
    codeHash,
    holder: a.holder,
    subject: a.subject,
    grantee: a.grantee,
    dataset: a.dataset,
    fieldMask: a.fieldMask,
    tier: a.tier,
    scenario: a.scenario,
    expiresAt: a.expiresAt,
    multiUse: a.multiUse,
  };
}

/** The patient's EIP-712 `Authorization` signature; `options`: `chainId`, `verifyingContract`. */
async function signAuthorization(signer, registry, codeHash, authorization, options = {}) {
  const domain = await consentDomain(options.verifyingContract ?? registry, options.chainId);
  return signer.signTypedData(domain, AUTHORIZATION_TYPES, authorizationMessage(codeHash, authorization));
}

/** The patient's EIP-712 `AuthorizationRevocation` signature. */
async function signAuthorizationRevocation(signer, registry, codeHash, deadline, options = {}) {
  const domain = await consentDomain(options.verifyingContract ?? registry, options.chainId);
  return signer.signTypedData(domain, AUTHORIZATION_REVOCATION_TYPES, { codeHash, deadline });
}

/** id = keccak256(abi.encode(holder, requester, nonce)) */
function agreementIdOf(terms) {
  return ethers.keccak256(
    ethers.AbiCoder.defaultAbiCoder().encode(
      ["bytes32", "bytes32", "uint256"],
      [terms.holder, terms.requester, terms.nonce],
    ),
  );
}

/** The `Agreement` message for version `version` of the terms (previous: zero for version 1). */
function agreementMessage(terms, { id = agreementIdOf(terms), version = 1, previous = ZERO32 } = {}) {
  return {
    id,
    version,
    previous,
    holder: terms.holder,
    requester: terms.requester,
    datasets: terms.datasets,
    fieldMasks: terms.fieldMasks,
    scenario: terms.scenario,
    duoCodes: terms.duoCodes,
    diseaseCode: terms.diseaseCode,
    ethicsApproval: terms.ethicsApproval,
    maxTier: terms.maxTier,
    operations: terms.operations,
    validFrom: terms.validFrom,
    validUntil: terms.validUntil,
    quota: terms.quota,
    consentPolicy: terms.consentPolicy,
    termsHash: terms.termsHash,
    nonce: terms.nonce,
    deadline: terms.deadline,
    breakGlassReviewHours: terms.breakGlassReviewHours,
  };
}

/** Signs the agreement's typed data; `options` as agreementMessage plus `chainId` / `verifyingContract`. */
async function signAgreement(signer, registry, terms, options = {}) {
  const domain = await agreementDomain(options.verifyingContract ?? registry, options.chainId);
  return signer.signTypedData(domain, AGREEMENT_TYPES, agreementMessage(terms, options));
}

function accessRequestMessage(record) {
  return {
    requestId: record.requestId,
    agreementId: record.agreementId,
    datasetId: record.datasetId,
    fieldMask: record.fieldMask,
    tier: record.tier,
    operation: record.operation,
    requestHash: record.requestHash,
    authorizationRef: record.authorizationRef,
    deadline: record.deadline,
  };
}

/** Returns `record` with the requester's signature (sigR, sigS, sigV) over its AccessRequest. */
async function signAccessRecord(signer, accessLog, record, { chainId } = {}) {
  const domain = await accessLogDomain(accessLog, chainId);
  const signature = ethers.Signature.from(
    await signer.signTypedData(domain, ACCESS_REQUEST_TYPES, accessRequestMessage(record)),
  );
  return { ...record, sigR: signature.r, sigS: signature.s, sigV: signature.v };
}

module.exports = {
  AGREEMENT_TYPES,
  ACCESS_REQUEST_TYPES,
  CONSENT_WITHDRAWAL_TYPES,
  CONSENT_GRANT_TYPES,
  AUTHORIZATION_TYPES,
  AUTHORIZATION_REVOCATION_TYPES,
  ZERO32,
  agreementDomain,
  accessLogDomain,
  consentDomain,
  consentIdOf,
  signWithdrawal,
  consentGrantMessage,
  signConsentGrant,
  authorizationMessage,
  signAuthorization,
  signAuthorizationRevocation,
  agreementIdOf,
  agreementMessage,
  signAgreement,
  accessRequestMessage,
  signAccessRecord,
};

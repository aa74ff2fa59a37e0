/*
 * Cross-language vector: an `Agreement` signed off chain (the Python side, eth-account) must hash
 * and recover exactly as ethers and the contracts do.
 *
 * File: solidity/test/vectors/agreement-signature.json (committed; tests/unit/test_vectors.py keeps it
 * equal to what Python produces).
 * Format (JSON object; integers as JSON numbers or decimal strings, bytes as 0x-hex):
 *   {
 *     "privateKey": "0x<32 bytes>",           // the signing key (test key, never a real one)
 *     "address":    "0x<20 bytes>",           // optional: the key's address, checked if present
 *     "domain": {                             // EIP-712 domain of AgreementRegistry
 *       "name": "DataUseLedger.AgreementRegistry",
 *       "version": "1",
 *       "chainId": 31337,
 *       "verifyingContract": "0x<20 bytes>"   // any address; the signature is bound to it
 *     },
 *     "primaryType": "Agreement",             // optional; must be "Agreement" if present
 *     "types": {                              // exactly TypedData.sol's type, EIP712Domain optional
 *       "Agreement": [ {"name": "id", "type": "bytes32"}, {"name": "version", "type": "uint64"}, ... ]
 *     },
 *     "message": {                            // every field of the Agreement type
 *       "id": "0x..", "version": 1, "previous": "0x00..00",
 *       "holder": "0x..", "requester": "0x..",
 *       "datasets": ["0x.."], "fieldMasks": [62], "scenario": 1, "duoCodes": [42, 46],
 *       "diseaseCode": "0x..", "ethicsApproval": "0x..", "maxTier": 3, "operations": 5,
 *       "validFrom": 1767225600, "validUntil": 1769904000, "quota": 10, "consentPolicy": 1,
 *       "termsHash": "0x..", "nonce": 1, "deadline": 1767830400, "breakGlassReviewHours": 0
 *     },
 *     "structHash": "0x..",                   // optional: hashStruct(message), checked if present
 *     "digest": "0x..",                       // optional: the EIP-712 digest, checked if present
 *     "signature": "0x<65 bytes r || s || v>" // v = 27 or 28
 *   }
 *
 * solidity/test/vectors/consent-withdrawal-signature.json has the same shape for a patient's
 * `ConsentWithdrawal` (domain name "DataUseLedger.ConsentRegistry", primaryType
 * "ConsentWithdrawal", message fields consentId, deadline); its digest is checked against
 * ConsentRegistry.withdrawalDigest running at the vector's verifying contract.
 *
 * solidity/test/vectors/authorization-signature.json and authorization-revocation-signature.json
 * have the same shape for a patient's `Authorization` (message fields codeHash, holder, subject,
 * grantee, dataset, fieldMask, tier, scenario, expiresAt, multiUse) and `AuthorizationRevocation` (codeHash,
 * deadline) in the ConsentRegistry domain; their digests are checked against
 * ConsentRegistry.authorizationDigest / authorizationRevocationDigest at the verifying contract.
 *
 * solidity/test/vectors/access-request-signature.json has the same shape for the requester's
 * `AccessRequest` (domain name "DataUseLedger.AccessLog", primaryType "AccessRequest", message
 * fields requestId, agreementId, datasetId, fieldMask, tier, operation, requestHash,
 * authorizationRef, deadline); it is checked the same way when present.
 *
 * The type string the Python side must produce (TypedData.AGREEMENT_TYPEHASH):
 *   Agreement(bytes32 id,uint64 version,bytes32 previous,bytes32 holder,bytes32 requester,
 *   bytes32[] datasets,uint256[] fieldMasks,uint8 scenario,uint32[] duoCodes,bytes32 diseaseCode,
 *   bytes32 ethicsApproval,uint8 maxTier,uint8 operations,uint64 validFrom,uint64 validUntil,
 *   uint64 quota,uint8 consentPolicy,bytes32 termsHash,uint256 nonce,uint64 deadline,
 *   uint16 breakGlassReviewHours)
 */
const fs = require("node:fs");
const path = require("node:path");
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const {
  ACCESS_REQUEST_TYPES,
  AGREEMENT_TYPES,
  AUTHORIZATION_REVOCATION_TYPES,
  AUTHORIZATION_TYPES,
  CONSENT_GRANT_TYPES,
  CONSENT_WITHDRAWAL_TYPES,
} = require("./helpers/typed-data");

const VECTOR_PATH = path.join(__dirname, "vectors", "agreement-signature.json");
const ACCESS_VECTOR_PATH = path.join(__dirname, "vectors", "access-request-signature.json");
const WITHDRAWAL_VECTOR_PATH = path.join(__dirname, "vectors", "consent-withdrawal-signature.json");

const CONSENT_WITHDRAWAL_TYPE_STRING = "ConsentWithdrawal(bytes32 consentId,uint64 deadline)";
const GRANT_VECTOR_PATH = path.join(__dirname, "vectors", "consent-grant-signature.json");
const CONSENT_GRANT_TYPE_STRING =
  "ConsentGrant(bytes32 consentId,bytes32 holder,bytes32 subject,uint8 scenarios,uint32[] duoCodes," +
  "uint64 validFrom,uint64 validUntil,address subjectKey,bytes32 diseaseCode,bytes32[] studies," +
  "bytes32[] requesters,uint64 deadline)";
const AUTHORIZATION_VECTOR_PATH = path.join(__dirname, "vectors", "authorization-signature.json");
const REVOCATION_VECTOR_PATH = path.join(__dirname, "vectors", "authorization-revocation-signature.json");
const AUTHORIZATION_TYPE_STRING =
  "Authorization(bytes32 codeHash,bytes32 holder,bytes32 subject,bytes32 grantee,bytes32 dataset," +
  "uint256 fieldMask,uint8 tier,uint8 scenario,uint64 expiresAt,bool multiUse)";
const AUTHORIZATION_REVOCATION_TYPE_STRING = "AuthorizationRevocation(bytes32 codeHash,uint64 deadline)";

const ACCESS_REQUEST_TYPE_STRING =
  "AccessRequest(bytes32 requestId,bytes32 agreementId,bytes32 datasetId,uint256 fieldMask," +
  "uint8 tier,uint8 operation,bytes32 requestHash,bytes32 authorizationRef,uint64 deadline)";

const AGREEMENT_TYPE_STRING =
  "Agreement(bytes32 id,uint64 version,bytes32 previous,bytes32 holder,bytes32 requester," +
  "bytes32[] datasets,uint256[] fieldMasks,uint8 scenario,uint32[] duoCodes,bytes32 diseaseCode," +
  "bytes32 ethicsApproval,uint8 maxTier,uint8 operations,uint64 validFrom,uint64 validUntil," +
  "uint64 quota,uint8 consentPolicy,bytes32 termsHash,uint256 nonce,uint64 deadline," +
  "uint16 breakGlassReviewHours)";

async function mockFixture() {
  return { mock: await ethers.deployContract("TypedDataMock") };
}

describe("EIP-712 agreement signature vector (cross-language)", function () {
  it("agrees with the contract's Agreement type string and type hash", async function () {
    const { mock } = await loadFixture(mockFixture);
    expect(ethers.TypedDataEncoder.from(AGREEMENT_TYPES).encodeType("Agreement")).to.equal(AGREEMENT_TYPE_STRING);
    expect(await mock.agreementTypehash()).to.equal(ethers.id(AGREEMENT_TYPE_STRING));
  });

  // The vectors are committed; a missing file is a failure, not a skip.
  const vector = JSON.parse(fs.readFileSync(VECTOR_PATH, "utf8"));
  const { EIP712Domain: _ignored, ...types } = vector.types;
  const message = vector.message;
  const terms = {
    holder: message.holder,
    requester: message.requester,
    datasets: message.datasets,
    fieldMasks: message.fieldMasks,
    scenario: message.scenario,
    duoCodes: message.duoCodes,
    diseaseCode: message.diseaseCode,
    ethicsApproval: message.ethicsApproval,
    maxTier: message.maxTier,
    operations: message.operations,
    validFrom: message.validFrom,
    validUntil: message.validUntil,
    quota: message.quota,
    consentPolicy: message.consentPolicy,
    termsHash: message.termsHash,
    nonce: message.nonce,
    deadline: message.deadline,
    breakGlassReviewHours: message.breakGlassReviewHours,
  };

  it("uses exactly the contract's Agreement type", function () {
    if (vector.primaryType !== undefined) expect(vector.primaryType).to.equal("Agreement");
    expect(ethers.TypedDataEncoder.from(types).encodeType("Agreement")).to.equal(AGREEMENT_TYPE_STRING);
    expect(vector.domain.name).to.equal("DataUseLedger.AgreementRegistry");
    expect(vector.domain.version).to.equal("1");
  });

  it("recovers the key's address from the signature over the ethers digest", function () {
    const wallet = new ethers.Wallet(vector.privateKey);
    if (vector.address !== undefined) expect(ethers.getAddress(vector.address)).to.equal(wallet.address);
    const digest = ethers.TypedDataEncoder.hash(vector.domain, types, message);
    if (vector.digest !== undefined) expect(digest).to.equal(vector.digest);
    expect(ethers.recoverAddress(digest, vector.signature)).to.equal(wallet.address);
  });

  it("matches the on-chain struct hash, digest and recovery", async function () {
    const { mock } = await loadFixture(mockFixture);
    const structHash = ethers.TypedDataEncoder.hashStruct("Agreement", types, message);
    if (vector.structHash !== undefined) expect(structHash).to.equal(vector.structHash);
    expect(await mock.hashAgreement(terms, message.id, message.version, message.previous)).to.equal(structHash);
    const digest = await mock.toTypedDataHash(ethers.TypedDataEncoder.hashDomain(vector.domain), structHash);
    expect(digest).to.equal(ethers.TypedDataEncoder.hash(vector.domain, types, message));
    expect(await mock.recover(digest, vector.signature)).to.equal(new ethers.Wallet(vector.privateKey).address);
  });

  it("binds the agreement id to holder, requester and nonce", function () {
    const id = ethers.keccak256(
      ethers.AbiCoder.defaultAbiCoder().encode(
        ["bytes32", "bytes32", "uint256"],
        [message.holder, message.requester, message.nonce],
      ),
    );
    expect(message.id).to.equal(id);
  });
});

describe("EIP-712 access request signature vector (cross-language)", function () {
  it("agrees with the contract's AccessRequest type string and type hash", async function () {
    const { mock } = await loadFixture(mockFixture);
    expect(ethers.TypedDataEncoder.from(ACCESS_REQUEST_TYPES).encodeType("AccessRequest")).to.equal(
      ACCESS_REQUEST_TYPE_STRING,
    );
    expect(await mock.accessRequestTypehash()).to.equal(ethers.id(ACCESS_REQUEST_TYPE_STRING));
  });

  // Committed like the agreement vector: absence fails.

  const vector = JSON.parse(fs.readFileSync(ACCESS_VECTOR_PATH, "utf8"));
  const { EIP712Domain: _ignored, ...types } = vector.types;
  const message = vector.message;

  it("uses exactly the contract's AccessRequest type and the AccessLog domain", function () {
    if (vector.primaryType !== undefined) expect(vector.primaryType).to.equal("AccessRequest");
    expect(ethers.TypedDataEncoder.from(types).encodeType("AccessRequest")).to.equal(ACCESS_REQUEST_TYPE_STRING);
    expect(vector.domain.name).to.equal("DataUseLedger.AccessLog");
    expect(vector.domain.version).to.equal("1");
  });

  it("matches the on-chain struct hash, digest and recovery", async function () {
    const { mock } = await loadFixture(mockFixture);
    const wallet = new ethers.Wallet(vector.privateKey);
    if (vector.address !== undefined) expect(ethers.getAddress(vector.address)).to.equal(wallet.address);
    const structHash = ethers.TypedDataEncoder.hashStruct("AccessRequest", types, message);
    if (vector.structHash !== undefined) expect(structHash).to.equal(vector.structHash);
    // The record fields outside the signed request do not enter the hash.
    const record = {
      ...message,
      requester: wallet.address,
      decision: 1,
      reason: 0,
      cohortRoot: ethers.ZeroHash,
      cohortSize: 0,
      sigR: ethers.ZeroHash,
      sigS: ethers.ZeroHash,
      sigV: 0,
    };
    expect(await mock.hashAccessRequest(record)).to.equal(structHash);
    const digest = await mock.toTypedDataHash(ethers.TypedDataEncoder.hashDomain(vector.domain), structHash);
    expect(digest).to.equal(ethers.TypedDataEncoder.hash(vector.domain, types, message));
    if (vector.digest !== undefined) expect(digest).to.equal(vector.digest);
    expect(ethers.recoverAddress(digest, vector.signature)).to.equal(wallet.address);
  });
});

describe("EIP-712 consent withdrawal signature vector (cross-language)", function () {
  const vector = JSON.parse(fs.readFileSync(WITHDRAWAL_VECTOR_PATH, "utf8"));
  const { EIP712Domain: _ignored, ...types } = vector.types;
  const { consentId, deadline } = vector.message;

  /**
   * A ConsentRegistry's code running at the vector's verifying contract (no storage needed). The
   * next loadFixture of any test reverts the code change.
   */
  async function registryAtVectorAddress() {
    await loadFixture(mockFixture);
    const deployed = await ethers.deployContract("ConsentRegistry", [ethers.ZeroAddress, ethers.ZeroAddress]);
    const code = await ethers.provider.getCode(await deployed.getAddress());
    await ethers.provider.send("hardhat_setCode", [vector.domain.verifyingContract, code]);
    return ethers.getContractAt("ConsentRegistry", vector.domain.verifyingContract);
  }

  it("uses exactly the contract's ConsentWithdrawal type and the ConsentRegistry domain", async function () {
    if (vector.primaryType !== undefined) expect(vector.primaryType).to.equal("ConsentWithdrawal");
    expect(ethers.TypedDataEncoder.from(types).encodeType("ConsentWithdrawal")).to.equal(CONSENT_WITHDRAWAL_TYPE_STRING);
    expect(ethers.TypedDataEncoder.from(CONSENT_WITHDRAWAL_TYPES).encodeType("ConsentWithdrawal")).to.equal(
      CONSENT_WITHDRAWAL_TYPE_STRING,
    );
    expect(vector.domain.name).to.equal("DataUseLedger.ConsentRegistry");
    expect(vector.domain.version).to.equal("1");
    expect(vector.domain.chainId).to.equal(Number((await ethers.provider.getNetwork()).chainId));
  });

  it("matches the on-chain type hash, digest and recovery", async function () {
    const registry = await registryAtVectorAddress();
    expect(await registry.CONSENT_WITHDRAWAL_TYPEHASH()).to.equal(ethers.id(CONSENT_WITHDRAWAL_TYPE_STRING));
    const wallet = new ethers.Wallet(vector.privateKey);
    if (vector.address !== undefined) expect(ethers.getAddress(vector.address)).to.equal(wallet.address);
    const digest = ethers.TypedDataEncoder.hash(vector.domain, types, vector.message);
    if (vector.digest !== undefined) expect(digest).to.equal(vector.digest);
    expect(await registry.withdrawalDigest(consentId, deadline)).to.equal(digest);
    expect(ethers.recoverAddress(digest, vector.signature)).to.equal(wallet.address);
  });
});

describe("EIP-712 patient consent grant vector (cross-language, as the patient page serves it)", function () {
  const vector = JSON.parse(fs.readFileSync(GRANT_VECTOR_PATH, "utf8"));
  // ethers v6 derives the domain type itself: a wallet on ethers drops the served EIP712Domain
  const { EIP712Domain: _ignored, ...types } = vector.types;

  it("is exactly the contract's ConsentGrant type, in the ConsentRegistry domain", async function () {
    expect(vector.primaryType).to.equal("ConsentGrant");
    expect(ethers.TypedDataEncoder.from(types).encodeType("ConsentGrant")).to.equal(CONSENT_GRANT_TYPE_STRING);
    expect(ethers.TypedDataEncoder.from(CONSENT_GRANT_TYPES).encodeType("ConsentGrant")).to.equal(
      CONSENT_GRANT_TYPE_STRING,
    );
    expect(vector.domain.name).to.equal("DataUseLedger.ConsentRegistry");
  });

  it("signs as served with ethers, and the chain computes the same digest", async function () {
    await loadFixture(mockFixture);
    const deployed = await ethers.deployContract("ConsentRegistry", [ethers.ZeroAddress, ethers.ZeroAddress]);
    const address = vector.domain.verifyingContract;
    await ethers.provider.send("hardhat_setCode", [address, await ethers.provider.getCode(await deployed.getAddress())]);
    const registry = await ethers.getContractAt("ConsentRegistry", address);
    expect(await registry.CONSENT_GRANT_TYPEHASH()).to.equal(ethers.id(CONSENT_GRANT_TYPE_STRING));
    const wallet = new ethers.Wallet(vector.privateKey);
    const digest = ethers.TypedDataEncoder.hash(vector.domain, types, vector.message);
    expect(digest).to.equal(vector.digest);
    expect(await wallet.signTypedData(vector.domain, types, vector.message)).to.equal(vector.signature);
    const m = vector.message;
    const terms = {
      holder: m.holder,
      subject: m.subject,
      scenarios: m.scenarios,
      duoCodes: m.duoCodes,
      validFrom: m.validFrom,
      validUntil: m.validUntil,
      subjectKey: m.subjectKey,
      diseaseCode: m.diseaseCode,
      studies: m.studies,
      requesters: m.requesters,
    };
    expect(await registry.consentGrantDigest(m.consentId, terms, m.deadline)).to.equal(digest);
    expect(ethers.recoverAddress(digest, vector.signature)).to.equal(wallet.address);
  });
});

describe("EIP-712 patient authorization and revocation vectors (cross-language)", function () {
  const authorizationVector = JSON.parse(fs.readFileSync(AUTHORIZATION_VECTOR_PATH, "utf8"));
  const revocationVector = JSON.parse(fs.readFileSync(REVOCATION_VECTOR_PATH, "utf8"));

  async function registryAt(address) {
    await loadFixture(mockFixture);
    const deployed = await ethers.deployContract("ConsentRegistry", [ethers.ZeroAddress, ethers.ZeroAddress]);
    await ethers.provider.send("hardhat_setCode", [address, await ethers.provider.getCode(await deployed.getAddress())]);
    return ethers.getContractAt("ConsentRegistry", address);
  }

  for (const [vector, primaryType, typeString, ownTypes, typehash] of [
    [authorizationVector, "Authorization", AUTHORIZATION_TYPE_STRING, AUTHORIZATION_TYPES, "AUTHORIZATION_TYPEHASH"],
    [
      revocationVector,
      "AuthorizationRevocation",
      AUTHORIZATION_REVOCATION_TYPE_STRING,
      AUTHORIZATION_REVOCATION_TYPES,
      "AUTHORIZATION_REVOCATION_TYPEHASH",
    ],
  ]) {
    const { EIP712Domain: _ignored, ...types } = vector.types;

    it(`${primaryType}: exactly the contract's type, in the ConsentRegistry domain`, async function () {
      expect(vector.primaryType).to.equal(primaryType);
      expect(ethers.TypedDataEncoder.from(types).encodeType(primaryType)).to.equal(typeString);
      expect(ethers.TypedDataEncoder.from(ownTypes).encodeType(primaryType)).to.equal(typeString);
      expect(vector.domain.name).to.equal("DataUseLedger.ConsentRegistry");
      expect(vector.domain.version).to.equal("1");
      const registry = await registryAt(vector.domain.verifyingContract);
      expect(await registry[typehash]()).to.equal(ethers.id(typeString));
    });

    it(`${primaryType}: the on-chain digest and the recovered key`, async function () {
      const registry = await registryAt(vector.domain.verifyingContract);
      const wallet = new ethers.Wallet(vector.privateKey);
      expect(ethers.getAddress(vector.address)).to.equal(wallet.address);
      const digest = ethers.TypedDataEncoder.hash(vector.domain, types, vector.message);
      expect(digest).to.equal(vector.digest);
      const m = vector.message;
      const onChain =
        primaryType === "Authorization"
          ? await registry.authorizationDigest(m.codeHash, {
              holder: m.holder,
              subject: m.subject,
              grantee: m.grantee,
              dataset: m.dataset,
              fieldMask: m.fieldMask,
              tier: m.tier,
              scenario: m.scenario,
              status: 0,
              expiresAt: m.expiresAt,
              multiUse: m.multiUse,
              redeemedBy: ethers.ZeroHash,
            })
          : await registry.authorizationRevocationDigest(m.codeHash, m.deadline);
      expect(onChain).to.equal(digest);
      expect(ethers.recoverAddress(digest, vector.signature)).to.equal(wallet.address);
    });
  }
});

// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IConsentRegistry} from "./interfaces/IConsentRegistry.sol";
import {IDatasetRegistry} from "./interfaces/IDatasetRegistry.sol";
import {IMembership} from "./interfaces/IMembership.sol";
import {AccessRules} from "./libraries/AccessRules.sol";
import {CohortTree} from "./libraries/CohortTree.sol";
import {OrgId, DatasetId, AgreementId} from "./types/Ids.sol";
import {
    Authorization,
    AuthorizationFault,
    AuthorizationStatus,
    Consent,
    ConsentPolicy,
    ConsentStatus,
    ConsentTerms,
    Dataset,
    OrgStatus,
    Role,
    Scenario,
    Tier
} from "./types/DataUse.sol";

/// @title ConsentRegistry
/// @notice Patients' dynamic secondary consent and one-time authorization codes, recorded by the
/// stewards of the hospital that holds their data.
///
/// Consent ids: the `n`-th consent (0-based) recorded for `subject` at `holder` has the id
/// `keccak256(abi.encode(holder, subject, n))`, so `consentIds` lists them and a re-grant after a
/// withdrawal gets a new id (an old withdrawal signature never touches it). A subject has at most
/// `MAX_CONSENTS_PER_SUBJECT` consents at one holder, withdrawn ones included.
///
/// Authorization codes are redeemed only by the AccessLog, bound once by the deployer right
/// after deployment: a GRANTED access record under a patient-authorization agreement redeems its
/// code in the same transaction, or is refused.
contract ConsentRegistry is IConsentRegistry, EIP712 {
    /// @notice The largest batch `recordConsents` takes. Bounded by the per-transaction gas cap
    /// (EIP-7825, 2^24): a consent costs ~85k gas in a batch, ~108k with a patient key; the
    /// widest specific consent (16 studies, 16 requesters, a disease term) ~215k, so batches of
    /// those fit only ~75 to a transaction (the CLI sends 64).
    uint256 public constant MAX_BATCH_SIZE = 128;
    /// @notice How many consents one subject may have at one holder, withdrawn ones included.
    uint256 public constant MAX_CONSENTS_PER_SUBJECT = 64;
    /// @notice How many studies, and how many requesting organizations, one consent may name.
    uint256 public constant MAX_SCOPE_ENTRIES = 16;
    /// @notice How many DUO codes one consent may carry.
    uint256 public constant MAX_DUO_CODES = 16;
    /// @notice GA4GH DUO:0000007, disease-specific research: goes with a disease code.
    uint32 public constant DUO_DISEASE_SPECIFIC = 7;
    /// @notice The longest an authorization code may stay redeemable.
    uint64 public constant MAX_AUTHORIZATION_LIFETIME = 365 days;
    /// @notice EIP-712 type hash of the patient's withdrawal.
    bytes32 public constant CONSENT_WITHDRAWAL_TYPEHASH =
        keccak256("ConsentWithdrawal(bytes32 consentId,uint64 deadline)");
    /// @notice EIP-712 type hash of the authorization a patient signs in their own wallet.
    bytes32 public constant AUTHORIZATION_TYPEHASH = keccak256(
        "Authorization(bytes32 codeHash,bytes32 holder,bytes32 subject,bytes32 grantee,bytes32 dataset,"
        "uint256 fieldMask,uint8 tier,uint8 scenario,uint64 expiresAt,bool multiUse)"
    );
    /// @notice EIP-712 type hash of the consent a patient grants in their own wallet.
    bytes32 public constant CONSENT_GRANT_TYPEHASH = keccak256(
        "ConsentGrant(bytes32 consentId,bytes32 holder,bytes32 subject,uint8 scenarios,uint32[] duoCodes,"
        "uint64 validFrom,uint64 validUntil,address subjectKey,bytes32 diseaseCode,bytes32[] studies,"
        "bytes32[] requesters,uint64 deadline)"
    );
    /// @notice EIP-712 type hash of a patient's revocation of one of their codes.
    bytes32 public constant AUTHORIZATION_REVOCATION_TYPEHASH =
        keccak256("AuthorizationRevocation(bytes32 codeHash,uint64 deadline)");

    /// @dev The bits of the five scenarios.
    uint8 private constant _ALL_SCENARIOS = 0x1F;

    /// @dev Five slots: holder, subject, the packed terms, the subject key and the scope hash
    /// (each written only when set).
    /// `count` is used only in a subject's first consent (sequence 0): how many consents the
    /// subject has at the holder. It shares a slot that is written anyway, which saves a fresh
    /// storage slot per subject.
    struct StoredConsent {
        OrgId holder;
        bytes32 subject;
        uint8 scenarios;
        ConsentStatus status;
        uint64 validFrom;
        uint64 validUntil;
        uint8 count;
        address subjectKey;
        bytes32 scope;
    }

    /// @dev A subject's key as a steward of the holder registered it; `registered`: a steward
    /// has registered one (or removed it: the zero key) at least once, so no consent's key
    /// stands in for it — a removed key stays removed.
    struct RegisteredKey {
        address key;
        bool registered;
    }

    IMembership public immutable MEMBERSHIP;
    IDatasetRegistry public immutable DATASETS;

    address private immutable _DEPLOYER;
    address private _accessLog;

    mapping(bytes32 consentId => StoredConsent) private _consents;
    mapping(bytes32 codeHash => Authorization) private _authorizations;
    /// @dev keccak256(abi.encode(holder, subject)) -> the key registered by a steward.
    mapping(bytes32 holderSubject => RegisteredKey) private _subjectKeys;

    constructor(IMembership membership, IDatasetRegistry datasets) EIP712("DataUseLedger.ConsentRegistry", "1") {
        MEMBERSHIP = membership;
        DATASETS = datasets;
        _DEPLOYER = msg.sender;
    }

    // --- consents ---------------------------------------------------------------------------

    /// @inheritdoc IConsentRegistry
    function recordConsent(ConsentTerms calldata terms) external returns (bytes32 consentId) {
        _checkSteward(terms.holder);
        return _record(terms, msg.sender, false);
    }

    /// @inheritdoc IConsentRegistry
    function recordConsentBySubject(
        bytes32 consentId,
        ConsentTerms calldata terms,
        uint64 deadline,
        bytes calldata signature
    ) external returns (bytes32) {
        OrgId holder = terms.holder;
        (, OrgStatus holderStatus) = MEMBERSHIP.organization(holder);
        if (holderStatus == OrgStatus.NONE) revert ConsentRegistryUnknownHolder(holder);
        bytes32 subject = terms.subject;
        if (subject == bytes32(0)) revert ConsentRegistryZeroSubject();
        if (deadline < block.timestamp) revert ConsentRegistrySignatureExpired(consentId, deadline);
        bytes32 next = _nextConsentId(holder, subject);
        if (consentId != next) revert ConsentRegistryStaleConsentGrant(consentId, next);
        address key = _subjectKeyOf(holder, subject);
        (address recovered, ECDSA.RecoverError error,) =
            ECDSA.tryRecover(_consentGrantDigest(consentId, terms, deadline), signature);
        if (key == address(0) || error != ECDSA.RecoverError.NoError || recovered != key) {
            revert ConsentRegistryInvalidSubjectSignature(consentId);
        }
        address given = terms.subjectKey;
        if (given != address(0) && given != key) revert ConsentRegistrySubjectKeyMismatch(given, key);
        return _record(terms, key, true);
    }

    /// @inheritdoc IConsentRegistry
    function recordConsents(ConsentTerms[] calldata terms) external {
        uint256 count = terms.length;
        if (count == 0 || count > MAX_BATCH_SIZE) revert ConsentRegistryInvalidBatchSize(count, MAX_BATCH_SIZE);
        OrgId checked;
        for (uint256 i = 0; i < count; ++i) {
            ConsentTerms calldata item = terms[i];
            // A batch is usually one hospital's: its steward is checked once.
            if (i == 0 || !(item.holder == checked)) {
                _checkSteward(item.holder);
                checked = item.holder;
            }
            _record(item, msg.sender, false);
        }
    }

    /// @inheritdoc IConsentRegistry
    function withdrawConsent(bytes32 consentId) external {
        StoredConsent storage stored = _existingConsent(consentId);
        OrgId holder = stored.holder;
        if (!MEMBERSHIP.hasOrgRole(msg.sender, holder, Role.STEWARD)) {
            revert ConsentRegistryUnauthorizedSteward(msg.sender, holder);
        }
        _withdraw(consentId, stored, msg.sender, false);
    }

    /// @inheritdoc IConsentRegistry
    function withdrawConsentBySubject(bytes32 consentId, uint64 deadline, bytes calldata signature) external {
        StoredConsent storage stored = _existingConsent(consentId);
        if (stored.status != ConsentStatus.GRANTED) revert ConsentRegistryConsentNotGranted(consentId, stored.status);
        if (deadline < block.timestamp) revert ConsentRegistrySignatureExpired(consentId, deadline);
        // The consent's own key, unless a steward has registered the subject's key since: then
        // that one (a rotated or removed key no longer speaks for the patient).
        address subjectKey = stored.subjectKey;
        if (subjectKey != address(0)) {
            RegisteredKey storage registered = _subjectKeys[_holderSubject(stored.holder, stored.subject)];
            if (registered.registered) subjectKey = registered.key;
        }
        (address recovered, ECDSA.RecoverError error,) =
            ECDSA.tryRecover(_withdrawalDigest(consentId, deadline), signature);
        if (subjectKey == address(0) || error != ECDSA.RecoverError.NoError || recovered != subjectKey) {
            revert ConsentRegistryInvalidSubjectSignature(consentId);
        }
        _withdraw(consentId, stored, subjectKey, true);
    }

    // --- authorization codes ----------------------------------------------------------------

    /// @inheritdoc IConsentRegistry
    function issueAuthorization(bytes32 codeHash, Authorization calldata authorization_) external {
        _checkNewCode(codeHash);
        _checkSteward(authorization_.holder);
        _checkExpiry(authorization_.expiresAt);
        _issue(codeHash, authorization_, msg.sender, false);
    }

    /// @inheritdoc IConsentRegistry
    function issueAuthorizationBySubject(bytes32 codeHash, Authorization calldata authorization_, bytes calldata signature)
        external
    {
        _checkNewCode(codeHash);
        OrgId holder = authorization_.holder;
        (, OrgStatus holderStatus) = MEMBERSHIP.organization(holder);
        if (holderStatus == OrgStatus.NONE) revert ConsentRegistryUnknownHolder(holder);
        uint64 expiresAt = authorization_.expiresAt;
        if (expiresAt <= block.timestamp) revert ConsentRegistryAuthorizationSignatureExpired(codeHash, expiresAt);
        address key = _checkSubjectSignature(
            codeHash, holder, authorization_.subject, _authorizationDigest(codeHash, authorization_), signature
        );
        _checkExpiry(expiresAt);
        _issue(codeHash, authorization_, key, true);
    }

    /// @inheritdoc IConsentRegistry
    function revokeAuthorization(bytes32 codeHash) external {
        Authorization storage stored = _existingAuthorization(codeHash);
        OrgId holder = stored.holder;
        if (!MEMBERSHIP.hasOrgRole(msg.sender, holder, Role.STEWARD)) {
            revert ConsentRegistryUnauthorizedSteward(msg.sender, holder);
        }
        _revoke(codeHash, stored, msg.sender, false);
    }

    /// @inheritdoc IConsentRegistry
    function revokeAuthorizationBySubject(bytes32 codeHash, uint64 deadline, bytes calldata signature) external {
        Authorization storage stored = _existingAuthorization(codeHash);
        if (stored.status != AuthorizationStatus.ISSUED) {
            revert ConsentRegistryAuthorizationNotIssued(codeHash, stored.status);
        }
        if (deadline < block.timestamp) revert ConsentRegistryAuthorizationSignatureExpired(codeHash, deadline);
        address key = _checkSubjectSignature(
            codeHash, stored.holder, stored.subject, _revocationDigest(codeHash, deadline), signature
        );
        _revoke(codeHash, stored, key, true);
    }

    /// @inheritdoc IConsentRegistry
    function registerSubjectKey(OrgId holder, bytes32 subject, address key) external {
        _checkSteward(holder);
        if (subject == bytes32(0)) revert ConsentRegistryZeroSubject();
        bytes32 slot = _holderSubject(holder, subject);
        address previous = _subjectKeys[slot].key;
        _subjectKeys[slot] = RegisteredKey(key, true);
        emit SubjectKeyRegistered(holder, subject, key, previous, msg.sender);
    }

    /// @inheritdoc IConsentRegistry
    function redeemAuthorization(
        bytes32 codeHash,
        bytes32 accessId,
        OrgId holder,
        OrgId grantee,
        DatasetId dataset,
        uint256 fieldMask,
        Tier tier,
        bytes32 cohortRoot,
        Scenario scenario
    ) external returns (AuthorizationFault fault) {
        if (msg.sender != _accessLog) revert ConsentRegistryUnauthorizedRedeemer(msg.sender);
        Authorization storage stored = _authorizations[codeHash];
        fault = _faultOf(stored, holder, grantee, dataset, fieldMask, tier, cohortRoot);
        if (fault == AuthorizationFault.NONE && stored.scenario != scenario) fault = AuthorizationFault.WRONG_SCENARIO;
        if (fault != AuthorizationFault.NONE) return fault;
        // A multi-use code stays ISSUED until it expires or is revoked; each use is an event.
        if (!stored.multiUse) stored.status = AuthorizationStatus.REDEEMED;
        stored.redeemedBy = accessId;
        emit AuthorizationRedeemed(codeHash, accessId, grantee);
    }

    /// @inheritdoc IConsentRegistry
    /// @dev Refused (`ConsentRegistryAccessLogBindingRefused`) for any caller but the deployer,
    /// once bound, and for the zero address.
    function bindAccessLog(address accessLog_) external {
        if (msg.sender != _DEPLOYER || _accessLog != address(0) || accessLog_ == address(0)) {
            revert ConsentRegistryAccessLogBindingRefused(msg.sender);
        }
        _accessLog = accessLog_;
        emit AccessLogBound(accessLog_);
    }

    // --- views ------------------------------------------------------------------------------

    /// @inheritdoc IConsentRegistry
    function consent(bytes32 consentId) external view returns (Consent memory) {
        StoredConsent storage stored = _consents[consentId];
        return Consent({
            holder: stored.holder,
            subject: stored.subject,
            scenarios: stored.scenarios,
            status: stored.status,
            validFrom: stored.validFrom,
            validUntil: stored.validUntil,
            subjectKey: stored.subjectKey
        });
    }

    /// @inheritdoc IConsentRegistry
    function consentIds(OrgId holder, bytes32 subject) external view returns (bytes32[] memory ids) {
        bytes32 first = _consentId(holder, subject, 0);
        uint256 count = _consents[first].count;
        ids = new bytes32[](count);
        for (uint256 i = 0; i < count; ++i) {
            ids[i] = i == 0 ? first : _consentId(holder, subject, i);
        }
    }

    /// @inheritdoc IConsentRegistry
    function hasConsent(OrgId holder, bytes32 subject, Scenario scenario) external view returns (bool) {
        uint8 bit = uint8(1) << uint8(scenario);
        bytes32 first = _consentId(holder, subject, 0);
        uint256 count = _consents[first].count;
        for (uint256 i = 0; i < count; ++i) {
            StoredConsent storage stored = _consents[i == 0 ? first : _consentId(holder, subject, i)];
            if (
                stored.status == ConsentStatus.GRANTED && stored.scenarios & bit != 0 && stored.scope == 0
                    && stored.validFrom <= block.timestamp && block.timestamp <= stored.validUntil
            ) return true;
        }
        return false;
    }

    /// @inheritdoc IConsentRegistry
    function consentScope(bytes32 consentId) external view returns (bytes32) {
        return _consents[consentId].scope;
    }

    /// @inheritdoc IConsentRegistry
    function authorization(bytes32 codeHash) external view returns (Authorization memory) {
        return _authorizations[codeHash];
    }

    /// @inheritdoc IConsentRegistry
    function nextConsentId(OrgId holder, bytes32 subject) external view returns (bytes32) {
        return _nextConsentId(holder, subject);
    }

    /// @inheritdoc IConsentRegistry
    function consentGrantDigest(bytes32 consentId, ConsentTerms calldata terms, uint64 deadline)
        external
        view
        returns (bytes32)
    {
        return _consentGrantDigest(consentId, terms, deadline);
    }

    /// @inheritdoc IConsentRegistry
    function withdrawalDigest(bytes32 consentId, uint64 deadline) external view returns (bytes32) {
        return _withdrawalDigest(consentId, deadline);
    }

    /// @inheritdoc IConsentRegistry
    function subjectKeyOf(OrgId holder, bytes32 subject) external view returns (address) {
        return _subjectKeyOf(holder, subject);
    }

    /// @inheritdoc IConsentRegistry
    function authorizationDigest(bytes32 codeHash, Authorization calldata authorization_)
        external
        view
        returns (bytes32)
    {
        return _authorizationDigest(codeHash, authorization_);
    }

    /// @inheritdoc IConsentRegistry
    function authorizationRevocationDigest(bytes32 codeHash, uint64 deadline) external view returns (bytes32) {
        return _revocationDigest(codeHash, deadline);
    }

    /// @inheritdoc IConsentRegistry
    function accessLog() external view returns (address) {
        return _accessLog;
    }

    /// @inheritdoc IConsentRegistry
    function cohortIncludes(bytes32 root, uint256 size, uint256 index, bytes32 subject, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        return CohortTree.verifyInclusion(root, size, index, CohortTree.leafHash(subject), proof);
    }

    // --- internals --------------------------------------------------------------------------

    /// @dev Records one consent whose recorder has been checked: a steward of the holder, or
    /// (`bySubject`) the subject's key, which becomes the consent's key.
    function _record(ConsentTerms calldata terms, address recorder, bool bySubject)
        private
        returns (bytes32 consentId)
    {
        if (terms.subject == bytes32(0)) revert ConsentRegistryZeroSubject();
        uint8 scenarios = terms.scenarios;
        if (scenarios == 0 || scenarios & ~_ALL_SCENARIOS != 0) revert ConsentRegistryInvalidScenarios(scenarios);
        uint64 validFrom = terms.validFrom;
        if (validFrom == 0) {
            validFrom = uint64(block.timestamp);
        } else if (validFrom < block.timestamp) {
            revert ConsentRegistryBackdated(validFrom, uint64(block.timestamp));
        }
        uint64 validUntil = terms.validUntil;
        if (validUntil <= validFrom) revert ConsentRegistryInvalidValidity(validFrom, validUntil);
        bytes32 scope = _checkScope(terms);
        consentId = _claimId(terms.holder, terms.subject, scenarios, scope, validFrom, validUntil);

        StoredConsent storage stored = _consents[consentId];
        stored.holder = terms.holder;
        stored.subject = terms.subject;
        stored.scenarios = scenarios;
        stored.status = ConsentStatus.GRANTED;
        stored.validFrom = validFrom;
        stored.validUntil = validUntil;
        if (bySubject) stored.subjectKey = recorder;
        else if (terms.subjectKey != address(0)) stored.subjectKey = terms.subjectKey;
        if (scope != 0) stored.scope = scope;

        _announce(consentId, terms, validFrom, recorder, bySubject);
    }

    /// @dev The id of the subject's next consent, counted: refused when the subject has the
    /// most consents already or a granted one of the same scope overlaps in scenarios and time.
    function _claimId(
        OrgId holder,
        bytes32 subject,
        uint8 scenarios,
        bytes32 scope,
        uint64 validFrom,
        uint64 validUntil
    ) private returns (bytes32 consentId) {
        bytes32 first = _consentId(holder, subject, 0);
        StoredConsent storage head = _consents[first];
        uint256 count = head.count;
        if (count >= MAX_CONSENTS_PER_SUBJECT) revert ConsentRegistryTooManyConsents(subject, MAX_CONSENTS_PER_SUBJECT);
        for (uint256 i = 0; i < count; ++i) {
            bytes32 existingId = i == 0 ? first : _consentId(holder, subject, i);
            StoredConsent storage existing = _consents[existingId];
            if (
                existing.status == ConsentStatus.GRANTED && existing.scenarios & scenarios != 0
                    && existing.scope == scope && existing.validFrom <= validUntil && validFrom <= existing.validUntil
            ) revert ConsentRegistryOverlappingConsent(existingId);
        }
        consentId = count == 0 ? first : _consentId(holder, subject, count);
        // `count` lives in the first consent's packed slot; for count 0 that is the new consent's.
        head.count = uint8(count + 1);
    }

    /// @dev Emits `ConsentRecorded` with the effective start and key (a function of its own: the
    /// recording's locals would not fit the stack beside the event's).
    function _announce(
        bytes32 consentId,
        ConsentTerms calldata terms,
        uint64 validFrom,
        address recorder,
        bool bySubject
    ) private {
        ConsentTerms memory recorded = terms;
        recorded.validFrom = validFrom;
        if (bySubject) recorded.subjectKey = recorder;
        emit ConsentRecorded(consentId, terms.holder, terms.subject, recorded, recorder, bySubject);
    }

    /// @dev Checks the DUO codes and the specific scope; returns the scope's hash (zero: none).
    function _checkScope(ConsentTerms calldata terms) private view returns (bytes32) {
        uint256 duoCount = terms.duoCodes.length;
        if (duoCount > MAX_DUO_CODES) revert ConsentRegistryTooManyDuoCodes(duoCount, MAX_DUO_CODES);
        bool diseaseSpecific = false;
        for (uint256 i = 0; i < duoCount; ++i) {
            if (terms.duoCodes[i] == DUO_DISEASE_SPECIFIC) diseaseSpecific = true;
        }
        bytes32 disease = terms.diseaseCode;
        if (diseaseSpecific != (disease != 0)) revert ConsentRegistryDiseaseCodeMismatch(diseaseSpecific, disease);
        AgreementId[] calldata studies = terms.studies;
        OrgId[] calldata requesters = terms.requesters;
        if (studies.length > MAX_SCOPE_ENTRIES) revert ConsentRegistryTooManyStudies(studies.length, MAX_SCOPE_ENTRIES);
        if (requesters.length > MAX_SCOPE_ENTRIES) {
            revert ConsentRegistryTooManyRequesters(requesters.length, MAX_SCOPE_ENTRIES);
        }
        bytes32 previous = 0;
        for (uint256 i = 0; i < studies.length; ++i) {
            bytes32 study = AgreementId.unwrap(studies[i]);
            if (study <= previous) revert ConsentRegistryScopeNotAscending(study);
            previous = study;
        }
        previous = 0;
        for (uint256 i = 0; i < requesters.length; ++i) {
            OrgId requester = requesters[i];
            if (OrgId.unwrap(requester) <= previous) revert ConsentRegistryScopeNotAscending(OrgId.unwrap(requester));
            previous = OrgId.unwrap(requester);
            (, OrgStatus status) = MEMBERSHIP.organization(requester);
            if (status == OrgStatus.NONE) revert ConsentRegistryUnknownRequester(requester);
        }
        if (disease == 0 && studies.length == 0 && requesters.length == 0) return 0;
        return keccak256(abi.encode(disease, studies, requesters));
    }

    function _withdraw(bytes32 consentId, StoredConsent storage stored, address by, bool bySubject) private {
        if (stored.status != ConsentStatus.GRANTED) revert ConsentRegistryConsentNotGranted(consentId, stored.status);
        stored.status = ConsentStatus.WITHDRAWN;
        emit ConsentWithdrawn(consentId, stored.holder, stored.subject, by, bySubject);
    }

    /// @dev Stores and announces a code whose issuer has been checked: grantee, scope and subject here.
    function _issue(bytes32 codeHash, Authorization calldata authorization_, address issuer, bool bySubject) private {
        OrgId holder = authorization_.holder;
        (, OrgStatus granteeStatus) = MEMBERSHIP.organization(authorization_.grantee);
        if (granteeStatus == OrgStatus.NONE) revert ConsentRegistryUnknownGrantee(authorization_.grantee);
        _checkScope(authorization_);
        if (authorization_.subject == bytes32(0)) revert ConsentRegistryZeroSubject();

        Authorization storage stored = _authorizations[codeHash];
        stored.holder = holder;
        stored.subject = authorization_.subject;
        stored.grantee = authorization_.grantee;
        stored.dataset = authorization_.dataset;
        stored.fieldMask = authorization_.fieldMask;
        stored.tier = authorization_.tier;
        stored.scenario = authorization_.scenario;
        stored.status = AuthorizationStatus.ISSUED;
        stored.expiresAt = authorization_.expiresAt;
        if (authorization_.multiUse) stored.multiUse = true;

        Authorization memory issued = authorization_;
        issued.status = AuthorizationStatus.ISSUED;
        issued.redeemedBy = bytes32(0);
        emit AuthorizationIssued(codeHash, holder, authorization_.grantee, issued, issuer, bySubject);
    }

    function _revoke(bytes32 codeHash, Authorization storage stored, address by, bool bySubject) private {
        AuthorizationStatus status = stored.status;
        if (status != AuthorizationStatus.ISSUED) revert ConsentRegistryAuthorizationNotIssued(codeHash, status);
        stored.status = AuthorizationStatus.REVOKED;
        emit AuthorizationRevoked(codeHash, stored.holder, by, bySubject);
    }

    function _checkNewCode(bytes32 codeHash) private view {
        bool taken = codeHash == bytes32(0) || AccessRules.isBreakGlass(codeHash)
            || _authorizations[codeHash].status != AuthorizationStatus.NONE;
        if (taken) {
            revert ConsentRegistryAuthorizationExists(codeHash);
        }
    }

    function _checkExpiry(uint64 expiresAt) private view {
        uint64 latest = uint64(block.timestamp) + MAX_AUTHORIZATION_LIFETIME;
        if (expiresAt <= block.timestamp || expiresAt > latest) revert ConsentRegistryInvalidExpiry(expiresAt, latest);
    }

    function _existingAuthorization(bytes32 codeHash) private view returns (Authorization storage stored) {
        stored = _authorizations[codeHash];
        if (stored.status == AuthorizationStatus.NONE) revert ConsentRegistryUnknownAuthorization(codeHash);
    }

    /// @dev The subject's key must have signed `digest`; returns that key.
    function _checkSubjectSignature(
        bytes32 codeHash,
        OrgId holder,
        bytes32 subject,
        bytes32 digest,
        bytes calldata signature
    ) private view returns (address key) {
        key = _subjectKeyOf(holder, subject);
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecover(digest, signature);
        if (key == address(0) || error != ECDSA.RecoverError.NoError || recovered != key) {
            revert ConsentRegistryInvalidAuthorizationSignature(codeHash);
        }
    }

    /// @dev The registered key (zero once removed), else — none ever registered — the key of
    /// the newest consent naming one.
    function _subjectKeyOf(OrgId holder, bytes32 subject) private view returns (address key) {
        RegisteredKey storage registered = _subjectKeys[_holderSubject(holder, subject)];
        if (registered.registered) return registered.key;
        bytes32 first = _consentId(holder, subject, 0);
        for (uint256 i = _consents[first].count; i > 0; --i) {
            key = _consents[i == 1 ? first : _consentId(holder, subject, i - 1)].subjectKey;
            if (key != address(0)) return key;
        }
    }

    /// @dev The scenario must work through codes, the dataset be the holder's, and fields and
    /// tier within what the dataset and the scenario offer.
    function _checkScope(Authorization calldata a) private view {
        bool crossOrg = !(a.grantee == a.holder);
        if (AccessRules.requiredConsent(a.scenario, a.tier, crossOrg) != ConsentPolicy.PATIENT_AUTHORIZATION) {
            revert ConsentRegistryScenarioNotAuthorizable(a.scenario);
        }
        Dataset memory dataset = DATASETS.dataset(a.dataset);
        if (!(dataset.holder == a.holder)) revert ConsentRegistryDatasetNotHeld(a.dataset, a.holder);
        if (a.fieldMask == 0 || (dataset.fieldCount < 256 && a.fieldMask >> dataset.fieldCount != 0)) {
            revert ConsentRegistryInvalidFieldMask(a.fieldMask, dataset.fieldCount);
        }
        Tier ceiling = AccessRules.ceiling(a.scenario);
        if (dataset.maxTier < ceiling) ceiling = dataset.maxTier;
        if (a.tier > ceiling) revert ConsentRegistryTierAboveCeiling(a.tier, ceiling);
    }

    /// @dev The first reason the access may not redeem `stored`, in the order of AuthorizationFault.
    function _faultOf(
        Authorization storage stored,
        OrgId holder,
        OrgId grantee,
        DatasetId dataset,
        uint256 fieldMask,
        Tier tier,
        bytes32 cohortRoot
    ) private view returns (AuthorizationFault) {
        AuthorizationStatus status = stored.status;
        if (status == AuthorizationStatus.NONE) return AuthorizationFault.UNKNOWN;
        if (status == AuthorizationStatus.REDEEMED) return AuthorizationFault.REDEEMED;
        if (status == AuthorizationStatus.REVOKED) return AuthorizationFault.REVOKED;
        if (block.timestamp > stored.expiresAt) return AuthorizationFault.EXPIRED;
        if (!(stored.holder == holder)) return AuthorizationFault.WRONG_HOLDER;
        if (!(stored.grantee == grantee)) return AuthorizationFault.WRONG_GRANTEE;
        if (!(stored.dataset == dataset)) return AuthorizationFault.DATASET_NOT_IN_SCOPE;
        if (fieldMask == 0 || fieldMask & ~stored.fieldMask != 0) return AuthorizationFault.FIELDS_NOT_IN_SCOPE;
        if (tier > stored.tier) return AuthorizationFault.TIER_ABOVE_SCOPE;
        if (cohortRoot != CohortTree.leafHash(stored.subject)) return AuthorizationFault.WRONG_SUBJECT;
        return AuthorizationFault.NONE;
    }

    /// @dev The holder must be registered and the caller one of its active stewards.
    function _checkSteward(OrgId holder) private view {
        (, OrgStatus status) = MEMBERSHIP.organization(holder);
        if (status == OrgStatus.NONE) revert ConsentRegistryUnknownHolder(holder);
        if (!MEMBERSHIP.hasOrgRole(msg.sender, holder, Role.STEWARD)) {
            revert ConsentRegistryUnauthorizedSteward(msg.sender, holder);
        }
    }

    function _existingConsent(bytes32 consentId) private view returns (StoredConsent storage stored) {
        stored = _consents[consentId];
        if (stored.status == ConsentStatus.NONE) revert ConsentRegistryUnknownConsent(consentId);
    }

    /// @dev The id the subject's next consent at `holder` gets (its sequence: how many it has).
    function _nextConsentId(OrgId holder, bytes32 subject) private view returns (bytes32 next) {
        next = _consentId(holder, subject, 0);
        uint256 count = _consents[next].count;
        if (count != 0) next = _consentId(holder, subject, count);
    }

    function _consentGrantDigest(bytes32 consentId, ConsentTerms calldata t, uint64 deadline)
        private
        view
        returns (bytes32)
    {
        // Two parts: one abi.encode of all thirteen words would not fit the stack.
        bytes memory head = abi.encode(
            CONSENT_GRANT_TYPEHASH,
            consentId,
            t.holder,
            t.subject,
            t.scenarios,
            keccak256(abi.encodePacked(t.duoCodes)),
            t.validFrom
        );
        bytes memory tail = abi.encode(
            t.validUntil,
            t.subjectKey,
            t.diseaseCode,
            keccak256(abi.encodePacked(t.studies)),
            keccak256(abi.encodePacked(t.requesters)),
            deadline
        );
        return _hashTypedDataV4(keccak256(bytes.concat(head, tail)));
    }

    function _withdrawalDigest(bytes32 consentId, uint64 deadline) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CONSENT_WITHDRAWAL_TYPEHASH, consentId, deadline)));
    }

    function _authorizationDigest(bytes32 codeHash, Authorization calldata a) private view returns (bytes32) {
        bytes memory head = abi.encode(AUTHORIZATION_TYPEHASH, codeHash, a.holder, a.subject, a.grantee);
        bytes memory scope = abi.encode(a.dataset, a.fieldMask, a.tier, a.scenario, a.expiresAt, a.multiUse);
        return _hashTypedDataV4(keccak256(bytes.concat(head, scope)));
    }

    function _revocationDigest(bytes32 codeHash, uint64 deadline) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(AUTHORIZATION_REVOCATION_TYPEHASH, codeHash, deadline)));
    }

    function _holderSubject(OrgId holder, bytes32 subject) private pure returns (bytes32) {
        return keccak256(abi.encode(holder, subject));
    }

    function _consentId(OrgId holder, bytes32 subject, uint256 sequence) private pure returns (bytes32) {
        return keccak256(abi.encode(holder, subject, sequence));
    }
}

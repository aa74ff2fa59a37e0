// Solidity enum values, in declaration order (solidity/contracts/types/DataUse.sol).
const enumOf = (...names) => Object.freeze(Object.fromEntries(names.map((name, i) => [name, i])));

module.exports = {
  OrgKind: enumOf("HOSPITAL", "RESEARCH", "AI_COMPANY", "INSURER", "REGULATOR"),
  OrgStatus: enumOf("NONE", "ACTIVE", "SUSPENDED"),
  Role: enumOf("STEWARD", "REQUESTER", "GATEWAY", "REGULATOR"),
  Tier: enumOf("AGGREGATE", "MODEL_PARAMETERS", "DEIDENTIFIED", "PSEUDONYMIZED", "IDENTIFIED"),
  Scenario: enumOf("CLINICAL_CARE", "RESEARCH", "AI_TRAINING", "TEACHING", "INSURANCE_CLAIM"),
  Operation: enumOf("QUERY", "TRAIN", "EXPORT_RESULT"),
  ConsentPolicy: enumOf("NONE", "COHORT_CONSENT", "PATIENT_AUTHORIZATION"),
  AgreementStatus: enumOf("NONE", "PROPOSED", "ACTIVE", "SUSPENDED", "REVOKED", "EXPIRED", "SUPERSEDED"),
  Decision: enumOf("NONE", "GRANTED", "DENIED"),
  DenyReason: enumOf(
    "NONE",
    "AGREEMENT_NOT_ACTIVE",
    "OUTSIDE_WINDOW",
    "DATASET_NOT_IN_SCOPE",
    "FIELDS_NOT_IN_SCOPE",
    "TIER_ABOVE_CEILING",
    "OPERATION_NOT_ALLOWED",
    "QUOTA_EXHAUSTED",
    "REQUESTER_NOT_AUTHORIZED",
    "CONSENT_MISSING",
    "AUTHORIZATION_INVALID",
    "POLICY_OTHER",
  ),
  ReleaseKind: enumOf(
    "AGGREGATE_RESULT",
    "MODEL_UPDATE",
    "DEIDENTIFIED_EXTRACT",
    "PSEUDONYMIZED_EXTRACT",
    "IDENTIFIED_EXTRACT",
  ),
  Party: enumOf("HOLDER", "REQUESTER"),
};

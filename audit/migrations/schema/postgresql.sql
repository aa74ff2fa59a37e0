-- revision: 0015
-- What the migrations build on an empty database, written from them (dul/schema_snapshot.py), never by hand.

CREATE TABLE access_event (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    access_id character varying NOT NULL,
    tx_hash character varying NOT NULL,
    agreement_id character varying NOT NULL,
    dataset_id character varying NOT NULL,
    requester character varying NOT NULL,
    recorder character varying NOT NULL,
    decision integer NOT NULL,
    reason integer NOT NULL,
    tier integer NOT NULL,
    operation integer NOT NULL,
    field_mask character varying NOT NULL,
    request_hash character varying NOT NULL,
    cohort_root character varying NOT NULL,
    cohort_size bigint NOT NULL,
    authorization_ref character varying NOT NULL,
    deadline numeric(78,0) NOT NULL,
    sig_r character varying NOT NULL,
    sig_s character varying NOT NULL,
    sig_v integer NOT NULL
);

CREATE TABLE agreement (
    agreement_id character varying NOT NULL,
    version numeric(78,0) NOT NULL,
    previous_id character varying,
    holder_org character varying NOT NULL,
    requester_org character varying NOT NULL,
    digest character varying NOT NULL,
    scenario integer NOT NULL,
    duo_codes jsonb NOT NULL,
    disease_code character varying NOT NULL,
    ethics_approval character varying NOT NULL,
    max_tier integer NOT NULL,
    operations integer NOT NULL,
    valid_from numeric(78,0) NOT NULL,
    valid_until numeric(78,0) NOT NULL,
    quota numeric(78,0) NOT NULL,
    consent_policy integer NOT NULL,
    terms_hash character varying NOT NULL,
    nonce character varying NOT NULL,
    deadline numeric(78,0) NOT NULL,
    status integer NOT NULL,
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    tx_hash character varying NOT NULL,
    break_glass_review_hours integer DEFAULT 0 NOT NULL
);

CREATE TABLE agreement_dataset (
    agreement_id character varying NOT NULL,
    dataset_id character varying NOT NULL,
    field_mask character varying NOT NULL,
    block_number bigint NOT NULL
);

CREATE TABLE agreement_signature (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    agreement_id character varying NOT NULL,
    signer character varying NOT NULL,
    party integer NOT NULL,
    signature character varying NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE agreement_status_change (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    agreement_id character varying NOT NULL,
    event character varying NOT NULL,
    status integer NOT NULL,
    by_account character varying,
    reason character varying,
    related_agreement character varying,
    tx_hash character varying NOT NULL
);

CREATE TABLE artifact (
    artifact_id character varying NOT NULL,
    owner_org character varying NOT NULL,
    kind integer NOT NULL,
    metadata_hash character varying NOT NULL,
    registrant character varying NOT NULL,
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE artifact_parent (
    artifact_id character varying NOT NULL,
    parent_id character varying NOT NULL,
    block_number bigint NOT NULL
);

CREATE TABLE artifact_release_parent (
    artifact_id character varying NOT NULL,
    access_id character varying NOT NULL,
    result_hash character varying NOT NULL,
    agreement_id character varying NOT NULL,
    block_number bigint NOT NULL
);

CREATE TABLE audit_alembic_version (
    version_num character varying(32) NOT NULL
);

CREATE TABLE authorization_redemption (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    code_hash character varying NOT NULL,
    access_id character varying NOT NULL,
    grantee_org character varying NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE authorization_revocation (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    code_hash character varying NOT NULL,
    holder_org character varying NOT NULL,
    by_account character varying NOT NULL,
    tx_hash character varying NOT NULL,
    by_subject boolean DEFAULT false NOT NULL
);

CREATE TABLE block (
    number bigint NOT NULL,
    hash character varying NOT NULL,
    parent_hash character varying,
    "timestamp" numeric(78,0),
    events integer NOT NULL
);

CREATE TABLE break_glass_access (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    access_id character varying NOT NULL,
    agreement_id character varying NOT NULL,
    holder_org character varying NOT NULL,
    reason integer NOT NULL,
    review_due numeric(78,0) NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE break_glass_review (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    access_id character varying NOT NULL,
    agreement_id character varying NOT NULL,
    holder_org character varying NOT NULL,
    outcome integer NOT NULL,
    reviewer character varying NOT NULL,
    finding_hash character varying NOT NULL,
    review_due numeric(78,0) NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE checkpoint (
    id integer NOT NULL,
    chain_id bigint NOT NULL,
    contracts jsonb NOT NULL,
    block_number bigint NOT NULL,
    block_hash character varying NOT NULL
);

CREATE TABLE cohort (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    access_id character varying NOT NULL,
    status character varying NOT NULL,
    source character varying,
    leaves bigint NOT NULL,
    found_root character varying,
    consented bigint
);

CREATE TABLE cohort_member (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    leaf_index bigint NOT NULL,
    subject_ref character varying NOT NULL,
    access_id character varying NOT NULL,
    proof bytea NOT NULL
);

CREATE TABLE consent (
    consent_id character varying NOT NULL,
    holder_org character varying NOT NULL,
    subject character varying NOT NULL,
    scenarios integer NOT NULL,
    duo_codes jsonb NOT NULL,
    valid_from numeric(78,0) NOT NULL,
    valid_until numeric(78,0) NOT NULL,
    subject_key character varying NOT NULL,
    recorder character varying NOT NULL,
    status integer NOT NULL,
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    tx_hash character varying NOT NULL,
    disease_code character varying DEFAULT '0x0000000000000000000000000000000000000000000000000000000000000000'::character varying NOT NULL,
    studies character varying DEFAULT ''::character varying NOT NULL,
    requesters character varying DEFAULT ''::character varying NOT NULL,
    by_subject boolean DEFAULT false NOT NULL
);

CREATE TABLE consent_withdrawal (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    consent_id character varying NOT NULL,
    holder_org character varying NOT NULL,
    subject character varying NOT NULL,
    by_account character varying NOT NULL,
    by_subject boolean NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE dataset (
    dataset_id character varying NOT NULL,
    holder_org character varying NOT NULL,
    schema_ref character varying NOT NULL,
    max_tier integer NOT NULL,
    field_count integer NOT NULL,
    fields jsonb NOT NULL,
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE event (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    tx_hash character varying NOT NULL,
    block_hash character varying NOT NULL,
    contract character varying NOT NULL,
    address character varying NOT NULL,
    name character varying NOT NULL,
    args json NOT NULL
);

CREATE TABLE member_role (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    org_id character varying NOT NULL,
    account character varying NOT NULL,
    role integer NOT NULL,
    granted boolean NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE organization (
    org_id character varying NOT NULL,
    kind integer NOT NULL,
    name character varying NOT NULL,
    status integer NOT NULL,
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE organization_status_change (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    org_id character varying NOT NULL,
    status integer NOT NULL,
    by_account character varying NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE patient_authorization (
    code_hash character varying NOT NULL,
    holder_org character varying NOT NULL,
    subject character varying NOT NULL,
    grantee_org character varying NOT NULL,
    dataset_id character varying NOT NULL,
    field_mask character varying NOT NULL,
    tier integer NOT NULL,
    scenario integer NOT NULL,
    expires_at numeric(78,0) NOT NULL,
    issuer character varying NOT NULL,
    status integer NOT NULL,
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    tx_hash character varying NOT NULL,
    issued_by_subject boolean DEFAULT false NOT NULL,
    multi_use boolean DEFAULT false NOT NULL
);

CREATE TABLE quarantined_event (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    block_hash character varying NOT NULL,
    tx_hash character varying NOT NULL,
    address character varying NOT NULL,
    stage character varying NOT NULL,
    error character varying NOT NULL,
    log jsonb NOT NULL,
    detected_at double precision NOT NULL
);

CREATE TABLE reorg (
    id integer NOT NULL,
    detected_at double precision NOT NULL,
    checkpoint_number bigint NOT NULL,
    checkpoint_hash character varying NOT NULL,
    node_hash character varying,
    ancestor_number bigint NOT NULL,
    removed_events integer NOT NULL,
    ancestor_hash character varying,
    vanished jsonb,
    acknowledged_at double precision,
    acknowledged_by character varying,
    acknowledged_reason character varying
);

CREATE SEQUENCE reorg_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE reorg_id_seq OWNED BY reorg.id;

CREATE TABLE result_release (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    access_id character varying NOT NULL,
    agreement_id character varying NOT NULL,
    result_hash character varying NOT NULL,
    kind integer NOT NULL,
    size numeric(78,0) NOT NULL,
    recorder character varying NOT NULL,
    tx_hash character varying NOT NULL
);

CREATE TABLE subject_key (
    block_number bigint NOT NULL,
    tx_index integer NOT NULL,
    log_index integer NOT NULL,
    holder_org character varying NOT NULL,
    subject character varying NOT NULL,
    key character varying NOT NULL,
    previous character varying NOT NULL,
    by_account character varying NOT NULL,
    tx_hash character varying NOT NULL
);

ALTER TABLE ONLY reorg ALTER COLUMN id SET DEFAULT nextval('reorg_id_seq'::regclass);

ALTER TABLE ONLY access_event
    ADD CONSTRAINT access_event_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY agreement_dataset
    ADD CONSTRAINT agreement_dataset_pkey PRIMARY KEY (agreement_id, dataset_id);

ALTER TABLE ONLY agreement
    ADD CONSTRAINT agreement_pkey PRIMARY KEY (agreement_id);

ALTER TABLE ONLY agreement_signature
    ADD CONSTRAINT agreement_signature_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY agreement_status_change
    ADD CONSTRAINT agreement_status_change_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY artifact_parent
    ADD CONSTRAINT artifact_parent_pkey PRIMARY KEY (artifact_id, parent_id);

ALTER TABLE ONLY artifact
    ADD CONSTRAINT artifact_pkey PRIMARY KEY (artifact_id);

ALTER TABLE ONLY artifact_release_parent
    ADD CONSTRAINT artifact_release_parent_pkey PRIMARY KEY (artifact_id, access_id, result_hash, agreement_id);

ALTER TABLE ONLY audit_alembic_version
    ADD CONSTRAINT audit_alembic_version_pkc PRIMARY KEY (version_num);

ALTER TABLE ONLY authorization_redemption
    ADD CONSTRAINT authorization_redemption_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY authorization_revocation
    ADD CONSTRAINT authorization_revocation_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY block
    ADD CONSTRAINT block_pkey PRIMARY KEY (number);

ALTER TABLE ONLY break_glass_access
    ADD CONSTRAINT break_glass_access_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY break_glass_review
    ADD CONSTRAINT break_glass_review_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY checkpoint
    ADD CONSTRAINT checkpoint_pkey PRIMARY KEY (id);

ALTER TABLE ONLY cohort_member
    ADD CONSTRAINT cohort_member_pkey PRIMARY KEY (block_number, tx_index, log_index, leaf_index);

ALTER TABLE ONLY cohort
    ADD CONSTRAINT cohort_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY consent
    ADD CONSTRAINT consent_pkey PRIMARY KEY (consent_id);

ALTER TABLE ONLY consent_withdrawal
    ADD CONSTRAINT consent_withdrawal_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY dataset
    ADD CONSTRAINT dataset_pkey PRIMARY KEY (dataset_id);

ALTER TABLE ONLY event
    ADD CONSTRAINT event_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY member_role
    ADD CONSTRAINT member_role_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY organization
    ADD CONSTRAINT organization_pkey PRIMARY KEY (org_id);

ALTER TABLE ONLY organization_status_change
    ADD CONSTRAINT organization_status_change_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY patient_authorization
    ADD CONSTRAINT patient_authorization_pkey PRIMARY KEY (code_hash);

ALTER TABLE ONLY quarantined_event
    ADD CONSTRAINT quarantined_event_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY reorg
    ADD CONSTRAINT reorg_pkey PRIMARY KEY (id);

ALTER TABLE ONLY result_release
    ADD CONSTRAINT result_release_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY subject_key
    ADD CONSTRAINT subject_key_pkey PRIMARY KEY (block_number, tx_index, log_index);

ALTER TABLE ONLY access_event
    ADD CONSTRAINT uq_access_event_access_agreement UNIQUE (access_id, agreement_id);

CREATE INDEX ix_access_event_agreement_id_position ON access_event USING btree (agreement_id, block_number, tx_index, log_index);

CREATE INDEX ix_access_event_dataset_id_position ON access_event USING btree (dataset_id, block_number, tx_index, log_index);

CREATE INDEX ix_access_event_requester_position ON access_event USING btree (requester, block_number, tx_index, log_index);

CREATE INDEX ix_agreement_block_number ON agreement USING btree (block_number);

CREATE INDEX ix_agreement_dataset_block_number ON agreement_dataset USING btree (block_number);

CREATE INDEX ix_agreement_dataset_dataset_id ON agreement_dataset USING btree (dataset_id);

CREATE INDEX ix_agreement_holder_org ON agreement USING btree (holder_org);

CREATE INDEX ix_agreement_previous_id ON agreement USING btree (previous_id);

CREATE INDEX ix_agreement_requester_org ON agreement USING btree (requester_org);

CREATE INDEX ix_agreement_signature_agreement_id ON agreement_signature USING btree (agreement_id);

CREATE INDEX ix_agreement_signature_signer ON agreement_signature USING btree (signer);

CREATE INDEX ix_agreement_status ON agreement USING btree (status);

CREATE INDEX ix_agreement_status_change_agreement_id ON agreement_status_change USING btree (agreement_id);

CREATE INDEX ix_artifact_block_number ON artifact USING btree (block_number);

CREATE INDEX ix_artifact_owner_org ON artifact USING btree (owner_org);

CREATE INDEX ix_artifact_parent_block_number ON artifact_parent USING btree (block_number);

CREATE INDEX ix_artifact_parent_parent_id ON artifact_parent USING btree (parent_id);

CREATE INDEX ix_artifact_release_parent_access_id ON artifact_release_parent USING btree (access_id);

CREATE INDEX ix_artifact_release_parent_agreement_id ON artifact_release_parent USING btree (agreement_id);

CREATE INDEX ix_artifact_release_parent_block_number ON artifact_release_parent USING btree (block_number);

CREATE INDEX ix_artifact_release_parent_result_hash ON artifact_release_parent USING btree (result_hash);

CREATE INDEX ix_authorization_redemption_access_id ON authorization_redemption USING btree (access_id);

CREATE INDEX ix_authorization_redemption_code_hash ON authorization_redemption USING btree (code_hash);

CREATE INDEX ix_authorization_revocation_code_hash ON authorization_revocation USING btree (code_hash);

CREATE INDEX ix_break_glass_access_access_id ON break_glass_access USING btree (access_id);

CREATE INDEX ix_break_glass_access_agreement_id ON break_glass_access USING btree (agreement_id);

CREATE INDEX ix_break_glass_access_holder_org ON break_glass_access USING btree (holder_org);

CREATE INDEX ix_break_glass_review_access_id ON break_glass_review USING btree (access_id);

CREATE INDEX ix_cohort_member_subject_position ON cohort_member USING btree (subject_ref, block_number, tx_index, log_index);

CREATE INDEX ix_consent_block_number ON consent USING btree (block_number);

CREATE INDEX ix_consent_subject ON consent USING btree (subject);

CREATE INDEX ix_consent_withdrawal_consent_id ON consent_withdrawal USING btree (consent_id);

CREATE INDEX ix_dataset_block_number ON dataset USING btree (block_number);

CREATE INDEX ix_dataset_holder_org ON dataset USING btree (holder_org);

CREATE INDEX ix_member_role_account ON member_role USING btree (account);

CREATE INDEX ix_member_role_org_id ON member_role USING btree (org_id);

CREATE INDEX ix_organization_block_number ON organization USING btree (block_number);

CREATE INDEX ix_organization_status ON organization USING btree (status);

CREATE INDEX ix_organization_status_change_org_id ON organization_status_change USING btree (org_id);

CREATE INDEX ix_patient_authorization_block_number ON patient_authorization USING btree (block_number);

CREATE INDEX ix_patient_authorization_subject ON patient_authorization USING btree (subject);

CREATE INDEX ix_result_release_access_id ON result_release USING btree (access_id);

CREATE INDEX ix_result_release_agreement_id ON result_release USING btree (agreement_id);

CREATE INDEX ix_result_release_result_hash ON result_release USING btree (result_hash);

CREATE INDEX ix_subject_key_subject ON subject_key USING btree (subject);

INSERT INTO audit_alembic_version (version_num) VALUES ('0015');


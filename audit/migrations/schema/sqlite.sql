-- revision: 0015
-- What the migrations build on an empty database, written from them (dul/schema_snapshot.py), never by hand.

CREATE TABLE "access_event" (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	access_id VARCHAR NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	agreement_id VARCHAR NOT NULL, 
	dataset_id VARCHAR NOT NULL, 
	requester VARCHAR NOT NULL, 
	recorder VARCHAR NOT NULL, 
	decision INTEGER NOT NULL, 
	reason INTEGER NOT NULL, 
	tier INTEGER NOT NULL, 
	operation INTEGER NOT NULL, 
	field_mask VARCHAR NOT NULL, 
	request_hash VARCHAR NOT NULL, 
	cohort_root VARCHAR NOT NULL, 
	cohort_size BIGINT NOT NULL, 
	authorization_ref VARCHAR NOT NULL, 
	deadline UNSIGNED BLOB NOT NULL, 
	sig_r VARCHAR NOT NULL, 
	sig_s VARCHAR NOT NULL, 
	sig_v INTEGER NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index), 
	CONSTRAINT uq_access_event_access_agreement UNIQUE (access_id, agreement_id)
);

CREATE TABLE "agreement" (
	agreement_id VARCHAR NOT NULL, 
	version UNSIGNED BLOB NOT NULL, 
	previous_id VARCHAR, 
	holder_org VARCHAR NOT NULL, 
	requester_org VARCHAR NOT NULL, 
	digest VARCHAR NOT NULL, 
	scenario INTEGER NOT NULL, 
	duo_codes JSON NOT NULL, 
	disease_code VARCHAR NOT NULL, 
	ethics_approval VARCHAR NOT NULL, 
	max_tier INTEGER NOT NULL, 
	operations INTEGER NOT NULL, 
	valid_from UNSIGNED BLOB NOT NULL, 
	valid_until UNSIGNED BLOB NOT NULL, 
	quota UNSIGNED BLOB NOT NULL, 
	consent_policy INTEGER NOT NULL, 
	terms_hash VARCHAR NOT NULL, 
	nonce VARCHAR NOT NULL, 
	deadline UNSIGNED BLOB NOT NULL, 
	status INTEGER NOT NULL, 
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	tx_hash VARCHAR NOT NULL, break_glass_review_hours INTEGER DEFAULT '0' NOT NULL, 
	PRIMARY KEY (agreement_id)
);

CREATE TABLE agreement_dataset (
	agreement_id VARCHAR NOT NULL, 
	dataset_id VARCHAR NOT NULL, 
	field_mask VARCHAR NOT NULL, 
	block_number BIGINT NOT NULL, 
	PRIMARY KEY (agreement_id, dataset_id)
);

CREATE TABLE agreement_signature (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	agreement_id VARCHAR NOT NULL, 
	signer VARCHAR NOT NULL, 
	party INTEGER NOT NULL, 
	signature VARCHAR NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE agreement_status_change (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	agreement_id VARCHAR NOT NULL, 
	event VARCHAR NOT NULL, 
	status INTEGER NOT NULL, 
	by_account VARCHAR, 
	reason VARCHAR, 
	related_agreement VARCHAR, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE artifact (
	artifact_id VARCHAR NOT NULL, 
	owner_org VARCHAR NOT NULL, 
	kind INTEGER NOT NULL, 
	metadata_hash VARCHAR NOT NULL, 
	registrant VARCHAR NOT NULL, 
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (artifact_id)
);

CREATE TABLE artifact_parent (
	artifact_id VARCHAR NOT NULL, 
	parent_id VARCHAR NOT NULL, 
	block_number BIGINT NOT NULL, 
	PRIMARY KEY (artifact_id, parent_id)
);

CREATE TABLE "artifact_release_parent" (
	artifact_id VARCHAR NOT NULL, 
	access_id VARCHAR NOT NULL, 
	result_hash VARCHAR NOT NULL, 
	agreement_id VARCHAR NOT NULL, 
	block_number BIGINT NOT NULL, 
	CONSTRAINT pk_artifact_release_parent PRIMARY KEY (artifact_id, access_id, result_hash, agreement_id)
);

CREATE TABLE audit_alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT audit_alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE authorization_redemption (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	code_hash VARCHAR NOT NULL, 
	access_id VARCHAR NOT NULL, 
	grantee_org VARCHAR NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE authorization_revocation (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	code_hash VARCHAR NOT NULL, 
	holder_org VARCHAR NOT NULL, 
	by_account VARCHAR NOT NULL, 
	tx_hash VARCHAR NOT NULL, by_subject BOOLEAN DEFAULT 0 NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE "block" (
	number BIGINT NOT NULL, 
	hash VARCHAR NOT NULL, 
	parent_hash VARCHAR, 
	timestamp UNSIGNED BLOB, 
	events INTEGER NOT NULL, 
	PRIMARY KEY (number)
);

CREATE TABLE break_glass_access (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	access_id VARCHAR NOT NULL, 
	agreement_id VARCHAR NOT NULL, 
	holder_org VARCHAR NOT NULL, 
	reason INTEGER NOT NULL, 
	review_due UNSIGNED BLOB NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE break_glass_review (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	access_id VARCHAR NOT NULL, 
	agreement_id VARCHAR NOT NULL, 
	holder_org VARCHAR NOT NULL, 
	outcome INTEGER NOT NULL, 
	reviewer VARCHAR NOT NULL, 
	finding_hash VARCHAR NOT NULL, 
	review_due UNSIGNED BLOB NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE checkpoint (
	id INTEGER NOT NULL, 
	chain_id BIGINT NOT NULL, 
	contracts JSON NOT NULL, 
	block_number BIGINT NOT NULL, 
	block_hash VARCHAR NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE "cohort" (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	access_id VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	source VARCHAR, 
	leaves BIGINT NOT NULL, 
	found_root VARCHAR, 
	consented BIGINT, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE cohort_member (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	leaf_index BIGINT NOT NULL, 
	subject_ref VARCHAR NOT NULL, 
	access_id VARCHAR NOT NULL, 
	proof BLOB NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index, leaf_index)
);

CREATE TABLE "consent" (
	consent_id VARCHAR NOT NULL, 
	holder_org VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	scenarios INTEGER NOT NULL, 
	duo_codes JSON NOT NULL, 
	valid_from UNSIGNED BLOB NOT NULL, 
	valid_until UNSIGNED BLOB NOT NULL, 
	subject_key VARCHAR NOT NULL, 
	recorder VARCHAR NOT NULL, 
	status INTEGER NOT NULL, 
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	tx_hash VARCHAR NOT NULL, disease_code VARCHAR DEFAULT '0x0000000000000000000000000000000000000000000000000000000000000000' NOT NULL, studies VARCHAR DEFAULT '' NOT NULL, requesters VARCHAR DEFAULT '' NOT NULL, by_subject BOOLEAN DEFAULT 0 NOT NULL, 
	PRIMARY KEY (consent_id)
);

CREATE TABLE consent_withdrawal (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	consent_id VARCHAR NOT NULL, 
	holder_org VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	by_account VARCHAR NOT NULL, 
	by_subject BOOLEAN NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE dataset (
	dataset_id VARCHAR NOT NULL, 
	holder_org VARCHAR NOT NULL, 
	schema_ref VARCHAR NOT NULL, 
	max_tier INTEGER NOT NULL, 
	field_count INTEGER NOT NULL, 
	fields JSON NOT NULL, 
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (dataset_id)
);

CREATE TABLE event (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	block_hash VARCHAR NOT NULL, 
	contract VARCHAR NOT NULL, 
	address VARCHAR NOT NULL, 
	name VARCHAR NOT NULL, 
	args JSON NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE member_role (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	org_id VARCHAR NOT NULL, 
	account VARCHAR NOT NULL, 
	role INTEGER NOT NULL, 
	granted BOOLEAN NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE organization (
	org_id VARCHAR NOT NULL, 
	kind INTEGER NOT NULL, 
	name VARCHAR NOT NULL, 
	status INTEGER NOT NULL, 
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (org_id)
);

CREATE TABLE organization_status_change (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	org_id VARCHAR NOT NULL, 
	status INTEGER NOT NULL, 
	by_account VARCHAR NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE "patient_authorization" (
	code_hash VARCHAR NOT NULL, 
	holder_org VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	grantee_org VARCHAR NOT NULL, 
	dataset_id VARCHAR NOT NULL, 
	field_mask VARCHAR NOT NULL, 
	tier INTEGER NOT NULL, 
	scenario INTEGER NOT NULL, 
	expires_at UNSIGNED BLOB NOT NULL, 
	issuer VARCHAR NOT NULL, 
	status INTEGER NOT NULL, 
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	tx_hash VARCHAR NOT NULL, issued_by_subject BOOLEAN DEFAULT 0 NOT NULL, multi_use BOOLEAN DEFAULT 0 NOT NULL, 
	PRIMARY KEY (code_hash)
);

CREATE TABLE quarantined_event (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	block_hash VARCHAR NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	address VARCHAR NOT NULL, 
	stage VARCHAR NOT NULL, 
	error VARCHAR NOT NULL, 
	log JSON NOT NULL, 
	detected_at FLOAT NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE reorg (
	id INTEGER NOT NULL, 
	detected_at FLOAT NOT NULL, 
	checkpoint_number BIGINT NOT NULL, 
	checkpoint_hash VARCHAR NOT NULL, 
	node_hash VARCHAR, 
	ancestor_number BIGINT NOT NULL, 
	removed_events INTEGER NOT NULL, ancestor_hash VARCHAR, vanished JSON, acknowledged_at FLOAT, acknowledged_by VARCHAR, acknowledged_reason VARCHAR, 
	PRIMARY KEY (id)
);

CREATE TABLE "result_release" (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	access_id VARCHAR NOT NULL, 
	agreement_id VARCHAR NOT NULL, 
	result_hash VARCHAR NOT NULL, 
	kind INTEGER NOT NULL, 
	size UNSIGNED BLOB NOT NULL, 
	recorder VARCHAR NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE TABLE subject_key (
	block_number BIGINT NOT NULL, 
	tx_index INTEGER NOT NULL, 
	log_index INTEGER NOT NULL, 
	holder_org VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	"key" VARCHAR NOT NULL, 
	previous VARCHAR NOT NULL, 
	by_account VARCHAR NOT NULL, 
	tx_hash VARCHAR NOT NULL, 
	PRIMARY KEY (block_number, tx_index, log_index)
);

CREATE INDEX ix_access_event_agreement_id_position ON access_event (agreement_id, block_number, tx_index, log_index);

CREATE INDEX ix_access_event_dataset_id_position ON access_event (dataset_id, block_number, tx_index, log_index);

CREATE INDEX ix_access_event_requester_position ON access_event (requester, block_number, tx_index, log_index);

CREATE INDEX ix_agreement_block_number ON agreement (block_number);

CREATE INDEX ix_agreement_dataset_block_number ON agreement_dataset (block_number);

CREATE INDEX ix_agreement_dataset_dataset_id ON agreement_dataset (dataset_id);

CREATE INDEX ix_agreement_holder_org ON agreement (holder_org);

CREATE INDEX ix_agreement_previous_id ON agreement (previous_id);

CREATE INDEX ix_agreement_requester_org ON agreement (requester_org);

CREATE INDEX ix_agreement_signature_agreement_id ON agreement_signature (agreement_id);

CREATE INDEX ix_agreement_signature_signer ON agreement_signature (signer);

CREATE INDEX ix_agreement_status ON agreement (status);

CREATE INDEX ix_agreement_status_change_agreement_id ON agreement_status_change (agreement_id);

CREATE INDEX ix_artifact_block_number ON artifact (block_number);

CREATE INDEX ix_artifact_owner_org ON artifact (owner_org);

CREATE INDEX ix_artifact_parent_block_number ON artifact_parent (block_number);

CREATE INDEX ix_artifact_parent_parent_id ON artifact_parent (parent_id);

CREATE INDEX ix_artifact_release_parent_access_id ON artifact_release_parent (access_id);

CREATE INDEX ix_artifact_release_parent_agreement_id ON artifact_release_parent (agreement_id);

CREATE INDEX ix_artifact_release_parent_block_number ON artifact_release_parent (block_number);

CREATE INDEX ix_artifact_release_parent_result_hash ON artifact_release_parent (result_hash);

CREATE INDEX ix_authorization_redemption_access_id ON authorization_redemption (access_id);

CREATE INDEX ix_authorization_redemption_code_hash ON authorization_redemption (code_hash);

CREATE INDEX ix_authorization_revocation_code_hash ON authorization_revocation (code_hash);

CREATE INDEX ix_break_glass_access_access_id ON break_glass_access (access_id);

CREATE INDEX ix_break_glass_access_agreement_id ON break_glass_access (agreement_id);

CREATE INDEX ix_break_glass_access_holder_org ON break_glass_access (holder_org);

CREATE INDEX ix_break_glass_review_access_id ON break_glass_review (access_id);

CREATE INDEX ix_cohort_member_subject_position ON cohort_member (subject_ref, block_number, tx_index, log_index);

CREATE INDEX ix_consent_block_number ON consent (block_number);

CREATE INDEX ix_consent_subject ON consent (subject);

CREATE INDEX ix_consent_withdrawal_consent_id ON consent_withdrawal (consent_id);

CREATE INDEX ix_dataset_block_number ON dataset (block_number);

CREATE INDEX ix_dataset_holder_org ON dataset (holder_org);

CREATE INDEX ix_member_role_account ON member_role (account);

CREATE INDEX ix_member_role_org_id ON member_role (org_id);

CREATE INDEX ix_organization_block_number ON organization (block_number);

CREATE INDEX ix_organization_status ON organization (status);

CREATE INDEX ix_organization_status_change_org_id ON organization_status_change (org_id);

CREATE INDEX ix_patient_authorization_block_number ON patient_authorization (block_number);

CREATE INDEX ix_patient_authorization_subject ON patient_authorization (subject);

CREATE INDEX ix_result_release_access_id ON result_release (access_id);

CREATE INDEX ix_result_release_agreement_id ON result_release (agreement_id);

CREATE INDEX ix_result_release_result_hash ON result_release (result_hash);

CREATE INDEX ix_subject_key_subject ON subject_key (subject);

INSERT INTO audit_alembic_version (version_num) VALUES ('0015');


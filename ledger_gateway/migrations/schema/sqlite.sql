-- revision: 0008
-- What the migrations build on an empty database, written from them (dul/schema_snapshot.py), never by hand.

CREATE TABLE cohort_leaves (
	access_id BLOB NOT NULL, 
	root BLOB NOT NULL, 
	size INTEGER NOT NULL, 
	leaves BLOB NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (access_id)
);

CREATE TABLE gateway_alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT gateway_alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE gateway_code_reservations (
	code BLOB NOT NULL, 
	access_id BLOB NOT NULL, 
	PRIMARY KEY (code)
);

CREATE TABLE gateway_nonces (
	sender VARCHAR(42) NOT NULL, 
	next_nonce INTEGER NOT NULL, 
	PRIMARY KEY (sender)
);

CREATE TABLE gateway_operations (
	id INTEGER NOT NULL, 
	"key" BLOB NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	org BLOB NOT NULL, 
	agreement_id BLOB NOT NULL, 
	decision INTEGER, 
	reasons VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	payload BLOB NOT NULL, 
	body_hash BLOB NOT NULL, 
	tx_hash BLOB, 
	block_number INTEGER, 
	nonce INTEGER, 
	sender VARCHAR(42), 
	error VARCHAR(200), 
	attempts INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	confirmed_at FLOAT, authorization_fault INTEGER, 
	PRIMARY KEY (id)
);

CREATE TABLE gateway_quota_use (
	agreement_id BLOB NOT NULL, 
	used INTEGER NOT NULL, 
	PRIMARY KEY (agreement_id)
);

CREATE TABLE gateway_transaction_bodies (
	id INTEGER NOT NULL, 
	raw BLOB NOT NULL, 
	keys BLOB NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE "gateway_transactions" (
	id INTEGER NOT NULL, 
	sender VARCHAR(42) NOT NULL, 
	nonce INTEGER NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	tx_hash BLOB NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	block_number INTEGER, 
	block_hash BLOB, 
	mined_at FLOAT, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_gateway_transactions_nonce UNIQUE (sender, nonce)
);

CREATE UNIQUE INDEX ix_gateway_operations_key ON gateway_operations ("key");

CREATE INDEX ix_gateway_operations_pending ON gateway_operations (id) WHERE status = 'pending';

CREATE INDEX ix_gateway_operations_tx_hash ON gateway_operations (tx_hash) WHERE tx_hash IS NOT NULL;

CREATE INDEX ix_gateway_transactions_mined_at ON gateway_transactions (mined_at);

CREATE INDEX ix_gateway_transactions_status ON gateway_transactions (status);

CREATE UNIQUE INDEX ix_gateway_transactions_tx_hash ON gateway_transactions (tx_hash);

INSERT INTO gateway_alembic_version (version_num) VALUES ('0008');


-- revision: 0008
-- What the migrations build on an empty database, written from them (dul/schema_snapshot.py), never by hand.

CREATE TABLE cohort_leaves (
    access_id bytea NOT NULL,
    root bytea NOT NULL,
    size integer NOT NULL,
    leaves bytea NOT NULL,
    created_at double precision NOT NULL
);

CREATE TABLE gateway_alembic_version (
    version_num character varying(32) NOT NULL
);

CREATE TABLE gateway_code_reservations (
    code bytea NOT NULL,
    access_id bytea NOT NULL
);

CREATE TABLE gateway_nonces (
    sender character varying(42) NOT NULL,
    next_nonce integer NOT NULL
);

CREATE TABLE gateway_operations (
    id integer NOT NULL,
    key bytea NOT NULL,
    kind character varying(16) NOT NULL,
    org bytea NOT NULL,
    agreement_id bytea NOT NULL,
    decision integer,
    reasons character varying(64) NOT NULL,
    status character varying(16) NOT NULL,
    payload bytea NOT NULL,
    body_hash bytea NOT NULL,
    tx_hash bytea,
    block_number integer,
    nonce integer,
    sender character varying(42),
    error character varying(200),
    attempts integer NOT NULL,
    created_at double precision NOT NULL,
    confirmed_at double precision,
    authorization_fault integer
);

CREATE SEQUENCE gateway_operations_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE gateway_operations_id_seq OWNED BY gateway_operations.id;

CREATE TABLE gateway_quota_use (
    agreement_id bytea NOT NULL,
    used integer NOT NULL
);

CREATE TABLE gateway_transaction_bodies (
    id integer NOT NULL,
    raw bytea NOT NULL,
    keys bytea NOT NULL
);

CREATE TABLE gateway_transactions (
    id integer NOT NULL,
    sender character varying(42) NOT NULL,
    nonce integer NOT NULL,
    kind character varying(16) NOT NULL,
    tx_hash bytea NOT NULL,
    status character varying(16) NOT NULL,
    attempts integer NOT NULL,
    created_at double precision NOT NULL,
    block_number integer,
    block_hash bytea,
    mined_at double precision
);

CREATE SEQUENCE gateway_transactions_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE gateway_transactions_id_seq OWNED BY gateway_transactions.id;

ALTER TABLE ONLY gateway_operations ALTER COLUMN id SET DEFAULT nextval('gateway_operations_id_seq'::regclass);

ALTER TABLE ONLY gateway_transactions ALTER COLUMN id SET DEFAULT nextval('gateway_transactions_id_seq'::regclass);

ALTER TABLE ONLY cohort_leaves
    ADD CONSTRAINT cohort_leaves_pkey PRIMARY KEY (access_id);

ALTER TABLE ONLY gateway_alembic_version
    ADD CONSTRAINT gateway_alembic_version_pkc PRIMARY KEY (version_num);

ALTER TABLE ONLY gateway_code_reservations
    ADD CONSTRAINT gateway_code_reservations_pkey PRIMARY KEY (code);

ALTER TABLE ONLY gateway_nonces
    ADD CONSTRAINT gateway_nonces_pkey PRIMARY KEY (sender);

ALTER TABLE ONLY gateway_operations
    ADD CONSTRAINT gateway_operations_pkey PRIMARY KEY (id);

ALTER TABLE ONLY gateway_quota_use
    ADD CONSTRAINT gateway_quota_use_pkey PRIMARY KEY (agreement_id);

ALTER TABLE ONLY gateway_transaction_bodies
    ADD CONSTRAINT gateway_transaction_bodies_pkey PRIMARY KEY (id);

ALTER TABLE ONLY gateway_transactions
    ADD CONSTRAINT gateway_transactions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY gateway_transactions
    ADD CONSTRAINT uq_gateway_transactions_nonce UNIQUE (sender, nonce);

CREATE UNIQUE INDEX ix_gateway_operations_key ON gateway_operations USING btree (key);

CREATE INDEX ix_gateway_operations_pending ON gateway_operations USING btree (id) WHERE ((status)::text = 'pending'::text);

CREATE INDEX ix_gateway_operations_tx_hash ON gateway_operations USING btree (tx_hash) WHERE (tx_hash IS NOT NULL);

CREATE INDEX ix_gateway_transactions_mined_at ON gateway_transactions USING btree (mined_at);

CREATE INDEX ix_gateway_transactions_status ON gateway_transactions USING btree (status);

CREATE UNIQUE INDEX ix_gateway_transactions_tx_hash ON gateway_transactions USING btree (tx_hash);

INSERT INTO gateway_alembic_version (version_num) VALUES ('0008');


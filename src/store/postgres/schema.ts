// The shared backend's schema in PostgreSQL 15+: the same tables, columns and rules as the
// embedded SQLite schema (src/store/migrations.ts; each step names its SQLite twin), so that rows read
// the same from either backend and `praxmail migrate` copies them column for column.
// Append only: never edit a migration that has shipped; schema_migrations records each one.
//
// Differences from SQLite, each on purpose:
// - Times stay ISO-8601 TEXT, as in SQLite: the core compares them as strings.
// - Sizes and counters are BIGINT (a file may pass 2 GiB); wrapped keys are BYTEA.
// - The audit triggers call a function that raises, as RAISE(ABORT) does in SQLite.

/** One schema step. */
export interface PgMigration {
  readonly version: number;
  readonly sql: string;
}

/** Every migration of the shared backend, in order. */
export const PG_MIGRATIONS: readonly PgMigration[] = [
  {
    version: 1,
    sql: `
CREATE TABLE patients (
  email           TEXT PRIMARY KEY,
  status          TEXT NOT NULL CHECK (status IN ('pending-secupass','pending-approval','approved','revoked')),
  password_hash   TEXT,
  kdf             TEXT,
  recipient       TEXT,
  safety_code     TEXT,
  registered_at   TEXT NOT NULL,
  secupass_at     TEXT,
  approved_at     TEXT,
  revoked_at      TEXT,
  pending_kdf     TEXT,
  invited_at      TEXT,
  approval        TEXT,
  invite_id       TEXT,
  invite_session  TEXT,
  alarmed_at      TEXT
);

CREATE TABLE deliveries (
  id             TEXT PRIMARY KEY,
  recipient      TEXT NOT NULL,
  level          INTEGER NOT NULL CHECK (level BETWEEN 1 AND 4),
  status         TEXT NOT NULL CHECK (status IN ('pending-approval','ready','downloaded','expired','revoked')),
  subject        TEXT,
  sender         TEXT,
  created_at     TEXT NOT NULL,
  expires_at     TEXT NOT NULL,
  downloaded_at  TEXT,
  ended_at       TEXT,
  source_key     TEXT UNIQUE,
  sent_at        TEXT,
  reminded_at    TEXT
);
CREATE INDEX deliveries_recipient ON deliveries (recipient, status);
CREATE INDEX deliveries_expiry ON deliveries (status, expires_at);

CREATE TABLE files (
  id           TEXT PRIMARY KEY,
  delivery_id  TEXT NOT NULL REFERENCES deliveries (id),
  position     INTEGER NOT NULL,
  kind         TEXT NOT NULL CHECK (kind IN ('attachment','message')),
  name         TEXT NOT NULL,
  size         BIGINT NOT NULL,
  blob         TEXT UNIQUE,
  UNIQUE (delivery_id, position)
);

CREATE TABLE wraps (
  delivery_id  TEXT NOT NULL REFERENCES deliveries (id),
  holder       TEXT NOT NULL CHECK (holder IN ('practice','patient')),
  recipient    TEXT NOT NULL,
  ciphertext   BYTEA NOT NULL,
  created_at   TEXT NOT NULL,
  PRIMARY KEY (delivery_id, holder)
);

CREATE TABLE link_tokens (
  hash         TEXT PRIMARY KEY,
  delivery_id  TEXT NOT NULL REFERENCES deliveries (id),
  email        TEXT NOT NULL,
  created_at   TEXT NOT NULL
);
CREATE INDEX link_tokens_delivery ON link_tokens (delivery_id);

CREATE TABLE sessions (
  id_hash    TEXT PRIMARY KEY,
  email      TEXT,
  csrf       TEXT NOT NULL,
  created_at TEXT NOT NULL,
  last_seen  TEXT NOT NULL
);
CREATE INDEX sessions_email ON sessions (email);

CREATE TABLE reset_tokens (
  hash        TEXT PRIMARY KEY,
  email       TEXT NOT NULL,
  created_at  TEXT NOT NULL,
  expires_at  TEXT NOT NULL,
  used_at     TEXT
);

CREATE TABLE invites (
  id          TEXT PRIMARY KEY,
  email       TEXT NOT NULL,
  code_hash   TEXT NOT NULL,
  created_at  TEXT NOT NULL,
  expires_at  TEXT NOT NULL,
  used_at     TEXT,
  revoked_at  TEXT,
  sig         TEXT
);

CREATE TABLE replies (
  id           TEXT PRIMARY KEY,
  email        TEXT NOT NULL,
  delivery_id  TEXT,
  status       TEXT NOT NULL CHECK (status IN ('uploading','new','received')),
  created_at   TEXT NOT NULL,
  received_at  TEXT
);

CREATE TABLE reply_parts (
  reply_id  TEXT NOT NULL REFERENCES replies (id),
  position  INTEGER NOT NULL,
  kind      TEXT NOT NULL CHECK (kind IN ('message','file')),
  size      BIGINT NOT NULL,
  blob      TEXT NOT NULL UNIQUE,
  PRIMARY KEY (reply_id, position)
);

CREATE TABLE attempts (
  key    TEXT PRIMARY KEY,
  count  INTEGER NOT NULL,
  until  BIGINT NOT NULL
);

CREATE TABLE audit (
  seq        BIGINT PRIMARY KEY,
  at         TEXT NOT NULL,
  actor      TEXT NOT NULL,
  action     TEXT NOT NULL,
  subject    TEXT,
  details    TEXT NOT NULL,
  prev_hash  TEXT NOT NULL,
  hash       TEXT NOT NULL
);

CREATE TABLE audit_checkpoints (
  seq        BIGINT PRIMARY KEY,
  hash       TEXT NOT NULL,
  at         TEXT NOT NULL,
  signature  TEXT NOT NULL
);

CREATE FUNCTION praxmail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION praxmail_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION praxmail_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION praxmail_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION praxmail_append_only();
`,
  },
  {
    // The practice this database belongs to, as SQLite's migration 8.
    version: 2,
    sql: `
CREATE TABLE practice (
  id                  INTEGER PRIMARY KEY CHECK (id = 1),
  practice_email      TEXT NOT NULL,
  practice_recipient  TEXT NOT NULL,
  approval_key        TEXT NOT NULL,
  portal_key          TEXT NOT NULL,
  pinned_at           TEXT NOT NULL
);
`,
  },
  {
    // The patient's language (SQLite's migration 9).
    version: 3,
    sql: `
ALTER TABLE patients ADD COLUMN lang TEXT;
`,
  },
  {
    // One secret (SQLite's migration 10).
    version: 4,
    sql: `
ALTER TABLE patients ADD COLUMN credential_hash TEXT;
CREATE TABLE login_challenges (
  hash        TEXT PRIMARY KEY,
  email       TEXT NOT NULL,
  expires_at  TEXT NOT NULL,
  used_at     TEXT
);
`,
  },
  {
    // Passkeys and their challenges (SQLite's migration 11).
    version: 5,
    sql: `
CREATE TABLE passkeys (
  credential_id  TEXT PRIMARY KEY,
  email          TEXT NOT NULL,
  user_handle    TEXT NOT NULL,
  public_key     BYTEA NOT NULL,
  counter        BIGINT NOT NULL,
  transports     TEXT NOT NULL,
  label          TEXT NOT NULL,
  created_at     TEXT NOT NULL,
  last_used      TEXT,
  sealed         TEXT
);
CREATE INDEX passkeys_email ON passkeys (email);

CREATE TABLE passkey_challenges (
  challenge   TEXT PRIMARY KEY,
  kind        TEXT NOT NULL CHECK (kind IN ('register','login')),
  binding     TEXT NOT NULL,
  email       TEXT,
  user_handle TEXT,
  expires_at  TEXT NOT NULL
);
CREATE INDEX passkey_challenges_expiry ON passkey_challenges (expires_at);
`,
  },
  {
    // The pending KDF parameters of the reset from before one secret (SQLite's migration 12).
    version: 6,
    sql: `
ALTER TABLE patients DROP COLUMN pending_kdf;
`,
  },
];

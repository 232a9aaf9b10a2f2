// Numbered schema migrations. Append only: never edit a migration that has shipped.
// PRAGMA user_version holds the number of the last one applied.

/** One schema step. */
export interface Migration {
  readonly version: number;
  readonly sql: string;
}

/** Every migration, in order. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sql: `
CREATE TABLE patients (
  email          TEXT PRIMARY KEY,
  status         TEXT NOT NULL CHECK (status IN ('pending-secupass','pending-approval','approved','revoked')),
  password_hash  TEXT,
  kdf            TEXT,
  recipient      TEXT,
  safety_code    TEXT,
  registered_at  TEXT NOT NULL,
  secupass_at    TEXT,
  approved_at    TEXT,
  revoked_at     TEXT
) STRICT;

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
  source_key     TEXT UNIQUE
) STRICT;
CREATE INDEX deliveries_recipient ON deliveries (recipient, status);
CREATE INDEX deliveries_expiry ON deliveries (status, expires_at);

CREATE TABLE files (
  id           TEXT PRIMARY KEY,
  delivery_id  TEXT NOT NULL REFERENCES deliveries (id),
  position     INTEGER NOT NULL,
  kind         TEXT NOT NULL CHECK (kind IN ('attachment','message')),
  name         TEXT NOT NULL,
  size         INTEGER NOT NULL,
  blob         TEXT UNIQUE,
  UNIQUE (delivery_id, position)
) STRICT;

CREATE TABLE wraps (
  delivery_id  TEXT NOT NULL REFERENCES deliveries (id),
  holder       TEXT NOT NULL CHECK (holder IN ('practice','patient')),
  recipient    TEXT NOT NULL,
  ciphertext   BLOB NOT NULL,
  created_at   TEXT NOT NULL,
  PRIMARY KEY (delivery_id, holder)
) STRICT;

CREATE TABLE link_tokens (
  hash         TEXT PRIMARY KEY,
  delivery_id  TEXT NOT NULL REFERENCES deliveries (id),
  email        TEXT NOT NULL,
  created_at   TEXT NOT NULL
) STRICT;
CREATE INDEX link_tokens_delivery ON link_tokens (delivery_id);

CREATE TABLE audit (
  seq        INTEGER PRIMARY KEY,
  at         TEXT NOT NULL,
  actor      TEXT NOT NULL,
  action     TEXT NOT NULL,
  subject    TEXT,
  details    TEXT NOT NULL,
  prev_hash  TEXT NOT NULL,
  hash       TEXT NOT NULL
) STRICT;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
`,
  },
  {
    // A delivery is visible (list, portal, approve) only once its mail was accepted by
    // upstream or written to the outbox. Rows of an interrupted send stay invisible until a
    // retry or gc removes them.
    version: 2,
    sql: `
ALTER TABLE deliveries ADD COLUMN sent_at TEXT;
UPDATE deliveries SET sent_at = created_at;
`,
  },
  {
    // Portal sessions. Only the SHA-256 of the cookie value is stored.
    version: 3,
    sql: `
CREATE TABLE sessions (
  id_hash    TEXT PRIMARY KEY,
  email      TEXT,
  csrf       TEXT NOT NULL,
  created_at TEXT NOT NULL,
  last_seen  TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_email ON sessions (email);
`,
  },
  {
    // Account lifecycle and replies: password reset links, invite codes (hashes only),
    // a Secu-Pass reset in progress, secure replies from patients, expiry reminders.
    version: 4,
    sql: `
CREATE TABLE reset_tokens (
  hash        TEXT PRIMARY KEY,
  email       TEXT NOT NULL,
  created_at  TEXT NOT NULL,
  expires_at  TEXT NOT NULL,
  used_at     TEXT
) STRICT;

CREATE TABLE invites (
  id          TEXT PRIMARY KEY,
  email       TEXT NOT NULL,
  code_hash   TEXT NOT NULL,
  created_at  TEXT NOT NULL,
  expires_at  TEXT NOT NULL,
  used_at     TEXT,
  revoked_at  TEXT
) STRICT;

CREATE TABLE replies (
  id           TEXT PRIMARY KEY,
  email        TEXT NOT NULL,
  delivery_id  TEXT,
  status       TEXT NOT NULL CHECK (status IN ('uploading','new','received')),
  created_at   TEXT NOT NULL,
  received_at  TEXT
) STRICT;

CREATE TABLE reply_parts (
  reply_id  TEXT NOT NULL REFERENCES replies (id),
  position  INTEGER NOT NULL,
  kind      TEXT NOT NULL CHECK (kind IN ('message','file')),
  size      INTEGER NOT NULL,
  blob      TEXT NOT NULL UNIQUE,
  PRIMARY KEY (reply_id, position)
) STRICT;

ALTER TABLE patients ADD COLUMN pending_kdf TEXT;
ALTER TABLE patients ADD COLUMN invited_at TEXT;
ALTER TABLE deliveries ADD COLUMN reminded_at TEXT;
`,
  },
  {
    // Signed approvals (DESIGN.md §3): the approval's signature with the patient, the
    // practice's signature with each invite, and the invite's privilege bound to the session
    // that redeemed it (the SHA-256 of its id) until the Secu-Pass-Key is set.
    version: 5,
    sql: `
ALTER TABLE patients ADD COLUMN approval TEXT;
ALTER TABLE patients ADD COLUMN invite_id TEXT;
ALTER TABLE patients ADD COLUMN invite_session TEXT;
ALTER TABLE patients ADD COLUMN alarmed_at TEXT;
ALTER TABLE invites ADD COLUMN sig TEXT;
`,
  },
  {
    // Attempt counters of the portal's limits, shared by every process on this database.
    // until: end of the fixed window in milliseconds since the epoch.
    version: 6,
    sql: `
CREATE TABLE attempts (
  key    TEXT PRIMARY KEY,
  count  INTEGER NOT NULL,
  until  INTEGER NOT NULL
) STRICT;
`,
  },
  {
    // Signed audit checkpoints (src/core/checkpoints.ts). Append-only like the log; the
    // signatures, not these triggers, are what an attacker with write access cannot forge.
    version: 7,
    sql: `
CREATE TABLE audit_checkpoints (
  seq        INTEGER PRIMARY KEY,
  hash       TEXT NOT NULL,
  at         TEXT NOT NULL,
  signature  TEXT NOT NULL
) STRICT;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
  BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
  BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
`,
  },
  {
    // The practice this database belongs to (src/store/practice.ts): one row, written at init.
    version: 8,
    sql: `
CREATE TABLE practice (
  id                  INTEGER PRIMARY KEY CHECK (id = 1),
  practice_email      TEXT NOT NULL,
  practice_recipient  TEXT NOT NULL,
  approval_key        TEXT NOT NULL,
  portal_key          TEXT NOT NULL,
  pinned_at           TEXT NOT NULL
) STRICT;
`,
  },
  {
    // The patient's language, for the portal and their mails (src/i18n); null while unknown.
    version: 9,
    sql: `
ALTER TABLE patients ADD COLUMN lang TEXT;
`,
  },
  {
    // One secret: the hash of the login credential derived from the Secu-Pass-Key, and the
    // one-time challenges that move an account with a password over at its next login.
    version: 10,
    sql: `
ALTER TABLE patients ADD COLUMN credential_hash TEXT;
CREATE TABLE login_challenges (
  hash        TEXT PRIMARY KEY,
  email       TEXT NOT NULL,
  expires_at  TEXT NOT NULL,
  used_at     TEXT
) STRICT;
`,
  },
  {
    // Passkeys of known devices (src/core/passkeys.ts): the public key and counter of each
    // credential, the patient's random WebAuthn user handle, and U sealed under the
    // authenticator's PRF output (null without PRF). The challenges handed out wait here, not in
    // a process's memory, so that any node can check them, each once.
    version: 11,
    sql: `
CREATE TABLE passkeys (
  credential_id  TEXT PRIMARY KEY,
  email          TEXT NOT NULL,
  user_handle    TEXT NOT NULL,
  public_key     BLOB NOT NULL,
  counter        INTEGER NOT NULL,
  transports     TEXT NOT NULL,
  label          TEXT NOT NULL,
  created_at     TEXT NOT NULL,
  last_used      TEXT,
  sealed         TEXT
) STRICT;
CREATE INDEX passkeys_email ON passkeys (email);

CREATE TABLE passkey_challenges (
  challenge   TEXT PRIMARY KEY,
  kind        TEXT NOT NULL CHECK (kind IN ('register','login')),
  binding     TEXT NOT NULL,
  email       TEXT,
  user_handle TEXT,
  expires_at  TEXT NOT NULL
) STRICT;
CREATE INDEX passkey_challenges_expiry ON passkey_challenges (expires_at);
`,
  },
  {
    // The pending KDF parameters of the two-step Secu-Pass reset from before one secret
    // (migration 10): that reset is gone, and nothing reads or writes the column.
    version: 12,
    sql: `
ALTER TABLE patients DROP COLUMN pending_kdf;
`,
  },
];

// Rows of passkeys (WebAuthn credentials of known devices) and of their pending challenges.
import type { Database } from "better-sqlite3";
import { StatementCache } from "./records.js";

/** A patient's passkey on one device. */
export interface PasskeyRow {
  /** The credential id, base64url. */
  credentialId: string;
  email: string;
  /** The random WebAuthn user handle of the patient (base64url), never the address. */
  userHandle: string;
  /** The COSE public key. */
  publicKey: Uint8Array;
  /** The authenticator's signature counter at the last use. */
  counter: number;
  /** JSON array of the authenticator's transports. */
  transports: string;
  label: string;
  createdAt: string;
  lastUsed: string | null;
  /** U encrypted under a key from the authenticator's PRF output (salt, IV, ciphertext); null without PRF. */
  sealed: string | null;
}

/** A WebAuthn challenge handed out and not yet used: single use, short-lived. */
export interface PasskeyChallengeRow {
  /** The challenge, base64url. */
  challenge: string;
  kind: "register" | "login";
  /** SHA-256 of what it belongs to: the session (register) or the visitor's CSRF token (login). */
  binding: string;
  /** The patient registering; null for a login. */
  email: string | null;
  /** The WebAuthn user handle offered to the authenticator (register); null for a login. */
  userHandle: string | null;
  expiresAt: string;
}

const PASSKEY =
  "credential_id AS credentialId, email, user_handle AS userHandle, public_key AS publicKey, counter, transports, label, created_at AS createdAt, last_used AS lastUsed, sealed";
const CHALLENGE = "challenge, kind, binding, email, user_handle AS userHandle, expires_at AS expiresAt";

const fromDb = (r: (Omit<PasskeyRow, "publicKey"> & { publicKey: Buffer }) | undefined): PasskeyRow | undefined => r && { ...r, publicKey: new Uint8Array(r.publicKey) };

/** Row access for passkeys. */
export class PasskeyRecords {
  private readonly sql: StatementCache;

  constructor(db: Database) {
    this.sql = new StatementCache(db);
  }

  /** @param p - A new passkey. */
  insertPasskey(p: PasskeyRow): void {
    this.sql
      .get(
        `INSERT INTO passkeys (credential_id, email, user_handle, public_key, counter, transports, label, created_at, last_used, sealed)
         VALUES (@credentialId, @email, @userHandle, @publicKey, @counter, @transports, @label, @createdAt, @lastUsed, @sealed)`,
      )
      .run({ ...p, publicKey: Buffer.from(p.publicKey) });
  }

  /** @returns The passkey with this credential id, or undefined. */
  passkey(credentialId: string): PasskeyRow | undefined {
    return fromDb(this.sql.get(`SELECT ${PASSKEY} FROM passkeys WHERE credential_id = ?`).get(credentialId) as Parameters<typeof fromDb>[0]);
  }

  /** @returns The patient's passkeys, oldest first. */
  passkeysOf(email: string): PasskeyRow[] {
    return (this.sql.get(`SELECT ${PASSKEY} FROM passkeys WHERE email = ? ORDER BY created_at, credential_id`).all(email) as Parameters<typeof fromDb>[0][]).map(
      (r) => fromDb(r) as PasskeyRow,
    );
  }

  /**
   * Records a use: the counter moves from `from` to `to`, once.
   *
   * @returns True if the counter was still `from`.
   */
  usePasskey(credentialId: string, from: number, to: number, at: string): boolean {
    return this.sql.get("UPDATE passkeys SET counter = ?, last_used = ? WHERE credential_id = ? AND counter = ?").run(to, at, credentialId, from).changes === 1;
  }

  /** @returns True if the patient had this passkey. */
  deletePasskey(email: string, credentialId: string): boolean {
    return this.sql.get("DELETE FROM passkeys WHERE email = ? AND credential_id = ?").run(email, credentialId).changes === 1;
  }

  /** @returns How many passkeys the patient had. */
  deletePasskeysOf(email: string): number {
    return this.sql.get("DELETE FROM passkeys WHERE email = ?").run(email).changes;
  }

  /** Stores a new challenge, and forgets the ones that ended at or before `now`. */
  insertChallenge(c: PasskeyChallengeRow, now: string): void {
    this.sql.get("DELETE FROM passkey_challenges WHERE expires_at <= ?").run(now);
    this.sql.get("INSERT INTO passkey_challenges (challenge, kind, binding, email, user_handle, expires_at) VALUES (@challenge, @kind, @binding, @email, @userHandle, @expiresAt)").run(c);
  }

  /**
   * Takes a challenge, once: it is gone afterwards, whether or not it had ended.
   *
   * @returns The challenge if it was there and had not ended at `now`, else undefined.
   */
  takeChallenge(challenge: string, now: string): PasskeyChallengeRow | undefined {
    const row = this.sql.get(`DELETE FROM passkey_challenges WHERE challenge = ? RETURNING ${CHALLENGE}`).get(challenge) as PasskeyChallengeRow | undefined;
    return row && row.expiresAt > now ? row : undefined;
  }
}

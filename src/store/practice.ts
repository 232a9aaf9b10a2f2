// Which practice a database belongs to: one row, written by the first `init` on it. Several
// nodes share one database; each checks its own config.json against this row, so that a
// node of another practice (another identity, other pinned keys) cannot join by mistake.
// The row is no trust anchor (a database writer can change it; approvals are checked
// against config.json only): it catches a wrong node, not an attacker.
import type { Database } from "better-sqlite3";

/** The practice a database belongs to. */
export interface PracticeRow {
  readonly practiceEmail: string;
  readonly practiceRecipient: string;
  /** The practice signing key's public half (`ed25519:…`), as config.json pins it. */
  readonly approvalKey: string;
  /** The portal signing key's public half, as config.json pins it. */
  readonly portalKey: string;
  readonly pinnedAt: string;
}

/** Columns as PracticeRow names them (the same SQL on SQLite and PostgreSQL). */
export const PRACTICE_COLS = `practice_email AS "practiceEmail", practice_recipient AS "practiceRecipient", approval_key AS "approvalKey", portal_key AS "portalKey", pinned_at AS "pinnedAt"`;

/**
 * Pins the practice unless another one is pinned. The same practice (same recipient and
 * keys) may change its address; another practice's row is left as it is.
 */
export const PIN_PRACTICE = `INSERT INTO practice (id, practice_email, practice_recipient, approval_key, portal_key, pinned_at) VALUES (1, $1, $2, $3, $4, $5)
  ON CONFLICT (id) DO UPDATE SET practice_email = excluded.practice_email
  WHERE practice.practice_recipient = excluded.practice_recipient AND practice.approval_key = excluded.approval_key AND practice.portal_key = excluded.portal_key`;

/**
 * @param db - The embedded database.
 * @returns The practice it belongs to, or undefined before the first pin.
 */
export function practiceOf(db: Database): PracticeRow | undefined {
  return db.prepare(`SELECT ${PRACTICE_COLS} FROM practice WHERE id = 1`).get() as PracticeRow | undefined;
}

/**
 * Pins a practice to the embedded database (see {@link PIN_PRACTICE}).
 *
 * @param db - The embedded database.
 * @param p - The practice.
 * @returns The row in force afterwards: p, or the other practice already pinned.
 */
export function pinPractice(db: Database, p: PracticeRow): PracticeRow {
  db.prepare(PIN_PRACTICE.replace(/\$\d/g, "?")).run(p.practiceEmail, p.practiceRecipient, p.approvalKey, p.portalKey, p.pinnedAt);
  const row = practiceOf(db);
  if (!row) throw new Error("the practice row is missing right after pinning it");
  return row;
}

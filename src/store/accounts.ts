// Rows of the account lifecycle: password reset links, invite codes and patient replies.
import type { Database } from "better-sqlite3";
import { StatementCache } from "./records.js";

/** A password reset link; only the SHA-256 of its token is stored. */
export interface ResetRow {
  hash: string;
  email: string;
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
}

/**
 * A login challenge: a nonce the portal encrypted to an account's Secu-Pass recipient, so
 * that an account from before the login with the Secu-Pass-Key can prove the key once and
 * move over. Only the SHA-256 of the nonce is stored.
 */
export interface ChallengeRow {
  hash: string;
  email: string;
  expiresAt: string;
  usedAt: string | null;
}

/** An invite from reception; only the SHA-256 of its code is stored. */
export interface InviteRow {
  id: string;
  email: string;
  codeHash: string;
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
  revokedAt: string | null;
  /** The practice's signature over the invite (src/core/trust.ts); null for invites made before it. */
  sig: string | null;
}

/** A secure reply from a patient. */
export interface ReplyRow {
  id: string;
  email: string;
  deliveryId: string | null;
  status: "uploading" | "new" | "received";
  createdAt: string;
  receivedAt: string | null;
}

/** One uploaded part of a reply: an age file encrypted to the practice in the browser. */
export interface ReplyPartRow {
  replyId: string;
  position: number;
  kind: "message" | "file";
  size: number;
  blob: string;
}

const RESET = "hash, email, created_at AS createdAt, expires_at AS expiresAt, used_at AS usedAt";
const INVITE = "id, email, code_hash AS codeHash, created_at AS createdAt, expires_at AS expiresAt, used_at AS usedAt, revoked_at AS revokedAt, sig";
const REPLY = "id, email, delivery_id AS deliveryId, status, created_at AS createdAt, received_at AS receivedAt";

/** Row access for the account lifecycle. */
export class AccountRecords {
  private readonly sql: StatementCache;

  constructor(db: Database) {
    this.sql = new StatementCache(db);
  }

  /** @param r - A new reset link. */
  insertReset(r: ResetRow): void {
    this.sql.get("INSERT INTO reset_tokens (hash, email, created_at, expires_at, used_at) VALUES (@hash, @email, @createdAt, @expiresAt, @usedAt)").run(r);
  }

  /** @returns The reset link with this token hash, or undefined. */
  reset(hash: string): ResetRow | undefined {
    return this.sql.get(`SELECT ${RESET} FROM reset_tokens WHERE hash = ?`).get(hash) as ResetRow | undefined;
  }

  /**
   * Uses a reset link, once.
   *
   * @returns True if it was unused until now.
   */
  useReset(hash: string, at: string): boolean {
    return this.sql.get("UPDATE reset_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL").run(at, hash).changes === 1;
  }

  /**
   * Stores a login challenge and drops the expired ones, so the table holds only minutes' worth.
   *
   * @param c - The new challenge.
   * @param now - The time now (ISO).
   */
  insertChallenge(c: ChallengeRow, now: string): void {
    this.sql.get("DELETE FROM login_challenges WHERE expires_at <= ?").run(now);
    this.sql.get("INSERT INTO login_challenges (hash, email, expires_at, used_at) VALUES (@hash, @email, @expiresAt, @usedAt)").run(c);
  }

  /**
   * Uses a login challenge of this address, once, before it expires.
   *
   * @returns True if it was open until now.
   */
  useChallenge(hash: string, email: string, at: string): boolean {
    return this.sql.get("UPDATE login_challenges SET used_at = ? WHERE hash = ? AND email = ? AND used_at IS NULL AND expires_at > ?").run(at, hash, email, at).changes === 1;
  }

  /** @param i - A new invite. */
  insertInvite(i: InviteRow): void {
    this.sql
      .get("INSERT INTO invites (id, email, code_hash, created_at, expires_at, used_at, revoked_at, sig) VALUES (@id, @email, @codeHash, @createdAt, @expiresAt, @usedAt, @revokedAt, @sig)")
      .run(i);
  }

  /** @returns The invite, or undefined. */
  invite(id: string): InviteRow | undefined {
    return this.sql.get(`SELECT ${INVITE} FROM invites WHERE id = ?`).get(id) as InviteRow | undefined;
  }

  /** @returns Every invite, newest first. */
  invites(): InviteRow[] {
    return this.sql.get(`SELECT ${INVITE} FROM invites ORDER BY created_at DESC, id`).all() as InviteRow[];
  }

  /**
   * Marks an invite used, once.
   *
   * @returns True if it was open until now.
   */
  useInvite(id: string, at: string): boolean {
    return this.sql.get("UPDATE invites SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL").run(at, id).changes === 1;
  }

  /**
   * Revokes an invite that was not used.
   *
   * @returns True if it was open until now.
   */
  revokeInvite(id: string, at: string): boolean {
    return this.sql.get("UPDATE invites SET revoked_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL").run(at, id).changes === 1;
  }

  /**
   * Uses up every open reset link of an address (at revocation).
   *
   * @returns How many were open.
   */
  endResetsOf(email: string, at: string): number {
    return this.sql.get("UPDATE reset_tokens SET used_at = ? WHERE email = ? AND used_at IS NULL").run(at, email).changes;
  }

  /**
   * Revokes every open invite for an address (at revocation).
   *
   * @returns How many were open.
   */
  revokeInvitesFor(email: string, at: string): number {
    return this.sql.get("UPDATE invites SET revoked_at = ? WHERE email = ? AND used_at IS NULL AND revoked_at IS NULL").run(at, email).changes;
  }

  /** @returns The replies of an address whose upload has not finished. */
  uploadingRepliesOf(email: string): ReplyRow[] {
    return this.sql.get(`SELECT ${REPLY} FROM replies WHERE email = ? AND status = 'uploading'`).all(email) as ReplyRow[];
  }

  /** @param r - A new reply. */
  insertReply(r: ReplyRow): void {
    this.sql
      .get("INSERT INTO replies (id, email, delivery_id, status, created_at, received_at) VALUES (@id, @email, @deliveryId, @status, @createdAt, @receivedAt)")
      .run(r);
  }

  /** @returns The reply, or undefined. */
  reply(id: string): ReplyRow | undefined {
    return this.sql.get(`SELECT ${REPLY} FROM replies WHERE id = ?`).get(id) as ReplyRow | undefined;
  }

  /** @returns Finished replies (new and received), oldest first. */
  replies(): ReplyRow[] {
    return this.sql.get(`SELECT ${REPLY} FROM replies WHERE status <> 'uploading' ORDER BY created_at, id`).all() as ReplyRow[];
  }

  /** @returns Replies whose upload never finished, started before the time. */
  unfinishedReplies(before: string): ReplyRow[] {
    return this.sql.get(`SELECT ${REPLY} FROM replies WHERE status = 'uploading' AND created_at < ?`).all(before) as ReplyRow[];
  }

  /** Sets a reply's status. */
  setReplyStatus(id: string, status: ReplyRow["status"], at: string | null): void {
    this.sql.get("UPDATE replies SET status = ?, received_at = coalesce(?, received_at) WHERE id = ?").run(status, at, id);
  }

  /** @param p - A new part. */
  insertReplyPart(p: ReplyPartRow): void {
    this.sql.get("INSERT INTO reply_parts (reply_id, position, kind, size, blob) VALUES (@replyId, @position, @kind, @size, @blob)").run(p);
  }

  /** @returns The parts of a reply in order. */
  replyParts(replyId: string): ReplyPartRow[] {
    return this.sql
      .get("SELECT reply_id AS replyId, position, kind, size, blob FROM reply_parts WHERE reply_id = ? ORDER BY position")
      .all(replyId) as ReplyPartRow[];
  }

  /**
   * Removes a reply and its parts' rows.
   *
   * @returns The blobs to delete.
   */
  deleteReply(id: string): string[] {
    const blobs = this.replyParts(id).map((p) => p.blob);
    this.sql.get("DELETE FROM reply_parts WHERE reply_id = ?").run(id);
    this.sql.get("DELETE FROM replies WHERE id = ?").run(id);
    return blobs;
  }
}

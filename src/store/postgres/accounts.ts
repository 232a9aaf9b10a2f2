// The account lifecycle's rows in the shared backend: the embedded accounts.ts in PostgreSQL.
import type { ChallengeRow, InviteRow, ReplyPartRow, ReplyRow, ResetRow } from "../accounts.js";
import type { AccountStore } from "../types.js";
import type { Query } from "./connect.js";

const RESET = `hash, email, created_at AS "createdAt", expires_at AS "expiresAt", used_at AS "usedAt"`;
const INVITE = `id, email, code_hash AS "codeHash", created_at AS "createdAt", expires_at AS "expiresAt", used_at AS "usedAt", revoked_at AS "revokedAt", sig`;
const REPLY = `id, email, delivery_id AS "deliveryId", status, created_at AS "createdAt", received_at AS "receivedAt"`;

/** Reset links, invite codes and patient replies. */
export class PgAccounts implements AccountStore {
  constructor(private readonly q: Query) {}

  async insertReset(r: ResetRow): Promise<void> {
    await this.q`INSERT INTO reset_tokens (hash, email, created_at, expires_at, used_at) VALUES (${r.hash}, ${r.email}, ${r.createdAt}, ${r.expiresAt}, ${r.usedAt})`;
  }

  async reset(hash: string): Promise<ResetRow | undefined> {
    const [row] = await this.q.unsafe<ResetRow[]>(`SELECT ${RESET} FROM reset_tokens WHERE hash = $1`, [hash]);
    return row;
  }

  async useReset(hash: string, at: string): Promise<boolean> {
    return (await this.q`UPDATE reset_tokens SET used_at = ${at} WHERE hash = ${hash} AND used_at IS NULL`).count === 1;
  }

  async insertChallenge(c: ChallengeRow, now: string): Promise<void> {
    await this.q`DELETE FROM login_challenges WHERE expires_at <= ${now}`;
    await this.q`INSERT INTO login_challenges (hash, email, expires_at, used_at) VALUES (${c.hash}, ${c.email}, ${c.expiresAt}, ${c.usedAt})`;
  }

  async useChallenge(hash: string, email: string, at: string): Promise<boolean> {
    return (await this.q`UPDATE login_challenges SET used_at = ${at} WHERE hash = ${hash} AND email = ${email} AND used_at IS NULL AND expires_at > ${at}`).count === 1;
  }

  async insertInvite(i: InviteRow): Promise<void> {
    await this.q`INSERT INTO invites (id, email, code_hash, created_at, expires_at, used_at, revoked_at, sig)
      VALUES (${i.id}, ${i.email}, ${i.codeHash}, ${i.createdAt}, ${i.expiresAt}, ${i.usedAt}, ${i.revokedAt}, ${i.sig})`;
  }

  async invite(id: string): Promise<InviteRow | undefined> {
    const [row] = await this.q.unsafe<InviteRow[]>(`SELECT ${INVITE} FROM invites WHERE id = $1`, [id]);
    return row;
  }

  invites(): Promise<InviteRow[]> {
    return this.q.unsafe<InviteRow[]>(`SELECT ${INVITE} FROM invites ORDER BY created_at DESC, id`);
  }

  async useInvite(id: string, at: string): Promise<boolean> {
    return (await this.q`UPDATE invites SET used_at = ${at} WHERE id = ${id} AND used_at IS NULL AND revoked_at IS NULL`).count === 1;
  }

  async revokeInvite(id: string, at: string): Promise<boolean> {
    return (await this.q`UPDATE invites SET revoked_at = ${at} WHERE id = ${id} AND used_at IS NULL AND revoked_at IS NULL`).count === 1;
  }

  async endResetsOf(email: string, at: string): Promise<number> {
    return (await this.q`UPDATE reset_tokens SET used_at = ${at} WHERE email = ${email} AND used_at IS NULL`).count;
  }

  async revokeInvitesFor(email: string, at: string): Promise<number> {
    return (await this.q`UPDATE invites SET revoked_at = ${at} WHERE email = ${email} AND used_at IS NULL AND revoked_at IS NULL`).count;
  }

  uploadingRepliesOf(email: string): Promise<ReplyRow[]> {
    return this.q.unsafe<ReplyRow[]>(`SELECT ${REPLY} FROM replies WHERE email = $1 AND status = 'uploading'`, [email]);
  }

  async insertReply(r: ReplyRow): Promise<void> {
    await this.q`INSERT INTO replies (id, email, delivery_id, status, created_at, received_at)
      VALUES (${r.id}, ${r.email}, ${r.deliveryId}, ${r.status}, ${r.createdAt}, ${r.receivedAt})`;
  }

  async reply(id: string): Promise<ReplyRow | undefined> {
    const [row] = await this.q.unsafe<ReplyRow[]>(`SELECT ${REPLY} FROM replies WHERE id = $1`, [id]);
    return row;
  }

  replies(): Promise<ReplyRow[]> {
    return this.q.unsafe<ReplyRow[]>(`SELECT ${REPLY} FROM replies WHERE status <> 'uploading' ORDER BY created_at, id`);
  }

  unfinishedReplies(before: string): Promise<ReplyRow[]> {
    return this.q.unsafe<ReplyRow[]>(`SELECT ${REPLY} FROM replies WHERE status = 'uploading' AND created_at < $1`, [before]);
  }

  async setReplyStatus(id: string, status: ReplyRow["status"], at: string | null): Promise<void> {
    await this.q`UPDATE replies SET status = ${status}, received_at = coalesce(${at}::text, received_at) WHERE id = ${id}`;
  }

  async insertReplyPart(p: ReplyPartRow): Promise<void> {
    await this.q`INSERT INTO reply_parts (reply_id, position, kind, size, blob) VALUES (${p.replyId}, ${p.position}, ${p.kind}, ${p.size}, ${p.blob})`;
  }

  replyParts(replyId: string): Promise<ReplyPartRow[]> {
    return this.q<ReplyPartRow[]>`SELECT reply_id AS "replyId", position, kind, size, blob FROM reply_parts WHERE reply_id = ${replyId} ORDER BY position`;
  }

  async deleteReply(id: string): Promise<string[]> {
    const blobs = (await this.replyParts(id)).map((p) => p.blob);
    await this.q`DELETE FROM reply_parts WHERE reply_id = ${id}`;
    await this.q`DELETE FROM replies WHERE id = ${id}`;
    return blobs;
  }
}

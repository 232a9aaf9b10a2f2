// Passkeys and their challenges in the shared backend: the embedded passkeys.ts in PostgreSQL.
import type { PasskeyChallengeRow, PasskeyRow } from "../passkeys.js";
import type { PasskeyStore } from "../types.js";
import type { Query } from "./connect.js";

const PASSKEY = `credential_id AS "credentialId", email, user_handle AS "userHandle", public_key AS "publicKey", counter, transports, label,
  created_at AS "createdAt", last_used AS "lastUsed", sealed`;
const CHALLENGE = `challenge, kind, binding, email, user_handle AS "userHandle", expires_at AS "expiresAt"`;

type Stored = Omit<PasskeyRow, "publicKey"> & { publicKey: Buffer };
const fromDb = (r: Stored): PasskeyRow => ({ ...r, publicKey: new Uint8Array(r.publicKey) });

/** Passkeys and their pending challenges. */
export class PgPasskeys implements PasskeyStore {
  constructor(private readonly q: Query) {}

  async insertPasskey(p: PasskeyRow): Promise<void> {
    await this.q`INSERT INTO passkeys (credential_id, email, user_handle, public_key, counter, transports, label, created_at, last_used, sealed)
      VALUES (${p.credentialId}, ${p.email}, ${p.userHandle}, ${Buffer.from(p.publicKey)}, ${p.counter}, ${p.transports}, ${p.label}, ${p.createdAt}, ${p.lastUsed}, ${p.sealed})`;
  }

  async passkey(credentialId: string): Promise<PasskeyRow | undefined> {
    const [row] = await this.q.unsafe<Stored[]>(`SELECT ${PASSKEY} FROM passkeys WHERE credential_id = $1`, [credentialId]);
    return row && fromDb(row);
  }

  async passkeysOf(email: string): Promise<PasskeyRow[]> {
    return (await this.q.unsafe<Stored[]>(`SELECT ${PASSKEY} FROM passkeys WHERE email = $1 ORDER BY created_at, credential_id`, [email])).map(fromDb);
  }

  async usePasskey(credentialId: string, from: number, to: number, at: string): Promise<boolean> {
    return (await this.q`UPDATE passkeys SET counter = ${to}, last_used = ${at} WHERE credential_id = ${credentialId} AND counter = ${from}`).count === 1;
  }

  async deletePasskey(email: string, credentialId: string): Promise<boolean> {
    return (await this.q`DELETE FROM passkeys WHERE email = ${email} AND credential_id = ${credentialId}`).count === 1;
  }

  async deletePasskeysOf(email: string): Promise<number> {
    return (await this.q`DELETE FROM passkeys WHERE email = ${email}`).count;
  }

  async insertChallenge(c: PasskeyChallengeRow, now: string): Promise<void> {
    await this.q`DELETE FROM passkey_challenges WHERE expires_at <= ${now}`;
    await this.q`INSERT INTO passkey_challenges (challenge, kind, binding, email, user_handle, expires_at)
      VALUES (${c.challenge}, ${c.kind}, ${c.binding}, ${c.email}, ${c.userHandle}, ${c.expiresAt})`;
  }

  async takeChallenge(challenge: string, now: string): Promise<PasskeyChallengeRow | undefined> {
    const [row] = await this.q.unsafe<PasskeyChallengeRow[]>(`DELETE FROM passkey_challenges WHERE challenge = $1 RETURNING ${CHALLENGE}`, [challenge]);
    return row && row.expiresAt > now ? row : undefined;
  }
}

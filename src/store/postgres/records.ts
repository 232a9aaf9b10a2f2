// Typed rows of the shared backend: the same queries as the embedded records.ts, in
// PostgreSQL. Each instance runs on one query function: the pool outside a transaction,
// the transaction's connection inside one.
import type { DeliveryRow, DeliveryStatus, FileRow, PatientRow, PatientStatus, SessionRow, TokenRow, WrapHolder, WrapRow } from "../rows.js";
import type { RecordStore } from "../types.js";
import type { Query } from "./connect.js";

const PATIENT_COLS = `email, status, password_hash AS "passwordHash", credential_hash AS "credentialHash", kdf, recipient, safety_code AS "safetyCode", registered_at AS "registeredAt",
  secupass_at AS "secupassAt", approved_at AS "approvedAt", revoked_at AS "revokedAt", invited_at AS "invitedAt",
  approval, invite_id AS "inviteId", invite_session AS "inviteSession", alarmed_at AS "alarmedAt", lang`;
const DELIVERY_COLS = `id, recipient, level, status, subject, sender, created_at AS "createdAt", expires_at AS "expiresAt", downloaded_at AS "downloadedAt",
  ended_at AS "endedAt", source_key AS "sourceKey", sent_at AS "sentAt", reminded_at AS "remindedAt"`;
const FILE_COLS = `id, delivery_id AS "deliveryId", position, kind, name, size, blob`;
const SESSION_COLS = `id_hash AS "idHash", email, csrf, created_at AS "createdAt", last_seen AS "lastSeen"`;

/** The rows of patients, deliveries, files, wraps, link tokens and sessions. */
export class PgRecords implements RecordStore {
  constructor(private readonly q: Query) {}

  async patient(email: string): Promise<PatientRow | undefined> {
    const [row] = await this.q.unsafe<PatientRow[]>(`SELECT ${PATIENT_COLS} FROM patients WHERE email = $1`, [email]);
    return row;
  }

  patients(status?: PatientStatus): Promise<PatientRow[]> {
    return status
      ? this.q.unsafe<PatientRow[]>(`SELECT ${PATIENT_COLS} FROM patients WHERE status = $1 ORDER BY registered_at, email`, [status])
      : this.q.unsafe<PatientRow[]>(`SELECT ${PATIENT_COLS} FROM patients ORDER BY registered_at, email`);
  }

  async insertPatient(p: PatientRow): Promise<void> {
    await this.q`INSERT INTO patients (email, status, password_hash, credential_hash, kdf, recipient, safety_code, registered_at, secupass_at, approved_at, revoked_at,
      invited_at, approval, invite_id, invite_session, alarmed_at, lang)
      VALUES (${p.email}, ${p.status}, ${p.passwordHash}, ${p.credentialHash}, ${p.kdf}, ${p.recipient}, ${p.safetyCode}, ${p.registeredAt}, ${p.secupassAt}, ${p.approvedAt},
      ${p.revokedAt}, ${p.invitedAt}, ${p.approval}, ${p.inviteId}, ${p.inviteSession}, ${p.alarmedAt}, ${p.lang})`;
  }

  async updatePatient(p: PatientRow): Promise<void> {
    await this.q`UPDATE patients SET status = ${p.status}, password_hash = ${p.passwordHash}, credential_hash = ${p.credentialHash}, kdf = ${p.kdf}, recipient = ${p.recipient},
      safety_code = ${p.safetyCode}, secupass_at = ${p.secupassAt}, approved_at = ${p.approvedAt}, revoked_at = ${p.revokedAt},
      invited_at = ${p.invitedAt}, approval = ${p.approval}, invite_id = ${p.inviteId},
      invite_session = ${p.inviteSession}, alarmed_at = ${p.alarmedAt}, lang = ${p.lang} WHERE email = ${p.email}`;
  }

  async delivery(id: string): Promise<DeliveryRow | undefined> {
    const [row] = await this.q.unsafe<DeliveryRow[]>(`SELECT ${DELIVERY_COLS} FROM deliveries WHERE id = $1`, [id]);
    return row;
  }

  async deliveryBySource(sourceKey: string): Promise<DeliveryRow | undefined> {
    const [row] = await this.q.unsafe<DeliveryRow[]>(`SELECT ${DELIVERY_COLS} FROM deliveries WHERE source_key = $1`, [sourceKey]);
    return row;
  }

  deliveries(filter: { recipient?: string; statuses?: readonly DeliveryStatus[] } = {}): Promise<DeliveryRow[]> {
    const where = ["sent_at IS NOT NULL"];
    const args: string[] = [];
    if (filter.recipient !== undefined) {
      args.push(filter.recipient);
      where.push(`recipient = $${args.length}`);
    }
    if (filter.statuses) {
      where.push(`status IN (${filter.statuses.map((s) => `$${args.push(s)}`).join(", ")})`);
    }
    return this.q.unsafe<DeliveryRow[]>(`SELECT ${DELIVERY_COLS} FROM deliveries WHERE ${where.join(" AND ")} ORDER BY created_at, id`, args);
  }

  async unsentBefore(before: string): Promise<string[]> {
    return (await this.q<{ id: string }[]>`SELECT id FROM deliveries WHERE sent_at IS NULL AND created_at < ${before}`).map((r) => r.id);
  }

  async markSent(ids: readonly string[], at: string): Promise<void> {
    if (ids.length) await this.q`UPDATE deliveries SET sent_at = ${at} WHERE id = ANY(${this.q.array([...ids])}) AND sent_at IS NULL`;
  }

  dueForExpiry(before: string): Promise<DeliveryRow[]> {
    return this.q.unsafe<DeliveryRow[]>(
      `SELECT ${DELIVERY_COLS} FROM deliveries WHERE status IN ('pending-approval','ready','downloaded') AND sent_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at`,
      [before],
    );
  }

  async insertDelivery(d: DeliveryRow, files: readonly FileRow[], wraps: readonly WrapRow[], token: TokenRow): Promise<void> {
    await this.q`INSERT INTO deliveries (id, recipient, level, status, subject, sender, created_at, expires_at, downloaded_at, ended_at, source_key, sent_at, reminded_at)
      VALUES (${d.id}, ${d.recipient}, ${d.level}, ${d.status}, ${d.subject}, ${d.sender}, ${d.createdAt}, ${d.expiresAt}, ${d.downloadedAt},
      ${d.endedAt}, ${d.sourceKey}, ${d.sentAt}, ${d.remindedAt})`;
    for (const f of files) {
      await this.q`INSERT INTO files (id, delivery_id, position, kind, name, size, blob) VALUES (${f.id}, ${f.deliveryId}, ${f.position}, ${f.kind}, ${f.name}, ${f.size}, ${f.blob})`;
    }
    for (const w of wraps) await this.putWrap(w);
    await this.insertToken(token);
  }

  async insertToken(t: TokenRow): Promise<void> {
    await this.q`INSERT INTO link_tokens (hash, delivery_id, email, created_at) VALUES (${t.hash}, ${t.deliveryId}, ${t.email}, ${t.createdAt})`;
  }

  async setDeliveryStatus(id: string, status: DeliveryStatus, at: string): Promise<void> {
    const ended = status === "revoked" || status === "expired" ? at : null;
    await this.q`UPDATE deliveries SET status = ${status}, ended_at = coalesce(${ended}::text, ended_at) WHERE id = ${id}`;
  }

  files(deliveryId: string): Promise<FileRow[]> {
    return this.q.unsafe<FileRow[]>(`SELECT ${FILE_COLS} FROM files WHERE delivery_id = $1 ORDER BY position`, [deliveryId]);
  }

  async filesOf(deliveryIds: readonly string[]): Promise<Map<string, FileRow[]>> {
    const out = new Map(deliveryIds.map((id) => [id, [] as FileRow[]]));
    if (deliveryIds.length === 0) return out;
    const rows = await this.q.unsafe<FileRow[]>(`SELECT ${FILE_COLS} FROM files WHERE delivery_id = ANY($1::text[]) ORDER BY delivery_id, position`, [[...deliveryIds]]);
    for (const f of rows) out.get(f.deliveryId)?.push(f);
    return out;
  }

  async referencedBlobs(): Promise<Set<string>> {
    const rows = await this.q<{ blob: string }[]>`SELECT blob FROM files WHERE blob IS NOT NULL UNION SELECT blob FROM reply_parts`;
    return new Set(rows.map((r) => r.blob));
  }

  async unwrapPatient(email: string, fromLevel: number): Promise<number> {
    const rows = await this.q<{ id: string }[]>`UPDATE deliveries SET status = 'pending-approval'
      WHERE recipient = ${email} AND level >= ${fromLevel} AND status IN ('ready','downloaded','pending-approval') RETURNING id`;
    if (rows.length) await this.q`DELETE FROM wraps WHERE holder = 'patient' AND delivery_id = ANY(${this.q.array(rows.map((r) => r.id))})`;
    return rows.length;
  }

  dueForReminder(before: string, now: string, fromLevel: number): Promise<DeliveryRow[]> {
    return this.q.unsafe<DeliveryRow[]>(
      `SELECT ${DELIVERY_COLS} FROM deliveries WHERE status = 'ready' AND downloaded_at IS NULL AND reminded_at IS NULL AND sent_at IS NOT NULL
        AND level >= $1 AND expires_at <= $2 AND expires_at > $3`,
      [fromLevel, before, now],
    );
  }

  async markReminded(id: string, at: string): Promise<void> {
    await this.q`UPDATE deliveries SET reminded_at = ${at} WHERE id = ${id}`;
  }

  async deleteSessionsOf(email: string): Promise<number> {
    return (await this.q`DELETE FROM sessions WHERE email = ${email}`).count;
  }

  async wrap(deliveryId: string, holder: WrapHolder): Promise<WrapRow | undefined> {
    const [row] = await this.q<(Omit<WrapRow, "ciphertext"> & { ciphertext: Buffer })[]>`SELECT delivery_id AS "deliveryId", holder, recipient, ciphertext,
      created_at AS "createdAt" FROM wraps WHERE delivery_id = ${deliveryId} AND holder = ${holder}`;
    return row && { ...row, ciphertext: new Uint8Array(row.ciphertext) };
  }

  async wraps(deliveryIds: readonly string[], holder: WrapHolder): Promise<Map<string, WrapRow>> {
    if (deliveryIds.length === 0) return new Map();
    const rows = await this.q<(Omit<WrapRow, "ciphertext"> & { ciphertext: Buffer })[]>`SELECT delivery_id AS "deliveryId", holder, recipient, ciphertext,
      created_at AS "createdAt" FROM wraps WHERE delivery_id = ANY(${this.q.array([...deliveryIds])}) AND holder = ${holder}`;
    return new Map(rows.map((r) => [r.deliveryId, { ...r, ciphertext: new Uint8Array(r.ciphertext) }]));
  }

  async putWrap(w: WrapRow): Promise<void> {
    await this.q`INSERT INTO wraps (delivery_id, holder, recipient, ciphertext, created_at)
      VALUES (${w.deliveryId}, ${w.holder}, ${w.recipient}, ${Buffer.from(w.ciphertext)}, ${w.createdAt})
      ON CONFLICT (delivery_id, holder) DO UPDATE SET recipient = excluded.recipient, ciphertext = excluded.ciphertext, created_at = excluded.created_at`;
  }

  async shred(deliveryId: string): Promise<string[]> {
    const blobs = (await this.files(deliveryId)).flatMap((f) => (f.blob ? [f.blob] : []));
    await this.q`DELETE FROM wraps WHERE delivery_id = ${deliveryId}`;
    await this.q`UPDATE files SET blob = NULL WHERE delivery_id = ${deliveryId}`;
    return blobs;
  }

  async deleteDelivery(deliveryId: string): Promise<void> {
    await this.q`DELETE FROM wraps WHERE delivery_id = ${deliveryId}`;
    await this.q`DELETE FROM link_tokens WHERE delivery_id = ${deliveryId}`;
    await this.q`DELETE FROM files WHERE delivery_id = ${deliveryId}`;
    await this.q`DELETE FROM deliveries WHERE id = ${deliveryId}`;
  }

  async token(hash: string): Promise<TokenRow | undefined> {
    const [row] = await this.q<TokenRow[]>`SELECT hash, delivery_id AS "deliveryId", email, created_at AS "createdAt" FROM link_tokens WHERE hash = ${hash}`;
    return row;
  }

  async session(idHash: string): Promise<SessionRow | undefined> {
    const [row] = await this.q.unsafe<SessionRow[]>(`SELECT ${SESSION_COLS} FROM sessions WHERE id_hash = $1`, [idHash]);
    return row;
  }

  async insertSession(s: SessionRow & { email: string }): Promise<boolean> {
    const r = await this.q`INSERT INTO sessions (id_hash, email, csrf, created_at, last_seen)
      SELECT ${s.idHash}, ${s.email}, ${s.csrf}, ${s.createdAt}, ${s.lastSeen}
      WHERE EXISTS (SELECT 1 FROM patients WHERE email = ${s.email} AND status <> 'revoked')`;
    return r.count === 1;
  }

  async touchSession(idHash: string, lastSeen: string): Promise<void> {
    await this.q`UPDATE sessions SET last_seen = ${lastSeen} WHERE id_hash = ${idHash}`;
  }

  async deleteSession(idHash: string): Promise<void> {
    await this.q`DELETE FROM sessions WHERE id_hash = ${idHash}`;
  }

  async deleteEndedSessions(idleBefore: string, createdBefore: string): Promise<number> {
    return (await this.q`DELETE FROM sessions WHERE last_seen < ${idleBefore} OR created_at <= ${createdBefore}`).count;
  }

  async markDownloaded(id: string, at: string): Promise<boolean> {
    const r = await this.q`UPDATE deliveries SET downloaded_at = ${at}, status = 'downloaded' WHERE id = ${id} AND downloaded_at IS NULL AND status = 'ready'`;
    return r.count === 1;
  }
}

// Typed access to the rows. SQL lives here and nowhere else; the domain rules live in src/core.
import type { Database, Statement } from "better-sqlite3";
import type { DeliveryRow, DeliveryStatus, FileRow, PatientRow, PatientStatus, SessionRow, TokenRow, WrapHolder, WrapRow } from "./rows.js";

/**
 * Prepared statements, each prepared once per SQL text (the texts are constants or built
 * from a fixed set of filters, so the cache stays small).
 */
export class StatementCache {
  private readonly statements = new Map<string, Statement>();

  constructor(private readonly db: Database) {}

  /** @returns The statement for this SQL. */
  get(sql: string): Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }
}

/** Patient account status (DESIGN.md §5). */
const PATIENT_COLS =
  "email, status, password_hash AS passwordHash, credential_hash AS credentialHash, kdf, recipient, safety_code AS safetyCode, registered_at AS registeredAt, secupass_at AS secupassAt, approved_at AS approvedAt, revoked_at AS revokedAt, invited_at AS invitedAt, approval, invite_id AS inviteId, invite_session AS inviteSession, alarmed_at AS alarmedAt, lang";
const DELIVERY_COLS =
  "id, recipient, level, status, subject, sender, created_at AS createdAt, expires_at AS expiresAt, downloaded_at AS downloadedAt, ended_at AS endedAt, source_key AS sourceKey, sent_at AS sentAt, reminded_at AS remindedAt";
const FILE_COLS = "id, delivery_id AS deliveryId, position, kind, name, size, blob";

/** Row access for one database connection. All methods are synchronous. */
export class Records {
  /**
   * @param db - An open, migrated database.
   */
  private readonly sql: StatementCache;

  constructor(private readonly db: Database) {
    this.sql = new StatementCache(db);
  }

  /**
   * @param email - Lowercased address.
   * @returns The patient, or undefined.
   */
  patient(email: string): PatientRow | undefined {
    return this.sql.get(`SELECT ${PATIENT_COLS} FROM patients WHERE email = ?`).get(email) as PatientRow | undefined;
  }

  /**
   * @param status - Only patients with this status, or all.
   * @returns Patients ordered by registration.
   */
  patients(status?: PatientStatus): PatientRow[] {
    const where = status ? "WHERE status = ?" : "";
    return this.sql
      .get(`SELECT ${PATIENT_COLS} FROM patients ${where} ORDER BY registered_at, email`)
      .all(...(status ? [status] : [])) as PatientRow[];
  }

  /**
   * @param p - The new patient.
   */
  insertPatient(p: PatientRow): void {
    this.sql
      .get(
        "INSERT INTO patients (email, status, password_hash, credential_hash, kdf, recipient, safety_code, registered_at, secupass_at, approved_at, revoked_at, invited_at, approval, invite_id, invite_session, alarmed_at, lang) VALUES (@email, @status, @passwordHash, @credentialHash, @kdf, @recipient, @safetyCode, @registeredAt, @secupassAt, @approvedAt, @revokedAt, @invitedAt, @approval, @inviteId, @inviteSession, @alarmedAt, @lang)",
      )
      .run(p);
  }

  /**
   * Writes every field of a patient back.
   *
   * @param p - The changed patient.
   */
  updatePatient(p: PatientRow): void {
    this.sql
      .get(
        "UPDATE patients SET status = @status, password_hash = @passwordHash, credential_hash = @credentialHash, kdf = @kdf, recipient = @recipient, safety_code = @safetyCode, secupass_at = @secupassAt, approved_at = @approvedAt, revoked_at = @revokedAt, invited_at = @invitedAt, approval = @approval, invite_id = @inviteId, invite_session = @inviteSession, alarmed_at = @alarmedAt, lang = @lang WHERE email = @email",
      )
      .run(p);
  }

  /**
   * @param id - A delivery id.
   * @returns The delivery, or undefined.
   */
  delivery(id: string): DeliveryRow | undefined {
    return this.sql.get(`SELECT ${DELIVERY_COLS} FROM deliveries WHERE id = ?`).get(id) as DeliveryRow | undefined;
  }

  /**
   * @param sourceKey - The idempotency key of a relayed message.
   * @returns The delivery created from it, or undefined.
   */
  deliveryBySource(sourceKey: string): DeliveryRow | undefined {
    return this.sql.get(`SELECT ${DELIVERY_COLS} FROM deliveries WHERE source_key = ?`).get(sourceKey) as
      | DeliveryRow
      | undefined;
  }

  /**
   * @param filter - Optional recipient and statuses.
   * @returns Sent (visible) deliveries, oldest first.
   */
  deliveries(filter: { recipient?: string; statuses?: readonly DeliveryStatus[] } = {}): DeliveryRow[] {
    const where: string[] = ["sent_at IS NOT NULL"];
    const args: unknown[] = [];
    if (filter.recipient !== undefined) {
      where.push("recipient = ?");
      args.push(filter.recipient);
    }
    if (filter.statuses) {
      where.push(`status IN (${filter.statuses.map(() => "?").join(", ")})`);
      args.push(...filter.statuses);
    }
    return this.sql
      .get(`SELECT ${DELIVERY_COLS} FROM deliveries WHERE ${where.join(" AND ")} ORDER BY created_at, id`)
      .all(...args) as DeliveryRow[];
  }

  /**
   * @param before - ISO time.
   * @returns Ids of deliveries whose send never completed, created before that time.
   */
  unsentBefore(before: string): string[] {
    return this.sql.get("SELECT id FROM deliveries WHERE sent_at IS NULL AND created_at < ?").pluck().all(before) as string[];
  }

  /**
   * Makes deliveries visible: their mail was accepted.
   *
   * @param ids - The deliveries.
   * @param at - ISO time.
   */
  markSent(ids: readonly string[], at: string): void {
    const stmt = this.sql.get("UPDATE deliveries SET sent_at = ? WHERE id = ? AND sent_at IS NULL");
    for (const id of ids) stmt.run(at, id);
  }

  /**
   * @param before - ISO time.
   * @returns Active deliveries whose expiry is at or before that time.
   */
  dueForExpiry(before: string): DeliveryRow[] {
    return this.sql
      .get(
        `SELECT ${DELIVERY_COLS} FROM deliveries WHERE status IN ('pending-approval','ready','downloaded') AND sent_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at`,
      )
      .all(before) as DeliveryRow[];
  }

  /**
   * Inserts a delivery with its files, wraps and link token.
   *
   * @param d - The delivery.
   * @param files - Its files.
   * @param wraps - Its wraps.
   * @param token - Its link token.
   */
  insertDelivery(d: DeliveryRow, files: readonly FileRow[], wraps: readonly WrapRow[], token: TokenRow): void {
    this.sql
      .get(
        "INSERT INTO deliveries (id, recipient, level, status, subject, sender, created_at, expires_at, downloaded_at, ended_at, source_key, sent_at, reminded_at) VALUES (@id, @recipient, @level, @status, @subject, @sender, @createdAt, @expiresAt, @downloadedAt, @endedAt, @sourceKey, @sentAt, @remindedAt)",
      )
      .run(d);
    const insFile = this.sql.get(
      "INSERT INTO files (id, delivery_id, position, kind, name, size, blob) VALUES (@id, @deliveryId, @position, @kind, @name, @size, @blob)",
    );
    for (const f of files) insFile.run(f);
    for (const w of wraps) this.putWrap(w);
    this.insertToken(token);
  }

  /**
   * Adds a link token to an existing delivery (a delivery announced again keeps its
   * earlier tokens, so every mail that announced it opens it).
   *
   * @param token - The token row.
   */
  insertToken(token: TokenRow): void {
    this.sql
      .get("INSERT INTO link_tokens (hash, delivery_id, email, created_at) VALUES (@hash, @deliveryId, @email, @createdAt)")
      .run(token);
  }

  /**
   * Sets a delivery's status (and the time it ended, for revoked and expired).
   *
   * @param id - The delivery.
   * @param status - The new status.
   * @param at - ISO time, stored as ended_at for terminal states.
   */
  setDeliveryStatus(id: string, status: DeliveryStatus, at: string): void {
    const ended = status === "revoked" || status === "expired" ? at : null;
    this.sql.get("UPDATE deliveries SET status = ?, ended_at = coalesce(?, ended_at) WHERE id = ?").run(status, ended, id);
  }

  /**
   * @param deliveryId - The delivery.
   * @returns Its files in order.
   */
  files(deliveryId: string): FileRow[] {
    return this.sql
      .get(`SELECT ${FILE_COLS} FROM files WHERE delivery_id = ? ORDER BY position`)
      .all(deliveryId) as FileRow[];
  }

  /**
   * @param deliveryIds - The deliveries.
   * @returns Each one's files in order ([] for none); one statement per id, as SQLite runs in this process.
   */
  filesOf(deliveryIds: readonly string[]): Map<string, FileRow[]> {
    return new Map(deliveryIds.map((id) => [id, this.files(id)]));
  }

  /**
   * @returns Every blob path that a file row references.
   */
  referencedBlobs(): Set<string> {
    const rows = this.sql.get("SELECT blob FROM files WHERE blob IS NOT NULL UNION SELECT blob FROM reply_parts").pluck().all() as string[];
    return new Set(rows);
  }

  /**
   * @param email - The patient.
   * @param fromLevel - The lowest level whose deliveries are wrapped to the patient's key (the core's policy).
   * @returns Wraps removed and deliveries put back to pending-approval (Secu-Pass reset).
   */
  unwrapPatient(email: string, fromLevel: number): number {
    const ids = this.sql
      .get("SELECT id FROM deliveries WHERE recipient = ? AND level >= ? AND status IN ('ready','downloaded','pending-approval')")
      .pluck()
      .all(email, fromLevel) as string[];
    for (const id of ids) {
      this.sql.get("DELETE FROM wraps WHERE delivery_id = ? AND holder = 'patient'").run(id);
      this.sql.get("UPDATE deliveries SET status = 'pending-approval' WHERE id = ?").run(id);
    }
    return ids.length;
  }

  /**
   * @param before - ISO time: remind of deliveries expiring before it.
   * @param now - ISO time: and not yet expired.
   * @param fromLevel - The lowest level whose patients log in (the core's policy).
   * @returns Ready deliveries never downloaded nor reminded of.
   */
  dueForReminder(before: string, now: string, fromLevel: number): DeliveryRow[] {
    return this.sql
      .get(
        `SELECT ${DELIVERY_COLS} FROM deliveries WHERE status = 'ready' AND downloaded_at IS NULL AND reminded_at IS NULL AND sent_at IS NOT NULL AND level >= ? AND expires_at <= ? AND expires_at > ?`,
      )
      .all(fromLevel, before, now) as DeliveryRow[];
  }

  /**
   * @param id - The delivery.
   * @param at - ISO time.
   */
  markReminded(id: string, at: string): void {
    this.sql.get("UPDATE deliveries SET reminded_at = ? WHERE id = ?").run(at, id);
  }

  /**
   * Ends every session of a patient (after a new password, at revocation).
   *
   * @param email - The patient.
   * @returns How many were ended.
   */
  deleteSessionsOf(email: string): number {
    return this.sql.get("DELETE FROM sessions WHERE email = ?").run(email).changes;
  }

  /**
   * @param deliveryId - The delivery.
   * @param holder - practice or patient.
   * @returns The wrap, or undefined.
   */
  wrap(deliveryId: string, holder: WrapHolder): WrapRow | undefined {
    const row = this.sql
      .get(
        "SELECT delivery_id AS deliveryId, holder, recipient, ciphertext, created_at AS createdAt FROM wraps WHERE delivery_id = ? AND holder = ?",
      )
      .get(deliveryId, holder) as (Omit<WrapRow, "ciphertext"> & { ciphertext: Buffer }) | undefined;
    return row && { ...row, ciphertext: new Uint8Array(row.ciphertext) };
  }

  /**
   * @param deliveryIds - The deliveries.
   * @param holder - practice or patient.
   * @returns The wraps found, by delivery id.
   */
  wraps(deliveryIds: readonly string[], holder: WrapHolder): Map<string, WrapRow> {
    const out = new Map<string, WrapRow>();
    for (const id of deliveryIds) {
      const w = this.wrap(id, holder);
      if (w) out.set(id, w);
    }
    return out;
  }

  /**
   * Inserts or replaces a wrap.
   *
   * @param w - The wrap.
   */
  putWrap(w: WrapRow): void {
    this.sql
      .get(
        "INSERT OR REPLACE INTO wraps (delivery_id, holder, recipient, ciphertext, created_at) VALUES (@deliveryId, @holder, @recipient, @ciphertext, @createdAt)",
      )
      .run({ ...w, ciphertext: Buffer.from(w.ciphertext) });
  }

  /**
   * Deletes a delivery's key material and detaches its blobs (crypto-shred). The link
   * token's hash stays, so that the link can say the delivery is gone (410).
   *
   * @param deliveryId - The delivery.
   * @returns The blob paths to delete from disk.
   */
  shred(deliveryId: string): string[] {
    const blobs = this.files(deliveryId).flatMap((f) => (f.blob ? [f.blob] : []));
    this.sql.get("DELETE FROM wraps WHERE delivery_id = ?").run(deliveryId);
    this.sql.get("UPDATE files SET blob = NULL WHERE delivery_id = ?").run(deliveryId);
    return blobs;
  }

  /**
   * Removes every row of a delivery that never became visible (a failed send).
   *
   * @param deliveryId - The delivery.
   */
  deleteDelivery(deliveryId: string): void {
    for (const t of ["wraps", "link_tokens", "files"]) {
      this.sql.get(`DELETE FROM ${t} WHERE delivery_id = ?`).run(deliveryId);
    }
    this.sql.get("DELETE FROM deliveries WHERE id = ?").run(deliveryId);
  }

  /**
   * @param hash - SHA-256 of a link token, hex.
   * @returns The token row, or undefined.
   */
  token(hash: string): TokenRow | undefined {
    return this.sql
      .get("SELECT hash, delivery_id AS deliveryId, email, created_at AS createdAt FROM link_tokens WHERE hash = ?")
      .get(hash) as TokenRow | undefined;
  }

  /**
   * @param idHash - SHA-256 of the session cookie, hex.
   * @returns The session, or undefined.
   */
  session(idHash: string): SessionRow | undefined {
    return this.sql
      .get("SELECT id_hash AS idHash, email, csrf, created_at AS createdAt, last_seen AS lastSeen FROM sessions WHERE id_hash = ?")
      .get(idHash) as SessionRow | undefined;
  }

  /**
   * Writes a session, in one statement only while its patient exists and is not revoked.
   *
   * @param s - A new session of a patient.
   * @returns Whether it was written.
   */
  insertSession(s: SessionRow & { email: string }): boolean {
    return (
      this.sql
        .get(
          "INSERT INTO sessions (id_hash, email, csrf, created_at, last_seen) SELECT @idHash, @email, @csrf, @createdAt, @lastSeen WHERE EXISTS (SELECT 1 FROM patients WHERE email = @email AND status <> 'revoked')",
        )
        .run(s).changes === 1
    );
  }

  /**
   * @param idHash - The session.
   * @param lastSeen - ISO time of this request.
   */
  touchSession(idHash: string, lastSeen: string): void {
    this.sql.get("UPDATE sessions SET last_seen = ? WHERE id_hash = ?").run(lastSeen, idHash);
  }

  /**
   * @param idHash - The session to end.
   */
  deleteSession(idHash: string): void {
    this.sql.get("DELETE FROM sessions WHERE id_hash = ?").run(idHash);
  }

  /**
   * Deletes sessions that have ended.
   *
   * @param idleBefore - ISO time: sessions last seen before it are idle.
   * @param createdBefore - ISO time: sessions created before it are past their lifetime.
   * @returns How many were removed.
   */
  deleteEndedSessions(idleBefore: string, createdBefore: string): number {
    return this.sql.get("DELETE FROM sessions WHERE last_seen < ? OR created_at <= ?").run(idleBefore, createdBefore).changes;
  }

  /**
   * Records the first download of a delivery.
   *
   * @param id - The delivery.
   * @param at - ISO time.
   * @returns True if this was the first.
   */
  markDownloaded(id: string, at: string): boolean {
    return (
      this.sql
        .get("UPDATE deliveries SET downloaded_at = ?, status = 'downloaded' WHERE id = ? AND downloaded_at IS NULL AND status = 'ready'")
        .run(at, id).changes === 1
    );
  }
}

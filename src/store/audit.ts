// The audit log: append-only (triggers refuse UPDATE and DELETE) and hash-chained, so that
// editing a row, even after dropping the triggers, breaks the chain at that row. The chain is
// unkeyed: whoever can write the database can rebuild it, so src/core signs checkpoints
// (seq, hash) with the practice signing key and keeps them here, in audit_checkpoints.
import { createHash } from "node:crypto";
import type { Database } from "better-sqlite3";

/** What a caller records. Never put key material, file names or message text in details. */
export interface AuditEntry {
  readonly actor: string;
  readonly action: string;
  readonly subject?: string | null;
  readonly details?: Record<string, unknown>;
}

/** A stored audit row. */
export interface AuditRow {
  readonly seq: number;
  readonly at: string;
  readonly actor: string;
  readonly action: string;
  readonly subject: string | null;
  readonly details: string;
  readonly prevHash: string;
  readonly hash: string;
}

/** The result of checking the chain. */
export type AuditVerdict =
  | { readonly ok: true; readonly rows: number; /** Of the last row (zeros when empty). */ readonly hash: string }
  | { readonly ok: false; readonly rows: number; readonly seq: number; readonly reason: string };

/** A signed checkpoint as stored: a signature over (seq, hash of row seq, at). */
export interface CheckpointRow {
  readonly seq: number;
  readonly hash: string;
  readonly at: string;
  /** base64 Ed25519 signature; checked by src/core against the key pinned in config.json. */
  readonly signature: string;
}

const GENESIS = "0".repeat(64);

function rowHash(r: Omit<AuditRow, "hash">): string {
  return createHash("sha256")
    .update(JSON.stringify([r.seq, r.at, r.actor, r.action, r.subject, r.details, r.prevHash]))
    .digest("hex");
}

/**
 * Appends one entry. Call it inside the transaction that makes the change it records.
 *
 * @param db - The open database.
 * @param entry - What happened.
 * @param at - When.
 * @returns The new row.
 */
export function appendAudit(db: Database, entry: AuditEntry, at: Date): AuditRow {
  const last = db.prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").get() as
    | { seq: number; hash: string }
    | undefined;
  const row = nextAuditRow(last, entry, at);
  db.prepare(
    "INSERT INTO audit (seq, at, actor, action, subject, details, prev_hash, hash) VALUES (@seq, @at, @actor, @action, @subject, @details, @prevHash, @hash)",
  ).run(row);
  return row;
}

/**
 * The row that follows the last one: every backend chains rows with this.
 *
 * @param last - The last row's seq and hash, or undefined for the first row.
 * @param entry - What happened.
 * @param at - When.
 * @returns The new row, hash included.
 */
export function nextAuditRow(last: { readonly seq: number; readonly hash: string } | undefined, entry: AuditEntry, at: Date): AuditRow {
  const base = {
    seq: (last?.seq ?? 0) + 1,
    at: at.toISOString(),
    actor: entry.actor,
    action: entry.action,
    subject: entry.subject ?? null,
    details: JSON.stringify(entry.details ?? {}),
    prevHash: last?.hash ?? GENESIS,
  };
  return { ...base, hash: rowHash(base) };
}

/**
 * Reads audit rows in order.
 *
 * @param db - The open database.
 * @param after - Start after this sequence number.
 * @returns An iterator over every row after `after`.
 */
export function auditRows(db: Database, after = 0): IterableIterator<AuditRow> {
  return db
    .prepare(
      "SELECT seq, at, actor, action, subject, details, prev_hash AS prevHash, hash FROM audit WHERE seq > ? ORDER BY seq",
    )
    .iterate(after) as IterableIterator<AuditRow>;
}

/**
 * Reads one page of audit rows in order.
 *
 * @param db - The open database.
 * @param after - Start after this sequence number.
 * @param limit - At most this many rows.
 * @returns The rows.
 */
export function auditPage(db: Database, after: number, limit: number): AuditRow[] {
  return db
    .prepare("SELECT seq, at, actor, action, subject, details, prev_hash AS prevHash, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?")
    .all(after, limit) as AuditRow[];
}

/**
 * Stores a signed checkpoint; call inside the transaction that appended the row it signs.
 *
 * @param db - The open database.
 * @param checkpoint - The checkpoint.
 */
export function appendCheckpoint(db: Database, checkpoint: CheckpointRow): void {
  db.prepare("INSERT INTO audit_checkpoints (seq, hash, at, signature) VALUES (@seq, @hash, @at, @signature)").run(checkpoint);
}

/**
 * @param db - The open database.
 * @returns Every stored checkpoint, oldest first.
 */
export function auditCheckpoints(db: Database): CheckpointRow[] {
  return db.prepare("SELECT seq, hash, at, signature FROM audit_checkpoints ORDER BY seq").all() as CheckpointRow[];
}

/**
 * Walks the chain from the first row, or on from a row verified before, and reports the first
 * row that does not fit.
 *
 * @param db - The open database.
 * @param check - A further check of each row whose link and hash are intact (e.g. against
 *   signed checkpoints); returns why the row does not fit, or null.
 * @param from - A row already verified (its seq and hash): walk on from it, after checking
 *   that it is unchanged.
 * @returns ok, or the sequence number of the first broken row and why.
 */
export function verifyAudit(
  db: Database,
  check: (row: AuditRow) => string | null = () => null,
  from?: { readonly seq: number; readonly hash: string },
): AuditVerdict {
  const moved = from && from.seq > 0 ? fromChanged(from, (db.prepare("SELECT hash FROM audit WHERE seq = ?").get(from.seq) as { hash: string } | undefined)?.hash) : null;
  if (moved) return moved;
  const walk = new AuditWalk(check, from);
  for (const r of auditRows(db, walk.rows)) {
    const broken = walk.feed(r);
    if (broken) return broken;
  }
  return walk.end();
}

/**
 * @param from - A row verified before.
 * @param hashNow - Its hash in the store now (undefined: gone).
 * @returns A failed verdict if the row changed or is gone, else null.
 */
export function fromChanged(from: { readonly seq: number; readonly hash: string }, hashNow: string | undefined): AuditVerdict | null {
  return hashNow === from.hash ? null : { ok: false, rows: from.seq, seq: from.seq, reason: "row changed while it was being verified" };
}

/** Walks the chain row by row, as every backend reads it: fed in order, it finds the first row that does not fit. */
export class AuditWalk {
  /** The rows walked so far (those before the start included). */
  rows = 0;
  private prev = GENESIS;

  /**
   * @param check - A further check of each intact row; returns why it does not fit, or null.
   * @param from - A row verified before: the walk goes on after it (check it with {@link fromChanged}).
   */
  constructor(
    private readonly check: (row: AuditRow) => string | null = () => null,
    from?: { readonly seq: number; readonly hash: string },
  ) {
    if (from !== undefined && from.seq > 0) {
      this.prev = from.hash;
      this.rows = from.seq;
    }
  }

  /**
   * @param r - The next row.
   * @returns A failed verdict at this row, or null if it fits.
   */
  feed(r: AuditRow): AuditVerdict | null {
    const expectSeq = this.rows + 1;
    this.rows++;
    if (r.seq !== expectSeq) return { ok: false, rows: this.rows, seq: r.seq, reason: `row ${expectSeq} is missing` };
    if (r.prevHash !== this.prev) return { ok: false, rows: this.rows, seq: r.seq, reason: "previous-hash link does not match" };
    if (rowHash(r) !== r.hash) return { ok: false, rows: this.rows, seq: r.seq, reason: "row content does not match its hash" };
    const reason = this.check(r);
    if (reason !== null) return { ok: false, rows: this.rows, seq: r.seq, reason };
    this.prev = r.hash;
    return null;
  }

  /** @returns The verdict when every row fitted. */
  end(): AuditVerdict {
    return { ok: true, rows: this.rows, hash: this.prev };
  }
}

// The public door of src/store.
import type { Database } from "better-sqlite3";
import { BlobStore } from "./blobs.js";
import { openDatabase } from "./db.js";
import {
  appendAudit,
  appendCheckpoint,
  auditCheckpoints,
  auditRows,
  verifyAudit,
  type AuditEntry,
  type AuditRow,
  type AuditVerdict,
  type CheckpointRow,
} from "./audit.js";
import { AccountRecords } from "./accounts.js";
import { AttemptRecords } from "./attempts.js";
import { Records } from "./records.js";

export { BlobStore, fileStream, renameDurably, writeStream } from "./blobs.js";
export { readBackupHeader, readManifest, restoreHome } from "./restore.js";
export {
  BackupError,
  HEADER_FILE,
  MANIFEST_FILE,
  backupHome,
  isEmptyDir,
  type BackupCounts,
  type BackupManifest,
  type BackupProgress,
  type ManifestEntry,
  type StreamMap,
} from "./backup.js";
export type { AuditEntry, AuditRow, AuditVerdict, CheckpointRow } from "./audit.js";
export type { AttemptClaim, HeldAttempt } from "./attempts.js";
export type { InviteRow, ReplyPartRow, ReplyRow, ResetRow } from "./accounts.js";
export type {
  DeliveryRow,
  DeliveryStatus,
  FileRow,
  PatientRow,
  PatientStatus,
  SessionRow,
  TokenRow,
  WrapHolder,
  WrapRow,
} from "./rows.js";

/** SQLite rows, blobs and the audit chain of one home. */
export class Store {
  readonly records: Records;
  readonly accounts: AccountRecords;
  readonly attempts: AttemptRecords;
  readonly blobs: BlobStore;

  private constructor(
    private readonly db: Database,
    home: string,
  ) {
    this.records = new Records(db);
    this.accounts = new AccountRecords(db);
    this.attempts = new AttemptRecords(db);
    this.blobs = new BlobStore(home);
  }

  /**
   * Opens the store of a home, creating and migrating the database as needed.
   *
   * @param home - An existing, writable folder.
   * @returns The store.
   */
  static open(home: string): Store {
    return new Store(openDatabase(home), home);
  }

  /**
   * Runs fn in one IMMEDIATE transaction: all of its writes land, or none.
   *
   * @param fn - Synchronous work on {@link records} and {@link audit}.
   * @returns What fn returns.
   */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  /**
   * Runs fn in one read transaction: all of its reads see the same state, however other
   * processes write meanwhile.
   *
   * @param fn - Synchronous reads.
   * @returns What fn returns.
   */
  snapshot<T>(fn: () => T): T {
    return this.db.transaction(fn).deferred();
  }

  /**
   * Appends to the audit chain; call inside {@link transaction} with the change it records.
   *
   * @param entry - What happened.
   * @param at - When.
   * @returns The new row.
   */
  audit(entry: AuditEntry, at: Date): AuditRow {
    return appendAudit(this.db, entry, at);
  }

  /** @returns An iterator over all audit rows. */
  auditRows(): IterableIterator<AuditRow> {
    return auditRows(this.db);
  }

  /**
   * Stores a signed checkpoint; call inside {@link transaction} with the row it signs.
   *
   * @param checkpoint - The checkpoint.
   */
  putCheckpoint(checkpoint: CheckpointRow): void {
    appendCheckpoint(this.db, checkpoint);
  }

  /** @returns Every stored audit checkpoint, oldest first (signatures not checked here). */
  auditCheckpoints(): CheckpointRow[] {
    return auditCheckpoints(this.db);
  }

  /**
   * @param check - A further check of each intact row; returns why it does not fit, or null.
   * @param from - A row verified before (seq and hash): walk on from it.
   * @returns Whether the audit chain is intact, and where it breaks.
   */
  verifyAudit(check?: (row: AuditRow) => string | null, from?: { readonly seq: number; readonly hash: string }): AuditVerdict {
    return verifyAudit(this.db, check, from);
  }

  /** Closes the database. */
  close(): void {
    this.db.close();
  }
}

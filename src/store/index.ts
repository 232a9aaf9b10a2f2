// The public door of src/store: the store interface, the factory that picks its backend,
// and the backend-specific restore.
import { EmbeddedStore } from "./embedded.js";
import type { Store } from "./types.js";

export type { AccountStore, AttemptStore, BlobStore, RecordStore, ScannedBlob, Store, StoreTx } from "./types.js";
export { fileStream, renameDurably, writeStream } from "./blobs.js";
export { cleanUpAfter, suppressedBy } from "./cleanup.js";
export { readBackupHeader, readManifest, restoreHome } from "./restore.js";
export {
  BackupError,
  HEADER_FILE,
  MANIFEST_FILE,
  backupHome,
  isEmptyDir,
  type BackupCounts,
  type BackupManifest,
  type BackupOptions,
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

/**
 * Opens the store of a home. This is where the backend is chosen; the embedded one
 * (SQLite and blob files under home) is the only one so far.
 *
 * @param home - An existing, writable folder.
 * @returns The store, creating and migrating its database as needed.
 */
export function openStore(home: string): Store {
  return EmbeddedStore.open(home);
}

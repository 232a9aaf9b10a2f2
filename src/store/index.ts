// The public door of src/store: the store interface, the factory that picks its backend,
// and the backend-specific restore.
import { EmbeddedStore } from "./embedded.js";
import type { DatabaseFacts } from "./postgres/inspect.js";
import type { S3Settings } from "./s3/client.js";
import type { BucketProbe } from "./s3/probe.js";
import type { Store } from "./types.js";

export type { DatabaseFacts } from "./postgres/inspect.js";
export type { BucketProbe, ProbeStep } from "./s3/probe.js";

export type { AccountStore, AttemptStore, BlobStore, PasskeyStore, RecordStore, ScannedBlob, Store, StoreTx, TableRow } from "./types.js";
export { fileStream, renameDurably, writeStream } from "./blobs.js";
export { cleanUpAfter, suppressedBy } from "./cleanup.js";
export { readBackupHeader, readManifest, restoreHome } from "./restore.js";
export { TransferError, copyBlob, copyRows, tablesWithRows, type CopiedBlob } from "./transfer.js";
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
export type { PasskeyChallengeRow, PasskeyRow } from "./passkeys.js";
export type { PracticeRow } from "./practice.js";
export type { ChallengeRow, InviteRow, ReplyPartRow, ReplyRow, ResetRow } from "./accounts.js";
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
 * Opens the embedded store of a home: SQLite and blob files under home, the default.
 *
 * @param home - An existing, writable folder.
 * @returns The store, creating and migrating its database as needed.
 */
export function openStore(home: string): Store {
  return EmbeddedStore.open(home);
}

/**
 * Opens the shared store that several praxmail nodes use at once: rows in PostgreSQL,
 * blobs in an S3 bucket.
 *
 * @param database - `postgres://user:password@host:port/database`.
 * @param blobs - `s3://bucket/prefix`.
 * @param s3 - Endpoint, region and credentials; unset ones come from the AWS_* environment.
 * @returns The store, its database migrated (one node at a time).
 */
export async function openSharedStore(database: string, blobs: string, s3: S3Settings = {}): Promise<Store> {
  // Loaded only here: a home on the embedded backend never loads PostgreSQL's client or the
  // AWS SDK (test/cli.start.test.ts). The client is fixed before it loads (postgres/client-fix.ts).
  const { fixPostgresClient } = await import("./postgres/client-fix.js");
  fixPostgresClient();
  const [{ PostgresStore }, { S3Blobs, parseBlobsUrl }, { s3Client }] = await Promise.all([import("./postgres/store.js"), import("./s3/blobs.js"), import("./s3/client.js")]);
  const client = s3Client(s3);
  try {
    return await PostgresStore.open(database, new S3Blobs(client, parseBlobsUrl(blobs)), () => {
      client.destroy();
    });
  } catch (e) {
    client.destroy();
    throw e;
  }
}

/**
 * Reads the shared database's version, schema version and round trip, without migrating or
 * writing anything (for `praxmail doctor`).
 *
 * @param database - `postgres://user:password@host:port/database`.
 * @param timeoutSeconds - How long to wait for the connection and each query.
 * @returns The facts, and the oldest PostgreSQL major version the backend supports.
 * @throws The driver's error when the server cannot be reached or refuses the login.
 */
export async function inspectDatabase(database: string, timeoutSeconds: number): Promise<{ facts: DatabaseFacts; minMajor: number }> {
  const { inspectPostgres, MIN_POSTGRES } = await import("./postgres/inspect.js");
  return { facts: await inspectPostgres(database, timeoutSeconds), minMajor: MIN_POSTGRES };
}

/**
 * Writes, reads back and deletes a small probe object under the blobs' prefix (for
 * `praxmail doctor`).
 *
 * @param blobs - `s3://bucket/prefix`.
 * @param timeoutSeconds - How long each request may take.
 * @param s3 - Endpoint, region and credentials; unset ones come from the AWS_* environment.
 * @returns How the probe went.
 */
export async function probeBlobs(blobs: string, timeoutSeconds: number, s3: S3Settings = {}): Promise<BucketProbe> {
  const [{ parseBlobsUrl }, { s3Client }, { probeBucket }] = await Promise.all([import("./s3/blobs.js"), import("./s3/client.js"), import("./s3/probe.js")]);
  const client = s3Client(s3);
  try {
    return await probeBucket(client, parseBlobsUrl(blobs), timeoutSeconds * 1000);
  } finally {
    client.destroy();
  }
}

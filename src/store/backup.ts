// Backups of a home's durable state: an online snapshot of the database (SQLite's backup
// API) and a copy of every blob that snapshot references, described by a manifest of sizes
// and SHA-256 sums. Blobs are written before the rows that name them and deleted after the
// rows that named them are gone, so a snapshot can only miss a blob that was deleted after
// it was taken; then a fresh snapshot, which no longer names it, is taken.
//
// Format 2 is encrypted: the database, the named files (config.json, with the upstream
// password) and the manifest are sealed by the caller (age to the practice recipient; the
// store knows no keys) and stored as `<name>.age`. Blobs are copied as they are: each is
// already an age file to its delivery's key D, and D exists only wrapped (to the practice
// and the patient) inside the sealed database; the sealed manifest holds their SHA-256.
// Only `backup.json` is clear: the format and what the caller puts there (public facts
// such as the recipient the backup is sealed to). The SHA-256 sums are those of the
// plaintext, as in home. Format 1 (plain) is refused.
import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdir, open, readdir, rename, rm, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { cleanUpAfter } from "./cleanup.js";
import { verifyAudit } from "./audit.js";
import { BLOB_KEY, fileStream, fsync, sha256Tap, writeStream } from "./blobs.js";
import { DB_FILE } from "./db.js";
import { Records } from "./records.js";

// Constants and helpers exported here are shared with restore.ts; index.ts re-exports only
// the public ones.

/** The sealed manifest's file name in a backup folder; it is written last. */
export const MANIFEST_FILE = "manifest.age";
/** The one clear file of a backup folder: format, version and the caller's public facts. */
export const HEADER_FILE = "backup.json";
/** The manifest of a format 1 (plain) backup. */
export const PLAIN_MANIFEST = "manifest.json";
/** What sealed files are called in a backup folder. */
export const SEALED = ".age";
/** The format's name and version, in backup.json and the manifest. */
export const FORMAT = "praxmail-backup";
export const VERSION = 2;
/** Where restore assembles a home before moving it into place. */
export const STAGING = ".restore-partial";
export const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
export const SHA256 = /^[0-9a-f]{64}$/;
/** Snapshots to take before giving up on a home where blobs keep disappearing. */
const ATTEMPTS = 10;

/** Turns a stream into another: the caller's encryption (seal) or decryption (open). */
export type StreamMap = (input: ReadableStream<Uint8Array>) => Promise<ReadableStream<Uint8Array>>;

/** A file in a backup, by its path in home; size and SHA-256 of its bytes in home. */
export interface ManifestEntry {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
}

/** What a backup holds, in numbers. */
export interface BackupCounts {
  readonly deliveries: number;
  readonly patients: number;
  readonly replies: number;
  readonly auditRows: number;
  readonly blobs: number;
  readonly blobBytes: number;
}

/** The manifest of a backup folder. */
export interface BackupManifest {
  readonly format: typeof FORMAT;
  readonly version: typeof VERSION;
  readonly createdAt: string;
  /** The database's schema version (PRAGMA user_version). */
  readonly schema: number;
  readonly database: ManifestEntry;
  readonly counts: BackupCounts;
  /** Whether the audit chain of the snapshot was intact. */
  readonly auditIntact: boolean;
  readonly blobs: readonly ManifestEntry[];
  /** Further files from home (e.g. config.json), in the order restore puts them back. */
  readonly files: readonly ManifestEntry[];
  /** What the caller adds (program version, whether the identity is included, …). */
  readonly meta: Readonly<Record<string, unknown>>;
}

/** Progress of a backup or restore. */
export type BackupProgress =
  | { readonly phase: "database"; readonly attempt: number }
  | { readonly phase: "blobs"; readonly done: number; readonly total: number; readonly bytes: number };

/** Why a backup or restore failed; callers branch on `code`. */
export class BackupError extends Error {
  /**
   * @param code - `not-empty`: the target folder holds files; `missing-blob`: home's database
   *   names a blob that is not on disk; `corrupt`: the database fails its integrity check;
   *   `manifest`: no readable manifest; `plain`: a format 1 (unencrypted) backup; `mismatch`:
   *   a file differs from the manifest, is missing or does not decrypt; `audit`: the audit
   *   chain is broken; `schema`: written by a newer praxmail.
   * @param message - Lowercase, no trailing period.
   */
  constructor(
    readonly code: "not-empty" | "missing-blob" | "corrupt" | "manifest" | "plain" | "mismatch" | "audit" | "schema",
    message: string,
  ) {
    super(message);
    this.name = "BackupError";
  }
}

/** How to back up, and what besides the database and blobs. */
export interface BackupOptions {
  /** Encrypts the database, the files and the manifest. */
  readonly seal: StreamMap;
  /** Public facts for {@link HEADER_FILE} (never secrets: it is not sealed). */
  readonly header?: Readonly<Record<string, unknown>>;
  /**
   * The home: where the named files are, and where the unsealed copy of the database is made.
   * The shared backend needs it; the embedded one uses its own.
   */
  readonly home?: string;
  /** Files under home to back up (sealed), by name (e.g. `config.json`), in restore order. */
  readonly files?: readonly string[];
  /** Goes into the sealed manifest. */
  readonly meta?: Readonly<Record<string, unknown>>;
  /** Called after each snapshot and blob; awaited, so a caller can pace the work. */
  readonly progress?: (p: BackupProgress) => void | Promise<void>;
  readonly now?: () => Date;
}

/**
 * Copies a stream to a new file (mode 0600), hashing the plaintext on the way (after
 * `open`, before `seal`), and fsyncs it.
 *
 * @returns Size and SHA-256 of the plaintext.
 */
async function copyHashed(input: ReadableStream<Uint8Array>, dest: string, how: { seal?: StreamMap; open?: StreamMap } = {}): Promise<{ size: number; sha256: string }> {
  const { tap, result } = sha256Tap();
  await mkdir(dirname(dest), { recursive: true, mode: 0o700 });
  const out = await open(dest, "wx", 0o600);
  try {
    let data = input;
    if (how.open) data = await how.open(data);
    data = data.pipeThrough(tap);
    if (how.seal) data = await how.seal(data);
    await writeStream(data, out);
    await out.sync();
  } finally {
    await out.close();
  }
  return result();
}

/**
 * Copies a file if it exists; the open handle keeps a file that is deleted meanwhile whole.
 *
 * @returns The entry, or null if the source does not exist.
 */
export async function copyIfPresent(source: string, dest: string, rel: string, how: { seal?: StreamMap; open?: StreamMap } = {}): Promise<ManifestEntry | null> {
  let input: FileHandle;
  try {
    input = await open(source, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  try {
    return { path: rel, ...(await copyHashed(fileStream(input), dest, how)) };
  } finally {
    await input.close();
  }
}

/**
 * @param dir - A folder.
 * @param ignore - Names that do not count.
 * @returns Whether it is missing or holds nothing else.
 */
export async function isEmptyDir(dir: string, ignore: readonly string[] = []): Promise<boolean> {
  try {
    return (await readdir(dir)).every((n) => ignore.includes(n));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return true;
    throw e;
  }
}

interface Snapshot {
  readonly refs: Set<string>;
  readonly schema: number;
  readonly counts: Omit<BackupCounts, "blobs" | "blobBytes">;
  readonly auditIntact: boolean;
}

/**
 * What a backup is taken from: a consistent copy of the database and the blobs it names.
 * The embedded backend copies its SQLite file ({@link homeSource}); the shared one writes
 * the rows of one PostgreSQL snapshot into a new SQLite file of the same schema.
 */
export interface BackupSource {
  /** Where the unsealed copy of the database is made (home, never the backup folder). */
  readonly scratch: string;
  /**
   * Writes a consistent copy of the database, as an SQLite database of this praxmail's
   * schema, into file (which exists, empty, mode 0600).
   */
  snapshotInto(file: string): Promise<void>;
  /** @returns The blob's bytes, or null if it no longer exists (deleted after the snapshot). */
  openBlob(key: string): Promise<ReadableStream<Uint8Array> | null>;
}

/**
 * @param home - An embedded home.
 * @returns Its database (SQLite's online backup API) and blob files as a backup source.
 */
export function homeSource(home: string): BackupSource {
  return {
    scratch: home,
    async snapshotInto(file) {
      const live = new Database(join(home, DB_FILE), { fileMustExist: true });
      try {
        live.pragma("busy_timeout = 5000");
        // All remaining pages in one step: a busy relay cannot keep restarting the copy.
        await live.backup(file, { progress: () => 0x7fffffff });
      } finally {
        live.close();
      }
    },
    async openBlob(key) {
      let fh: FileHandle;
      try {
        fh = await open(join(home, key), "r");
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
        throw e;
      }
      // The open handle keeps a blob that is deleted meanwhile whole; closed at the end, on
      // failure and when the reader cancels.
      const inner = fileStream(fh).getReader();
      return new ReadableStream<Uint8Array>({
        async pull(ctl) {
          try {
            const r = await inner.read();
            if (!r.done) {
              ctl.enqueue(r.value);
              return;
            }
            await fh.close();
            ctl.close();
          } catch (e) {
            await fh.close();
            throw e;
          }
        },
        async cancel(reason) {
          await inner.cancel(reason);
          await fh.close();
        },
      });
    },
  };
}

/** Takes a snapshot of the source's database into file and reads what it references. */
async function snapshot(source: BackupSource, file: string): Promise<Snapshot> {
  await rm(file, { force: true });
  // SQLite would create it 0644 under umask 0022.
  await (await open(file, "wx", 0o600)).close();
  await source.snapshotInto(file);
  const db = new Database(file);
  try {
    // A single self-contained file: no -wal beside it, and its SHA-256 stays put.
    db.pragma("journal_mode = DELETE");
    const check = db.pragma("integrity_check", { simple: true });
    if (check !== "ok") throw new BackupError("corrupt", `the database fails its integrity check: ${String(check)}`);
    const count = (table: string): number => db.prepare(`SELECT COUNT(*) FROM ${table}`).pluck().get() as number;
    const audit = verifyAudit(db);
    return {
      refs: new Records(db).referencedBlobs(),
      schema: db.pragma("user_version", { simple: true }) as number,
      counts: { deliveries: count("deliveries"), patients: count("patients"), replies: count("replies"), auditRows: audit.rows },
      auditIntact: audit.ok,
    };
  } finally {
    db.close();
  }
}

/**
 * Backs up a home into a new or empty folder: `backup.json`, the sealed database snapshot,
 * the blobs it references, the sealed named files, and last the sealed manifest. Everything
 * is mode 0600 in folders of mode 0700. On failure the folder is left as empty as it was
 * found. No plaintext of the database or the files is ever written into the folder: the
 * snapshot is taken into home and sealed from there.
 *
 * @param home - The praxmail home; its database must exist.
 * @param dest - The backup folder.
 * @param opts - The seal, extra files, metadata, progress.
 * @returns The manifest written.
 * @throws {@link BackupError} `not-empty`, `missing-blob` or `corrupt`; system errors as they come.
 */
export function backupHome(home: string, dest: string, opts: BackupOptions): Promise<BackupManifest> {
  return backupFrom(homeSource(home), dest, opts);
}

/**
 * Backs up a source (see {@link backupHome}), in the same format whatever its backend.
 *
 * @param source - The database and blobs to back up; named files come from its scratch folder (home).
 * @param dest - The backup folder.
 * @param opts - The seal, extra files, metadata, progress.
 * @returns The manifest written.
 * @throws {@link BackupError} `not-empty`, `missing-blob` or `corrupt`; system errors as they come.
 */
export async function backupFrom(source: BackupSource, dest: string, opts: BackupOptions): Promise<BackupManifest> {
  const home = source.scratch;
  if (!(await isEmptyDir(dest))) throw new BackupError("not-empty", `${dest} is not empty`);
  let created = false;
  try {
    await lstat(dest);
  } catch {
    created = true;
  }
  await mkdir(dest, { recursive: true, mode: 0o700 });
  const tmpDb = join(home, `.backup-${randomBytes(6).toString("hex")}.partial`);
  try {
    const manifest = await writeBackup(source, dest, tmpDb, opts);
    await fsync(dest);
    return manifest;
  } catch (e) {
    // writeBackup removes the snapshot itself once it is sealed.
    throw await cleanUpAfter(e, [
      created ? () => rm(dest, { recursive: true, force: true }) : async () => {
        for (const n of await readdir(dest)) await rm(join(dest, n), { recursive: true, force: true });
      },
      () => rm(tmpDb, { force: true }),
    ]);
  }
}

/** Writes a small file with mode 0600 under a temp name, fsyncs it and renames it into place. */
async function writeSmall(dest: string, name: string, data: Uint8Array | string): Promise<void> {
  const tmp = join(dest, `.${name}.tmp`);
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(dest, name));
}

/**
 * Snapshots the database into tmpDb and copies the blobs it names, snapshotting again while
 * blobs disappear (deleted after the snapshot); blobs no longer named by the last snapshot
 * are removed again. The blob folders are fsynced.
 *
 * @returns The last snapshot and the blobs copied, by key.
 */
async function copySnapshotBlobs(source: BackupSource, dest: string, tmpDb: string, opts: BackupOptions): Promise<{ snap: Snapshot; copied: Map<string, ManifestEntry> }> {
  const copied = new Map<string, ManifestEntry>();
  let missingBefore = new Set<string>();
  let snap: Snapshot;
  for (let attempt = 1; ; attempt++) {
    snap = await snapshot(source, tmpDb);
    await opts.progress?.({ phase: "database", attempt });
    const todo = [...snap.refs].filter((r) => !copied.has(r)).sort();
    const missing = new Set<string>();
    let bytes = 0;
    for (const [i, rel] of todo.entries()) {
      if (!BLOB_KEY.test(rel)) throw new BackupError("corrupt", `the database names an invalid blob path ${JSON.stringify(rel)}`);
      // Named by two snapshots in a row and still not on disk: lost, not deleted meanwhile.
      if (missingBefore.has(rel)) throw new BackupError("missing-blob", `the database names ${rel}, but it is missing from ${source.scratch}`);
      const data = await source.openBlob(rel);
      if (data) {
        const entry = { path: rel, ...(await copyHashed(data, join(dest, rel))) };
        copied.set(rel, entry);
        bytes += entry.size;
      } else missing.add(rel);
      await opts.progress?.({ phase: "blobs", done: i + 1, total: todo.length, bytes });
    }
    if (missing.size === 0) break;
    if (attempt === ATTEMPTS) throw new BackupError("missing-blob", `blobs kept disappearing during ${ATTEMPTS} snapshots`);
    missingBefore = missing;
  }
  // Blobs deleted after an earlier snapshot (revoked, expired) stay deleted in the backup too.
  for (const rel of [...copied.keys()]) {
    if (snap.refs.has(rel)) continue;
    await rm(join(dest, rel), { force: true });
    copied.delete(rel);
  }
  const blobDirs = new Set([...copied.keys()].map((r) => dirname(r)));
  for (const d of blobDirs) await fsync(join(dest, d));
  if (blobDirs.size > 0) await fsync(join(dest, "blobs"));
  return { snap, copied };
}

/** Seals the database snapshot into the backup and removes the snapshot. */
async function sealDatabase(tmpDb: string, dest: string, seal: StreamMap): Promise<ManifestEntry> {
  const dbIn = await open(tmpDb, "r");
  let database: ManifestEntry;
  try {
    database = { path: DB_FILE, ...(await copyHashed(fileStream(dbIn), join(dest, DB_FILE + SEALED), { seal })) };
  } finally {
    await dbIn.close();
  }
  await rm(tmpDb);
  return database;
}

/** Seals the named files of home into the backup, in order. */
async function sealFiles(home: string, dest: string, names: readonly string[], seal: StreamMap): Promise<ManifestEntry[]> {
  const files: ManifestEntry[] = [];
  for (const name of names) {
    if (!FILE_NAME.test(name) || [DB_FILE, HEADER_FILE, PLAIN_MANIFEST].includes(name)) throw new Error(`cannot back up a file named ${JSON.stringify(name)}`);
    const entry = await copyIfPresent(join(home, name), join(dest, name + SEALED), name, { seal });
    if (!entry) throw Object.assign(new Error(`${join(home, name)} does not exist`), { code: "ENOENT" });
    files.push(entry);
  }
  return files;
}

async function writeBackup(source: BackupSource, dest: string, tmpDb: string, opts: BackupOptions): Promise<BackupManifest> {
  // An existing empty folder may have been made with the umask's mode.
  await chmod(dest, 0o700);
  await writeSmall(dest, HEADER_FILE, `${JSON.stringify({ format: FORMAT, version: VERSION, ...opts.header }, null, 2)}\n`);
  const { snap, copied } = await copySnapshotBlobs(source, dest, tmpDb, opts);
  const database = await sealDatabase(tmpDb, dest, opts.seal);
  const files = await sealFiles(source.scratch, dest, opts.files ?? [], opts.seal);
  const blobs = [...copied.values()].sort((a, b) => a.path.localeCompare(b.path));
  const manifest: BackupManifest = {
    format: FORMAT,
    version: VERSION,
    createdAt: (opts.now?.() ?? new Date()).toISOString(),
    schema: snap.schema,
    database,
    counts: { ...snap.counts, blobs: blobs.length, blobBytes: blobs.reduce((n, b) => n + b.size, 0) },
    auditIntact: snap.auditIntact,
    blobs,
    files,
    meta: opts.meta ?? {},
  };
  const sealed = await opts.seal(new Blob([`${JSON.stringify(manifest, null, 2)}\n`]).stream());
  await writeSmall(dest, MANIFEST_FILE, new Uint8Array(await new Response(sealed).arrayBuffer()));
  return manifest;
}

// Restoring a backup made by backup.ts: open the sealed manifest, copy (and open) every
// file into a staging folder under home, check it all, then move it into place.
import { lstat, mkdir, readFile, rename, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { cleanUpAfter } from "./cleanup.js";
import { verifyAudit } from "./audit.js";
import {
  BackupError,
  FILE_NAME,
  FORMAT,
  HEADER_FILE,
  MANIFEST_FILE,
  PLAIN_MANIFEST,
  SEALED,
  SHA256,
  STAGING,
  VERSION,
  copyIfPresent,
  isEmptyDir,
  type BackupManifest,
  type BackupProgress,
  type ManifestEntry,
  type StreamMap,
} from "./backup.js";
import { BLOB_KEY, fileStream, fsync } from "./blobs.js";
import { DB_FILE, openDatabase } from "./db.js";
import { MIGRATIONS } from "./migrations.js";
import { Records } from "./records.js";

function entryOk(v: unknown, path: RegExp): v is ManifestEntry {
  const e = v as Partial<ManifestEntry> | null;
  return (
    typeof e === "object" && e !== null &&
    typeof e.path === "string" && path.test(e.path) &&
    typeof e.size === "number" && Number.isSafeInteger(e.size) && e.size >= 0 &&
    typeof e.sha256 === "string" && SHA256.test(e.sha256)
  );
}

/**
 * Reads the clear header of a backup folder.
 *
 * @param dir - The backup folder.
 * @returns Its fields: `format`, `version` and the public facts the backup put there.
 * @throws {@link BackupError} `plain` for a format 1 (unencrypted) backup; `manifest` if
 *   there is no readable header of this format.
 */
export async function readBackupHeader(dir: string): Promise<Readonly<Record<string, unknown>>> {
  const file = join(dir, HEADER_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && (await lstat(join(dir, PLAIN_MANIFEST)).then(() => true, () => false))) {
      throw new BackupError("plain", `${dir} is an unencrypted backup (format 1) made by an older praxmail; this praxmail restores only encrypted backups`);
    }
    throw new BackupError("manifest", code ? `cannot read ${file} (${code})` : `${file} is not JSON`);
  }
  const h = raw as Record<string, unknown> | null;
  if (typeof h !== "object" || h === null || h.format !== FORMAT) throw new BackupError("manifest", `${file}: not a praxmail backup`);
  if (h.version !== VERSION) throw new BackupError("manifest", `${file}: backup format version ${String(h.version)} is not supported (this praxmail reads ${VERSION})`);
  return h;
}

/**
 * Reads, opens and checks the manifest of a backup folder (its shape, not yet the files).
 *
 * @param dir - The backup folder.
 * @param openSealed - Decrypts what {@link BackupOptions.seal} encrypted.
 * @returns The manifest.
 * @throws {@link BackupError} `plain` for a format 1 backup; `manifest` if the header or the
 *   manifest is missing, does not decrypt, or is of another format.
 */
export async function readManifest(dir: string, openSealed: StreamMap): Promise<BackupManifest> {
  await readBackupHeader(dir);
  const file = join(dir, MANIFEST_FILE);
  let raw: unknown;
  try {
    const text = await new Response(await openSealed(fileStream(file))).text();
    raw = JSON.parse(text);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code ? `cannot read ${file} (${code})` : e instanceof SyntaxError ? `${file} is not JSON` : `${file} does not decrypt: ${(e as Error).message}`;
    throw new BackupError("manifest", why);
  }
  const m = raw as Partial<BackupManifest> | null;
  const bad = (why: string): BackupError => new BackupError("manifest", `${file}: ${why}`);
  if (typeof m !== "object" || m === null || m.format !== FORMAT) throw bad("not a praxmail backup manifest");
  if (m.version !== VERSION) throw bad(`backup format version ${String(m.version)} is not supported (this praxmail reads ${VERSION})`);
  if (!entryOk(m.database, new RegExp(`^${DB_FILE.replace(".", "\\.")}$`))) throw bad("database entry is invalid");
  if (!Array.isArray(m.blobs) || !m.blobs.every((b) => entryOk(b, BLOB_KEY))) throw bad("blob entries are invalid");
  const files: unknown = m.files;
  if (!Array.isArray(files) || !files.every((f) => entryOk(f, FILE_NAME) && ![DB_FILE, HEADER_FILE, PLAIN_MANIFEST, STAGING].includes(f.path))) {
    throw bad("file entries are invalid");
  }
  const paths = [...m.blobs.map((b) => b.path), ...(files as ManifestEntry[]).map((f) => f.path)];
  if (new Set(paths).size !== paths.length) throw bad("lists a file twice");
  if (typeof m.createdAt !== "string" || typeof m.schema !== "number" || typeof m.counts !== "object") throw bad("is incomplete");
  return { ...(m as BackupManifest), meta: typeof m.meta === "object" ? m.meta : {} };
}

/** What restore did. */
export interface RestoreResult {
  readonly manifest: BackupManifest;
  /** Audit rows in the restored database; its chain was verified. */
  readonly auditRows: number;
}

/** What restore needs besides the folders. */
export interface RestoreOptions {
  /** Decrypts what {@link BackupOptions.seal} encrypted. */
  readonly open: StreamMap;
  /** Checks the staged files (e.g. config.json) before anything is moved into place. */
  readonly check?: (staging: string) => void | Promise<void>;
  /**
   * Called after every check: may take the staged database and blobs elsewhere (into the
   * shared backend) and return true; then only the manifest's files move into home.
   */
  readonly into?: (staging: string) => Promise<boolean>;
  /** Files that may be in home already (the identity file); restore leaves them alone. */
  readonly keep?: readonly string[];
  readonly progress?: (p: BackupProgress) => void | Promise<void>;
}

/**
 * Checks the staged database: a schema this praxmail knows (migrated if older), an intact
 * audit chain, and every blob it names listed in the manifest.
 *
 * @returns The audit rows.
 * @throws {@link BackupError} `schema`, `audit` or `mismatch`.
 */
function verifyStaged(staging: string, manifest: BackupManifest): number {
  const raw = new Database(join(staging, DB_FILE), { readonly: true, fileMustExist: true });
  const schema = raw.pragma("user_version", { simple: true }) as number;
  raw.close();
  const latest = MIGRATIONS.at(-1)?.version ?? 0;
  if (schema > latest) throw new BackupError("schema", `the backup's database schema ${schema} is newer than this praxmail (${latest})`);
  const db = openDatabase(staging);
  try {
    const audit = verifyAudit(db);
    if (!audit.ok) throw new BackupError("audit", `the audit chain of the backup is broken at row ${audit.seq}: ${audit.reason}`);
    const listed = new Set(manifest.blobs.map((b) => b.path));
    for (const rel of new Records(db).referencedBlobs()) {
      if (!listed.has(rel)) throw new BackupError("mismatch", `the database names ${rel}, which the backup does not hold`);
    }
    return audit.rows;
  } finally {
    db.close();
  }
}

/**
 * Restores a backup into an empty (or missing) home. The manifest is opened first; every
 * file is copied (and opened) into a staging folder under home and checked against it, the
 * database is opened (and migrated if older), its audit chain verified and every blob it
 * names found, and `check` is run; only then are the files moved into place (the database
 * and blobs into home, or where `into` takes them), the manifest's `files` last and in
 * order. On failure home is left empty.
 *
 * @param dir - The backup folder.
 * @param home - The home to fill.
 * @param opts - How to open sealed files, a last check, progress.
 * @returns The manifest and the audit row count.
 * @throws {@link BackupError} `not-empty`, `plain`, `manifest`, `mismatch`, `audit` or
 *   `schema`; what `check` throws.
 */
export async function restoreHome(dir: string, home: string, opts: RestoreOptions): Promise<RestoreResult> {
  const manifest = await readManifest(dir, opts.open);
  if (!(await isEmptyDir(home, [STAGING, ...(opts.keep ?? [])]))) throw new BackupError("not-empty", `${home} is not empty`);
  await mkdir(home, { recursive: true, mode: 0o700 });
  const staging = join(home, STAGING);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { mode: 0o700 });
  const moved: string[] = [];
  try {
    const take = async (e: ManifestEntry, sealed: boolean): Promise<void> => {
      const name = sealed ? e.path + SEALED : e.path;
      let got: ManifestEntry | null;
      try {
        got = await copyIfPresent(join(dir, ...name.split("/")), join(staging, ...e.path.split("/")), e.path, sealed ? { open: opts.open } : {});
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== undefined) throw err;
        throw new BackupError("mismatch", `${name} does not decrypt: ${(err as Error).message}`);
      }
      if (!got) throw new BackupError("mismatch", `${name} is missing from the backup`);
      if (got.size !== e.size || got.sha256 !== e.sha256) throw new BackupError("mismatch", `${name} does not match the manifest (size or SHA-256)`);
    };
    await take(manifest.database, true);
    let bytes = 0;
    for (const [i, b] of manifest.blobs.entries()) {
      await take(b, false);
      bytes += b.size;
      await opts.progress?.({ phase: "blobs", done: i + 1, total: manifest.blobs.length, bytes });
    }
    for (const f of manifest.files) await take(f, true);

    const auditRows = verifyStaged(staging, manifest);
    await opts.check?.(staging);
    const elsewhere = (await opts.into?.(staging)) ?? false;

    for (const name of [...(elsewhere ? [] : [DB_FILE, ...(manifest.blobs.length > 0 ? ["blobs"] : [])]), ...manifest.files.map((f) => f.path)]) {
      await rename(join(staging, name), join(home, name));
      moved.push(name);
    }
    if (elsewhere) await rm(staging, { recursive: true, force: true });
    else await rmdir(staging);
    await fsync(home);
    return { manifest, auditRows };
  } catch (e) {
    throw await cleanUpAfter(e, [...moved.map((name) => () => rm(join(home, name), { recursive: true, force: true })), () => rm(staging, { recursive: true, force: true })]);
  }
}

// Backup and restore of a practice: the store copies and checks the files, crypto seals them
// to the practice recipient, and this module decides where a backup may go, which identity
// opens it, and writes the audit rows. src/commands only parses, calls these and prints.
import { isAbsolute, relative, resolve } from "node:path";
import { decryptStream, encryptStream, recipientOf } from "../crypto/index.js";
import {
  BackupError,
  copyBlob,
  copyRows,
  openStore,
  readBackupHeader,
  restoreHome,
  tablesWithRows,
  type BackupManifest,
  type BackupProgress,
  type Store,
} from "../store/index.js";
import { isInitialised, loadConfig, type Config, type IdentityStore } from "./config.js";
import type { Context } from "./context.js";
import { PraxmailError, cleanUpAfter } from "./errors.js";
import { loadPracticeIdentity } from "./practice.js";
import { markUsedInvites } from "./trust.js";

/**
 * Turns a backup or restore failure into a message with a hint.
 *
 * @param e - What was thrown.
 * @param dir - The backup folder.
 * @param home - The home.
 * @returns The error to throw.
 */
function backupFailure(e: unknown, dir: string, home: string): unknown {
  if (!(e instanceof BackupError)) return e;
  const hints: Record<BackupError["code"], string> = {
    "not-empty": "give a new or empty folder; existing files are never overwritten",
    "missing-blob": `home's database names a file that is gone; run praxmail audit and look for changes made outside praxmail in ${home}`,
    corrupt: `the database in ${home} is damaged; restore it from an earlier backup`,
    manifest: `${dir} is not a complete praxmail backup made for this identity (manifest.age is written last)`,
    plain: "restore it with the praxmail version that made it, back that home up again with this one, and destroy the plain copy: it holds config.json (with the upstream password) in clear",
    mismatch: `the backup in ${dir} was altered or damaged; use another copy`,
    audit: "the database was altered outside praxmail; keep this backup for investigation and restore an earlier one",
    schema: "install the praxmail version that made the backup (or newer)",
  };
  return new PraxmailError("file", e.message, hints[e.code]);
}

/** What a backup needs besides the context and the folder. */
export interface BackupPracticeOptions {
  /** The praxmail version, for the manifest. */
  readonly version: string;
  readonly progress?: (p: BackupProgress) => void;
}

/**
 * Backs up a home, encrypted to the practice recipient: the database, the portal's signing
 * key, config.json and the manifest are age files that only the practice identity opens
 * (blobs are age files already). Audited once the backup is complete.
 *
 * @param ctx - The core context.
 * @param dir - The backup folder (absolute; new or empty; outside home).
 * @param opts - Version and progress.
 * @returns The manifest written.
 * @throws {@link PraxmailError} `usage` for a folder inside home, `file` for a backup failure.
 */
export async function backupPractice(ctx: Context, dir: string, opts: BackupPracticeOptions): Promise<BackupManifest> {
  const inside = relative(ctx.home, dir);
  if (inside === "" || (!inside.startsWith("..") && !isAbsolute(inside))) {
    throw new PraxmailError("usage", `the backup folder ${dir} is inside home ${ctx.home}`, "back up to another disk or host, outside home");
  }
  const recipient = ctx.config.practiceRecipient;
  let manifest: BackupManifest;
  try {
    manifest = await ctx.store.backup(dir, {
      home: ctx.home,
      seal: (plain) => encryptStream(plain, [recipient]),
      // Public facts restore needs before it can open anything: which identity, and where init kept it.
      header: { encryptedTo: recipient, identity: ctx.config.identity },
      // The portal's signing key, which invited patients' approvals are checked with; then
      // config.json last: restore puts it back last, and only then is the home initialised.
      files: ["portal-signing.key", "config.json"],
      meta: { praxmail: opts.version, home: ctx.home, practiceRecipient: recipient },
      ...(opts.progress ? { progress: opts.progress } : {}),
    });
  } catch (e) {
    throw backupFailure(e, dir, ctx.home);
  }
  await ctx.store.transaction((tx) =>
    tx.audit({ actor: ctx.actor, action: "backup", subject: dir, details: { blobs: manifest.counts.blobs, encryptedTo: recipient } }, ctx.now()),
  );
  return manifest;
}

/** Where the backup's header says init kept the identity; null if it says nothing usable. */
function identityStore(header: Readonly<Record<string, unknown>>): IdentityStore | null {
  const id = header.identity as Record<string, unknown> | null | undefined;
  if (id?.kind === "keyring" && typeof id.account === "string") return { kind: "keyring", account: id.account };
  // A bare file name: the header is not sealed, so it must not point anywhere else.
  if (id?.kind === "file" && typeof id.file === "string" && /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(id.file)) {
    return { kind: "file", file: id.file, protected: id.protected === true };
  }
  return null;
}

/** What a restore needs besides the folders. */
export interface RestorePracticeOptions {
  /** The practice identity's file (--identity, PRAXMAIL_IDENTITY), if given. */
  readonly identityFile?: string | undefined;
  /** Asks for the identity file's passphrase; undefined if nobody can be asked. */
  readonly passphrase: () => Promise<string | undefined>;
  /** Opens the context of the restored home, for its audit row. */
  readonly open: (home: string) => Promise<Context>;
  /**
   * Opens the shared backend that the restored config.json (or the environment) names, to
   * restore the rows and blobs into; null restores them into home (the embedded backend).
   */
  readonly shared?: (config: Config) => Promise<Store | null>;
  readonly progress?: (p: BackupProgress) => void;
}

/** What a restore did. */
export interface RestoredPractice {
  readonly manifest: BackupManifest;
  /** Rows of the restored audit log, its chain verified after the restore's row. */
  readonly auditRows: number;
}

/**
 * Loads the practice identity that opens a backup, as approve loads it: the file given, or
 * where the backed-up home kept it (the OS keyring account, or the identity file put back
 * into the new home first). It must belong to the backup's recipient.
 *
 * @returns The identity and where the header says it is kept.
 * @throws {@link PraxmailError} `identity` without one, or for another practice's.
 */
async function identityFor(dir: string, home: string, opts: RestorePracticeOptions): Promise<{ identity: string; store: IdentityStore | null }> {
  const header = await readBackupHeader(dir);
  const file = opts.identityFile;
  const store = identityStore(header);
  if (file === undefined && store === null) {
    throw new PraxmailError("identity", `the backup in ${dir} is encrypted: restoring it needs the practice identity`, "pass its file with --identity FILE or PRAXMAIL_IDENTITY");
  }
  const identity = await loadPracticeIdentity(home, { identity: store ?? { kind: "file", file: "", protected: false } }, file, opts.passphrase);
  const mine = await recipientOf(identity);
  if (mine !== header.encryptedTo) {
    const where = file !== undefined ? resolve(file) : "the OS keyring";
    throw new PraxmailError(
      "identity",
      `the identity from ${where} (${mine}) does not open the backup in ${dir}, which is encrypted to ${String(header.encryptedTo)}`,
      "pass the practice identity of the home that made the backup, with --identity FILE or PRAXMAIL_IDENTITY",
    );
  }
  return { identity, store };
}

/**
 * Checks the staged config.json of a backup before anything is moved into home: it must be
 * valid and name the recipient whose identity opened the backup.
 */
function stagedConfigCheck(recipient: string): (staging: string) => void {
  return (staging) => {
    let config;
    try {
      config = loadConfig(staging);
    } catch (e) {
      if (e instanceof PraxmailError) throw new PraxmailError("invalid-config", `the backup's ${e.message}`, "use another backup");
      throw e;
    }
    if (config.practiceRecipient !== recipient) {
      throw new PraxmailError("invalid-config", `the backup's config.json names the practice recipient ${config.practiceRecipient}, not ${recipient}`, "use another backup");
    }
  };
}

/**
 * Restores the staged database and blobs into the shared backend, which must be empty:
 * every blob read back and checked, then every row in one transaction. On failure the blobs
 * written are removed again (the rows were never committed).
 */
async function restoreShared(staging: string, target: Store, progress?: (p: BackupProgress) => void): Promise<void> {
  const holding = await target.snapshot(tablesWithRows);
  const present = (await target.blobs.scan()).filter((b) => !b.temp);
  if (holding.length > 0 || present.length > 0) {
    const what = [...(holding.length > 0 ? [`rows in ${holding.join(", ")}`] : []), ...(present.length > 0 ? [`${present.length} blob(s)`] : [])];
    throw new PraxmailError(
      "wrong-state",
      `the shared backend that the restored config.json (or PRAXMAIL_DATABASE and PRAXMAIL_BLOBS) names is not empty: ${what.join(", ")}`,
      "restore into an empty database and bucket prefix (set PRAXMAIL_DATABASE and PRAXMAIL_BLOBS to them); restore never overwrites",
    );
  }
  const source = openStore(staging);
  const written: string[] = [];
  try {
    await source.snapshot(async (from) => {
      const keys = [...(await from.records.referencedBlobs())].sort();
      let bytes = 0;
      for (const [i, key] of keys.entries()) {
        written.push(key);
        bytes += (await copyBlob(source.blobs, target.blobs, key, false)).size;
        progress?.({ phase: "blobs", done: i + 1, total: keys.length, bytes });
      }
      await target.transaction((to) => copyRows(from, to));
    });
  } catch (e) {
    throw await cleanUpAfter(e, [() => target.blobs.remove(written)]);
  } finally {
    await source.close();
  }
}

/**
 * Records a restore in the restored audit log, verifies the chain and marks the invites the
 * restored patients used.
 *
 * @returns The audit rows.
 */
async function recordRestore(ctx: Context, dir: string, manifest: BackupManifest, recipient: string): Promise<number> {
  await ctx.store.transaction((tx) =>
    tx.audit({ actor: ctx.actor, action: "restore", subject: dir, details: { backupCreatedAt: manifest.createdAt, encryptedTo: recipient } }, ctx.now()),
  );
  const v = await ctx.store.verifyAudit();
  if (!v.ok) throw new PraxmailError("wrong-state", `audit chain broken at row ${v.seq} after restoring: ${v.reason}`);
  await markUsedInvites(ctx);
  return v.rows;
}

/**
 * Restores an encrypted backup folder into an empty home, checks it, and records the
 * restore in the restored audit log.
 *
 * @param home - The home to fill (absolute).
 * @param dir - The backup folder (absolute).
 * @param opts - The identity, how to open the restored home, progress.
 * @returns What was restored.
 * @throws {@link PraxmailError} if home is set up already, the identity does not open the
 *   backup, or the backup does not check out.
 */
export async function restorePractice(home: string, dir: string, opts: RestorePracticeOptions): Promise<RestoredPractice> {
  if (isInitialised(home)) {
    throw new PraxmailError("wrong-state", `${home} is set up already; restore never overwrites a home`, "restore into a new folder with --home DIR, or move this home away first");
  }
  let manifest: BackupManifest;
  let recipient: string;
  try {
    const { identity, store } = await identityFor(dir, home, opts);
    recipient = await recipientOf(identity);
    ({ manifest } = await restoreHome(dir, home, {
      open: (sealed) => decryptStream(sealed, [identity]),
      check: stagedConfigCheck(recipient),
      into: async (staging) => {
        const target = (await opts.shared?.(loadConfig(staging))) ?? null;
        if (target === null) return false;
        try {
          await restoreShared(staging, target, opts.progress);
        } finally {
          await target.close();
        }
        return true;
      },
      // The identity file may be put back into the new home before restoring.
      keep: store?.kind === "file" ? [store.file] : [],
      ...(opts.progress ? { progress: opts.progress } : {}),
    }));
  } catch (e) {
    throw backupFailure(e, dir, home);
  }
  const ctx = await opts.open(home);
  try {
    return { manifest, auditRows: await recordRestore(ctx, dir, manifest, recipient) };
  } finally {
    await ctx.store.close();
  }
}

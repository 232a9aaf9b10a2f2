import { existsSync } from "node:fs";
import { lchown, readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { password } from "@inquirer/prompts";
import { decryptStream, recipientOf } from "../crypto/index.js";
import { PraxmailError, isInitialised, loadConfig, loadPracticeIdentity, markUsedInvites, resolveHome, type IdentityStore } from "../core/index.js";
import { readBackupHeader, restoreHome, type BackupManifest } from "../store/index.js";
import { backupFailure, bytes } from "./backup.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, openContext, printJson, progress } from "./shared.js";

export interface RestoreFlags extends HomeOptions {
  identity?: string;
}

/** What restore did, as printed with --json. */
interface Restored {
  readonly home: string;
  readonly manifest: BackupManifest;
  readonly auditRows: number;
  /** The owner the files were given, when root restored into another user's empty home. */
  readonly chownedTo: number | null;
}

async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    await lchown(p, uid, gid);
    if (e.isDirectory()) await chownTree(p, uid, gid);
  }
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

/**
 * Loads the practice identity that opens a backup, as approve loads it: --identity,
 * PRAXMAIL_IDENTITY, or where the backed-up home kept it (the OS keyring account, or the
 * identity file put back into the new home first); a passphrase from
 * PRAXMAIL_IDENTITY_PASSPHRASE or the terminal. It must belong to the backup's recipient.
 */
async function identityFor(io: Io, dir: string, home: string, flag: string | undefined): Promise<{ identity: string; store: IdentityStore | null }> {
  const header = await readBackupHeader(dir);
  const file = flag ?? (io.env.PRAXMAIL_IDENTITY || undefined);
  const store = identityStore(header);
  if (file === undefined && store === null) {
    throw new PraxmailError("identity", `the backup in ${dir} is encrypted: restoring it needs the practice identity`, "pass its file with --identity FILE or PRAXMAIL_IDENTITY");
  }
  const identity = await loadPracticeIdentity(home, { identity: store ?? { kind: "file", file: "", protected: false } }, file, async () => {
    const env = io.env.PRAXMAIL_IDENTITY_PASSPHRASE;
    if (env !== undefined && env !== "") return env;
    if (!io.interactive) return undefined;
    return password({ message: "Passphrase of the practice identity", mask: "*" }, { output: process.stderr });
  });
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
 * Restores an encrypted backup folder into an empty home, checks it, and records the
 * restore in the restored audit log.
 *
 * @param io - The streams.
 * @param dir - The backup folder.
 * @param flags - Parsed options.
 * @returns What was restored.
 * @throws {@link PraxmailError} if home is set up already, the identity does not open the
 *   backup, or the backup does not check out.
 */
export async function runRestore(io: Io, dir: string, flags: RestoreFlags): Promise<Restored> {
  const home = resolveHome(flags.home);
  if (isInitialised(home)) {
    throw new PraxmailError("wrong-state", `${home} is set up already; restore never overwrites a home`, "restore into a new folder with --home DIR, or move this home away first");
  }
  let identity: string;
  let store: IdentityStore | null;
  try {
    ({ identity, store } = await identityFor(io, dir, home, flags.identity));
  } catch (e) {
    throw backupFailure(e, dir, home);
  }
  const recipient = await recipientOf(identity);
  // Checked in the staging folder, before anything is moved into home.
  const check = (staging: string): void => {
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
  // Root restoring into the service user's empty home (e.g. systemd's StateDirectory) hands
  // the files to that user, so that praxmail serve can read them.
  const owner = await stat(home).then((st) => (process.getuid?.() === 0 && st.uid !== 0 ? st : null), () => null);
  const bar = progress(io);
  let manifest: BackupManifest;
  try {
    const r = await restoreHome(dir, home, {
      open: (sealed) => decryptStream(sealed, [identity]),
      check,
      // The identity file may be put back into the new home before restoring.
      keep: store?.kind === "file" ? [store.file] : [],
      progress: (p) => {
        if (p.phase === "blobs") bar.update(`restoring blobs: ${p.done}/${p.total} (${bytes(p.bytes)})`);
      },
    });
    manifest = r.manifest;
  } catch (e) {
    throw backupFailure(e, dir, home);
  } finally {
    bar.done();
  }
  const ctx = await openContext({ home });
  let auditRows: number;
  try {
    await ctx.store.transaction((tx) =>
      tx.audit({ actor: ctx.actor, action: "restore", subject: dir, details: { backupCreatedAt: manifest.createdAt, encryptedTo: recipient } }, ctx.now()),
    );
    const v = await ctx.store.verifyAudit();
    if (!v.ok) throw new PraxmailError("wrong-state", `audit chain broken at row ${v.seq} after restoring: ${v.reason}`);
    auditRows = v.rows;
    await markUsedInvites(ctx);
  } finally {
    await ctx.store.close();
  }
  if (owner) await chownTree(home, owner.uid, owner.gid);
  return { home, manifest, auditRows, chownedTo: owner?.uid ?? null };
}

/**
 * Runs `praxmail restore` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param dirArg - The argument.
 * @param flags - The parsed options.
 */
export async function restoreAction(io: Io, dirArg: string, flags: RestoreFlags & JsonOptions): Promise<void> {
  const dir = resolve(dirArg);
  const { home, manifest: m, auditRows, chownedTo } = await runRestore(io, dir, flags);
  if (flags.json) {
    printJson(io, { home, dir, createdAt: m.createdAt, counts: m.counts, auditRows, encryptedTo: m.meta.practiceRecipient });
  } else {
    io.out(
      `restored ${m.counts.deliveries} deliveries, ${m.counts.patients} patients, ${m.counts.replies} replies and ${m.counts.blobs} blobs (${bytes(m.counts.blobBytes)}) from the backup of ${m.createdAt} into ${home}; audit chain intact (${auditRows} rows)\n`,
    );
  }
  const config = loadConfig(home);
  if (config.identity.kind === "keyring" || !existsSync(join(home, config.identity.file))) {
    const where = config.identity.kind === "file" ? `at ${join(home, config.identity.file)} (mode 0600)` : `in this machine's OS keyring (account "${config.identity.account}")`;
    note(io, `praxmail: note: backups never hold the practice identity: put it back ${where},`);
    note(io, "praxmail: note: or pass --identity FILE to approve and receive; praxmail doctor checks it");
  }
  if (chownedTo !== null) note(io, `praxmail: note: the restored files belong to uid ${chownedTo}, the owner of ${home}`);
  else if (process.getuid?.() === 0) note(io, "praxmail: note: the restored files belong to root; chown -R them to the user that runs praxmail serve");
}

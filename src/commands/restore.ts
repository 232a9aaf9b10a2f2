import { lchown, readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Command } from "commander";
import { PraxmailError, isInitialised, loadConfig, resolveHome } from "../core/index.js";
import { readManifest, restoreHome, type BackupManifest } from "../store/index.js";
import { backupFailure, bytes } from "./backup.js";
import { common, note, openContext, printJson, progress, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

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

/**
 * Restores a backup folder into an empty home, checks it, and records the restore in the
 * restored audit log.
 *
 * @param io - The streams.
 * @param dir - The backup folder.
 * @param flags - Parsed options.
 * @returns What was restored.
 * @throws {@link PraxmailError} if home is set up already or the backup does not check out.
 */
export async function runRestore(io: Io, dir: string, flags: HomeOptions): Promise<Restored> {
  const home = resolveHome(flags.home);
  if (isInitialised(home)) {
    throw new PraxmailError("wrong-state", `${home} is set up already; restore never overwrites a home`, "restore into a new folder with --home DIR, or move this home away first");
  }
  let manifest: BackupManifest;
  try {
    manifest = await readManifest(dir);
  } catch (e) {
    throw backupFailure(e, dir, home);
  }
  if (!manifest.files.some((f) => f.path === "config.json")) {
    throw new PraxmailError("file", `${dir} holds no config.json`, "use a backup made by praxmail backup");
  }
  try {
    loadConfig(dir);
  } catch (e) {
    if (e instanceof PraxmailError) throw new PraxmailError("invalid-config", `the backup's ${e.message}`, "use another backup, or fix config.json after restoring it by hand");
    throw e;
  }
  // Root restoring into the service user's empty home (e.g. systemd's StateDirectory) hands
  // the files to that user, so that praxmail serve can read them.
  const owner = await stat(home).then((st) => (process.getuid?.() === 0 && st.uid !== 0 ? st : null), () => null);
  const bar = progress(io);
  try {
    const r = await restoreHome(dir, home, {
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
    ctx.store.transaction(() => {
      ctx.store.audit({ actor: ctx.actor, action: "restore", subject: dir, details: { backupCreatedAt: manifest.createdAt, identity: manifest.meta.identity !== null } }, ctx.now());
    });
    const v = ctx.store.verifyAudit();
    if (!v.ok) throw new PraxmailError("wrong-state", `audit chain broken at row ${v.seq} after restoring: ${v.reason}`);
    auditRows = v.rows;
  } finally {
    ctx.store.close();
  }
  if (owner) await chownTree(home, owner.uid, owner.gid);
  return { home, manifest, auditRows, chownedTo: owner?.uid ?? null };
}

/** @returns The `restore` command. */
export function restoreCommand(io: Io): Command {
  return common(new Command("restore"))
    .description("restore a backup made by praxmail backup into a new or empty home, checking every file against its manifest")
    .argument("<dir>", "the backup folder")
    .action(async (dirArg: string, flags: HomeOptions & JsonOptions) => {
      const dir = resolve(dirArg);
      const { home, manifest: m, auditRows, chownedTo } = await runRestore(io, dir, flags);
      const withIdentity = m.meta.identity !== null;
      if (flags.json) {
        printJson(io, { home, dir, createdAt: m.createdAt, counts: m.counts, auditRows, identity: withIdentity });
      } else {
        io.out(
          `restored ${m.counts.deliveries} deliveries, ${m.counts.patients} patients, ${m.counts.replies} replies and ${m.counts.blobs} blobs (${bytes(m.counts.blobBytes)}) from the backup of ${m.createdAt} into ${home}; audit chain intact (${auditRows} rows)\n`,
        );
      }
      const config = loadConfig(home);
      if (!withIdentity) {
        const where = config.identity.kind === "file" ? `at ${join(home, config.identity.file)} (mode 0600)` : `in this machine's OS keyring (account "${config.identity.account}")`;
        note(io, `praxmail: note: the practice identity was not in this backup: put it back ${where},`);
        note(io, "praxmail: note: or pass --identity FILE to approve and receive; praxmail doctor checks it");
      }
      if (chownedTo !== null) note(io, `praxmail: note: the restored files belong to uid ${chownedTo}, the owner of ${home}`);
      else if (process.getuid?.() === 0) note(io, "praxmail: note: the restored files belong to root; chown -R them to the user that runs praxmail serve");
    });
}

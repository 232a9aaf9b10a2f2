import { existsSync } from "node:fs";
import { lchown, readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { password } from "@inquirer/prompts";
import { loadConfig, resolveHome, restorePractice, type RestoredPractice } from "../core/index.js";
import type { BackupManifest } from "../store/index.js";
import { bytes } from "./backup.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, openContext, openShared, printJson, progress } from "./shared.js";

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

/**
 * Restores an encrypted backup folder into an empty home (src/core/backup.ts), its rows and
 * blobs into the shared backend when the restored config.json or the environment names one
 * (which must be empty), with the identity from --identity or PRAXMAIL_IDENTITY (else where
 * the backed-up home kept it) and a passphrase from PRAXMAIL_IDENTITY_PASSPHRASE or the
 * terminal; then hands the files to the owner of an empty home root restored into.
 *
 * @param io - The streams.
 * @param dir - The backup folder.
 * @param flags - Parsed options.
 * @returns What was restored.
 */
async function runRestore(io: Io, dir: string, flags: RestoreFlags): Promise<Restored> {
  const home = resolveHome(flags.home);
  // Root restoring into the service user's empty home (e.g. systemd's StateDirectory) hands
  // the files to that user, so that praxmail serve can read them.
  const owner = await stat(home).then((st) => (process.getuid?.() === 0 && st.uid !== 0 ? st : null), () => null);
  const bar = progress(io);
  let restored: RestoredPractice;
  try {
    restored = await restorePractice(home, dir, {
      identityFile: flags.identity ?? (io.env.PRAXMAIL_IDENTITY || undefined),
      passphrase: async () => {
        const env = io.env.PRAXMAIL_IDENTITY_PASSPHRASE;
        if (env !== undefined && env !== "") return env;
        if (!io.interactive) return undefined;
        return password({ message: "Passphrase of the practice identity", mask: "*" }, { output: process.stderr });
      },
      open: (h) => openContext({ home: h }),
      // The backend the restored config.json names, or PRAXMAIL_DATABASE and PRAXMAIL_BLOBS over it, as for every command.
      shared: async (config) => (await openShared(config))?.store ?? null,
      progress: (p) => {
        if (p.phase === "blobs") bar.update(`restoring blobs: ${p.done}/${p.total} (${bytes(p.bytes)})`);
      },
    });
  } finally {
    bar.done();
  }
  if (owner) await chownTree(home, owner.uid, owner.gid);
  return { home, ...restored, chownedTo: owner?.uid ?? null };
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

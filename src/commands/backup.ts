import { readFileSync } from "node:fs";
import { isAbsolute, relative, resolve } from "node:path";
import { encryptStream } from "../crypto/index.js";
import { PraxmailError, type Context } from "../core/index.js";
import { BackupError, type BackupManifest } from "../store/index.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, printJson, progress, withContext } from "./shared.js";

const VERSION = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;

/**
 * Formats a byte count for people.
 *
 * @param n - Bytes.
 * @returns e.g. `12.3 MiB`.
 */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? String(v) : v.toFixed(1)} ${units[i] ?? "B"}`;
}

/**
 * Turns a backup or restore failure into a message with a hint.
 *
 * @param e - What was thrown.
 * @param dir - The backup folder.
 * @param home - The home.
 * @returns The error to throw.
 */
export function backupFailure(e: unknown, dir: string, home: string): unknown {
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

/**
 * Backs up a home, encrypted to the practice recipient: the database, config.json and the
 * manifest are age files that only the practice identity opens (blobs are age files already).
 *
 * @param ctx - The core context.
 * @param io - The streams.
 * @param dir - The backup folder (new or empty).
 * @returns The manifest written.
 */
export async function runBackup(ctx: Context, io: Io, dir: string): Promise<BackupManifest> {
  const inside = relative(ctx.home, dir);
  if (inside === "" || (!inside.startsWith("..") && !isAbsolute(inside))) {
    throw new PraxmailError("usage", `the backup folder ${dir} is inside home ${ctx.home}`, "back up to another disk or host, outside home");
  }
  const recipient = ctx.config.practiceRecipient;
  const bar = progress(io);
  try {
    return await ctx.store.backup(dir, {
      seal: (plain) => encryptStream(plain, [recipient]),
      // Public facts restore needs before it can open anything: which identity, and where init kept it.
      header: { encryptedTo: recipient, identity: ctx.config.identity },
      // The portal's signing key, which invited patients' approvals are checked with; then
      // config.json last: restore puts it back last, and only then is the home initialised.
      files: ["portal-signing.key", "config.json"],
      meta: { praxmail: VERSION, home: ctx.home, practiceRecipient: recipient },
      progress: (p) => {
        bar.update(p.phase === "database" ? "snapshot of the database" : `copying blobs: ${p.done}/${p.total} (${bytes(p.bytes)})`);
      },
    });
  } catch (e) {
    throw backupFailure(e, dir, ctx.home);
  } finally {
    bar.done();
  }
}

/**
 * Runs `praxmail backup` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param dirArg - The argument.
 * @param flags - The parsed options.
 */
export async function backupAction(io: Io, dirArg: string, flags: HomeOptions & JsonOptions): Promise<void> {
  const dir = resolve(dirArg);
  const m = await withContext(flags, async (ctx) => {
    const manifest = await runBackup(ctx, io, dir);
    await ctx.store.transaction((tx) =>
      tx.audit({ actor: ctx.actor, action: "backup", subject: dir, details: { blobs: manifest.counts.blobs, encryptedTo: ctx.config.practiceRecipient } }, ctx.now()),
    );
    return manifest;
  });
  const recipient = String(m.meta.practiceRecipient);
  if (flags.json) {
    printJson(io, {
      dir,
      createdAt: m.createdAt,
      database: { size: m.database.size, sha256: m.database.sha256 },
      counts: m.counts,
      auditIntact: m.auditIntact,
      encryptedTo: recipient,
    });
  } else {
    io.out(
      `backed up ${m.counts.deliveries} deliveries, ${m.counts.patients} patients, ${m.counts.replies} replies and ${m.counts.blobs} blobs (${bytes(m.counts.blobBytes)}) to ${dir}\n`,
    );
  }
  if (!m.auditIntact) note(io, "praxmail: warning: the audit chain in this backup is broken (run praxmail audit --verify); restore will refuse it");
  note(io, `praxmail: note: the backup is encrypted to the practice recipient ${recipient}; only the practice identity`);
  note(io, "praxmail: note: restores it. Keep an offline copy of the identity apart from the backups: without it they are lost.");
}

import { readFileSync } from "node:fs";
import { isAbsolute, relative, resolve } from "node:path";
import { Command } from "commander";
import { PraxmailError, type Context } from "../core/index.js";
import { BackupError, backupHome, type BackupManifest } from "../store/index.js";
import { common, note, printJson, progress, withContext, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

interface BackupFlags extends HomeOptions, JsonOptions {
  includeIdentity?: boolean;
}

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
    manifest: `${dir} is not a complete praxmail backup (manifest.json is written last)`,
    mismatch: `the backup in ${dir} was altered or damaged; use another copy`,
    audit: "the database was altered outside praxmail; keep this backup for investigation and restore an earlier one",
    schema: "install the praxmail version that made the backup (or newer)",
  };
  return new PraxmailError("file", e.message, hints[e.code]);
}

/**
 * Backs up a home; `--include-identity` adds the practice identity file.
 *
 * @param ctx - The core context.
 * @param io - The streams.
 * @param dir - The backup folder (new or empty).
 * @param flags - Parsed options.
 * @returns The manifest written.
 */
export async function runBackup(ctx: Context, io: Io, dir: string, flags: BackupFlags): Promise<BackupManifest> {
  const inside = relative(ctx.home, dir);
  if (inside === "" || (!inside.startsWith("..") && !isAbsolute(inside))) {
    throw new PraxmailError("usage", `the backup folder ${dir} is inside home ${ctx.home}`, "back up to another disk or host, outside home");
  }
  const id = ctx.config.identity;
  if (flags.includeIdentity && id.kind === "keyring") {
    throw new PraxmailError(
      "identity",
      "the practice identity is in the OS keyring, which praxmail does not copy into backups",
      "back up the keyring with your desktop's tools, or keep the identity in a file (init --no-keyring on a new home)",
    );
  }
  const identityFile = flags.includeIdentity && id.kind === "file" ? id.file : null;
  const bar = progress(io);
  try {
    return await backupHome(ctx.home, dir, {
      // config.json last: restore puts it back last, and only then is the home initialised.
      files: [...(identityFile ? [identityFile] : []), "config.json"],
      meta: {
        praxmail: VERSION,
        home: ctx.home,
        practiceRecipient: ctx.config.practiceRecipient,
        identity: identityFile ? { file: identityFile, protected: id.kind === "file" && id.protected } : null,
      },
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

/** @returns The `backup` command. */
export function backupCommand(io: Io): Command {
  return common(new Command("backup"))
    .description("copy the database (online snapshot), its blobs and config.json into a new folder, with a manifest")
    .argument("<dir>", "a new or empty folder for the backup")
    .option("--include-identity", "also copy the practice identity file; the backup then opens every delivery: keep it offline")
    .action(async (dirArg: string, flags: BackupFlags) => {
      const dir = resolve(dirArg);
      const m = await withContext(flags, async (ctx) => {
        const manifest = await runBackup(ctx, io, dir, flags);
        ctx.store.transaction(() => {
          ctx.store.audit(
            { actor: ctx.actor, action: "backup", subject: dir, details: { blobs: manifest.counts.blobs, identity: manifest.meta.identity !== null } },
            ctx.now(),
          );
        });
        return manifest;
      });
      const withIdentity = m.meta.identity !== null;
      if (flags.json) {
        printJson(io, {
          dir,
          createdAt: m.createdAt,
          database: { size: m.database.size, sha256: m.database.sha256 },
          counts: m.counts,
          auditIntact: m.auditIntact,
          identity: withIdentity,
        });
      } else {
        io.out(
          `backed up ${m.counts.deliveries} deliveries, ${m.counts.patients} patients, ${m.counts.replies} replies and ${m.counts.blobs} blobs (${bytes(m.counts.blobBytes)}) to ${dir}\n`,
        );
      }
      if (!m.auditIntact) note(io, "praxmail: warning: the audit chain in this backup is broken (run praxmail audit --verify); restore will refuse it");
      if (withIdentity) {
        note(io, "praxmail: WARNING: this backup holds the practice identity. With it, anyone who reads the backup can open every");
        note(io, "praxmail: WARNING: delivery it contains. Keep it offline and encrypted; its files are mode 0600 in a 0700 folder.");
      } else {
        note(io, "praxmail: note: the practice identity is not in this backup. Without it, a restored home cannot approve");
        note(io, "praxmail: note: patients or read replies: keep an offline copy of it, or back up with --include-identity.");
      }
    });
}

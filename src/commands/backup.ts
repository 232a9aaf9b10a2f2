import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { backupPractice } from "../core/index.js";
import type { BackupManifest } from "../store/index.js";
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
 * Runs `praxmail backup` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param dirArg - The argument.
 * @param flags - The parsed options.
 */
export async function backupAction(io: Io, dirArg: string, flags: HomeOptions & JsonOptions): Promise<void> {
  const dir = resolve(dirArg);
  const bar = progress(io);
  let m: BackupManifest;
  try {
    m = await withContext(flags, (ctx) =>
      backupPractice(ctx, dir, {
        version: VERSION,
        progress: (p) => {
          bar.update(p.phase === "database" ? "snapshot of the database" : `copying blobs: ${p.done}/${p.total} (${bytes(p.bytes)})`);
        },
      }),
    );
  } finally {
    bar.done();
  }
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

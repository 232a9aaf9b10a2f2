import { checkShared, migratePractice, PraxmailError, type MigrateReport } from "../core/index.js";
import { bytes } from "./backup.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, openContext, openSharedAt, printJson, progress } from "./shared.js";

export interface MigrateFlags extends HomeOptions, JsonOptions {
  database?: string;
  blobs?: string;
}

/**
 * Runs `praxmail migrate` once its options are parsed (src/commands/definitions.ts): copies
 * the home's practice into the shared backend (src/core/migrate.ts) and prints what it did.
 *
 * @param io - Where output goes.
 * @param flags - The parsed options.
 */
export async function migrateAction(io: Io, flags: MigrateFlags): Promise<void> {
  if (flags.database === undefined || flags.blobs === undefined) {
    throw new PraxmailError("usage", "praxmail migrate needs the shared backend's --database and --blobs", "give --database postgres://user:password@host:port/db and --blobs s3://bucket/prefix (or PRAXMAIL_DATABASE and PRAXMAIL_BLOBS)");
  }
  const shared = checkShared(flags.database, flags.blobs);
  // The home is read on SQLite and files, whatever PRAXMAIL_DATABASE names.
  const ctx = await openContext(flags, undefined, "embedded");
  const bar = progress(io);
  let r: MigrateReport;
  try {
    const { store: target } = await openSharedAt(shared);
    try {
      r = await migratePractice(ctx, target, {
        shared,
        progress: (p) => {
          bar.update(p.phase === "blobs" ? `copying blobs: ${p.done}/${p.total} (${bytes(p.bytes)})` : `copying rows: ${p.table} ${p.rows}`);
        },
      });
    } finally {
      await target.close();
    }
  } finally {
    bar.done();
    await ctx.store.close();
  }
  if (flags.json) {
    printJson(io, { home: ctx.home, blobsUrl: shared.blobs, ...r, configWritten: true });
  } else {
    const rows = Object.values(r.rows).reduce((a, b) => a + b, 0);
    io.out(
      r.alreadyDone
        ? `${ctx.home} was migrated to ${shared.blobs} already; audit chain intact there (${r.auditRows} rows)\n`
        : `migrated ${rows} rows and ${r.blobs} blobs (${bytes(r.bytes)}; ${r.resumed} from an earlier run) to ${shared.blobs}; every blob read back and checked; audit chain intact there (${r.auditRows} rows)\n`,
    );
  }
  note(io, `praxmail: note: config.json in ${ctx.home} now names the shared backend; praxmail.db and blobs/ there are no longer used.`);
  note(io, "praxmail: note: remove them once praxmail serve runs on the shared backend (and a backup of it was made).");
}

import { GC_BUSY, collectGarbage, oneNodeAtATime, signCheckpoint, type Context, type GcReport } from "../core/index.js";
import { loadIdentityForCli } from "./approve.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { printJson, withContext } from "./shared.js";

export interface GcFlags extends HomeOptions, JsonOptions {
  grace: number;
  identity?: string;
}

// gc usually runs from a timer without the practice identity: it signs a checkpoint only when
// given one explicitly, never from the keyring or the file init stored.
async function runGc(ctx: Context, io: Io, flags: GcFlags) {
  const file = flags.identity ?? (io.env.PRAXMAIL_IDENTITY || undefined);
  const identity = file === undefined ? null : await loadIdentityForCli(ctx, io, file);
  const ran = await oneNodeAtATime(ctx, async () => {
    const report = { ...(await collectGarbage(ctx, flags.grace * 60_000)), skipped: null };
    if (identity === null) return { ...report, checkpoint: null, checkpointSkipped: "no practice identity given (--identity or PRAXMAIL_IDENTITY)" };
    const signed = await signCheckpoint(ctx, identity);
    if (signed === null) return { ...report, checkpoint: null, checkpointSkipped: "no approval key is pinned in config.json" };
    return { ...report, checkpoint: { ...signed.checkpoint, created: signed.created }, checkpointSkipped: null };
  });
  return ran ?? { ...NOTHING, skipped: GC_BUSY, checkpoint: null, checkpointSkipped: GC_BUSY };
}

/** The report of a gc that did nothing. */
const NOTHING: GcReport = { expired: [], reminded: 0, sessions: 0, unfinishedReplies: 0, unsent: 0, orphanBlobs: 0, tempFiles: 0 };

/**
 * Runs `praxmail gc` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param flags - The parsed options.
 */
export async function gcAction(io: Io, flags: GcFlags): Promise<void> {
  const r = await withContext(flags, (ctx) => runGc(ctx, io, flags));
  if (flags.json) printJson(io, r);
  else if (r.skipped !== null) io.out(`did nothing: ${r.skipped}\n`);
  else {
    io.out(
      `expired ${r.expired.length} ${r.expired.length === 1 ? "delivery" : "deliveries"}, sent ${r.reminded} reminders, ended ${r.sessions} sessions, discarded ${r.unsent} unsent deliveries and ${r.unfinishedReplies} unfinished replies, removed ${r.orphanBlobs} orphaned blobs and ${r.tempFiles} temp files\n`,
    );
    if (r.checkpoint === null) io.out(`signed no audit checkpoint: ${r.checkpointSkipped}\n`);
    else io.out(`${r.checkpoint.created ? "signed audit checkpoint" : "audit log already signed"} at row ${r.checkpoint.seq}: anchor ${r.checkpoint.seq}:${r.checkpoint.hash}\n`);
  }
}

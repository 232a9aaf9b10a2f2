import { Command, InvalidArgumentError } from "commander";
import { collectGarbage } from "../core/index.js";
import { common, printJson, withContext, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

interface GcFlags extends HomeOptions, JsonOptions {
  grace: number;
}

function minutes(v: string): number {
  if (!/^\d{1,6}$/.test(v)) throw new InvalidArgumentError("give whole minutes");
  return Number(v);
}

/** @returns The `gc` command. */
export function gcCommand(io: Io): Command {
  return common(new Command("gc"))
    .description("expire deliveries that are due and delete files no delivery references")
    .option("--grace <minutes>", "keep unreferenced files younger than this (a running relay may be writing them)", minutes, 60)
    .action(async (flags: GcFlags) => {
      const r = await withContext(flags, (ctx) => collectGarbage(ctx, flags.grace * 60_000));
      if (flags.json) printJson(io, r);
      else {
        io.out(
          `expired ${r.expired.length} ${r.expired.length === 1 ? "delivery" : "deliveries"}, sent ${r.reminded} reminders, ended ${r.sessions} sessions, discarded ${r.unsent} unsent deliveries and ${r.unfinishedReplies} unfinished replies, removed ${r.orphanBlobs} orphaned blobs and ${r.tempFiles} temp files\n`,
        );
      }
    });
}

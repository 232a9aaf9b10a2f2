import { Command } from "commander";
import { listReplies } from "../core/index.js";
import { formatSize } from "../mail/index.js";
import { common, printJson, printTable, shortTime, withContext, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

/** @returns The `inbox` command. */
export function inboxCommand(io: Io): Command {
  return common(new Command("inbox"))
    .description("list secure replies from patients")
    .action(async (flags: HomeOptions & JsonOptions) => {
      await withContext(flags, async (ctx) => {
        const rows = await listReplies(ctx);
        if (flags.json) { printJson(io, rows); return; }
        printTable(
          io,
          ["ID", "FROM", "ACCOUNT", "STATUS", "RECEIVED", "FILES", "SIZE"],
          rows.map((r) => [r.id, r.from, r.accountStatus ?? "unknown", r.status, shortTime(r.createdAt), String(r.files), formatSize(r.bytes, "en")]),
        );
      });
    });
}

import { listReplies } from "../core/index.js";
import { formatSize } from "../i18n/index.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { printJson, printTable, shortTime, withContext } from "./shared.js";

/**
 * Runs `praxmail inbox` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param flags - The parsed options.
 */
export async function inboxAction(io: Io, flags: HomeOptions & JsonOptions): Promise<void> {
  await withContext(flags, async (ctx) => {
    const rows = await listReplies(ctx);
    if (flags.json) { printJson(io, rows); return; }
    printTable(
      io,
      ["ID", "FROM", "ACCOUNT", "STATUS", "RECEIVED", "FILES", "SIZE"],
      rows.map((r) => [r.id, r.from, r.accountStatus ?? "unknown", r.status, shortTime(r.createdAt), String(r.files), formatSize(r.bytes, "en")]),
    );
  });
}

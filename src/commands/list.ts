import { listDeliveries, listPatients, listPending } from "../core/index.js";
import { formatSize } from "../i18n/index.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { printJson, printTable, shortTime, withContext } from "./shared.js";

export type What = "deliveries" | "patients" | "pending";

/**
 * Runs `praxmail list` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param what - The argument.
 * @param flags - The parsed options.
 */
export async function listAction(io: Io, what: What, flags: HomeOptions & JsonOptions): Promise<void> {
  await withContext(flags, async (ctx) => {
    if (what === "deliveries") {
      const rows = await listDeliveries(ctx);
      if (flags.json) { printJson(io, rows); return; }
      printTable(
        io,
        ["ID", "RECIPIENT", "LEVEL", "STATUS", "CREATED", "EXPIRES", "FILES"],
        rows.map((d) => [
          d.id,
          d.recipient,
          String(d.level),
          d.status === "ready" && d.downloadedAt === null ? "ready (not collected)" : d.status,
          shortTime(d.createdAt),
          shortTime(d.expiresAt),
          d.files.map((f) => `${f.name} (${formatSize(f.size, "en")})`).join(", "),
        ]),
      );
      return;
    }
    // Pending: waiting for approval, or approved with deliveries that still wait.
    const rows = what === "pending" ? await listPending(ctx) : await listPatients(ctx);
    if (flags.json) { printJson(io, rows); return; }
    printTable(
      io,
      ["EMAIL", "STATUS", "REGISTERED", "APPROVED", "SAFETY CODE"],
      rows.map((p) => [p.email, p.status, shortTime(p.registeredAt), shortTime(p.approvedAt), p.safetyCode ?? "-"]),
    );
  });
}

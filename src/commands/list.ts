import { Argument, Command } from "commander";
import { listDeliveries, listPatients, listPending } from "../core/index.js";
import { formatSize } from "../mail/index.js";
import { common, printJson, printTable, shortTime, withContext, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

type What = "deliveries" | "patients" | "pending";

/** @returns The `list` command. */
export function listCommand(io: Io): Command {
  return common(new Command("list"))
    .description("list deliveries, patients, or patients waiting for approval (pending: also approved patients whose deliveries wait)")
    .addArgument(new Argument("[what]", "what to list").choices(["deliveries", "patients", "pending"]).default("deliveries"))
    .action(async (what: What, flags: HomeOptions & JsonOptions) => {
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
    });
}

import { Command } from "commander";
import { PraxmailError } from "../core/index.js";
import { common, printJson, printTable, withContext, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

interface AuditFlags extends HomeOptions, JsonOptions {
  verify?: boolean;
}

/** @returns The `audit` command. */
export function auditCommand(io: Io): Command {
  return common(new Command("audit"))
    .description("print the audit log, or check its hash chain")
    .option("--verify", "check the hash chain; exit 1 naming the first broken row")
    .action(async (flags: AuditFlags) => {
      await withContext(flags, (ctx) => {
        if (flags.verify) {
          const v = ctx.store.verifyAudit();
          if (!v.ok) {
            throw new PraxmailError("wrong-state", `audit chain broken at row ${v.seq}: ${v.reason}`, "the log was altered outside praxmail; keep a copy of praxmail.db for investigation");
          }
          if (flags.json) printJson(io, { ok: true, rows: v.rows });
          else io.out(`audit chain intact: ${v.rows} rows\n`);
          return;
        }
        const rows = [...ctx.store.auditRows()];
        if (flags.json) {
          printJson(io, rows.map((r) => ({ ...r, details: JSON.parse(r.details) as unknown })));
          return;
        }
        printTable(io, ["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAILS"], rows.map((r) => [String(r.seq), r.at, r.actor, r.action, r.subject ?? "-", r.details]));
      });
    });
}

import { PraxmailError, signCheckpoint, verifyAuditLog, type AuditAnchor, type AuditReport, type Checkpoint, type Context } from "../core/index.js";
import type { AuditRow } from "../store/index.js";
import { loadIdentityForCli } from "./approve.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, printJson, printTable, withContext } from "./shared.js";

export interface AuditFlags extends HomeOptions, JsonOptions {
  verify?: boolean;
  sign?: boolean;
  identity?: string;
  anchor?: AuditAnchor;
}

function range(from: number, to: number): string {
  return from === to ? `row ${from}` : `rows ${from}–${to}`;
}

/** Says on stderr what the signatures vouch for, and plainly what they do not. */
function explain(io: Io, r: AuditReport): void {
  if (r.key === null) {
    note(io, "praxmail: no approval key is pinned in config.json (a home made before signed checkpoints): no checkpoint can be checked, so a chain rebuilt after tampering would pass too");
  } else if (r.lastCheckpoint === null) {
    note(io, "praxmail: no signed checkpoint yet: a chain rebuilt after tampering would pass too");
  } else {
    const c = r.lastCheckpoint;
    note(io, `praxmail: ${range(1, c.seq)} confirmed by ${r.checkpoints === 1 ? "a signed checkpoint" : `${r.checkpoints} signed checkpoints`} (the latest at row ${c.seq}, ${c.at}), key ${r.key}`);
  }
  if (r.anchor !== null) note(io, `praxmail: ${range(1, r.anchor.seq)} match the anchor ${r.anchor.seq}:${r.anchor.hash}`);
  const u = r.unconfirmed;
  if (u !== null) {
    const fix = r.key === null ? "" : "; sign a checkpoint with praxmail audit --verify --sign";
    note(io, `praxmail: ${u.count} ${u.count === 1 ? "row" : "rows"} unconfirmed (${range(u.from, u.to)}): nothing signed vouches for ${u.count === 1 ? "it" : "them"}${fix}`);
  }
}

/**
 * Verifies the audit log and, with --sign, signs a checkpoint over it.
 *
 * @param ctx - The core context.
 * @param io - The streams.
 * @param flags - Parsed options.
 */
async function runVerify(ctx: Context, io: Io, flags: AuditFlags): Promise<void> {
  let report = await verifyAuditLog(ctx, flags.anchor);
  let signed: { checkpoint: Checkpoint; created: boolean } | null = null;
  if (flags.sign) {
    if (ctx.config.approvalKey === null) {
      throw new PraxmailError("wrong-state", "no approval key is pinned in config.json, so no checkpoint can be signed", "this home was made before signed approvals and audit checkpoints: approvalKey must be pinned in config.json first");
    }
    signed = await signCheckpoint(ctx, await loadIdentityForCli(ctx, io, flags.identity));
    report = await verifyAuditLog(ctx, flags.anchor);
  }
  if (flags.json) {
    printJson(io, { ok: true, ...report, signed: signed && { ...signed.checkpoint, created: signed.created } });
    return;
  }
  io.out(`audit chain intact: ${report.rows} rows\n`);
  if (signed !== null) {
    const c = signed.checkpoint;
    io.out(`${signed.created ? "signed checkpoint" : "already signed: checkpoint"} at row ${c.seq}; keep this anchor outside the server: ${c.seq}:${c.hash}\n`);
  }
  explain(io, report);
}

/**
 * Runs `praxmail audit` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param flags - The parsed options.
 */
export async function auditAction(io: Io, flags: AuditFlags): Promise<void> {
  if (flags.identity !== undefined && !flags.sign) throw new PraxmailError("usage", "--identity is only used with --sign");
  await withContext(flags, async (ctx) => {
    if (flags.verify || flags.sign || flags.anchor) {
      await runVerify(ctx, io, flags);
      return;
    }
    const rows: AuditRow[] = [];
    for await (const r of ctx.store.auditRows()) rows.push(r);
    if (flags.json) {
      printJson(io, rows.map((r) => ({ ...r, details: JSON.parse(r.details) as unknown })));
      return;
    }
    printTable(io, ["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAILS"], rows.map((r) => [String(r.seq), r.at, r.actor, r.action, r.subject ?? "-", r.details]));
  });
}

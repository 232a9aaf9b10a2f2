import { checkbox, password } from "@inquirer/prompts";
import {
  PraxmailError,
  approvePatients,
  getPatient,
  listPending,
  loadPracticeIdentity,
  pinApprovalKey,
  unsignedApprovals,
  type Approval,
  type ApprovalTarget,
  type Context,
  type PendingPatient,
  type PinResult,
} from "../core/index.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { confirmOrYes, note, printJson, progress, withContext } from "./shared.js";

export interface ApproveFlags extends HomeOptions, JsonOptions {
  yes?: boolean;
  identity?: string;
  code?: string;
}

/**
 * Loads the practice identity for a command: --identity, PRAXMAIL_IDENTITY, or where init
 * stored it; a passphrase from PRAXMAIL_IDENTITY_PASSPHRASE or the terminal.
 *
 * @param ctx - The core context.
 * @param io - The streams.
 * @param flag - The value of --identity.
 * @returns P's secret.
 */
export async function loadIdentityForCli(ctx: Context, io: Io, flag: string | undefined): Promise<string> {
  return loadPracticeIdentity(ctx.home, ctx.config, flag ?? (io.env.PRAXMAIL_IDENTITY || undefined), async () => {
    const env = io.env.PRAXMAIL_IDENTITY_PASSPHRASE;
    if (env !== undefined && env !== "") return env;
    if (!io.interactive) return undefined;
    return password({ message: "Passphrase of the practice identity", mask: "*" }, { output: process.stderr });
  });
}

async function choose(ctx: Context, io: Io, emails: readonly string[], pending: readonly PendingPatient[]): Promise<string[]> {
  if (emails.length > 0) {
    const out: string[] = [];
    for (const e of emails) out.push((await getPatient(ctx, e)).email);
    return out;
  }
  if (pending.length === 0) throw new PraxmailError("wrong-state", "no patient is waiting for approval", "run praxmail list patients");
  if (!io.interactive) {
    throw new PraxmailError("usage", "name the patients to approve", "praxmail approve EMAIL... (see praxmail list pending)");
  }
  return checkbox(
    {
      message: "Patients to approve (compare the safety code with the patient's screen)",
      choices: pending.map((p) => ({ value: p.email, name: describe(p) })),
      required: true,
    },
    { output: process.stderr },
  );
}

function describe(p: PendingPatient): string {
  const waiting = p.status === "approved" ? `  (approved; ${p.waiting} ${p.waiting === 1 ? "delivery waits" : "deliveries wait"})` : "";
  const alarm = p.untrusted ? "  STORED APPROVAL DOES NOT VERIFY: call the patient" : "";
  return `${p.email}  safety code ${p.safetyCode ?? "-"}${waiting}${alarm}`;
}

/** What `approve` did. */
export interface ApproveResult {
  readonly approved: Approval[];
  /** Set when this run pinned the approval key of a home made before signed approvals. */
  readonly pinned: PinResult | null;
}

/**
 * Approves patients: shows each safety code, confirms, loads the practice identity, rewraps.
 * The approval commits only for the codes shown (or given with --code). In a home made
 * before signed approvals it first pins the approval key and signs the current approvals.
 *
 * @param ctx - The core context.
 * @param io - The streams.
 * @param flags - Parsed options.
 * @param emails - Patients named on the command line.
 * @returns What was approved and pinned, or null when the user declined.
 */
export async function runApprove(ctx: Context, io: Io, flags: ApproveFlags, emails: readonly string[]): Promise<ApproveResult | null> {
  if (flags.code !== undefined && emails.length !== 1) {
    throw new PraxmailError("usage", "--code needs exactly one patient", "praxmail approve EMAIL --code '1234 5678 9012'");
  }
  const upgrade = ctx.config.approvalKey === null ? await unsignedApprovals(ctx) : null;
  if (upgrade) {
    note(io, "praxmail: this home has no approval key pinned yet (made before signed approvals); until it is, no delivery is encrypted to a patient's key");
    note(io, `praxmail: approving pins it and signs the approvals of ${upgrade.length} approved ${upgrade.length === 1 ? "patient" : "patients"} as they are now:`);
    for (const p of upgrade) note(io, `  ${p.email}  safety code ${p.safetyCode ?? "-"}`);
  }
  const pending = await listPending(ctx);
  // Without names, the upgrade only pins and signs; deliveries held back meanwhile stay listed.
  const chosen = upgrade && emails.length === 0 ? [] : await choose(ctx, io, emails, pending);
  const targets: ApprovalTarget[] = [];
  for (const email of chosen) {
    const p = pending.find((q) => q.email === email);
    if (!p) {
      const status = (await getPatient(ctx, email)).status;
      const hint = status === "pending-secupass" ? "the patient has not set a Secu-Pass-Key yet" : "run praxmail list pending";
      throw new PraxmailError("wrong-state", `patient ${email} is ${status}, not pending approval`, hint);
    }
    const shown = p.safetyCode ?? "";
    if (flags.code !== undefined && flags.code.replace(/\D/g, "") !== shown.replace(/\D/g, "")) {
      throw new PraxmailError("wrong-state", `the safety code of ${email} is ${shown}, not ${flags.code}; nothing was approved`, "compare the code with the patient's screen again");
    }
    note(io, describe(p));
    targets.push({ email, safetyCode: shown });
  }
  const question = targets.length > 0 ? "Do these safety codes match what the patients see?" : "Pin the approval key and sign these approvals?";
  if (!(await confirmOrYes(io, question, flags.yes))) return null;
  const identity = await loadIdentityForCli(ctx, io, flags.identity);
  const pinned = upgrade ? await pinApprovalKey(ctx, identity) : null;
  const signedCtx = pinned ? { ...ctx, config: pinned.config } : ctx;
  const bar = progress(io);
  try {
    const approved = await approvePatients(signedCtx, targets, identity, (email, done, total) => { bar.update(`rewrapping for ${email}: ${done}/${total}`); });
    return { approved, pinned };
  } finally {
    bar.done();
  }
}

/**
 * Runs `praxmail approve` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param emails - The arguments.
 * @param flags - The parsed options.
 */
export async function approveAction(io: Io, emails: string[], flags: ApproveFlags): Promise<void> {
  const r = await withContext(flags, (ctx) => runApprove(ctx, io, flags, emails));
  if (r === null) {
    note(io, "praxmail: nothing approved");
    return;
  }
  const pinned = r.pinned && { fingerprint: r.pinned.fingerprint, signed: r.pinned.signed };
  if (flags.json) {
    printJson(io, { approved: r.approved, ...(pinned ? { pinned } : {}) });
    return;
  }
  if (pinned) {
    io.out(`pinned approval key ${pinned.fingerprint}; signed ${pinned.signed.length} existing ${pinned.signed.length === 1 ? "approval" : "approvals"}\n`);
    for (const p of pinned.signed) io.out(`signed ${p.email}  safety code ${p.safetyCode ?? "-"}\n`);
  }
  for (const a of r.approved) io.out(`approved ${a.email}: ${a.deliveries} ${a.deliveries === 1 ? "delivery" : "deliveries"} released\n`);
}

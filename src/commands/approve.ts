import { Command } from "commander";
import { checkbox, password } from "@inquirer/prompts";
import { PraxmailError, approvePatients, getPatient, listPatients, loadPracticeIdentity, type Context } from "../core/index.js";
import { common, confirmOrYes, note, printJson, progress, withContext, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

interface ApproveFlags extends HomeOptions, JsonOptions {
  yes?: boolean;
  identity?: string;
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

async function choose(ctx: Context, io: Io, emails: readonly string[]): Promise<string[]> {
  if (emails.length > 0) return emails.map((e) => getPatient(ctx, e).email);
  const pending = listPatients(ctx, "pending-approval");
  if (pending.length === 0) throw new PraxmailError("wrong-state", "no patient is waiting for approval", "run praxmail list patients");
  if (!io.interactive) {
    throw new PraxmailError("usage", "name the patients to approve", "praxmail approve EMAIL... (see praxmail list pending)");
  }
  return checkbox(
    {
      message: "Patients to approve (compare the safety code with the patient's screen)",
      choices: pending.map((p) => ({ value: p.email, name: `${p.email}  safety code ${p.safetyCode ?? "-"}` })),
      required: true,
    },
    { output: process.stderr },
  );
}

/**
 * Approves patients: shows each safety code, confirms, loads the practice identity, rewraps.
 *
 * @param ctx - The core context.
 * @param io - The streams.
 * @param flags - Parsed options.
 * @param emails - Patients named on the command line.
 * @returns The approvals, or null when the user declined.
 */
export async function runApprove(ctx: Context, io: Io, flags: ApproveFlags, emails: readonly string[]) {
  const chosen = await choose(ctx, io, emails);
  for (const email of chosen) {
    const p = getPatient(ctx, email);
    if (p.status !== "pending-approval") {
      const hint = p.status === "pending-secupass" ? "the patient has not set a Secu-Pass-Key yet" : "run praxmail list pending";
      throw new PraxmailError("wrong-state", `patient ${p.email} is ${p.status}, not pending approval`, hint);
    }
    note(io, `${p.email}  safety code ${p.safetyCode ?? "-"}`);
  }
  if (!(await confirmOrYes(io, "Do these safety codes match what the patients see?", flags.yes))) return null;
  const identity = await loadIdentityForCli(ctx, io, flags.identity);
  const bar = progress(io);
  try {
    return await approvePatients(ctx, chosen, identity, (email, done, total) => { bar.update(`rewrapping for ${email}: ${done}/${total}`); });
  } finally {
    bar.done();
  }
}

/** @returns The `approve` command. */
export function approveCommand(io: Io): Command {
  return common(new Command("approve"))
    .description("approve patients who set their Secu-Pass-Key, releasing their deliveries")
    .argument("[emails...]", "patients to approve (default: choose on a terminal)")
    .option("--identity <file>", "practice identity file (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (emails: string[], flags: ApproveFlags) => {
      const approved = await withContext(flags, (ctx) => runApprove(ctx, io, flags, emails));
      if (approved === null) {
        note(io, "praxmail: nothing approved");
        return;
      }
      if (flags.json) printJson(io, { approved });
      else for (const a of approved) io.out(`approved ${a.email}: ${a.deliveries} ${a.deliveries === 1 ? "delivery" : "deliveries"} released\n`);
    });
}

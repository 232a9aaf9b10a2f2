// The praxmail command line: builds the commands and turns every failure into a message
// and an exit code (0 success, 1 failure, 2 bad usage).
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { approveCommand } from "./commands/approve.js";
import { auditCommand } from "./commands/audit.js";
import { backupCommand } from "./commands/backup.js";
import { doctorCommand } from "./commands/doctor.js";
import { exportCommand } from "./commands/export.js";
import { gcCommand } from "./commands/gc.js";
import { inboxCommand } from "./commands/inbox.js";
import { inviteCommand } from "./commands/invite.js";
import { receiveCommand } from "./commands/receive.js";
import { initCommand } from "./commands/init.js";
import { listCommand } from "./commands/list.js";
import { restoreCommand } from "./commands/restore.js";
import { revokeCommand } from "./commands/revoke.js";
import { sendCommand } from "./commands/send.js";
import { serveCommand } from "./commands/serve.js";
import { processIo, reportError, type Io } from "./commands/shared.js";

const VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

/**
 * Builds the program.
 *
 * @param io - Where output goes.
 * @returns The commander program.
 */
export function program(io: Io): Command {
  const p = new Command("praxmail")
    .description("end-to-end encrypted delivery of practice mail to patients")
    .version(VERSION, "-V, --version")
    .showSuggestionAfterError(true);
  for (const make of [initCommand, serveCommand, sendCommand, approveCommand, inviteCommand, listCommand, revokeCommand, inboxCommand, receiveCommand, exportCommand, auditCommand, gcCommand, doctorCommand, backupCommand, restoreCommand]) {
    p.addCommand(make(io));
  }
  const all = [p, ...p.commands];
  for (const c of all) {
    c.exitOverride();
    c.configureOutput({
      writeOut: (s) => { io.out(s); },
      writeErr: (s) => { io.err(s); },
      // Errors are printed by main() in the praxmail format.
      outputError: () => undefined,
    });
  }
  return p;
}

/**
 * Runs the CLI.
 *
 * @param argv - process.argv.
 * @param io - Where output goes.
 * @returns The exit code.
 */
export async function main(argv: readonly string[], io: Io = processIo): Promise<number> {
  const p = program(io);
  try {
    await p.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      if (e.code === "commander.executeSubCommandAsync") return e.exitCode;
      const sub = argv.slice(2).find((a) => p.commands.some((c) => c.name() === a));
      io.err(`praxmail: error: ${e.message.replace(/^error: /, "")}\n`);
      io.err(`praxmail: hint: run praxmail ${sub ? `${sub} ` : ""}--help\n`);
      return 2;
    }
    return reportError(io, e);
  }
}

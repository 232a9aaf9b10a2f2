// The praxmail command line: builds the commands and turns every failure into a message
// and an exit code (0 success, 1 failure, 2 bad usage).
import { Command, CommanderError } from "commander";
import { COMMANDS, processIo, type Io } from "./commands/definitions.js";

/** Set by the build (scripts/build-cli.mjs) from package.json, so that --version reads no file. */
declare const PRAXMAIL_VERSION: string;

/**
 * Builds the program.
 *
 * @param io - Where output goes.
 * @returns The commander program.
 */
export function program(io: Io): Command {
  const p = new Command("praxmail")
    .description("end-to-end encrypted delivery of practice mail to patients")
    .version(PRAXMAIL_VERSION, "-V, --version")
    .showSuggestionAfterError(true);
  for (const make of COMMANDS) {
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
    // An action failed: its modules, and with them the error types, are loaded by now.
    const { reportError } = await import("./commands/shared.js");
    return reportError(io, e);
  }
}

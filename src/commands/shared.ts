// What the commands' actions share: opening the core context, printing, confirmation, and
// the one place where errors become messages and exit codes.
import { userInfo } from "node:os";
import chalk from "chalk";
import { openSharedStore, openStore, type Store } from "../store/index.js";
import {
  PraxmailError,
  checkNode,
  cleanUpAfter,
  cleanupFailures,
  databaseWhere,
  errorFields,
  ensureWritableHome,
  loadConfig,
  patientLanguage,
  resolveHome,
  sharedBackend,
  type Backend,
  type Config,
  type Context,
  type SharedBackend,
} from "../core/index.js";
import { notifierFor } from "../mail/notify.js";
import type { HomeOptions, Io } from "./definitions.js";

if ((process.env.NO_COLOR ?? "") !== "" || !process.stderr.isTTY) chalk.level = 0;

/**
 * Opens the core context of an initialised home; close it with {@link closeContext}.
 *
 * @param opts - The command's options.
 * @param actor - Who acts, for the audit log.
 * @param backend - `embedded`: SQLite and files under home, whatever the config and the
 *   environment name (praxmail migrate reads the home it moves).
 * @returns The context.
 * @throws {@link PraxmailError} if home is not writable or not initialised.
 */
export async function openContext(opts: HomeOptions, actor = `cli:${userInfo().username}`, backend: "configured" | "embedded" = "configured"): Promise<Context> {
  const home = resolveHome(opts.home);
  await ensureWritableHome(home);
  const config = loadConfig(home);
  const store = backend === "embedded" ? openStore(home) : await openBackend(home, config);
  return {
    home,
    config,
    store,
    notifier: notifierFor(home, config, (email) => patientLanguage(store, email)),
    actor,
    now: () => new Date(),
    alarm: (event, fields) => {
      process.stderr.write(`praxmail: alarm: ${event} ${JSON.stringify(fields)}\n`);
    },
  };
}

/**
 * Opens the home's store: the shared backend when PRAXMAIL_DATABASE and PRAXMAIL_BLOBS or
 * config.json name one, else SQLite and files under home. A node refuses a shared backend
 * that belongs to another practice.
 *
 * @param home - The home.
 * @param config - Its configuration.
 * @returns The store.
 * @throws {@link PraxmailError} `backend` if the shared backend cannot be reached, or its
 *   practice is not the one config.json pins.
 */
async function openBackend(home: string, config: Config): Promise<Store> {
  const backend = await openShared(config);
  if (backend === null) return openStore(home);
  try {
    await checkNode(backend, config);
  } catch (e) {
    throw await cleanUpAfter(e, [() => backend.store.close()]);
  }
  return backend.store;
}

/**
 * Opens the shared backend a configuration (or PRAXMAIL_DATABASE and PRAXMAIL_BLOBS) names,
 * without checking whose it is.
 *
 * @param config - A configuration.
 * @returns The store and its name, or null for the embedded backend.
 * @throws {@link PraxmailError} `backend` if it cannot be reached (the message names the
 *   host, never the password).
 */
export async function openShared(config: Pick<Config, "shared">): Promise<Backend | null> {
  const shared = sharedBackend(config, process.env);
  return shared === null ? null : openSharedAt(shared);
}

/**
 * Opens the shared backend at exactly these URLs (the AWS_* settings still apply).
 *
 * @param shared - Its database and bucket.
 * @returns The store and its name.
 * @throws {@link PraxmailError} `backend` if it cannot be reached (the message names the
 *   host, never the password).
 */
export async function openSharedAt(shared: SharedBackend): Promise<Backend> {
  const name = databaseWhere(shared.database);
  try {
    return { store: await openSharedStore(shared.database, shared.blobs), name };
  } catch (e) {
    throw new PraxmailError("backend", `cannot open the shared backend at ${name}: ${(e as Error).message}`, "check PRAXMAIL_DATABASE, PRAXMAIL_BLOBS and the AWS_* settings, and that both services answer; praxmail doctor checks them", { cause: e });
  }
}

/**
 * Runs work with an open context and closes it afterwards, also on failure.
 *
 * @param opts - The command's options.
 * @param fn - The work.
 * @returns What fn returns.
 */
export async function withContext<T>(opts: HomeOptions, fn: (ctx: Context) => T | Promise<T>): Promise<T> {
  const ctx = await openContext(opts);
  try {
    return await fn(ctx);
  } finally {
    await ctx.store.close();
  }
}

/**
 * Asks for confirmation on a terminal; refuses elsewhere unless `--yes` was given.
 *
 * @param io - The streams.
 * @param question - The question.
 * @param yes - The value of `--yes`.
 * @returns Whether to go on.
 * @throws {@link PraxmailError} `usage` when not interactive and not `--yes`.
 */
export async function confirmOrYes(io: Io, question: string, yes: boolean | undefined): Promise<boolean> {
  if (yes) return true;
  if (!io.interactive) {
    throw new PraxmailError("usage", "confirmation needed, but stdin is not a terminal", "pass --yes to confirm in a script");
  }
  // Loaded only when a terminal is asked: most runs never prompt.
  const { confirm } = await import("@inquirer/prompts");
  return confirm({ message: question, default: false }, { output: process.stderr });
}

/**
 * Prints rows as an aligned table.
 *
 * @param io - The streams.
 * @param headers - Column titles.
 * @param rows - Cells.
 */
export function printTable(io: Io, headers: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd();
  io.out(`${chalk.bold(line(headers))}\n`);
  for (const r of rows) io.out(`${line(r)}\n`);
}

/**
 * Prints a value as JSON on stdout.
 *
 * @param io - The streams.
 * @param value - The data.
 */
export function printJson(io: Io, value: unknown): void {
  io.out(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Prints a note for people on stderr.
 *
 * @param io - The streams.
 * @param text - The note.
 */
export function note(io: Io, text: string): void {
  io.err(`${text}\n`);
}

/**
 * Shows progress of long work on a terminal; prints nothing elsewhere.
 *
 * @param io - The streams.
 * @returns update(text) and done(). update is called often (send: once per MiB), so text may
 *   be a function, called only when a line is shown: at most every 100 ms, on a terminal.
 */
export function progress(io: Io): { update(text: string | (() => string)): void; done(): void } {
  let last = 0;
  let shown = false;
  return {
    update(text) {
      if (!io.interactive) return;
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      shown = true;
      io.err(`\r\x1b[2K${chalk.dim(typeof text === "string" ? text : text())}`);
    },
    done() {
      if (shown) io.err("\r\x1b[2K");
    },
  };
}

/**
 * Maps an error to the message the user sees and the exit code (DESIGN.md §5).
 *
 * @param io - The streams.
 * @param e - What was thrown.
 * @returns 2 for bad usage, 1 otherwise.
 */
export function reportError(io: Io, e: unknown): number {
  const say = (label: string, text: string): void => { io.err(`praxmail: ${label}: ${text}\n`); };
  const code = reportFailure(io, e, say);
  // Cleanup steps that failed after it (cleanUpAfter): what may be left behind, and why.
  for (const c of cleanupFailures(e).cleanup ?? []) {
    say(chalk.yellow("warning"), `cleaning up after this failed too: ${c.name}${c.code === null ? "" : ` ${String(c.code)}`}: ${c.message}`);
  }
  return code;
}

function reportFailure(io: Io, e: unknown, say: (label: string, text: string) => void): number {
  if (e instanceof PraxmailError) {
    say(chalk.red("error"), e.message);
    // What lies underneath (the keyring's or the file system's words): class, code and first
    // line only, which never hold a key or passphrase.
    if (io.env.PRAXMAIL_DEBUG) {
      for (let c = e.cause; c !== undefined; c = c instanceof Error ? c.cause : undefined) {
        const f = errorFields(c);
        say("cause", `${f.name}${f.code === null ? "" : ` ${String(f.code)}`}: ${f.message}`);
      }
    }
    if (e.hint) say("hint", e.hint);
    return e.code === "usage" ? 2 : 1;
  }
  if (e instanceof Error && e.name === "ExitPromptError") {
    say(chalk.red("error"), "cancelled");
    return 1;
  }
  const err = e as NodeJS.ErrnoException;
  say(chalk.red("error"), err.code ? `${err.code}: ${err.message}` : `internal error: ${err.message}`);
  if (io.env.PRAXMAIL_DEBUG && err.stack) io.err(`${err.stack}\n`);
  else say("hint", "set PRAXMAIL_DEBUG=1 for details, and report it if it persists");
  return 1;
}

/**
 * Formats an ISO time for tables (minutes, UTC).
 *
 * @param iso - An ISO time or null.
 * @returns `2026-11-29 08:23` or `-`.
 */
export function shortTime(iso: string | null): string {
  return iso ? iso.slice(0, 16).replace("T", " ") : "-";
}

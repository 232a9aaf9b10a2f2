// Runs the real praxmail binary against a temp home.
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { simpleParser, type ParsedMail } from "mailparser";
import { readIdentityFile } from "../../src/crypto/index.js";

/** The binary under test. */
export const BIN = resolve(import.meta.dirname, "../../bin/praxmail");

/** What a run produced. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options for {@link praxmail}. */
export interface RunOptions {
  env?: Record<string, string | undefined>;
  input?: string;
  /** Run as root without capabilities, so file permissions apply to root too. */
  dropPrivileges?: boolean;
  /** Wrap the command, e.g. `["unshare", "-rm", …]`. */
  wrap?: string[];
}

/**
 * Runs `praxmail ...args`.
 *
 * @param args - Arguments.
 * @param opts - Environment, stdin, privileges.
 * @returns Exit code and output.
 */
export function praxmail(args: readonly string[], opts: RunOptions = {}): Promise<Run> {
  let cmd = [process.execPath, BIN, ...args];
  if (opts.dropPrivileges && process.getuid?.() === 0) cmd = ["setpriv", "--bounding-set=-all", ...cmd];
  if (opts.wrap) cmd = [...opts.wrap, ...cmd];
  const [file, ...rest] = cmd as [string, ...string[]];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, rest, {
      env: { PATH: process.env.PATH, NO_COLOR: "1", LANG: "C.UTF-8", ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => {
      resolvePromise({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}

/**
 * @returns A fresh temp folder; remove it with {@link cleanup}.
 */
export function tempDir(prefix = "praxmail-test-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/**
 * @param dir - A folder from {@link tempDir}.
 */
export async function cleanup(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/**
 * Initialises a home with the real binary.
 *
 * @param home - The folder.
 * @param extra - More flags, e.g. `["--recipient-type", "x25519"]`.
 * @returns The practice recipient.
 */
export async function initHome(home: string, extra: readonly string[] = []): Promise<string> {
  const r = await praxmail([
    "init",
    "--home",
    home,
    "--yes",
    "--no-keyring",
    "--practice-name",
    "Praxis Dr. Weber",
    "--practice-email",
    "praxis@praxis-weber.example",
    ...extra,
  ]);
  if (r.code !== 0) throw new Error(`init failed: ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * Reads every mail in the outbox, oldest first.
 *
 * @param home - The praxmail home.
 * @returns Parsed mails with their file names.
 */
export async function outbox(home: string): Promise<(ParsedMail & { file: string })[]> {
  let names: string[];
  try {
    names = (await readdir(join(home, "outbox"))).filter((n) => n.endsWith(".eml")).sort();
  } catch {
    return [];
  }
  const out: (ParsedMail & { file: string })[] = [];
  for (const n of names) out.push({ ...(await simpleParser(await readFile(join(home, "outbox", n)))), file: n });
  return out;
}

/**
 * Lists every file under a folder, recursively.
 *
 * @param dir - The folder.
 * @returns Absolute paths.
 */
export async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}

/**
 * Reads the practice identity P of a home made by {@link initHome} (`--no-keyring`).
 *
 * @param home - The praxmail home.
 * @returns P's secret.
 */
export function practiceIdentityOf(home: string): Promise<string> {
  return readIdentityFile(join(home, "practice-identity.txt"), () => Promise.resolve(undefined));
}

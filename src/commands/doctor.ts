import { lstat, readdir, stat, statfs } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import chalk from "chalk";
import nodemailer from "nodemailer";
import { keyFingerprint } from "../crypto/index.js";
import {
  MIN_CONTRAST,
  PraxmailError,
  accentContrast,
  checkPracticeIdentity,
  isInitialised,
  loadConfig,
  readLogo,
  readPracticeIdentity,
  resolveHome,
  showRatio,
  type Config,
} from "../core/index.js";
import type { Listen } from "../relay/server.js";
import type { MilterListen } from "../milter/server.js";
import { bytes } from "./backup.js";
import { tcpPortState, unixSocketState, type PortState } from "./doctor-ports.js";
import { sharedChecks } from "./doctor-shared.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, printJson } from "./shared.js";

export interface DoctorFlags extends HomeOptions, JsonOptions {
  smtp: Listen;
  http: Listen;
  milter?: MilterListen;
  identity?: string;
  minFree: number;
  timeout: number;
}

/** One check's verdict. */
export interface Check {
  readonly name: string;
  readonly status: "ok" | "warn" | "fail" | "skip";
  readonly reason: string;
  readonly hint?: string;
}

const ok = (name: string, reason: string): Check => ({ name, status: "ok", reason });
const warn = (name: string, reason: string, hint: string): Check => ({ name, status: "warn", reason, hint });
const fail = (name: string, reason: string, hint: string): Check => ({ name, status: "fail", reason, hint });

const mode = (m: number): string => `0${(m & 0o777).toString(8)}`;
const errCode = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? (e as Error).message;

function checkConfig(home: string): { check: Check; config: Config | null } {
  if (!isInitialised(home)) return { check: fail("config", `no config.json in ${home}`, "run praxmail init, or pass --home"), config: null };
  try {
    return { check: ok("config", `${join(home, "config.json")} is valid`), config: loadConfig(home) };
  } catch (e) {
    if (e instanceof PraxmailError) return { check: fail("config", e.message, e.hint ?? "run praxmail init again"), config: null };
    throw e;
  }
}

/**
 * Fails when home, or any file or folder in it (database, -wal, -shm, config.json, blobs,
 * outbox, the identity file), grants any permission to group or others.
 */
async function checkPermissions(home: string): Promise<Check> {
  const name = "permissions";
  const loose: { path: string; mode: number; dir: boolean }[] = [];
  let seen = 0;
  const visit = async (path: string): Promise<void> => {
    const st = await lstat(path);
    seen++;
    if (!st.isSymbolicLink() && (st.mode & 0o077) !== 0) loose.push({ path, mode: st.mode, dir: st.isDirectory() });
    if (st.isDirectory()) for (const n of (await readdir(path)).sort()) await visit(join(path, n));
  };
  try {
    await visit(home);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" && seen === 0) return { name, status: "skip", reason: `${home} does not exist` };
    return fail(name, `cannot check the permissions under ${home}: ${errCode(e)}`, "run praxmail doctor as the user that runs praxmail serve");
  }
  const [first] = loose;
  if (!first) return ok(name, `${home} and the ${seen - 1} files and folders in it grant nothing to group or others`);
  const what = first.dir ? "others may list or change what is in it" : "others may read it";
  const more = loose.length > 1 ? ` (and ${loose.length - 1} more under ${home})` : "";
  const hint = loose.length > 1 ? `chmod -R go= ${home}` : `chmod ${first.dir ? "700" : "600"} ${first.path}`;
  return fail(name, `${first.path} has mode ${mode(first.mode)}: ${what}${more}`, hint);
}

/** The passphrase of a protected identity file, from PRAXMAIL_IDENTITY_PASSPHRASE only: doctor never prompts. */
const passphraseOf = (io: Io) => (): Promise<string | undefined> => Promise.resolve(io.env.PRAXMAIL_IDENTITY_PASSPHRASE || undefined);

async function checkIdentity(home: string, config: Config, io: Io, flag: string | undefined): Promise<Check> {
  const name = "identity";
  const explicit = flag ?? (io.env.PRAXMAIL_IDENTITY || undefined);
  const matches = async (identity: string, where: string): Promise<Check> =>
    (await checkPracticeIdentity(config, identity)).kind !== "other-identity"
      ? ok(name, `${where} holds the practice identity`)
      : fail(name, `${where} holds an identity that does not belong to the practice recipient in config.json`, "approve would fail: put the right identity file in place");
  if (explicit === undefined && config.identity.kind === "keyring") {
    const read = await readPracticeIdentity(home, config, undefined, passphraseOf(io));
    if (read.kind === "loaded") return matches(read.identity, "the OS keyring");
    const why = read.kind === "unreadable" ? read.error.message : "it is passphrase-protected";
    return warn(name, `cannot read the practice identity from the OS keyring: ${why}`, "approve, invite, receive and export need it: run them where the keyring is unlocked, or pass --identity FILE");
  }
  const path = explicit !== undefined ? resolve(explicit) : join(home, config.identity.kind === "file" ? config.identity.file : "");
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    const why = `no identity file at ${path} (${errCode(e)})`;
    const hint = `approve, invite, receive and export need it: put the offline copy back at ${path} (chmod 600), or pass --identity FILE to them`;
    // Keeping P off the server between approvals is allowed; a file named by flag or env must exist.
    return explicit !== undefined ? fail(name, why, hint) : warn(name, why, hint);
  }
  if (!st.isFile()) return fail(name, `${path} is not a file`, "point --identity or PRAXMAIL_IDENTITY at the identity file");
  if ((st.mode & 0o077) !== 0) return fail(name, `${path} has mode ${mode(st.mode)}: others may read the practice identity`, `chmod 600 ${path}`);
  const dir = await stat(dirname(path));
  if ((dir.mode & 0o022) !== 0) {
    return fail(name, `${dirname(path)} has mode ${mode(dir.mode)}: others may replace the identity file`, `chmod 700 ${dirname(path)}`);
  }
  const read = await readPracticeIdentity(home, config, path, passphraseOf(io));
  if (read.kind === "passphrase-required") return ok(name, `${path} (mode ${mode(st.mode)}) is passphrase-protected; set PRAXMAIL_IDENTITY_PASSPHRASE to check its key too`);
  if (read.kind === "unreadable") return fail(name, `cannot read ${path}: ${errCode(read.error)}`, "check the file and its passphrase");
  const verdict = await matches(read.identity, `${path} (mode ${mode(st.mode)})`);
  if (verdict.status === "ok" && (dir.mode & 0o077) !== 0) {
    return warn(name, `${verdict.reason}, but ${dirname(path)} has mode ${mode(dir.mode)}: others can list it`, `chmod 700 ${dirname(path)}`);
  }
  return verdict;
}

/** The upstream URL with its password replaced, for printing. */
function shown(url: string): string {
  const u = new URL(url);
  if (u.password !== "") u.password = "***";
  u.search = "";
  return u.toString().replace(/\/$/, "");
}

async function checkUpstream(home: string, config: Config, timeoutMs: number): Promise<Check> {
  const name = "upstream";
  if (config.upstream === null) {
    return warn(name, `not configured: mail is written to ${join(home, "outbox")}/`, "to send real mail: praxmail init --upstream smtp://user:password@host:587");
  }
  const u = new URL(config.upstream);
  for (const k of ["connectionTimeout", "greetingTimeout", "socketTimeout"]) u.searchParams.set(k, String(timeoutMs));
  const smtp = nodemailer.createTransport(u.toString());
  const started = Date.now();
  try {
    // Connect, EHLO, STARTTLS when offered, and AUTH when the URL has a user.
    await smtp.verify();
    return ok(name, `${shown(config.upstream)} answers (EHLO${u.username ? " and login" : ""} in ${Date.now() - started} ms)`);
  } catch (e) {
    const err = e as Error & { code?: string };
    const why = `${err.code ? `${err.code}: ` : ""}${(err.message.split("\n")[0] ?? "").slice(0, 200)}`;
    return fail(name, `${shown(config.upstream)}: ${why}`, "check the host, port, TLS and credentials of upstream (praxmail init --upstream URL)");
  } finally {
    smtp.close();
  }
}

function portCheck(name: string, shownAddr: string, envName: string, flag: string, s: PortState): Check {
  const hint = `stop that program, or give serve another address with ${flag} or ${envName}`;
  switch (s.kind) {
    case "free":
      return ok(name, `${shownAddr} is free`);
    case "praxmail":
      return ok(name, `${shownAddr} is held by a running praxmail serve (pid ${s.pid})`);
    case "other":
      return fail(name, `${shownAddr} is in use by pid ${s.pid} (${s.command})`, hint);
    case "unknown":
      return fail(name, `${shownAddr} is in use by a process this user cannot inspect${s.uid !== null ? ` (uid ${s.uid})` : ""}`, "run praxmail doctor as root or as the user that runs praxmail serve");
    case "error": {
      const why: Record<string, string> = {
        EACCES: "no permission to listen there (ports below 1024 need CAP_NET_BIND_SERVICE)",
        EADDRNOTAVAIL: "that address is not on this machine",
        ENOTSOCK: "it exists and is not a socket; serve would delete it",
        ENOENT: "its folder does not exist",
      };
      return fail(name, `${shownAddr}: ${why[s.code] ?? s.code}`, `give serve another address with ${flag} or ${envName}`);
    }
  }
}

async function checkListen(name: string, l: Listen, envName: string, flag: string): Promise<Check> {
  const addr = `${l.host.includes(":") ? `[${l.host}]` : l.host}:${l.port}`;
  if (l.port === 0) return { name, status: "skip", reason: `${addr}: port 0 picks a free port` };
  return portCheck(name, addr, envName, flag, await tcpPortState(l.host, l.port));
}

async function checkMilter(m: MilterListen): Promise<Check> {
  if ("path" in m) return portCheck("milter-port", `unix:${m.path}`, "PRAXMAIL_MILTER", "--milter", await unixSocketState(m.path));
  return checkListen("milter-port", m, "PRAXMAIL_MILTER", "--milter");
}

async function checkDisk(home: string, minFree: number): Promise<Check> {
  const name = "disk";
  let at = home;
  for (;;) {
    try {
      const fs = await statfs(at);
      const free = fs.bavail * fs.bsize;
      const where = `${bytes(free)} free of ${bytes(fs.blocks * fs.bsize)} on the file system of ${home}`;
      const hint = "free space or move home: below --min-free, new mail is refused with 451 sooner or later";
      if (free < minFree) return fail(name, `${where}, less than ${bytes(minFree)}`, hint);
      if (fs.files > 0 && fs.ffree < 10_000) return fail(name, `only ${fs.ffree} inodes free on the file system of ${home}`, hint);
      if (free < 2 * minFree) return warn(name, `${where}, less than twice ${bytes(minFree)}`, hint);
      return ok(name, where);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT" || dirname(at) === at) throw e;
      at = dirname(at);
    }
  }
}

async function checkPortalUrl(config: Config, timeoutMs: number): Promise<Check> {
  const name = "portal-url";
  // A static file: the check creates no session row, and its answer carries our headers.
  const url = `${config.portalUrl}/static/style.css`;
  const hint = "is praxmail serve running, and does the reverse proxy forward the portal URL to its --http address?";
  const started = Date.now();
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { "user-agent": "praxmail-doctor" } });
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    if (err.name === "TimeoutError") return fail(name, `${config.portalUrl}: no answer within ${timeoutMs / 1000} s`, hint);
    return fail(name, `${config.portalUrl}: ${err.cause?.code ?? err.cause?.message ?? err.message}`, hint);
  }
  await res.body?.cancel();
  if (!res.ok) return fail(name, `${config.portalUrl} answered HTTP ${res.status} for /static/style.css`, hint);
  const reason = `${config.portalUrl} answers (HTTP ${res.status} in ${Date.now() - started} ms)`;
  if (!res.headers.get("content-security-policy")?.includes("frame-ancestors 'none'")) {
    return warn(name, `${reason}, but without praxmail's Content-Security-Policy`, "check that the URL reaches praxmail and that the proxy passes its headers");
  }
  const host = new URL(config.portalUrl).hostname;
  if (config.portalUrl.startsWith("http:") && !["127.0.0.1", "localhost", "[::1]"].includes(host)) {
    return warn(name, `${reason}, but over plain http`, "put a TLS-terminating reverse proxy in front and use an https:// portal URL");
  }
  return ok(name, reason);
}

// Signed approvals: P must derive the pinned key, or every wrap to a patient fails closed.
async function checkApprovalKey(home: string, config: Config, io: Io, flag: string | undefined): Promise<Check> {
  const name = "signing-key";
  if (config.approvalKey === null) return warn(name, "no approval key is pinned (a home made before signed approvals): deliveries to approved patients wait", "run praxmail approve once to pin it and sign the current approvals");
  const fingerprint = keyFingerprint(config.approvalKey);
  const read = await readPracticeIdentity(home, config, flag ?? (io.env.PRAXMAIL_IDENTITY || undefined), passphraseOf(io));
  if (read.kind !== "loaded") return ok(name, `${fingerprint} pinned (the practice identity is not here to check it against)`);
  const found = await checkPracticeIdentity(config, read.identity);
  if (found.kind === "other-identity") return ok(name, `${fingerprint} pinned (see the identity check)`);
  if (found.kind === "other-approval-key") {
    return fail(name, `${fingerprint} pinned in config.json is not the key the practice identity derives`, "config.json was altered or belongs to another practice: restore it from a backup");
  }
  return ok(name, `${fingerprint}, derived from the practice identity`);
}

/** The portal's logo is there, a PNG or SVG within the limit, and the accent colour has a contrast of at least 4.5:1. */
async function checkLook(home: string, config: Config): Promise<Check> {
  const name = "look";
  const { logo, accent } = config.portal;
  const found: string[] = [];
  if (logo !== null) {
    try {
      const { bytes, file } = await readLogo(join(home, logo));
      if (file !== logo) return fail(name, `${join(home, logo)} is not the kind its name says`, "run praxmail init --logo FILE again");
      found.push(`logo ${logo} (${bytes.length} bytes)`);
    } catch (e) {
      if (!(e instanceof PraxmailError)) throw e;
      return fail(name, `${e.message}: the portal shows the practice's name instead`, "run praxmail init --logo FILE again");
    }
  }
  if (accent !== null) {
    const c = accentContrast(accent);
    if (c.ratio < MIN_CONTRAST) {
      return fail(name, `the accent colour ${accent} has a contrast of ${showRatio(c.ratio)} against ${c.against}; WCAG 2.1 AA needs ${MIN_CONTRAST}:1`, `run praxmail init --accent '${c.suggestion}' (or a darker shade)`);
    }
    found.push(`accent ${accent} (contrast ${showRatio(c.ratio)})`);
  }
  return found.length === 0 ? ok(name, "the portal's own logo and colours (no portal.logo or portal.accent)") : ok(name, found.join(", "));
}

/**
 * Runs every check. Checks that need the configuration are skipped when it does not load; the
 * shared backend's (database, schema, latency, bucket) come last, and only on such a home.
 *
 * @param io - The streams.
 * @param flags - Parsed options.
 * @returns The verdicts, in a fixed order, and the backend (null without a valid config).
 */
export async function runDoctor(io: Io, flags: DoctorFlags): Promise<{ home: string; backend: "embedded" | "shared" | null; checks: Check[] }> {
  const home = resolveHome(flags.home);
  const { check, config } = checkConfig(home);
  const [checks, shared] = await Promise.all([
    localChecks(io, flags, home, check, config),
    config ? sharedChecks(config, io.env, flags.timeout) : null,
  ]);
  return { home, backend: shared?.backend ?? null, checks: [...checks, ...(shared?.checks ?? [])] };
}

function localChecks(io: Io, flags: DoctorFlags, home: string, check: Check, config: Config | null): Promise<Check[]> {
  const timeoutMs = flags.timeout * 1000;
  const skip = (name: string): Promise<Check> => Promise.resolve({ name, status: "skip", reason: "needs a valid config.json" });
  return Promise.all([
    Promise.resolve(check),
    checkPermissions(home),
    config ? checkIdentity(home, config, io, flags.identity) : skip("identity"),
    config ? checkApprovalKey(home, config, io, flags.identity) : skip("signing-key"),
    config ? checkUpstream(home, config, timeoutMs) : skip("upstream"),
    checkListen("relay-port", flags.smtp, "PRAXMAIL_SMTP", "--smtp"),
    checkListen("portal-port", flags.http, "PRAXMAIL_HTTP", "--http"),
    ...(flags.milter ? [checkMilter(flags.milter)] : []),
    checkDisk(home, flags.minFree * 1024 * 1024),
    config ? checkPortalUrl(config, timeoutMs) : skip("portal-url"),
    config ? checkLook(home, config) : skip("look"),
  ]);
}

const LABEL = { ok: chalk.green("ok  "), warn: chalk.yellow("warn"), fail: chalk.red("fail"), skip: chalk.dim("skip") };

/**
 * Runs `praxmail doctor` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param flags - The parsed options.
 */
export async function doctorAction(io: Io, flags: DoctorFlags): Promise<void> {
  const { home, backend, checks } = await runDoctor(io, flags);
  const failed = checks.filter((c) => c.status === "fail").length;
  const warned = checks.filter((c) => c.status === "warn").length;
  if (flags.json) printJson(io, { ok: failed === 0, home, backend, checks });
  else {
    const width = Math.max(...checks.map((c) => c.name.length));
    for (const c of checks) {
      io.out(`${LABEL[c.status]}  ${c.name.padEnd(width)}  ${c.reason}\n`);
      if (c.hint && c.status !== "ok") io.out(`${" ".repeat(width + 8)}hint: ${c.hint}\n`);
    }
  }
  if (failed > 0) {
    throw new PraxmailError("wrong-state", `${failed} of ${checks.length} checks failed`, "fix what the lines marked fail say, then run praxmail doctor again");
  }
  if (warned > 0) note(io, `praxmail: ${warned} ${warned === 1 ? "warning" : "warnings"}, no failures`);
}

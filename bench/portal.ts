// Portal benchmark: the real `praxmail serve` under concurrent HTTP load for a logged-in
// patient's level-3 delivery page (autocannon) and its 10 MiB ciphertext download (node:http,
// see downloads()), with the server's peak RSS against its idle RSS. The delivery, the account, the Secu-Pass-Key and
// the approval all go through the real relay, portal routes and CLI.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { Agent, get } from "node:http";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import autocannon from "autocannon";
import { simpleParser } from "mailparser";
import nodemailer from "nodemailer";
import { openContext } from "../src/commands/shared.js";
import { deriveSecuPass, newKdfParams, parseKdfParams, recipientOf } from "../src/crypto/index.js";
import { BIN, benchMail } from "./parts.js";
import { peakRss, percentile, round, type Figure } from "./stats.js";

const MiB = 1024 * 1024;
const PATIENT = "patient@patient.example";
const SECU_PASS = "Benchmark Secu-Pass-Key 2026";
const CONNECTIONS = 10;
const SECONDS = 5;

// test/helpers/cli.ts and serve.ts find bin/ relative to themselves, which is wrong once
// compiled into .bench-dist/test/helpers; parts.ts's BIN is right from .bench-dist/bench.

/** Runs `praxmail ...args` (with more environment, e.g. AWS_*) to completion; rejects on a non-zero exit. */
export function praxmail(args: readonly string[], env: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH, NO_COLOR: "1", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`praxmail ${args[0] ?? ""} exited ${String(code)}: ${err}`));
    });
  });
}

/** A running `praxmail serve` (relay and portal). */
export interface Served {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly smtpPort: number;
  readonly httpPort: number;
  stop(): Promise<void>;
}

/** Starts `praxmail serve` (with more environment, e.g. AWS_*) on free loopback ports (or the portal on `httpPort`) and waits until both listen. */
export async function serve(home: string, httpPort = 0, env: Record<string, string> = {}): Promise<Served> {
  const child = spawn(process.execPath, [BIN, "serve", "--home", home, "--smtp", "127.0.0.1:0", "--http", `127.0.0.1:${String(httpPort)}`], {
    env: { PATH: process.env.PATH, NO_COLOR: "1", ...env },
    // Request log lines go to stdout; drop them rather than buffer them here.
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<void>((r) => {
    child.once("exit", () => {
      r();
    });
  });
  const ports = await new Promise<[number, number]>((resolve, reject) => {
    const t = setInterval(() => {
      const s = /relay listening on 127\.0\.0\.1:(\d+)/.exec(err)?.[1];
      const h = /portal listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(err)?.[1];
      if (s && h) {
        clearInterval(t);
        resolve([Number(s), Number(h)]);
      }
    }, 20);
    void exited.then(() => {
      clearInterval(t);
      reject(new Error(`serve exited: ${err}`));
    });
  });
  return {
    child,
    pid: child.pid ?? 0,
    smtpPort: ports[0],
    httpPort: ports[1],
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

/** The first portal link token in the outbox, waiting for it to be written. */
async function linkToken(home: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    let names: string[] = [];
    try {
      names = (await readdir(join(home, "outbox"))).filter((n) => n.endsWith(".eml")).sort();
    } catch {
      // Not created yet.
    }
    for (const n of names) {
      const m = await simpleParser(await readFile(join(home, "outbox", n)));
      const token = /\/d\/([A-Za-z0-9_-]{43})/.exec(m.text ?? "")?.[1];
      if (token) return token;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("no link in the outbox");
}

/** A browser with a cookie jar: the portal's session cookie and, before login, its CSRF cookie. */
class Visitor {
  private readonly cookies = new Map<string, string>();
  constructor(readonly base: string) {}

  /** The cookie header autocannon sends as this visitor. */
  get cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }

  async request(path: string, init: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<Response> {
    const res = await fetch(this.base + path, { ...init, redirect: "manual", headers: { ...init.headers, cookie: this.cookieHeader } });
    for (const c of res.headers.getSetCookie()) {
      const [, name = "", value = ""] = /^([^=;\s]+)=([^;]*)/.exec(c) ?? [];
      if (!name) continue;
      if (value) this.cookies.set(name, value);
      else this.cookies.delete(name);
    }
    return res;
  }

  /** GETs a page and expects the status; returns its HTML. */
  async page(path: string, status = 200): Promise<string> {
    const res = await this.request(path);
    const html = await res.text();
    if (res.status !== status) throw new Error(`GET ${path}: ${res.status}, expected ${status}`);
    return html;
  }

  /** POSTs JSON as the portal's scripts do and expects 200 `{next}`; returns where it leads. */
  async json(path: string, csrf: string, body: unknown): Promise<string> {
    const res = await this.request(path, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json", "x-csrf-token": csrf } });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`POST ${path}: ${res.status} ${text}, expected 200`);
    return (JSON.parse(text) as { next: string }).next;
  }

  /** GETs a path that must redirect; returns where to. */
  async redirect(path: string): Promise<string> {
    const res = await this.request(path);
    await res.arrayBuffer();
    if (res.status !== 303) throw new Error(`GET ${path}: ${res.status}, expected 303`);
    return res.headers.get("location") ?? "";
  }
}

const unescapeHtml = (s: string): string =>
  s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");

function grab(html: string, re: RegExp, what: string): string {
  const m = re.exec(html)?.[1];
  if (m === undefined) throw new Error(`no ${what} in the page`);
  return unescapeHtml(m);
}

const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** What the load runs against. */
export interface Target {
  /** The delivery page, e.g. /deliveries/d_…. */
  page: string;
  /** The ciphertext of the attachment. */
  download: string;
  size: number;
  cookie: string;
}

/**
 * Relays a level-3 mail with a PDF of `mib` MiB, registers the patient through the link, sets
 * the Secu-Pass-Key, approves with the CLI, logs in afresh and checks the download byte for
 * byte against the blob in the home's store (embedded or shared).
 *
 * @param home - The home that `served` runs on.
 * @param served - Its `praxmail serve`.
 * @param log - Progress lines.
 * @param mib - The attachment's size.
 * @param env - More environment for the CLI (the shared backend's AWS_*; this process's own
 *   environment must carry them too, for the blob check).
 * @returns What the load runs against.
 */
export async function prepare(home: string, served: Served, log: (s: string) => void, mib = 10, env: Record<string, string> = {}): Promise<Target> {
  const t = nodemailer.createTransport({ host: "127.0.0.1", port: served.smtpPort, secure: false, ignoreTLS: true });
  const info = await t.sendMail({ envelope: { from: "praxis@praxis.example", to: [PATIENT] }, raw: benchMail("[S3] CT-Serie", randomBytes(mib * MiB), "portal-bench") });
  t.close();
  if (!info.response.startsWith("250")) throw new Error(`not accepted: ${info.response}`);
  const token = await linkToken(home);
  const link = `/d/${token}`;
  const base = `http://127.0.0.1:${served.httpPort}`;

  // Registration through the link in one step, as the page's script does it.
  const first = new Visitor(base);
  const register = await first.page(link);
  const kdf = newKdfParams("x25519");
  const keys = await deriveSecuPass(SECU_PASS, kdf, grab(register, /data-address="([^"]*)"/, "address"));
  const recipient = await recipientOf(keys.identity);
  const next = await first.json("/register", grab(register, /data-csrf="([^"]*)"/, "csrf token"), { token, kdf, recipient, credential: keys.credential });
  if (next !== link) throw new Error(`registration led to ${next}`);
  await praxmail(["approve", PATIENT, "--yes", "--home", home], env);

  // A fresh login, as the patient coming back from the release mail: parameters, then the credential.
  const patient = new Visitor(base);
  const csrf = grab(await patient.page(`/login?next=${encodeURIComponent(link)}`), /data-csrf="([^"]*)"/, "csrf token");
  const asked = await patient.request("/login/params", { method: "POST", body: JSON.stringify({ email: PATIENT }), headers: { "content-type": "application/json", "x-csrf-token": csrf } });
  const { kdf: stored } = (await asked.json()) as { kdf: unknown };
  const { credential } = await deriveSecuPass(SECU_PASS, parseKdfParams(stored), PATIENT);
  if ((await patient.json("/login", csrf, { email: PATIENT, credential, next: link })) !== link) throw new Error("login did not lead to the link");
  const page = await patient.redirect(link);
  const html = await patient.page(page);
  const data = JSON.parse(grab(html, /<script type="application\/json" id="delivery-data">(.*?)<\/script>/s, "delivery data")) as {
    keyInLink: boolean;
    wrapUrl: string | null;
    files: { id: string; kind: string; url: string }[];
  };
  const file = data.files.find((f) => f.kind === "attachment");
  // Level 3: the key is not in the link; the patient's wrap is.
  if (data.keyInLink || data.wrapUrl === null || !file) throw new Error("the delivery page shows no level-3 attachment");

  // Once before any load: the exact blob, its exact length, status 200.
  const ctx = await openContext({ home }, "bench");
  let blob: Buffer;
  let key: string;
  try {
    const row = (await ctx.store.records.files(page.replace(/^\/deliveries\//, ""))).find((f) => f.id === file.id);
    if (!row?.blob) throw new Error("no blob for the file");
    key = row.blob;
    blob = Buffer.from(await new Response(ctx.store.blobs.read(key)).arrayBuffer());
  } finally {
    await ctx.store.close();
  }
  const res = await patient.request(file.url);
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`download: ${res.status}`);
  if (res.headers.get("content-length") !== String(blob.length)) throw new Error(`download: Content-Length ${String(res.headers.get("content-length"))}, blob has ${blob.length}`);
  if (sha256(body) !== sha256(blob)) throw new Error("download differs from the blob");
  if (blob.length < mib * MiB) throw new Error("blob is smaller than the attachment");
  log(`  portal: ${page} and ${file.url} (${(blob.length / MiB).toFixed(2)} MiB ciphertext, sha256 matches blob ${key})`);
  return { page, download: file.url, size: blob.length, cookie: patient.cookieHeader };
}

/**
 * Loads a page with autocannon; fails on anything but 2xx with `expect` in it.
 *
 * @param base - The portal's base URL.
 * @param path - The page.
 * @param cookie - The patient's cookies.
 * @param opts - How long or how many requests.
 * @param expect - What every answer must contain (default: the delivery page's data).
 * @returns autocannon's result.
 */
export async function pageLoad(base: string, path: string, cookie: string, opts: { duration?: number; amount?: number }, expect = 'id="delivery-data"'): Promise<autocannon.Result> {
  const r = await autocannon({
    url: base + path,
    connections: CONNECTIONS,
    headers: { cookie },
    verifyBody: (body) => typeof body === "string" && body.includes(expect),
    ...opts,
  });
  if (r.non2xx > 0 || r.errors > 0 || r.timeouts > 0 || r.mismatches > 0 || r["2xx"] === 0) {
    const codes = JSON.stringify(r.statusCodeStats ?? {});
    throw new Error(`load on ${path}: ${r["2xx"]} ok, ${r.non2xx} non-2xx (${codes}), ${r.mismatches} other pages, ${r.errors} errors, ${r.timeouts} timeouts`);
  }
  return r;
}

/** What a download load measured. */
interface Downloads {
  rps: number;
  p99: number;
}

/**
 * Downloads with CONNECTIONS keep-alive connections, discarding the bytes. Not autocannon:
 * it appends every body chunk to a string (`req.body += data`), which caps it near 20–40 MiB/s
 * on a 10 MiB body and would measure the client, not the portal.
 *
 * @throws If a response is not 200 or not exactly `size` bytes.
 */
async function downloads(base: string, path: string, cookie: string, size: number, opts: { seconds?: number; amount?: number }): Promise<Downloads> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const one = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const t0 = performance.now();
      get(base + path, { agent, headers: { cookie } }, (res) => {
        let n = 0;
        res.on("data", (c: Buffer) => (n += c.length));
        res.on("error", reject);
        res.on("end", () => {
          if (res.statusCode !== 200 || n !== size) reject(new Error(`download under load: ${String(res.statusCode)}, ${n} of ${size} bytes`));
          else resolve(performance.now() - t0);
        });
      }).on("error", reject);
    });
  const latencies: number[] = [];
  const started = performance.now();
  const until = started + (opts.seconds ?? Infinity) * 1000;
  let issued = 0;
  try {
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        while (performance.now() < until && issued < (opts.amount ?? Infinity)) {
          issued++;
          latencies.push(await one());
        }
      }),
    );
  } finally {
    agent.destroy();
  }
  return { rps: latencies.length / ((performance.now() - started) / 1000), p99: percentile(latencies, 99) };
}

/** VmRSS of a process, in MiB. */
async function rssNow(pid: number): Promise<number> {
  const kb = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"))?.[1];
  if (!kb) throw new Error("no VmRSS in /proc status");
  return Number(kb) / 1024;
}

/**
 * The portal figures: requests/s and p99 for the delivery page and the 10 MiB download with
 * 10 connections, and the server's peak RSS under that load against its idle RSS.
 *
 * @param runs - Runs per figure; each run starts a fresh server on the same home.
 * @param log - Progress lines.
 * @returns The figures.
 * @throws If the setup fails or any request under load is not answered with 2xx.
 */
export async function portalBench(runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-portal-"));
  let served: Served | null = null;
  try {
    const home = join(dir, "home");
    // No upstream: the patient's mails land in home/outbox, where the link is read.
    await praxmail(["init", "--yes", "--no-keyring", "--home", home, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example"]);
    served = await serve(home);
    const target = await prepare(home, served, log);
    // The setup encrypted 10 MiB in this process: measure on fresh ones.
    await served.stop();
    served = null;

    const f = { pageRps: [] as number[], pageP99: [] as number[], dlRps: [] as number[], dlMiBs: [] as number[], dlP99: [] as number[] };
    const rss = { idle: [] as number[], page: [] as number[], peak: [] as number[], after: [] as number[] };
    for (let r = 0; r < runs; r++) {
      served = await serve(home);
      const pid = served.pid;
      const base = `http://127.0.0.1:${served.httpPort}`;
      await new Promise((res) => setTimeout(res, 500));
      rss.idle.push((await peakRss(pid)) / MiB);
      await pageLoad(base, target.page, target.cookie, { amount: 500 });
      const page = await pageLoad(base, target.page, target.cookie, { duration: SECONDS });
      rss.page.push((await peakRss(pid)) / MiB);
      await downloads(base, target.download, target.cookie, target.size, { amount: 20 });
      const dl = await downloads(base, target.download, target.cookie, target.size, { seconds: SECONDS });
      rss.peak.push((await peakRss(pid)) / MiB);
      rss.after.push(await rssNow(pid));
      f.pageRps.push(page.requests.mean);
      f.pageP99.push(page.latency.p99);
      f.dlRps.push(dl.rps);
      f.dlMiBs.push((dl.rps * target.size) / MiB);
      f.dlP99.push(dl.p99);
      log(
        `  portal run ${r + 1}/${runs}: page ${round(page.requests.mean)}/s p99 ${round(page.latency.p99)} ms, ` +
          `download ${round(dl.rps)}/s (${round(f.dlMiBs.at(-1)!)} MiB/s) p99 ${round(dl.p99)} ms, ` +
          `RSS idle ${round(rss.idle.at(-1)!)} → page ${round(rss.page.at(-1)!)} → peak ${round(rss.peak.at(-1)!)} MiB (now ${round(rss.after.at(-1)!)})`,
      );
      await served.stop();
      served = null;
    }
    const c = `${CONNECTIONS} connections`;
    return [
      { name: `portal: delivery page, ${c}`, unit: "req/s", runs: f.pageRps },
      { name: `portal: delivery page p99, ${c}`, unit: "ms", runs: f.pageP99 },
      { name: `portal: 10 MiB ciphertext download, ${c}`, unit: "req/s", runs: f.dlRps },
      { name: `portal: 10 MiB ciphertext download, ${c}`, unit: "MiB/s", runs: f.dlMiBs },
      { name: `portal: 10 MiB ciphertext download p99, ${c}`, unit: "ms", runs: f.dlP99 },
      { name: "portal: server RSS idle after start (baseline)", unit: "MiB", runs: rss.idle },
      { name: "portal: server peak RSS, delivery page load", unit: "MiB", runs: rss.page },
      { name: "portal: server peak RSS, page + download load", unit: "MiB", runs: rss.peak },
      { name: "portal: server peak RSS under load / idle", unit: "×", runs: rss.peak.map((v, i) => v / (rss.idle[i] ?? 1)) },
    ];
  } finally {
    if (served) await served.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

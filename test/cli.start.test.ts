// What a command loads when it starts (issue 15, target 1): each command's code loads only
// when that command runs, and the server stack only with `serve`. The real binary runs with a
// preload that records every module Node loads and every file read through node:fs.
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, initHome, praxmail, tempDir, type Run } from "./helpers/cli.js";

// Module loads are seen by a loader hook (its own thread in Node 20), file reads by wrapping
// node:fs before the CLI imports it.
const RECORDER = `
import { register, syncBuiltinESMExports } from "node:module";
import fs from "node:fs";
const out = process.env.PRAXMAIL_RECORD;
const append = fs.appendFileSync;
register("data:text/javascript," + encodeURIComponent(\`import { appendFileSync } from "node:fs";
export async function load(url, context, next) { appendFileSync(\${JSON.stringify(out)}, "module " + url + "\\\\n"); return next(url, context); }\`));
let inside = false;
for (const name of ["readFileSync", "openSync"]) {
  const real = fs[name];
  fs[name] = function (path, ...rest) {
    if (!inside) { inside = true; try { append(out, "file " + String(path) + "\\n"); } finally { inside = false; } }
    return real.call(this, path, ...rest);
  };
}
syncBuiltinESMExports();
`;

interface Recorded {
  readonly run: Run;
  /** URLs of every module Node loaded. */
  readonly modules: string[];
  /** Paths read with readFileSync or opened with openSync. */
  readonly files: string[];
}

let dir: string;
let home: string;
let letter: string;
let n = 0;

async function recorded(args: readonly string[]): Promise<Recorded> {
  const log = join(dir, `record-${String(++n)}.txt`);
  await writeFile(log, "");
  const run = await praxmail(args, { env: { NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent(RECORDER)}`, PRAXMAIL_RECORD: log } });
  const lines = (await readFile(log, "utf8")).split("\n");
  const pick = (kind: string): string[] => lines.filter((l) => l.startsWith(`${kind} `)).map((l) => l.slice(kind.length + 1));
  return { run, modules: pick("module"), files: pick("file") };
}

/** The packages of the server stack, of the shared backend (PostgreSQL, S3) and of metrics a module list names (nodemailer: its SMTP client, the package's main entry). */
function serverStack(modules: readonly string[]): string[] {
  const found = new Set<string>();
  for (const url of modules) {
    const m = /\/node_modules\/(fastify|@fastify\/[^/]+|smtp-server|mailparser|postgres|@aws-sdk\/[^/]+|prom-client|@simplewebauthn\/[^/]+)\//.exec(url);
    if (m?.[1]) found.add(m[1]);
    if (/\/node_modules\/nodemailer\/dist\/(esm|cjs)\/nodemailer\.js$/.test(url)) found.add("nodemailer");
  }
  return [...found].sort();
}

/** esbuild's marks of the relay's MIME pipeline (src/mail/process.ts and its parsers) in a chunk of ours. */
const MIME_PIPELINE = ["// src/mail/process.ts", "// node_modules/libmime/", "// node_modules/@zone-eu/mailsplit/"];

/**
 * @param modules - What a run loaded.
 * @param needles - Texts to look for.
 * @returns The needles that a chunk of ours (dist/) among the modules contains.
 */
async function bundledIn(modules: readonly string[], ...needles: string[]): Promise<string[]> {
  const ours = modules.filter((u) => u.startsWith("file:") && u.includes("/dist/"));
  expect(ours.length).toBeGreaterThan(0);
  const texts = await Promise.all(ours.map((u) => readFile(fileURLToPath(u), "utf8")));
  return needles.filter((n) => texts.some((t) => t.includes(n)));
}

beforeAll(async () => {
  dir = await tempDir();
  home = join(dir, "home");
  await initHome(home, ["--recipient-type", "x25519"]);
  letter = join(dir, "brief.txt");
  await writeFile(letter, "x".repeat(1024));
});
afterAll(async () => {
  await cleanup(dir);
});

describe("what a command loads", () => {
  it("--version prints the version, loads nothing from node_modules and reads no file", async () => {
    const r = await recorded(["--version"]);
    expect(r.run.code).toBe(0);
    const pkg = JSON.parse(await readFile(join(import.meta.dirname, "..", "package.json"), "utf8")) as { version: string };
    expect(r.run.stdout).toBe(`${pkg.version}\n`);
    expect(r.modules.filter((u) => u.includes("/node_modules/"))).toEqual([]);
    expect(serverStack(r.modules)).toEqual([]);
    expect(r.files).toEqual([]);
  });

  it("--help lists every command and loads nothing from node_modules", async () => {
    const r = await recorded(["--help"]);
    expect(r.run.code).toBe(0);
    for (const c of ["init", "serve", "send", "approve", "invite", "list", "revoke", "inbox", "receive", "export", "audit", "gc", "doctor", "backup", "restore", "migrate"]) {
      expect(r.run.stdout).toMatch(new RegExp(`^  ${c} `, "m"));
    }
    expect(r.modules.filter((u) => u.includes("/node_modules/"))).toEqual([]);
  });

  it("list deliveries --json loads neither the server stack nor nodemailer, nor WebAuthn's code, nor the relay's MIME pipeline (bundled or not)", async () => {
    const r = await recorded(["list", "deliveries", "--json", "--home", home]);
    expect(r.run.code).toBe(0);
    expect(JSON.parse(r.run.stdout)).toEqual([]);
    expect(serverStack(r.modules)).toEqual([]);
    // The library's own error class: in a chunk of ours if it were bundled into one that list loads.
    expect(await bundledIn(r.modules, "SimpleWebAuthnError")).toEqual([]);
    expect(await bundledIn(r.modules, ...MIME_PIPELINE)).toEqual([]);
  });

  it("send into the outbox loads neither the server stack nor nodemailer's SMTP client, nor the relay's MIME pipeline", async () => {
    const r = await recorded(["send", "--json", "--home", home, "--to", "patient@example.org", "--level", "1", letter]);
    expect(r.run.code).toBe(0);
    expect((JSON.parse(r.run.stdout) as { deliveries: { recipient: string }[] }).deliveries.map((d) => d.recipient)).toEqual(["patient@example.org"]);
    expect(serverStack(r.modules)).toEqual([]);
    expect(await bundledIn(r.modules, ...MIME_PIPELINE)).toEqual([]);
  });

  it("serve loads the relay's and the portal's stack (the recorder sees them)", async () => {
    // A home below a regular file: serve loads its code, then fails before listening.
    const r = await recorded(["serve", "--home", join(letter, "home"), "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
    expect(r.run.code).toBe(1);
    expect(serverStack(r.modules)).toEqual(expect.arrayContaining(["fastify", "smtp-server"]));
    expect(await bundledIn(r.modules, ...MIME_PIPELINE)).toEqual(MIME_PIPELINE);
    expect(serverStack(r.modules)).not.toContain("prom-client");
  });

  it("serve loads prom-client only with --metrics", async () => {
    const r = await recorded(["serve", "--home", join(letter, "home"), "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    expect(r.run.code).toBe(1);
    expect(serverStack(r.modules)).toContain("prom-client");
  });
});

describe("the first start of a new home", () => {
  it("eight processes that open its database at once all succeed (the schema is created once)", async () => {
    for (let round = 0; round < 5; round++) {
      const fresh = join(dir, `fresh-${String(round)}`);
      await initHome(fresh, ["--recipient-type", "x25519"]);
      // The first command that opens the database creates it, whatever init left.
      await rm(join(fresh, "praxmail.db"), { force: true });
      const runs = await Promise.all(Array.from({ length: 8 }, () => praxmail(["list", "deliveries", "--json", "--home", fresh])));
      expect(runs.map((r) => [r.code, r.stderr])).toEqual(runs.map(() => [0, ""]));
    }
  });
});

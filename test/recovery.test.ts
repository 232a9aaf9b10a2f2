// RECOVERY.md, run as written: its shell blocks are taken from the document and run by bash
// with sqlite3, the Go age CLI (an X25519 home) and contrib/recover.mjs on age-encryption
// (a default, hybrid home), never with praxmail code. bin/praxmail only makes the homes,
// deliveries and backups; the recovered bytes are compared with the originals.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { chmod, copyFile, mkdir, readFile, readdir, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BIN, cleanup, initHome, praxmail, tempDir } from "./helpers/cli.js";
import { inKeyringSession } from "./helpers/keyring.js";
import { needTool } from "./helpers/tools.js";

const ROOT = resolve(import.meta.dirname, "..");
const DOC = readFileSync(resolve(ROOT, "RECOVERY.md"), "utf8");
const AGE_JS = (JSON.parse(readFileSync(resolve(ROOT, "node_modules/age-encryption/package.json"), "utf8")) as { version: string }).version;

/**
 * The document's shell blocks by the label of their first line (`# 1b. …` gives `1b`), as
 * written (a block inside a list item loses the item's indent).
 *
 * @param markdown - RECOVERY.md.
 * @returns Label → block.
 */
function shellBlocks(markdown: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of markdown.matchAll(/^( *)```sh\n([\s\S]*?)^\1```$/gm)) {
    const indent = (m[1] ?? "").length;
    const body = (m[2] ?? "").split("\n").map((l) => l.slice(indent)).join("\n");
    const label = /^# ([0-9][a-z]?)\. /.exec(body)?.[1];
    if (label === undefined || out.has(label)) throw new Error(`RECOVERY.md: a shell block without a new "# N. " label: ${body.slice(0, 60)}`);
    out.set(label, body);
  }
  return out;
}

const blocks = shellBlocks(DOC);
const block = (label: string): string => {
  const b = blocks.get(label);
  if (b === undefined) throw new Error(`RECOVERY.md has no block "# ${label}. "`);
  return b;
};
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Where one recovery reads and writes: block 0 as written, then the test's paths. */
const settings = (v: { home: string; identity: string; out: string }): string =>
  `${block("0")}\nH=${q(v.home)}\nIDENTITY=${q(v.identity)}\nOUT=${q(v.out)}\n`;
/** Block 3 for each delivery, each in a subshell since it changes folder. */
const recoverEach = (ids: readonly string[]): string => ids.map((id) => `DELIVERY=${q(id)}\n(\n${block("3")}\n)\n`).join("");

let dir: string;
let stubPath: string;
let tools: string;
beforeAll(async () => {
  dir = await tempDir("praxmail-recovery-");
  // Block 0b runs `npm install age-encryption@…`. Tests cannot reach the registry, so a
  // stand-in npm checks the exact arguments and links the package from this checkout.
  // recover.mjs is copied out of the repository: only age-encryption is there to import.
  stubPath = join(dir, "stub-bin");
  tools = join(dir, "tools");
  await mkdir(stubPath);
  await mkdir(tools);
  await copyFile(resolve(ROOT, "contrib/recover.mjs"), join(tools, "recover.mjs"));
  await writeFile(
    join(stubPath, "npm"),
    `#!/bin/sh
[ "$*" = "install age-encryption@${AGE_JS}" ] || { echo "npm stand-in: unexpected npm $*" >&2; exit 1; }
mkdir -p node_modules && ln -sfn ${q(resolve(ROOT, "node_modules/age-encryption"))} node_modules/age-encryption
`,
  );
  await chmod(join(stubPath, "npm"), 0o755);
});
afterAll(async () => {
  await cleanup(dir);
});

/** Block 0b, in the folder that holds recover.mjs. */
const jsTool = (): string => `cd ${q(tools)}\n${block("0b")}\n`;

/**
 * Runs a script with bash (`set -euo pipefail`), or on a terminal for age's passphrase prompt.
 *
 * @param script - The commands.
 * @param tty - Text to type on a terminal (script(1)); stdout then holds stderr too.
 * @returns Exit status and output.
 */
async function bash(script: string, tty?: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const file = join(dir, `script-${randomBytes(4).toString("hex")}.sh`);
  await writeFile(file, `set -euo pipefail\n${script}`);
  const env = { PATH: `${stubPath}:${process.env.PATH ?? ""}`, LANG: "C.UTF-8", HOME: dir };
  const r = tty === undefined
    ? spawnSync("bash", [file], { env, encoding: "utf8", timeout: 60_000 })
    : spawnSync("script", ["-qec", `bash ${q(file)}`, "/dev/null"], { env, input: tty, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The originals of one home's deliveries. */
interface Sent {
  readonly level3: string;
  readonly level4: string;
  readonly first: Buffer;
  readonly second: Buffer;
  readonly image: Buffer;
}

const SUBJECT = "Ihr Befund vom 30.11. – bitte lesen";
const TEXT = "Guten Tag,\n\nder Befund ist unauffällig. Bei Fragen rufen Sie uns an.\n";

/**
 * Sends a level-3 delivery (two files of the same name, one across a 64 KiB chunk) and a
 * level-4 delivery (subject, text and an image) with the real binary.
 *
 * @param home - An initialised home.
 * @param name - A folder name for the originals.
 * @returns Ids and original bytes.
 */
async function send(home: string, name: string): Promise<Sent> {
  const src = join(dir, name);
  await mkdir(join(src, "a"), { recursive: true });
  await mkdir(join(src, "b"));
  const first = randomBytes(70_000);
  const second = randomBytes(3_000);
  const image = randomBytes(5_000);
  await writeFile(join(src, "a", "Befund März.pdf"), first);
  await writeFile(join(src, "b", "Befund März.pdf"), second);
  await writeFile(join(src, "Röntgen Knie.jpg"), image);
  const id = async (args: string[]): Promise<string> => {
    const r = await praxmail(["send", "--home", home, "--to", "patient@example.org", "--json", ...args]);
    expect(r.stderr).toBe("");
    return (JSON.parse(r.stdout) as { deliveries: { id: string }[] }).deliveries[0]!.id;
  };
  const level3 = await id(["--level", "3", join(src, "a", "Befund März.pdf"), join(src, "b", "Befund März.pdf")]);
  const level4 = await id(["--level", "4", "--subject", SUBJECT, "--message", TEXT, join(src, "Röntgen Knie.jpg")]);
  return { level3, level4, first, second, image };
}

/** Checks what block 3 wrote: the files byte for byte, private, and no key left behind. */
async function expectRecovered(out: string, sent: Sent, only3 = false): Promise<void> {
  const l3 = join(out, sent.level3);
  expect((await readdir(l3)).sort()).toEqual(["1-Befund März.pdf", "2-Befund März.pdf"]);
  expect((await stat(l3)).mode & 0o777).toBe(0o700);
  expect((await stat(join(l3, "1-Befund März.pdf"))).mode & 0o777).toBe(0o600);
  expect((await readFile(join(l3, "1-Befund März.pdf"))).equals(sent.first)).toBe(true);
  expect((await readFile(join(l3, "2-Befund März.pdf"))).equals(sent.second)).toBe(true);
  if (only3) return;
  const l4 = join(out, sent.level4);
  expect((await readdir(l4)).sort()).toEqual(["1-Anhang-1.jpg", "2-message.json"]);
  expect((await readFile(join(l4, "1-Anhang-1.jpg"))).equals(sent.image)).toBe(true);
  expect(JSON.parse(await readFile(join(l4, "2-message.json"), "utf8"))).toEqual({ v: 1, subject: SUBJECT, text: TEXT, files: ["Röntgen Knie.jpg"] });
}

/** Whether the installed Go age is older than 1.3, which added the hybrid key type. */
function ageBefore13(): boolean {
  const [major = 0, minor = 0] = execFileSync("age", ["--version"], { encoding: "utf8" }).trim().replace(/^v/, "").split(".").map(Number);
  return major < 1 || (major === 1 && minor < 3);
}

describe("RECOVERY.md", () => {
  it("has exactly the shell blocks that the tests below run, and pins the age-encryption they use", () => {
    expect([...blocks.keys()]).toEqual(["0", "0a", "0b", "1b", "1c", "1d", "2", "3"]);
    expect(block("0b")).toContain(`npm install age-encryption@${AGE_JS}\n`);
    expect(DOC).toContain(`\`age-encryption\` ${AGE_JS}`);
  });
});

const tools3 = needTool("sqlite3") && needTool("age");
describe.runIf(tools3)("RECOVERY.md, run as written with sqlite3 and age tools only", () => {
  it("an X25519 home: the Go age CLI recovers a level-3 delivery and a level-4 message byte for byte", async () => {
    const home = join(dir, "x25519");
    await initHome(home, ["--recipient-type", "x25519"]);
    const sent = await send(home, "x25519-src");
    const out = join(dir, "x25519-out");
    const vars = { home, identity: join(home, "practice-identity.txt"), out };
    const r = await bash(`${settings(vars)}${block("0a")}\n${block("2")}\n${recoverEach([sent.level3, sent.level4])}`);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${sent.level3} +patient@example.org +3 +pending-approval `, "m"));
    expect(r.stdout).toMatch(new RegExp(`^${sent.level4} +patient@example.org +4 +pending-approval `, "m"));
    await expectRecovered(out, sent);
  });

  it("a default (hybrid) home: Debian's age cannot, contrib/recover.mjs can, from the home and from a backup", async () => {
    const home = join(dir, "hybrid");
    await initHome(home);
    expect(await readFile(join(home, "practice-identity.txt"), "utf8")).toMatch(/^AGE-SECRET-KEY-PQ-1/m);
    const sent = await send(home, "hybrid-src");
    const vars = { home, identity: join(home, "practice-identity.txt"), out: join(dir, "hybrid-out") };
    if (ageBefore13()) {
      const old = await bash(`${settings({ ...vars, out: join(dir, "hybrid-go") })}${block("0a")}\n${recoverEach([sent.level3])}`);
      expect(old.status).not.toBe(0);
      expect(old.stderr).toContain("unknown identity type");
    }
    const r = await bash(`${settings(vars)}${jsTool()}${block("2")}\n${recoverEach([sent.level3, sent.level4])}`);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(sent.level4);
    await expectRecovered(vars.out, sent);

    const backup = join(dir, "hybrid-backup");
    expect((await praxmail(["backup", "--home", home, backup])).code).toBe(0);
    expect((await readdir(backup)).sort()).toEqual(["backup.json", "blobs", "config.json.age", "manifest.age", "portal-signing.key.age", "praxmail.db.age"]);
    const fromBackup = { ...vars, home: backup, out: join(dir, "hybrid-from-backup") };
    const b = await bash(`${settings(fromBackup)}${jsTool()}${block("1d")}\n${recoverEach([sent.level3, sent.level4])}`);
    expect(b.stderr).toBe("");
    expect(b.status).toBe(0);
    await expectRecovered(fromBackup.out, sent);
  });

  it.runIf(needTool("script"))("a passphrase-protected identity (init --protect): age asks for the passphrase, then the files come back", async () => {
    const home = join(dir, "protected");
    const passphrase = "Praxis Weber 2026 Notfall";
    const init = await praxmail(["init", "--home", home, "--yes", "--protect", "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example"], {
      env: { PRAXMAIL_IDENTITY_PASSPHRASE: passphrase },
    });
    expect(init.code).toBe(0);
    const sent = await send(home, "protected-src");
    const vars = { home, identity: join(dir, "protected-identity.txt"), out: join(dir, "protected-out") };
    const open = await bash(`${settings(vars)}${block("1b")}\n`, `${passphrase}\r`);
    expect(open.status).toBe(0);
    expect((await stat(vars.identity)).mode & 0o777).toBe(0o600);
    expect(await readFile(vars.identity, "utf8")).toMatch(/^AGE-SECRET-KEY-PQ-1/m);
    const r = await bash(`${settings(vars)}${jsTool()}${recoverEach([sent.level3, sent.level4])}`);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    await expectRecovered(vars.out, sent);
  });

  const keyring = needTool("dbus-run-session") && needTool("gnome-keyring-daemon") && needTool("secret-tool");
  it.runIf(keyring)("an identity in the OS keyring: secret-tool finds it, then the Go age CLI recovers the files", async () => {
    const home = join(dir, "keyring");
    const userHome = join(dir, "keyring-user");
    const init = inKeyringSession(userHome, `node ${q(BIN)} init --yes --home ${q(home)} --practice-name Praxis --practice-email praxis@praxis.example --recipient-type x25519`);
    expect(init.stderr).toContain("praxmail: practice identity in the OS keyring");
    const sent = await send(home, "keyring-src");
    const vars = { home, identity: join(dir, "keyring-identity.txt"), out: join(dir, "keyring-out") };
    const script = join(dir, "keyring.sh");
    await writeFile(script, `set -euo pipefail\n${settings(vars)}${block("1c")}\n`);
    const lookup = inKeyringSession(userHome, `bash ${q(script)}`);
    expect(lookup.status).toBe(0);
    expect(await readFile(vars.identity, "utf8")).toMatch(/^AGE-SECRET-KEY-1[0-9A-Z]+$/);
    const r = await bash(`${settings(vars)}${block("0a")}\n${recoverEach([sent.level3])}`);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    await expectRecovered(vars.out, sent, true);
  });
});

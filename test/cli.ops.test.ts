// Operations (issue 8): praxmail doctor against real parts (an SMTP sink, a closed port, a
// running praxmail serve, a port held by another program), backup and restore of a home with
// a patient who then downloads from `praxmail serve` on the restored home, and the systemd unit.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, copyFile, cp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import { createDelivery, markSent, revokeDelivery } from "../src/core/index.js";
import { decryptStream, encryptStream, generateIdentity, readIdentityFile, recipientOf, writeIdentityFile } from "../src/crypto/index.js";
import { backupHome, fileStream, readManifest, type BackupManifest } from "../src/store/index.js";
import { cleanup, initHome, outbox, praxmail, tempDir, walk, type Run } from "./helpers/cli.js";
import { openByToken } from "./helpers/deliveries.js";
import { patientAtPortal } from "./helpers/download.js";
import { registerThroughCore } from "./helpers/patient.js";
import { befundMail, patchConfig, submit } from "./helpers/relay.js";
import { freePort, startServe, type Served } from "./helpers/serve.js";
import { startSink, type Sink } from "./helpers/sink.js";
import { readAll, streamOf } from "./helpers/streams.js";
import { needTool } from "./helpers/tools.js";

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");
const modeOf = async (p: string): Promise<number> => (await stat(p)).mode & 0o777;

interface DoctorJson {
  ok: boolean;
  home: string;
  checks: { name: string; status: string; reason: string; hint?: string }[];
}

function doctorJson(r: Run): DoctorJson & { by: (name: string) => DoctorJson["checks"][number] } {
  const parsed = JSON.parse(r.stdout) as DoctorJson;
  return {
    ...parsed,
    by: (name) => {
      const c = parsed.checks.find((x) => x.name === name);
      if (!c) throw new Error(`no check ${name} in ${r.stdout}`);
      return c;
    },
  };
}

async function holdPort(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as { port: number }).port };
}

describe("praxmail doctor", () => {
  let dir: string;
  let home: string;
  let sink: Sink;
  let served: Served;
  let portalUrl: string;
  const args = (): string[] => ["doctor", "--home", home, "--smtp", `127.0.0.1:${served.smtpPort}`, "--http", `127.0.0.1:${served.httpPort}`, "--timeout", "3"];

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    sink = await startSink();
    const httpPort = await freePort();
    portalUrl = `http://127.0.0.1:${httpPort}`;
    await initHome(home, ["--recipient-type", "x25519", "--portal-url", portalUrl, "--upstream", sink.url]);
    served = await startServe(home, httpPort);
  });
  afterAll(async () => {
    await served.stop();
    await sink.close();
    await cleanup(dir);
  });

  it("passes every check with a real upstream and a running praxmail serve holding the ports", async () => {
    const r = await praxmail([...args(), "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const d = doctorJson(r);
    expect(d.ok).toBe(true);
    expect(d.checks.map((c) => [c.name, c.status])).toEqual([
      ["config", "ok"],
      ["permissions", "ok"],
      ["identity", "ok"],
      ["signing-key", "ok"],
      ["upstream", "ok"],
      ["relay-port", "ok"],
      ["portal-port", "ok"],
      ["disk", "ok"],
      ["portal-url", "ok"],
      ["look", "ok"],
    ]);
    expect(d.by("permissions").reason).toMatch(new RegExp(`^${home} and the \\d+ files and folders in it grant nothing to group or others$`));
    expect(d.by("identity").reason).toBe(`${join(home, "practice-identity.txt")} (mode 0600) holds the practice identity`);
    expect(d.by("upstream").reason).toMatch(new RegExp(`^smtp://127\\.0\\.0\\.1:${sink.port} answers \\(EHLO in \\d+ ms\\)$`));
    expect(d.by("relay-port").reason).toBe(`127.0.0.1:${served.smtpPort} is held by a running praxmail serve (pid ${served.child.pid})`);
    expect(d.by("portal-port").reason).toBe(`127.0.0.1:${served.httpPort} is held by a running praxmail serve (pid ${served.child.pid})`);
    expect(d.by("portal-url").reason).toMatch(new RegExp(`^${portalUrl.replace(/\./g, "\\.")} answers \\(HTTP 200 in \\d+ ms\\)$`));

    const human = await praxmail(args());
    expect(human.code).toBe(0);
    expect(human.stdout.split("\n").filter(Boolean).map((l) => l.slice(0, 4))).toEqual(Array(10).fill("ok  "));
  });

  it("fails on an identity file others may read (0644) and names the fix", async () => {
    const file = join(home, "practice-identity.txt");
    await chmod(file, 0o644);
    try {
      const r = await praxmail([...args(), "--json"]);
      expect(r.code).toBe(1);
      // The identity check and the permissions check under home both fail.
      expect(r.stderr).toBe("praxmail: error: 2 of 10 checks failed\npraxmail: hint: fix what the lines marked fail say, then run praxmail doctor again\n");
      const d = doctorJson(r);
      expect(d.ok).toBe(false);
      expect(d.by("permissions")).toEqual({ name: "permissions", status: "fail", reason: `${file} has mode 0644: others may read it`, hint: `chmod 600 ${file}` });
      expect(d.by("identity")).toEqual({
        name: "identity",
        status: "fail",
        reason: `${file} has mode 0644: others may read the practice identity`,
        hint: `chmod 600 ${file}`,
      });
      const human = await praxmail(args());
      expect(human.code).toBe(1);
      expect(human.stdout).toContain(`fail  identity     ${file} has mode 0644: others may read the practice identity\n`);
      expect(human.stdout).toContain(`fail  permissions  ${file} has mode 0644: others may read it\n`);
      expect(human.stdout).toContain(`hint: chmod 600 ${file}\n`);
    } finally {
      await chmod(file, 0o600);
    }
  });

  it("fails on a database or a blob folder others may read, naming the path, its mode and the chmod", async () => {
    const db = join(home, "praxmail.db");
    await chmod(db, 0o644);
    try {
      const r = await praxmail([...args(), "--json"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe("praxmail: error: 1 of 10 checks failed\npraxmail: hint: fix what the lines marked fail say, then run praxmail doctor again\n");
      expect(doctorJson(r).by("permissions")).toEqual({ name: "permissions", status: "fail", reason: `${db} has mode 0644: others may read it`, hint: `chmod 600 ${db}` });
      const blobs = join(home, "blobs");
      await mkdir(join(blobs, "tmp"), { recursive: true, mode: 0o700 });
      await chmod(blobs, 0o755);
      try {
        const human = await praxmail(args());
        expect(human.code).toBe(1);
        expect(human.stdout).toContain(`fail  permissions  ${blobs} has mode 0755: others may list or change what is in it (and 1 more under ${home})\n`);
        expect(human.stdout).toContain(`hint: chmod -R go= ${home}\n`);
      } finally {
        await chmod(blobs, 0o700);
      }
    } finally {
      await chmod(db, 0o600);
    }
    expect(doctorJson(await praxmail([...args(), "--json"])).by("permissions").status).toBe("ok");
  });

  it("fails on an identity file with another key, and on a home others may write", async () => {
    const other = join(dir, "other-identity.txt");
    await writeIdentityFile(other, generateIdentity("x25519"), undefined, new Date());
    const wrongKey = doctorJson(await praxmail([...args(), "--json", "--identity", other]));
    expect(wrongKey.by("identity")).toMatchObject({ status: "fail", reason: `${other} (mode 0600) holds an identity that does not belong to the practice recipient in config.json` });
    await chmod(home, 0o777);
    try {
      const r = await praxmail([...args(), "--json"]);
      expect(r.code).toBe(1);
      expect(doctorJson(r).by("identity")).toMatchObject({ status: "fail", reason: `${home} has mode 0777: others may replace the identity file` });
    } finally {
      await chmod(home, 0o700);
    }
  });

  it("only warns when the identity is not on this machine, and fails when a named one is missing", async () => {
    const file = join(home, "practice-identity.txt");
    const away = join(dir, "offline-identity.txt");
    await rename(file, away);
    try {
      const r = await praxmail([...args(), "--json"]);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe("praxmail: 1 warning, no failures\n");
      expect(doctorJson(r).by("identity")).toMatchObject({ status: "warn", reason: `no identity file at ${file} (ENOENT)` });
      // Pointed at the offline copy, it checks that one.
      const named = await praxmail([...args(), "--json"], { env: { PRAXMAIL_IDENTITY: away } });
      expect(doctorJson(named).by("identity")).toMatchObject({ status: "ok", reason: `${away} (mode 0600) holds the practice identity` });
      const missing = await praxmail([...args(), "--json", "--identity", join(dir, "nope.txt")]);
      expect(missing.code).toBe(1);
      expect(doctorJson(missing).by("identity").status).toBe("fail");
    } finally {
      await rename(away, file);
    }
  });

  it("fails when upstream does not answer (a closed port), without printing its password", async () => {
    const closed = await freePort();
    await patchConfig(home, { upstream: `smtp://praxis:Geheim-Passwort-42@127.0.0.1:${closed}` });
    try {
      const r = await praxmail([...args(), "--json"]);
      expect(r.code).toBe(1);
      const up = doctorJson(r).by("upstream");
      expect(up.status).toBe("fail");
      expect(up.reason).toMatch(new RegExp(`^smtp://praxis:\\*\\*\\*@127\\.0\\.0\\.1:${closed}: E[A-Z]+: .*ECONNREFUSED`));
      expect(up.hint).toContain("praxmail init --upstream");
      expect(r.stdout + r.stderr).not.toContain("Geheim-Passwort-42");
    } finally {
      await patchConfig(home, { upstream: sink.url });
    }
  });

  it("warns in outbox mode (no upstream)", async () => {
    await patchConfig(home, { upstream: null });
    try {
      const r = await praxmail([...args(), "--json"]);
      expect(r.code).toBe(0);
      expect(doctorJson(r).by("upstream")).toMatchObject({ status: "warn", reason: `not configured: mail is written to ${join(home, "outbox")}/` });
    } finally {
      await patchConfig(home, { upstream: sink.url });
    }
  });

  it("fails when another program holds a listen address, naming its pid", async () => {
    const held = await holdPort();
    try {
      const r = await praxmail(["doctor", "--home", home, "--smtp", `127.0.0.1:${held.port}`, "--http", `127.0.0.1:${served.httpPort}`, "--json"]);
      expect(r.code).toBe(1);
      const c = doctorJson(r).by("relay-port");
      expect(c.status).toBe("fail");
      expect(c.reason).toMatch(new RegExp(`^127\\.0\\.0\\.1:${held.port} is in use by pid ${process.pid} \\(`));
      expect(c.hint).toBe("stop that program, or give serve another address with --smtp or PRAXMAIL_SMTP");
      // The same address from the environment, as serve reads it.
      const env = await praxmail(["doctor", "--home", home, "--http", `127.0.0.1:${served.httpPort}`, "--json"], { env: { PRAXMAIL_SMTP: `127.0.0.1:${held.port}` } });
      expect(doctorJson(env).by("relay-port").status).toBe("fail");
    } finally {
      held.server.close();
    }
    const free = await freePort();
    const r = await praxmail(["doctor", "--home", home, "--smtp", `127.0.0.1:${free}`, "--http", `127.0.0.1:${served.httpPort}`, "--json"]);
    expect(doctorJson(r).by("relay-port")).toMatchObject({ status: "ok", reason: `127.0.0.1:${free} is free` });
  });

  it("checks a milter unix socket path: free, and not a socket", async () => {
    const sock = join(dir, "milter.sock");
    const free = doctorJson(await praxmail([...args(), "--json", "--milter", `unix:${sock}`]));
    expect(free.by("milter-port")).toMatchObject({ status: "ok", reason: `unix:${sock} is free` });
    await writeFile(sock, "not a socket");
    try {
      const r = await praxmail([...args(), "--json", "--milter", `unix:${sock}`]);
      expect(r.code).toBe(1);
      expect(doctorJson(r).by("milter-port")).toMatchObject({ status: "fail", reason: `unix:${sock}: it exists and is not a socket; serve would delete it` });
    } finally {
      await rm(sock);
    }
  });

  it("fails below --min-free, and when the portal URL does not answer", async () => {
    const r = await praxmail([...args(), "--json", "--min-free", "10000000"]);
    expect(r.code).toBe(1);
    expect(doctorJson(r).by("disk")).toMatchObject({ status: "fail" });
    expect(doctorJson(r).by("disk").reason).toMatch(/ free of .* on the file system of .*, less than 9\.5 TiB$/);

    const closed = await freePort();
    await patchConfig(home, { portalUrl: `http://127.0.0.1:${closed}` });
    try {
      const down = await praxmail([...args(), "--json"]);
      expect(down.code).toBe(1);
      expect(doctorJson(down).by("portal-url")).toMatchObject({ status: "fail", reason: `http://127.0.0.1:${closed}: ECONNREFUSED` });
    } finally {
      await patchConfig(home, { portalUrl });
    }
    // Something answers, but it is not praxmail's portal (no CSP): a warning.
    const other = (await import("node:http")).createServer((_req, res) => res.end("hello"));
    await new Promise<void>((r2) => other.listen(0, "127.0.0.1", r2));
    await patchConfig(home, { portalUrl: `http://127.0.0.1:${(other.address() as { port: number }).port}` });
    try {
      const d = doctorJson(await praxmail([...args(), "--json"]));
      expect(d.by("portal-url").status).toBe("warn");
      expect(d.by("portal-url").reason).toContain("without praxmail's Content-Security-Policy");
    } finally {
      other.close();
      await patchConfig(home, { portalUrl });
    }
  });

  it("fails on an invalid config.json and skips what needs it", async () => {
    const bad = join(dir, "bad-home");
    await mkdir(bad, { mode: 0o700 });
    await writeFile(join(bad, "config.json"), '{"practiceName": 42}', { mode: 0o600 });
    const r = await praxmail(["doctor", "--home", bad, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--json"]);
    expect(r.code).toBe(1);
    const d = doctorJson(r);
    expect(d.checks.map((c) => [c.name, c.status])).toEqual([
      ["config", "fail"],
      ["permissions", "ok"],
      ["identity", "skip"],
      ["signing-key", "skip"],
      ["upstream", "skip"],
      ["relay-port", "skip"],
      ["portal-port", "skip"],
      ["disk", "ok"],
      ["portal-url", "skip"],
      ["look", "skip"],
    ]);
    expect(d.by("config").reason).toMatch(/^config\.json: /);
    const usage = await praxmail(["doctor", "--home", bad, "--timeout", "0"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("give a whole number from 1 to 120");
  });
});

describe("permissions under home", () => {
  const umask = (mask: string): string[] => ["sh", "-c", `umask ${mask}; exec "$@"`, "sh"];
  const modes = async (home: string): Promise<Map<string, number>> => {
    const out = new Map<string, number>([[".", await modeOf(home)]]);
    const visit = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        out.set(p.slice(home.length + 1), await modeOf(p));
        if (e.isDirectory()) await visit(p);
      }
    };
    await visit(home);
    return out;
  };
  const loose = (m: Map<string, number>, isDir: (rel: string) => boolean): string[] =>
    [...m].filter(([rel, mode]) => mode !== (isDir(rel) ? 0o700 : 0o600)).map(([rel, mode]) => `${rel} ${mode.toString(8)}`);

  it.each(["000", "022"])("folders are 0700 and files 0600 after init, send and serve under umask %s", async (mask) => {
    const dir = await tempDir();
    try {
      const home = join(dir, "home");
      const init = await praxmail(["init", "--home", home, "--yes", "--no-keyring", "--practice-name", "P", "--practice-email", "praxis@praxis-weber.example"], { wrap: umask(mask) });
      expect(init.code, init.stderr).toBe(0);
      await writeFile(join(dir, "befund.pdf"), "%PDF-1.4 befund");
      const sent = await praxmail(["send", "--home", home, "--to", "anna@patient.example", "--level", "3", join(dir, "befund.pdf")], { wrap: umask(mask) });
      expect(sent.code, sent.stderr).toBe(0);
      // serve inherits this process's umask at spawn.
      const old = process.umask(Number.parseInt(mask, 8));
      const starting = startServe(home);
      process.umask(old);
      const served = await starting;
      try {
        const mail = befundMail({ from: "praxis@praxis-weber.example", to: "ben@patient.example", messageId: `umask-${mask}@praxis-weber.example`, attachment: Buffer.from("%PDF-1.4 relayed") });
        expect((await submit(served.smtpPort, "praxis@praxis-weber.example", ["ben@patient.example"], mail)).code).toBe(250);
        // While serve holds the database: its -wal and -shm exist, 0600.
        const live = await modes(home);
        expect(live.get("praxmail.db-wal")).toBe(0o600);
        expect(live.get("praxmail.db-shm")).toBe(0o600);
        expect(loose(live, (rel) => !rel.includes(".") || rel === ".")).toEqual([]);
      } finally {
        expect(await served.stop()).toBe(0);
      }
      const after = await modes(home);
      // Two blobs (send, relay), the outbox with the patients' notifications, the database.
      expect([...after.keys()].filter((r) => r.endsWith(".age")).length).toBe(2);
      expect([...after.keys()].filter((r) => r.startsWith("outbox/")).length).toBe(2);
      expect(after.get("blobs")).toBe(0o700);
      expect(after.get("blobs/tmp")).toBe(0o700);
      expect(after.get("outbox")).toBe(0o700);
      expect(after.get("praxmail.db")).toBe(0o600);
      expect(loose(after, (rel) => !rel.includes(".") || rel === "." || /^blobs\/[0-9a-f]{2}$/.test(rel))).toEqual([]);
    } finally {
      await cleanup(dir);
    }
  });

  it("tightens a home made 0755, and a database, -wal and -shm made 0644, when it opens them", async () => {
    const dir = await tempDir();
    try {
      const home = join(dir, "home");
      await mkdir(home);
      await chmod(home, 0o755);
      await initHome(home);
      expect(await modeOf(home)).toBe(0o700);
      expect((await praxmail(["list", "--home", home])).code).toBe(0); // creates the database
      await chmod(home, 0o755);
      await chmod(join(home, "praxmail.db"), 0o644);
      // Another connection holds the database, so -wal and -shm stay; SQLite gives them the
      // database file's mode, 0644 here.
      const other = new Database(join(home, "praxmail.db"));
      try {
        other.pragma("journal_mode = WAL");
        other.prepare("SELECT COUNT(*) FROM deliveries").get();
        expect(await modeOf(join(home, "praxmail.db-wal"))).toBe(0o644);
        const r = await praxmail(["list", "--home", home], { wrap: umask("000") });
        expect(r.code, r.stderr).toBe(0);
        expect(await modeOf(home)).toBe(0o700);
        for (const f of ["praxmail.db", "praxmail.db-wal", "praxmail.db-shm"]) expect(await modeOf(join(home, f)), f).toBe(0o600);
      } finally {
        other.close();
      }
    } finally {
      await cleanup(dir);
    }
  });
});

describe("praxmail backup and restore", () => {
  const PATIENT = "anna@patient.example";
  const SECU_PASS = "Leuchtturm-Kaffee-7-Sonnenblume";
    let dir: string;
  let home: string;
  let patientIdentity: string;
  const originals = new Map<string, Buffer>(); // delivery id -> plaintext
  let revokedBlob: string;
  let identityFile: string;
  let practiceIdentity: string;
  const UPSTREAM_PASSWORD = "Geheim-Passwort-42";
  const opener = (): ((s: ReadableStream<Uint8Array>) => Promise<ReadableStream<Uint8Array>>) => (s) => decryptStream(s, [practiceIdentity]);
  /** The plaintext of a sealed file in a backup. */
  const unseal = async (file: string): Promise<Buffer> => readAll(await decryptStream(fileStream(file), [practiceIdentity]));

  interface ListJson {
    id: string;
    recipient: string;
    status: string;
    files: { name: string; size: number; blob: string | null }[];
  }
  const list = async (h: string): Promise<ListJson[]> => JSON.parse((await praxmail(["list", "deliveries", "--json", "--home", h])).stdout) as ListJson[];

  async function send(to: string, name: string, size: number): Promise<string> {
    const data = Buffer.concat([Buffer.from(`%PDF-1.4 ${name}\n`), createHash("sha512").update(name).digest(), Buffer.alloc(size, name)]);
    const file = join(dir, name);
    await writeFile(file, data);
    const r = await praxmail(["send", "--home", home, "--to", to, "--level", "3", file, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const id = (JSON.parse(r.stdout) as { deliveries: { id: string }[] }).deliveries[0]!.id;
    originals.set(id, data);
    return id;
  }

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    await initHome(home, ["--recipient-type", "x25519"]);
    await send(PATIENT, "befund-1.pdf", 300_000);
    patientIdentity = (await registerThroughCore(home, PATIENT, SECU_PASS))!;
    const approved = await praxmail(["approve", PATIENT, "--yes", "--home", home]);
    expect(approved.code, approved.stderr).toBe(0);
    await send(PATIENT, "befund-2.pdf", 70_000); // ready at once: the patient is approved
    const revoked = await send("ben@patient.example", "brief.pdf", 1000);
    revokedBlob = (await list(home)).find((d) => d.id === revoked)!.files[0]!.blob!;
    expect((await praxmail(["revoke", revoked, "--yes", "--home", home])).code).toBe(0);
    originals.delete(revoked);
    // From now on config.json holds an upstream password; no mail is sent after this.
    await patchConfig(home, { upstream: `smtp://praxis:${UPSTREAM_PASSWORD}@127.0.0.1:1` });
    identityFile = join(home, "practice-identity.txt");
    practiceIdentity = await readIdentityFile(identityFile, () => Promise.resolve(undefined));
  });
  afterAll(async () => {
    await cleanup(dir);
  });

  it("backs up into a new folder: 0700/0600, manifest with the database's SHA-256, no identity; database, config and manifest encrypted to the practice recipient", async () => {
    const bk = join(dir, "backup");
    const r = await praxmail(["backup", bk, "--home", home, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const recipient = await recipientOf(practiceIdentity);
    expect(r.stderr).toContain(`praxmail: note: the backup is encrypted to the practice recipient ${recipient}; only the practice identity\n`);
    const out = JSON.parse(r.stdout) as { dir: string; counts: BackupManifest["counts"]; encryptedTo: string; database: { sha256: string } };
    expect(out).toMatchObject({ dir: bk, encryptedTo: recipient, counts: { deliveries: 3, patients: 1, replies: 0, blobs: 2 } });
    const m = await readManifest(bk, opener());
    expect(out.database.sha256).toBe(m.database.sha256);
    // The manifest holds the SHA-256 of the database as it was in home; the backup holds it sealed.
    expect(sha(await unseal(join(bk, "praxmail.db.age")))).toBe(m.database.sha256);
    expect(m.files.map((f) => f.path)).toEqual(["portal-signing.key", "config.json"]);
    expect(await unseal(join(bk, "config.json.age"))).toEqual(await readFile(join(home, "config.json")));
    expect(await unseal(join(bk, "portal-signing.key.age"))).toEqual(await readFile(join(home, "portal-signing.key")));
    // The two live blobs, byte for byte (age files to their delivery keys already); the revoked delivery's blob is gone in home and backup.
    const live = (await list(home)).flatMap((d) => d.files.map((f) => f.blob)).filter((b): b is string => b !== null).sort();
    expect(m.blobs.map((b) => b.path)).toEqual(live);
    for (const b of m.blobs) expect(sha(await readFile(join(bk, b.path)))).toBe(sha(await readFile(join(home, b.path))));
    expect(m.blobs.map((b) => b.path)).not.toContain(revokedBlob);
    expect((await walk(bk)).map((f) => f.slice(bk.length + 1)).sort()).toEqual(["backup.json", "config.json.age", "manifest.age", "portal-signing.key.age", "praxmail.db.age", ...live].sort());
    expect(JSON.parse(await readFile(join(bk, "backup.json"), "utf8"))).toEqual({
      format: "praxmail-backup",
      version: 2,
      encryptedTo: recipient,
      identity: { kind: "file", file: "practice-identity.txt", protected: false },
    });
    expect(await modeOf(bk)).toBe(0o700);
    for (const f of await walk(bk)) expect(await modeOf(f), f).toBe(0o600);
    // The backup is recorded in the live audit log.
    const audit = JSON.parse((await praxmail(["audit", "--json", "--home", home])).stdout) as { action: string; subject: string; details: { encryptedTo: string } }[];
    expect(audit.at(-1)).toMatchObject({ action: "backup", subject: bk, details: { encryptedTo: recipient } });
  });

  it("holds the upstream password and the patients' addresses nowhere in clear, in any byte of the backup", async () => {
    const bk = join(dir, "backup");
    expect((await readFile(join(home, "config.json"), "utf8")).includes(UPSTREAM_PASSWORD)).toBe(true);
    const secrets = [UPSTREAM_PASSWORD, PATIENT, "ben@patient.example", "befund-1.pdf", "praxis@praxis-weber.example"];
    const files = await walk(bk);
    expect(files.length).toBe(7);
    for (const f of files) {
      const bytes = await readFile(f);
      for (const secret of secrets) {
        for (const enc of ["utf8", "utf16le", "latin1"] as const) expect(bytes.includes(Buffer.from(secret, enc)), `${secret} (${enc}) in ${f}`).toBe(false);
      }
    }
    const portalSeed = await readFile(join(home, "portal-signing.key"));
    for (const f of files) expect((await readFile(f)).includes(portalSeed), `the portal signing key in ${f}`).toBe(false);
    // The database inside does hold them: the test would see them if they were in clear.
    expect((await unseal(join(bk, "praxmail.db.age"))).includes(PATIENT)).toBe(true);
    expect((await unseal(join(bk, "config.json.age"))).includes(UPSTREAM_PASSWORD)).toBe(true);
  });

  if (needTool("age")) {
    it("is standard age: age -d opens the sealed files with the practice identity and nothing else", () => {
      const bk = join(dir, "backup");
      const ok = spawnSync("age", ["-d", "-i", identityFile, join(bk, "config.json.age")], { encoding: "utf8" });
      expect(ok.status, ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ practiceEmail: "praxis@praxis-weber.example", upstream: `smtp://praxis:${UPSTREAM_PASSWORD}@127.0.0.1:1` });
      const db = spawnSync("age", ["-d", "-i", identityFile, join(bk, "praxmail.db.age")]);
      expect(db.status).toBe(0);
      expect(db.stdout.subarray(0, 16).toString("latin1")).toBe("SQLite format 3\0");
      const other = join(dir, "stranger.txt");
      spawnSync("age-keygen", ["-o", other]);
      const no = spawnSync("age", ["-d", "-i", other, join(bk, "manifest.age")], { encoding: "utf8" });
      expect(no.status).not.toBe(0);
      expect(no.stderr).toContain("no identity matched any of the recipients");
      expect(no.stdout).toBe("");
    });
  }

  it("refuses a folder that is not empty or lies inside home, and leaves it as it was", async () => {
    const full = join(dir, "full");
    await mkdir(full);
    await writeFile(join(full, "keep.txt"), "mine");
    const r = await praxmail(["backup", full, "--home", home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`praxmail: error: ${full} is not empty\npraxmail: hint: give a new or empty folder; existing files are never overwritten\n`);
    expect(await readdir(full)).toEqual(["keep.txt"]);
    const inside = await praxmail(["backup", join(home, "backups"), "--home", home]);
    expect(inside.code).toBe(2);
    expect(inside.stderr).toContain("is inside home");
  });

  it("restores into a fresh home; audit --verify passes; a patient downloads from praxmail serve on it", async () => {
    const bk = join(dir, "backup");
    const restored = join(dir, "restored");
    const r = await praxmail(["restore", bk, "--home", restored, "--json", "--identity", identityFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ home: restored, dir: bk, encryptedTo: await recipientOf(practiceIdentity), counts: { deliveries: 3, patients: 1, blobs: 2 } });
    expect(r.stderr).toContain(`praxmail: note: backups never hold the practice identity: put it back at ${join(restored, "practice-identity.txt")} (mode 0600),`);
    expect(await readFile(join(restored, "config.json"))).toEqual(await readFile(join(home, "config.json")));
    expect(await readdir(restored)).not.toContain(".restore-partial");

    const verify = await praxmail(["audit", "--verify", "--home", restored]);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^audit chain intact: \d+ rows\n$/);
    const audit = JSON.parse((await praxmail(["audit", "--json", "--home", restored])).stdout) as { action: string }[];
    expect(audit.at(-1)!.action).toBe("restore");
    expect((await list(restored)).map((d) => [d.id, d.status])).toEqual((await list(home)).map((d) => [d.id, d.status]));
    const doctor = doctorJson(await praxmail(["doctor", "--home", restored, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--json"]));
    expect(doctor.by("identity").status).toBe("warn");

    const served = await startServe(restored);
    try {
      const patient = await patientAtPortal(`http://127.0.0.1:${served.httpPort}`, PATIENT);
      expect(patient.login.status).toBe(200);
      expect(await patient.login.json()).toEqual({ next: "/deliveries" });
      expect(originals.size).toBe(2);
      for (const [id, original] of originals) expect((await patient.open(id, patientIdentity)).equals(original), id).toBe(true);
    } finally {
      expect(await served.stop()).toBe(0);
    }
    // serve's log: pino JSON lines on stdout, one object per line.
    const lines = served.stdout().trim().split("\n");
    expect(lines.length).toBeGreaterThan(3);
    for (const line of lines) {
      const o = JSON.parse(line) as Record<string, unknown>;
      expect(o).toMatchObject({ app: "praxmail", pid: served.child.pid });
      expect(typeof o.level).toBe("number");
      expect(typeof o.time).toBe("number");
      expect(typeof o.msg).toBe("string");
    }
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(expect.arrayContaining(["started", "request", "stopping"]));
  });

  it("refuses to restore over a home that is set up, and changes nothing there", async () => {
    const before = await Promise.all((await walk(home)).map(async (f) => [f, sha(await readFile(f))]));
    const r = await praxmail(["restore", join(dir, "backup"), "--home", home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `praxmail: error: ${home} is set up already; restore never overwrites a home\npraxmail: hint: restore into a new folder with --home DIR, or move this home away first\n`,
    );
    expect(await Promise.all((await walk(home)).map(async (f) => [f, sha(await readFile(f))]))).toEqual(before);
  });

  it("refuses a damaged backup (one flipped byte in a blob or the sealed database, a missing manifest) and leaves the home empty", async () => {
    const bad = join(dir, "damaged");
    await cp(join(dir, "backup"), bad, { recursive: true });
    const m = await readManifest(bad, opener());
    const flip = async (file: string): Promise<void> => {
      const bytes = await readFile(file);
      bytes.writeUInt8(bytes.readUInt8(bytes.length - 100) ^ 1, bytes.length - 100);
      await writeFile(file, bytes);
    };
    await flip(join(bad, m.blobs[1]!.path));
    const target = join(dir, "restored-damaged");
    const r = await praxmail(["restore", bad, "--home", target, "--identity", identityFile]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `praxmail: error: ${m.blobs[1]!.path} does not match the manifest (size or SHA-256)\npraxmail: hint: the backup in ${bad} was altered or damaged; use another copy\n`,
    );
    expect(await readdir(target)).toEqual([]);

    await flip(join(bad, m.blobs[1]!.path)); // whole again
    await flip(join(bad, "praxmail.db.age"));
    const db = await praxmail(["restore", bad, "--home", target, "--identity", identityFile]);
    expect(db.code).toBe(1);
    expect(db.stderr).toMatch(/^praxmail: error: praxmail\.db\.age does not decrypt: .+\npraxmail: hint: the backup in .* was altered or damaged; use another copy\n$/);
    expect(await readdir(target)).toEqual([]);

    await rm(join(bad, "manifest.age"));
    const none = await praxmail(["restore", bad, "--home", target, "--identity", identityFile]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`cannot read ${join(bad, "manifest.age")} (ENOENT)`);
    expect(none.stderr).toContain("is not a complete praxmail backup");
    expect(await readdir(target)).toEqual([]);
  });

  it("refuses a wrong identity precisely, and no identity, leaving the target home empty", async () => {
    const bk = join(dir, "backup");
    const target = join(dir, "restored-wrong-identity");
    await mkdir(target);
    const stranger = join(dir, "stranger-identity.txt");
    const strangerId = generateIdentity("x25519");
    await writeIdentityFile(stranger, strangerId, undefined, new Date());
    const r = await praxmail(["restore", bk, "--home", target, "--identity", stranger]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `praxmail: error: the identity from ${stranger} (${await recipientOf(strangerId)}) does not open the backup in ${bk}, which is encrypted to ${await recipientOf(practiceIdentity)}\n` +
        "praxmail: hint: pass the practice identity of the home that made the backup, with --identity FILE or PRAXMAIL_IDENTITY\n",
    );
    expect(await readdir(target)).toEqual([]);
    // A header altered to name the stranger's recipient: the manifest still does not open.
    const forged = join(dir, "backup-forged-header");
    await cp(bk, forged, { recursive: true });
    const header = JSON.parse(await readFile(join(forged, "backup.json"), "utf8")) as Record<string, unknown>;
    await writeFile(join(forged, "backup.json"), JSON.stringify({ ...header, encryptedTo: await recipientOf(strangerId) }));
    const f = await praxmail(["restore", forged, "--home", target], { env: { PRAXMAIL_IDENTITY: stranger } });
    expect(f.code).toBe(1);
    expect(f.stderr).toMatch(new RegExp(`^praxmail: error: ${join(forged, "manifest.age").replace(/[.]/g, "\\.")} does not decrypt: no identity matched`));
    expect(await readdir(target)).toEqual([]);
    // Without --identity: where the home kept it, i.e. the identity file in the new home, which is not there.
    const none = await praxmail(["restore", bk, "--home", target]);
    expect(none.code).toBe(1);
    expect(none.stderr).toBe(
      `praxmail: error: cannot load the practice identity: ENOENT reading ${join(target, "practice-identity.txt")}\npraxmail: hint: pass --identity FILE or set PRAXMAIL_IDENTITY\n`,
    );
    expect(await readdir(target)).toEqual([]);
  });

  it("refuses an unencrypted backup of format 1, saying what to do", async () => {
    const old = join(dir, "backup-format-1");
    await mkdir(old);
    await writeFile(join(old, "manifest.json"), JSON.stringify({ format: "praxmail-backup", version: 1 }));
    await writeFile(join(old, "config.json"), await readFile(join(home, "config.json")));
    const target = join(dir, "restored-format-1");
    const r = await praxmail(["restore", old, "--home", target, "--identity", identityFile]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `praxmail: error: ${old} is an unencrypted backup (format 1) made by an older praxmail; this praxmail restores only encrypted backups\n` +
        "praxmail: hint: restore it with the praxmail version that made it, back that home up again with this one, and destroy the plain copy: it holds config.json (with the upstream password) in clear\n",
    );
    await expect(stat(target)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("restores with the identity file put back into the new home first; the restored home opens deliveries with it", async () => {
    const restored = join(dir, "restored-with-identity");
    await mkdir(restored, { mode: 0o700 });
    await copyFile(identityFile, join(restored, "practice-identity.txt"));
    const rr = await praxmail(["restore", join(dir, "backup"), "--home", restored]);
    expect(rr.code, rr.stderr).toBe(0);
    expect(rr.stderr).not.toContain("never hold the practice identity");
    expect(await modeOf(join(restored, "practice-identity.txt"))).toBe(0o600);
    const doctor = doctorJson(await praxmail(["doctor", "--home", restored, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--json"]));
    expect(doctor.by("identity").status).toBe("ok");
    expect(doctor.by("permissions").status).toBe("ok");
    // The practice side: the first mail's link token and wrap[P] open the file in the restored home.
    const [first] = await outbox(home);
    const token = /\/d\/([A-Za-z0-9_-]{43})/.exec(first!.text ?? "")![1]!;
    const opened = await openByToken(restored, token);
    expect(opened.email).toBe(PATIENT);
    expect([...originals.values()].some((o) => o.equals(opened.files[0]!.data))).toBe(true);
  });

  it("stays consistent when a delivery is revoked (its blob deleted) while the backup runs", async () => {
    const ctx = await openContext({ home }, "cli:test");
    try {
      const victim = await createDelivery(ctx, { recipient: "carl@patient.example", level: 3, files: [{ name: "x.pdf", open: () => streamOf(Buffer.from("%PDF victim")) }] });
      await markSent(ctx, [victim.id]);
      const victimBlob = (await ctx.store.records.files(victim.id))[0]!.blob!;
      const bk = join(dir, "backup-during-revoke");
      const phases: string[] = [];
      const later: string[] = [];
      const deliverNow = async (to: string): Promise<string> => {
        const d = await createDelivery(ctx, { recipient: to, level: 3, files: [{ name: "y.pdf", open: () => streamOf(Buffer.from(`%PDF for ${to}`)) }] });
        await markSent(ctx, [d.id]);
        return (await ctx.store.records.files(d.id))[0]!.blob!;
      };
      const recipient = await recipientOf(practiceIdentity);
      const m = await backupHome(home, bk, {
        seal: (plain) => encryptStream(plain, [recipient]),
        header: { encryptedTo: recipient },
        files: ["config.json"],
        progress: async (p) => {
          phases.push(p.phase === "database" ? `database ${p.attempt}` : `blobs ${p.done}/${p.total}`);
          if (p.phase !== "database") return;
          // After the first snapshot, before its blobs are copied: a revoke deletes the
          // victim's rows, then its blob; and a new delivery arrives. Another one arrives
          // after the second snapshot.
          if (p.attempt === 1) await revokeDelivery(ctx, victim.id);
          later.push(await deliverNow(`late${p.attempt}@patient.example`));
        },
      });
      // The first snapshot named a blob that vanished: a second one was taken.
      expect(phases.filter((p) => p.startsWith("database"))).toEqual(["database 1", "database 2"]);
      const names = m.blobs.map((b) => b.path);
      expect(names).not.toContain(victimBlob);
      expect(names).toContain(later[0]); // in the second snapshot
      expect(names).not.toContain(later[1]); // written after it
      // Every blob the backed-up database names is in the backup, and nothing else.
      const plainDb = join(dir, "during-revoke.db");
      await writeFile(plainDb, await unseal(join(bk, "praxmail.db.age")));
      const db = new Database(plainDb, { readonly: true });
      try {
        const named = (db.prepare("SELECT blob FROM files WHERE blob IS NOT NULL").pluck().all() as string[]).sort();
        expect(named).toEqual([...names].sort());
        expect(db.prepare("SELECT status FROM deliveries WHERE id = ?").pluck().get(victim.id)).toBe("revoked");
      } finally {
        db.close();
      }
      expect((await walk(join(bk, "blobs"))).length).toBe(names.length);
      const restored = join(dir, "restored-during-revoke");
      const r = await praxmail(["restore", bk, "--home", restored, "--identity", identityFile]);
      expect(r.code, r.stderr).toBe(0);
      expect((await praxmail(["audit", "--verify", "--home", restored])).code).toBe(0);
    } finally {
      await ctx.store.close();
    }
  });

  it("fails, leaving no folder behind, when home's database names a blob that is gone", async () => {
    const broken = join(dir, "broken-home");
    await cp(home, broken, { recursive: true });
    const [first] = (await list(broken)).flatMap((d) => d.files.map((f) => f.blob)).filter((b): b is string => b !== null);
    await rm(join(broken, first!));
    const bk = join(dir, "backup-of-broken");
    const r = await praxmail(["backup", bk, "--home", broken]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`praxmail: error: the database names ${first!}, but it is missing from ${broken}\n`);
    await expect(stat(bk)).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("contrib/praxmail.service", () => {
  const UNITS = resolve(import.meta.dirname, "../contrib");
  const directives = async (file: string): Promise<Map<string, string[]>> => {
    const out = new Map<string, string[]>();
    for (const raw of (await readFile(join(UNITS, file), "utf8")).split("\n")) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(raw.trim());
      if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
    }
    return out;
  };

  it("runs praxmail serve as a dedicated user in a sandbox where only the home is writable", async () => {
    for (const unit of ["praxmail.service", "praxmail-gc.service"]) {
      const d = await directives(unit);
      const one = (k: string): string | undefined => d.get(k)?.at(-1);
      expect(one("User"), unit).toBe("praxmail");
      expect(one("ProtectSystem"), unit).toBe("strict");
      expect(one("ProtectHome"), unit).toBe("yes");
      expect(one("PrivateTmp"), unit).toBe("yes");
      expect(one("NoNewPrivileges"), unit).toBe("yes");
      expect(one("CapabilityBoundingSet"), unit).toBe("");
      expect(one("UMask"), unit).toBe("0077");
      expect(one("ReadWritePaths"), unit).toBe("/var/lib/praxmail");
      expect(one("StateDirectory"), unit).toBe("praxmail");
      expect(one("StateDirectoryMode"), unit).toBe("0700");
      expect(one("ExecStart"), unit).toMatch(new RegExp(`/praxmail ${unit === "praxmail.service" ? "serve" : "gc"} --home /var/lib/praxmail$`));
    }
  });

  if (needTool("systemd-analyze")) {
    it("passes systemd-analyze verify and scores OK in systemd-analyze security; a broken copy does not verify", async () => {
      const dir = await tempDir();
      try {
        // verify checks Documentation=man:praxmail(1) against MANPATH, as after installing the page.
        await mkdir(join(dir, "man", "man1"), { recursive: true });
        await copyFile(resolve(import.meta.dirname, "../man/praxmail.1"), join(dir, "man", "man1", "praxmail.1"));
        const units = ["praxmail.service", "praxmail-gc.service", "praxmail-gc.timer"];
        for (const u of units) await copyFile(join(UNITS, u), join(dir, u));
        const env = { ...process.env, MANPATH: join(dir, "man"), SYSTEMD_LOG_COLOR: "0" };
        const run = (...a: string[]) => spawnSync("systemd-analyze", a, { cwd: dir, env, encoding: "utf8" });
        const ok = run("verify", ...units.map((u) => `./${u}`));
        expect(ok.stderr).toBe("");
        expect(ok.status).toBe(0);
        // Exposure at most 2.0 of 10 ("OK"); the threshold is in tenths.
        const sec = run("security", "--offline=yes", "--threshold=20", "./praxmail.service");
        expect(sec.status, sec.stdout.split("\n").at(-2)).toBe(0);
        expect(sec.stdout).toMatch(/Overall exposure level for praxmail\.service: [01]\.\d OK/);

        const broken = (await readFile(join(dir, "praxmail.service"), "utf8")).replace(/^ExecStart=\/usr\/bin\/node /m, "ExecStart=/nonexistent/node ");
        await writeFile(join(dir, "broken.service"), broken);
        const bad = run("verify", "./broken.service");
        expect(bad.status).not.toBe(0);
        expect(bad.stderr).toContain("/nonexistent/node is not executable");
      } finally {
        await cleanup(dir);
      }
    });
  }
});

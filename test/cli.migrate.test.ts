// praxmail migrate: an embedded home (SQLite and blob files) moves into the shared backend
// (PostgreSQL and S3), on real engines. The home is built through src/core in-process (200
// deliveries at levels 1 to 4, a registered and approved patient, revoked and expired
// deliveries, a reply, a session, a signed checkpoint); the migration is the real binary.
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { cp, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import {
  addReplyPart,
  collectGarbage,
  createDelivery,
  finishReply,
  markSent,
  revokeDelivery,
  startReply,
  type Context,
} from "../src/core/index.js";
import { encryptBytes } from "../src/crypto/index.js";
import { openSharedStore, type Store, type TableRow } from "../src/store/index.js";
import { BIN, cleanup, initHome, praxmail, practiceIdentityOf, tempDir, walk, type Run } from "./helpers/cli.js";
import { patientAtPortal } from "./helpers/download.js";
import { approveWithTheirCodes, registerThroughCore } from "./helpers/patient.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { startS3, type TestS3 } from "./helpers/s3.js";
import { startServe } from "./helpers/serve.js";
import { collect, readDb } from "./helpers/store.js";
import { needTool } from "./helpers/tools.js";
import { sharedEnginesInstalled } from "./helpers/backends.js";

const PATIENT = "anna@patient.example";
const SECUPASS = "Sonnenblume-Leuchtturm-42";
const DELIVERIES = 200;

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** Every file under praxmail.db and blobs/ of a home: SHA-256 and mtime. */
async function fingerprint(home: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of [join(home, "praxmail.db"), ...(await walk(join(home, "blobs")))].sort()) {
    out[f.slice(home.length + 1)] = `${sha(await readFile(f))} ${String((await stat(f)).mtimeMs)}`;
  }
  return out;
}

/** @returns The peak resident memory of a running process (VmHWM), in bytes; 0 once it is gone. */
function peakMemory(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${String(pid)}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Rows of a table in a stable order, for comparing two stores. */
function sorted(rows: readonly TableRow[]): string[] {
  return rows.map((r) => JSON.stringify(Object.keys(r).sort().map((k) => [k, r[k] instanceof Uint8Array ? Buffer.from(r[k]).toString("hex") : r[k]]))).sort();
}

describe.runIf(
  sharedEnginesInstalled(),
)("praxmail migrate: an embedded home into the shared backend", () => {
  let dir: string;
  let home: string;
  let copy: string;
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  let client: S3Client;
  let env: Record<string, string>;
  let patientIdentity: string;
  /** Level 3 and 4 deliveries of the approved patient, with the attachment's plaintext. */
  const originals = new Map<string, Buffer>();
  let before: Record<string, string>;
  let beforeCopy: Record<string, string>;
  let listedBefore: string;

  const migrate = (h: string, database: string, blobs: string, extra: readonly string[] = []): Promise<Run> =>
    praxmail(["migrate", "--home", h, "--database", database, "--blobs", blobs, ...extra], { env });
  const shared = (database: string, blobs: string): Promise<Store> =>
    openSharedStore(database, blobs, { endpoint: s3!.endpoint, region: s3!.region, credentials: { accessKeyId: s3!.accessKeyId, secretAccessKey: s3!.secretAccessKey } });
  const objects = async (bucket: string): Promise<Map<string, string>> => {
    const out = new Map<string, string>();
    const list = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
    for (const o of list.Contents ?? []) {
      const body = await client.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key }));
      out.set(o.Key!, sha(await body.Body!.transformToByteArray()));
    }
    return out;
  };
  const tables = async (store: Store): Promise<Map<string, string[]>> =>
    store.snapshot(async (tx) => {
      const out = new Map<string, string[]>();
      for (const t of (await tx.tables()).keys()) out.set(t, sorted(await collect(tx.tableRows(t))));
      return out;
    });

  /** The target holds the home's rows: every table as it was, but no sessions, and the audit chain plus the migration's row. */
  const expectRowsOf = async (h: string, store: Store): Promise<void> => {
    const target = await tables(store);
    const source = readDb(h, (db) => {
      const names = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").pluck().all() as string[];
      return new Map(names.map((t) => [t, sorted(db.prepare(`SELECT * FROM ${t}`).all() as TableRow[])]));
    });
    expect([...target.keys()].sort()).toEqual([...source.keys()].sort());
    for (const [t, rows] of source) {
      if (t === "sessions") expect(rows).toHaveLength(1);
      else if (t !== "audit") expect(target.get(t), t).toEqual(rows);
    }
    expect(target.get("sessions")).toEqual([]);
    const audit = await collect(store.auditRows());
    const sourceAudit = readDb(h, (db) => db.prepare("SELECT seq, hash FROM audit ORDER BY seq").all() as { seq: number; hash: string }[]);
    expect(audit.slice(0, -1).map((a) => ({ seq: a.seq, hash: a.hash }))).toEqual(sourceAudit);
    expect(audit.at(-1)).toMatchObject({ action: "migrate", seq: sourceAudit.length + 1 });
  };

  beforeAll(async () => {
    dir = await tempDir("praxmail-migrate-");
    [pg, s3] = await Promise.all([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
    client = s3.client();
    for (const b of ["praxis", "zweite", "fremd"]) await s3.bucket(b);
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint };

    home = join(dir, "home");
    await initHome(home, ["--recipient-type", "x25519"]);
    patientIdentity = (await registerThroughCore(home, PATIENT, SECUPASS))!;
    const ctx: Context = await openContext({ home });
    try {
      const practice = await practiceIdentityOf(home);
      await approveWithTheirCodes(ctx, [PATIENT], practice);
      const send = async (c: Context, i: number, level: number, recipient: string): Promise<{ id: string; data: Buffer }> => {
        const data = randomBytes(2048 + (i % 7) * 1024);
        const d = await createDelivery(c, {
          recipient,
          level,
          subject: `Befund ${String(i)}`,
          message: level === 4 ? `Ihr Befund Nummer ${String(i)}` : null,
          files: [{ name: `befund-${String(i)}.pdf`, open: () => Readable.toWeb(Readable.from([data])) as ReadableStream<Uint8Array> }],
        });
        await markSent(c, [d.id]);
        return { id: d.id, data };
      };
      // Ten deliveries made 40 days ago have expired by now; gc ends them below.
      const past: Context = { ...ctx, now: () => new Date(Date.now() - 40 * 86_400_000) };
      for (let i = 0; i < DELIVERIES; i++) {
        const level = (i % 4) + 1;
        const recipient = i % 3 === 0 ? PATIENT : `patient${String(i % 17)}@example.org`;
        const d = await send(i < 10 ? past : ctx, i, level, recipient);
        if (i >= 10 && i % 25 === 1) await revokeDelivery(ctx, d.id);
        else if (recipient === PATIENT && level >= 3 && i >= 10) originals.set(d.id, d.data);
      }
      expect((await collectGarbage(ctx, 3_600_000)).expired).toHaveLength(10);
      const reply = await startReply(ctx, PATIENT, null);
      await addReplyPart(ctx, PATIENT, reply, "message", Readable.from([Buffer.from(await encryptBytes("Danke für den Befund", [ctx.config.practiceRecipient]))]));
      await finishReply(ctx, PATIENT, reply);
      await ctx.store.transaction((tx) =>
        tx.records.insertSession({ idHash: "a".repeat(64), email: PATIENT, csrf: "c".repeat(32), createdAt: new Date().toISOString(), lastSeen: new Date().toISOString() }),
      );
    } finally {
      await ctx.store.close();
    }
    expect(originals.size).toBeGreaterThan(20);
    // The same practice, copied byte for byte before the first migration, for the interrupted one.
    copy = join(dir, "copy");
    await cp(home, copy, { recursive: true });
    await cp(join(copy, "config.json"), join(dir, "copy-config.json"));
    before = await fingerprint(home);
    beforeCopy = await fingerprint(copy);
    listedBefore = (await praxmail(["list", "deliveries", "--json", "--home", home])).stdout;
  }, 240_000);
  afterAll(async () => {
    client.destroy();
    await Promise.all([pg?.stop(), s3?.stop()]);
    await cleanup(dir);
  });

  it("copies every row and blob, leaves the home's files as they were, and switches config.json; audit --verify passes there", async () => {
    const database = await pg!.database("praxis");
    const r = await migrate(home, database, "s3://praxis/site-a", ["--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { alreadyDone: boolean; blobs: number; resumed: number; rows: Record<string, number>; auditRows: number; configWritten: boolean };
    const blobFiles = Object.keys(before).filter((k) => k.startsWith("blobs/"));
    expect(out).toMatchObject({ alreadyDone: false, blobs: blobFiles.length, resumed: 0, configWritten: true });
    expect(out.rows.deliveries).toBe(DELIVERIES);
    expect(r.stderr).toContain("praxmail: note: config.json in");
    expect(r.stderr).not.toContain("copying");
    expect(r.stderr).not.toContain(new URL(database).password);

    // The source: not a byte nor an mtime changed.
    expect(await fingerprint(home)).toEqual(before);
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { shared: unknown };
    expect(config.shared).toEqual({ database, blobs: "s3://praxis/site-a" });

    // Every row as it was, but the sessions; the audit chain plus the migration's row.
    const store = await shared(database, "s3://praxis/site-a");
    try {
      await expectRowsOf(home, store);
      expect(readDb(home, (db) => db.prepare("SELECT COUNT(*) FROM audit_checkpoints").pluck().get())).toBeGreaterThan(0);
      const migrated = (await collect(store.auditRows())).at(-1)!;
      expect(migrated).toMatchObject({ subject: "s3://praxis/site-a" });
      expect(JSON.parse(migrated.details)).toMatchObject({ from: home, practiceRecipient: (JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { practiceRecipient: string }).practiceRecipient });
      expect(migrated.details).not.toContain(new URL(database).password);
      // Every blob in the bucket, byte for byte.
      const inBucket = await objects("praxis");
      expect([...inBucket.keys()].sort()).toEqual(blobFiles.map((k) => `site-a/${k}`).sort());
      for (const k of blobFiles) expect(inBucket.get(`site-a/${k}`), k).toBe(sha(await readFile(join(home, k))));
    } finally {
      await store.close();
    }

    const verify = await praxmail(["audit", "--verify", "--home", home], { env });
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stdout).toMatch(/^audit chain intact: \d+ rows/);
    expect((await praxmail(["list", "deliveries", "--json", "--home", home], { env })).stdout).toBe(listedBefore);
  });

  it("a patient logs in at praxmail serve on the new backend, and the files of level 3 and 4 decrypt to the originals", async () => {
    const served = await startServe(home, 0, [], env);
    try {
      const patient = await patientAtPortal(`http://127.0.0.1:${String(served.httpPort)}`, PATIENT);
      expect(patient.login.status).toBe(200);
      expect(await patient.login.json()).toEqual({ next: "/deliveries" });
      for (const [id, original] of [...originals].slice(0, 12)) expect((await patient.open(id, patientIdentity)).equals(original), id).toBe(true);
    } finally {
      expect(await served.stop()).toBe(0);
    }
  });

  it("an interrupted run (kill -9 while blobs are copied) resumes and ends as an uninterrupted run did", async () => {
    const database = await pg!.database("zweite");
    const count = async (): Promise<number> => (await client.send(new ListObjectsV2Command({ Bucket: "zweite" }))).KeyCount ?? 0;
    const child = spawn(process.execPath, [BIN, "migrate", "--home", copy, "--database", database, "--blobs", "s3://zweite/site-a"], { env: { PATH: process.env.PATH, ...env }, stdio: "ignore" });
    const exited = new Promise<number | null>((r) => child.on("exit", (code, signal) => {
      r(signal === null ? code : -1);
    }));
    while ((await count()) < 20) await new Promise((r) => setTimeout(r, 20));
    child.kill("SIGKILL");
    expect(await exited).toBe(-1);
    const total = Object.keys(before).filter((k) => k.startsWith("blobs/")).length;
    const copiedBefore = await count();
    expect(copiedBefore).toBeLessThan(total);
    // Killed before the rows: the database is empty, config.json unchanged.
    const half = await shared(database, "s3://zweite/site-a");
    try {
      expect([...(await tables(half)).values()].every((rows) => rows.length === 0)).toBe(true);
    } finally {
      await half.close();
    }
    expect((JSON.parse(await readFile(join(copy, "config.json"), "utf8")) as { shared: unknown }).shared).toBeNull();

    const r = await migrate(copy, database, "s3://zweite/site-a", ["--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { alreadyDone: boolean; blobs: number; resumed: number };
    expect(out).toMatchObject({ alreadyDone: false, blobs: total });
    expect(out.resumed).toBeGreaterThanOrEqual(copiedBefore);
    expect(await fingerprint(copy)).toEqual(beforeCopy);

    // The same rows and blobs as the uninterrupted run: the home's rows, once, and its blobs.
    const b = await shared(database, "s3://zweite/site-a");
    try {
      await expectRowsOf(copy, b);
    } finally {
      await b.close();
    }
    const [oa, ob] = [await objects("praxis"), await objects("zweite")];
    expect([...ob].sort()).toEqual([...oa].sort());
    expect(ob.size).toBe(total);

    // A run after the end is refused; one killed after the rows' commit, before config.json was
    // written (here: config.json put back), finds the rows there and only writes config.json.
    const again = await migrate(copy, database, "s3://zweite/site-a", ["--json"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`praxmail: error: ${copy} uses the shared backend already (config.json names it)`);
    await writeFile(join(copy, "config.json"), await readFile(join(dir, "copy-config.json")));
    const done = await migrate(copy, database, "s3://zweite/site-a", ["--json"]);
    expect(done.code, done.stderr).toBe(0);
    expect(JSON.parse(done.stdout)).toMatchObject({ alreadyDone: true, blobs: total, rows: {} });
    expect((JSON.parse(await readFile(join(copy, "config.json"), "utf8")) as { shared: unknown }).shared).toEqual({ database, blobs: "s3://zweite/site-a" });
    const c = await shared(database, "s3://zweite/site-a");
    try {
      await expectRowsOf(copy, c);
    } finally {
      await c.close();
    }
    expect(await objects("zweite")).toEqual(ob);
  });

  it("streams blobs: memory stays flat in the blob's size (a 192 MiB blob peaks within 48 MiB of a 64 MiB one)", async () => {
    const peakOf = async (size: number, name: string): Promise<number> => {
      const h = join(dir, name);
      await initHome(h, ["--recipient-type", "x25519"]);
      const ctx = await openContext({ home: h });
      try {
        const chunk = randomBytes(Math.min(size, 1 << 20));
        let left = size;
        const d = await createDelivery(ctx, {
          recipient: PATIENT,
          level: 1,
          files: [
            {
              name: "aufnahme.dcm",
              open: () =>
                new ReadableStream<Uint8Array>({
                  pull(ctl) {
                    if (left <= 0) {
                      ctl.close();
                      return;
                    }
                    ctl.enqueue(chunk.subarray(0, Math.min(left, chunk.length)));
                    left -= chunk.length;
                  },
                }),
            },
          ],
        });
        await markSent(ctx, [d.id]);
      } finally {
        await ctx.store.close();
      }
      const database = await pg!.database(name);
      const child = spawn(process.execPath, [BIN, "migrate", "--home", h, "--database", database, "--blobs", `s3://praxis/${name}`], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      child.stderr.setEncoding("utf8").on("data", (t: string) => (err += t));
      let peak = 0;
      const poll = setInterval(() => {
        peak = Math.max(peak, peakMemory(child.pid ?? 0));
      }, 20);
      const code = await new Promise<number | null>((r) => child.on("exit", r));
      clearInterval(poll);
      expect(code, err).toBe(0);
      return peak;
    };
    // The multipart upload's parts (8 MiB, two in flight) and the SDK's buffers cost the same
    // for either; a copy that held the blob would need 128 MiB more for the bigger one.
    const mid = await peakOf(64 << 20, "mittel");
    const big = await peakOf(192 << 20, "gross");
    expect(mid).toBeGreaterThan(0);
    expect(big - mid).toBeLessThan(48 << 20);
  });

  it.runIf(needTool("script"))("shows progress on a terminal", async () => {
    const h = join(dir, "terminal");
    await initHome(h, ["--recipient-type", "x25519"]);
    const ctx = await openContext({ home: h });
    try {
      for (let i = 0; i < 30; i++) {
        const d = await createDelivery(ctx, { recipient: PATIENT, level: 1, files: [{ name: "a.pdf", open: () => Readable.toWeb(Readable.from([randomBytes(4096)])) as ReadableStream<Uint8Array> }] });
        await markSent(ctx, [d.id]);
      }
    } finally {
      await ctx.store.close();
    }
    const database = await pg!.database("terminal");
    const vars = Object.entries(env).map(([k, v]) => `${k}='${v}'`).join(" ");
    const onTty = spawnSync("script", ["-qec", `env ${vars} '${process.execPath}' '${BIN}' migrate --home '${h}' --database '${database}' --blobs s3://praxis/terminal`, "/dev/null"], {
      encoding: "utf8",
      env: { PATH: process.env.PATH, NO_COLOR: "1" },
      timeout: 120_000,
    });
    expect(onTty.status, onTty.stdout).toBe(0);
    expect(onTty.stdout).toMatch(/copying blobs: \d+\/30 \([\d.]+ KiB\)/);
    expect(onTty.stdout).toContain("migrated ");
  });

  it("refuses a database or a bucket that holds another practice's data, precisely, and writes nothing", async () => {
    const other = join(dir, "other");
    await initHome(other, ["--recipient-type", "x25519"]);
    const letter = join(dir, "brief.pdf");
    await writeFile(letter, "%PDF-1.7 Brief an Ben");
    expect((await praxmail(["send", "--home", other, "--to", "ben@patient.example", "--level", "3", letter])).code).toBe(0);
    const taken = (JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { shared: { database: string } }).shared.database;
    const rowsBefore = await (async () => {
      const s = await shared(taken, "s3://praxis/site-a");
      try {
        return await tables(s);
      } finally {
        await s.close();
      }
    })();

    const intoDb = await migrate(other, taken, "s3://fremd/x");
    expect(intoDb.code).toBe(1);
    const at = new URL(taken);
    expect(intoDb.stderr).toBe(
      `praxmail: error: the database at 127.0.0.1:${at.port}/praxis holds another practice's data (rows in ${[...rowsBefore].filter(([, r]) => r.length > 0).map(([t]) => t).sort().join(", ")})\n` +
        "praxmail: hint: give an empty database; praxmail migrate never merges two practices\n",
    );
    expect((await objects("fremd")).size).toBe(0);

    const empty = await pg!.database("leer");
    const intoBucket = await migrate(other, empty, "s3://praxis/site-a");
    expect(intoBucket.code).toBe(1);
    expect(intoBucket.stderr).toMatch(/^praxmail: error: s3:\/\/praxis\/site-a holds \d+ blob\(s\) that this home does not name, e\.g\. blobs\/[0-9a-f]{2}\/[0-9a-f]{32}\.age\npraxmail: hint: give an empty bucket or prefix; praxmail migrate never merges two practices\n$/);
    const s = await shared(empty, "s3://fremd/x");
    try {
      expect([...(await tables(s)).values()].every((rows) => rows.length === 0)).toBe(true);
    } finally {
      await s.close();
    }
    const s2 = await shared(taken, "s3://praxis/site-a");
    try {
      expect(await tables(s2)).toEqual(rowsBefore);
    } finally {
      await s2.close();
    }
    expect((JSON.parse(await readFile(join(other, "config.json"), "utf8")) as { shared: unknown }).shared).toBeNull();

    const wrong = new URL(empty);
    wrong.password = "nicht-das-passwort";
    const denied = await migrate(other, wrong.href, "s3://fremd/x");
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(new RegExp(`^praxmail: error: cannot open the shared backend at 127\\.0\\.0\\.1:${wrong.port}/leer: password authentication failed`));
    expect(denied.stderr).not.toContain("nicht-das-passwort");

    const half = await praxmail(["migrate", "--home", other, "--database", empty], { env });
    expect(half.code).toBe(2);
    expect(half.stderr).toContain("praxmail: error: praxmail migrate needs the shared backend's --database and --blobs");
  });
});

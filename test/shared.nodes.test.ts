// Several nodes of one practice on one shared backend (PostgreSQL + S3), on real engines:
// a backend belongs to one practice, a node joins it by copying an existing node's files,
// a node of another practice is refused; used invites, gc, sessions and login limits hold
// across nodes. gc's lock is also checked on one home with two processes (embedded).
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { pino } from "pino";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { openContext } from "../src/commands/shared.js";
import { bindInviteSession, createInvite, redeemInvite, setSecuPassRecipient, type Context } from "../src/core/index.js";
import { generateIdentity, recipientOf } from "../src/crypto/index.js";
import { buildPortal } from "../src/portal/index.js";
import { openStore, type Store } from "../src/store/index.js";
import { cleanup, outbox, practiceIdentityOf, praxmail, tempDir, type Run } from "./helpers/cli.js";
import { newKey as keyFor, registerOn } from "./helpers/patient.js";
import { Client } from "./helpers/portal.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { startS3, type TestS3 } from "./helpers/s3.js";
import { startServe } from "./helpers/serve.js";
import { collect } from "./helpers/store.js";

import { sharedEnginesInstalled } from "./helpers/backends.js";

const PRACTICE = ["--practice-name", "Praxis Dr. Weber", "--practice-email", "praxis@praxis-weber.example", "--recipient-type", "x25519", "--no-keyring", "--yes"];
const OTHER = ["--practice-name", "Praxis Dr. Roth", "--practice-email", "praxis@praxis-roth.example", "--recipient-type", "x25519", "--no-keyring", "--yes"];
const DUE = 12;

/** gc's JSON report. */
interface GcJson {
  expired: string[];
  reminded: number;
  skipped: string | null;
}

/** Patients of `send --to`, one delivery each. */
const patients = (n: number, tag: string): string[] => Array.from({ length: n }, (_, i) => `${tag}${i}@patient.example`);

/** Sets a config.json field of a home. */
async function patchConfig(home: string, patch: Record<string, unknown>): Promise<void> {
  const file = join(home, "config.json");
  const config = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
  await writeFile(file, JSON.stringify({ ...config, ...patch }), { mode: 0o600 });
}

/** Adds a node by hand, as the man page says: a copy of config.json, the identity file and portal-signing.key (mode 0600). */
async function copyNode(from: string, to: string): Promise<void> {
  await mkdir(to, { mode: 0o700 });
  for (const f of ["config.json", "practice-identity.txt", "portal-signing.key"]) await copyFile(join(from, f), join(to, f));
}

/** Audit actions of a store, counted. */
async function actions(store: Store): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const r of await collect(store.auditRows())) out[r.action] = (out[r.action] ?? 0) + 1;
  return out;
}

/** Reminder mails in the outboxes of some homes. */
async function reminders(...homes: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const h of homes) for (const m of await outbox(h)) if (m.subject?.startsWith("Erinnerung")) out.push(m.to && "text" in m.to ? m.to.text : "");
  return out.sort();
}

/**
 * Sends level-2 deliveries (ready at once) to `due` patients, then moves the expiry of half of
 * them into the past and of the other half into the reminder window.
 *
 * @returns The ids that gc must expire, and the patients it must remind.
 */
async function dueDeliveries(run: (args: readonly string[]) => Promise<Run>, dir: string, expire: (ids: readonly string[], at: string) => Promise<void>, tag: string): Promise<{ expire: string[]; remind: string[] }> {
  const letter = join(dir, `${tag}.pdf`);
  await writeFile(letter, "%PDF-1.7 Befund");
  const to = patients(DUE, tag);
  const sent = await run(["send", "--json", "--level", "2", ...to.flatMap((t) => ["--to", t]), letter]);
  expect(sent.code, sent.stderr).toBe(0);
  const ids = (JSON.parse(sent.stdout) as { deliveries: { id: string }[] }).deliveries.map((d) => d.id);
  const half = DUE / 2;
  await expire(ids.slice(0, half), new Date(Date.now() - 3_600_000).toISOString());
  await expire(ids.slice(half), new Date(Date.now() + 3_600_000).toISOString());
  return { expire: ids.slice(0, half), remind: to.slice(half) };
}

const ENGINES =
  sharedEnginesInstalled();

describe.runIf(ENGINES)("nodes of one practice on the shared backend (PostgreSQL + S3)", () => {
  let dir: string;
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  let env: Record<string, string>;
  let database: string;
  let blobs: string;
  const home = (name: string): string => join(dir, name);
  const node = (name: string, args: readonly string[], extra: Record<string, string> = {}): Promise<Run> => praxmail([...args, "--home", home(name)], { env: { ...env, ...extra } });
  /** A fresh backend (database and prefix) with node a of the Weber practice on it. */
  const freshBackend = async (name: string): Promise<void> => {
    if (!pg) throw new Error("PostgreSQL did not start");
    database = await pg.database(name);
    blobs = `s3://nodes/${name}`;
    const init = await node(`${name}-a`, ["init", ...PRACTICE, "--database", database, "--blobs", blobs]);
    expect(init.code, init.stderr).toBe(0);
  };

  beforeAll(async () => {
    dir = await tempDir("praxmail-nodes-");
    [pg, s3] = await Promise.all([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
    await s3.bucket("nodes");
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint };
    for (const [k, v] of Object.entries(env)) vi.stubEnv(k, v);
  });
  afterAll(async () => {
    vi.unstubAllEnvs();
    await Promise.all([pg?.stop(), s3?.stop()]);
    await cleanup(dir);
  });

  it("init refuses to make a second practice on a backend that has one, names it, says how to add a node, and writes nothing", async () => {
    await freshBackend("taken");
    const second = await node("taken-x", ["init", ...OTHER, "--database", database, "--blobs", blobs]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/praxmail: error: the shared backend at 127\.0\.0\.1:\d+\/taken already belongs to the practice praxis@praxis-weber\.example \(recipient age1[a-z0-9]+\)/);
    expect(second.stderr).toContain("praxmail: hint: to add this machine as a node of that practice, run praxmail init --join HOME");
    expect(await readdir(home("taken-x"))).toEqual([]);
    // The same practice's address, given by its other settings, is refused too: it is a new identity.
    const same = await node("taken-y", ["init", ...PRACTICE, "--database", database, "--blobs", blobs]);
    expect(same.code).toBe(1);
    expect(same.stderr).toContain("already belongs to the practice praxis@praxis-weber.example");
    expect(existsSync(join(home("taken-y"), "config.json"))).toBe(false);
    const help = await praxmail(["init", "--help"]);
    expect(help.stdout).toContain("praxmail init --home /var/lib/praxmail --join /mnt/node-a/praxmail");
  });

  it("two practices' inits racing on a fresh backend: one wins, the other leaves no config.json, identity or portal key", async () => {
    if (!pg) throw new Error("PostgreSQL did not start");
    const url = await pg.database("racing");
    const inits = await Promise.all([
      node("racing-a", ["init", ...PRACTICE, "--database", url, "--blobs", "s3://nodes/racing"]),
      node("racing-b", ["init", ...OTHER, "--database", url, "--blobs", "s3://nodes/racing"]),
    ]);
    expect(inits.map((r) => r.code).sort()).toEqual([0, 1]);
    const lost = inits[0].code === 1 ? "racing-a" : "racing-b";
    expect(inits.find((r) => r.code === 1)?.stderr).toMatch(/the shared backend at 127\.0\.0\.1:\d+\/racing already belongs to the practice praxis@praxis-(weber|roth)\.example/);
    expect(await readdir(home(lost))).toEqual([]);
  });

  it("init --join makes a further node: the same config.json, identity file and portal key (mode 0600), and it runs on the backend", async () => {
    await freshBackend("joining");
    const joined = await node("joining-b", ["init", "--join", home("joining-a"), "--json"]);
    expect(joined.code, joined.stderr).toBe(0);
    expect(JSON.parse(joined.stdout)).toMatchObject({ joined: true, created: false });
    const config = async (h: string): Promise<unknown> => JSON.parse(await readFile(join(home(h), "config.json"), "utf8"));
    expect(await config("joining-b")).toEqual(await config("joining-a"));
    for (const f of ["config.json", "practice-identity.txt", "portal-signing.key"]) {
      if (f !== "config.json") expect(await readFile(join(home("joining-b"), f)), f).toEqual(await readFile(join(home("joining-a"), f)));
      expect((await stat(join(home("joining-b"), f))).mode & 0o777, f).toBe(0o600);
    }
    const letter = join(dir, "join.pdf");
    await writeFile(letter, "%PDF-1.7");
    expect((await node("joining-b", ["send", "--level", "1", "--to", "anna@patient.example", letter])).code).toBe(0);
    expect(JSON.parse((await node("joining-a", ["list", "deliveries", "--json"])).stdout)).toHaveLength(1);
    // A home that is set up already, or options beside --join, are refused.
    const again = await node("joining-b", ["init", "--join", home("joining-a")]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("is initialised already");
    const mixed = await node("joining-c", ["init", "--join", home("joining-a"), "--practice-name", "X"]);
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toContain("--join takes every setting from the other node's home");
    // An embedded home has no backend to join.
    expect((await node("joining-e", ["init", ...OTHER])).code).toBe(0);
    const embedded = await node("joining-f", ["init", "--join", home("joining-e")]);
    expect(embedded.code).toBe(1);
    expect(embedded.stderr).toContain("uses no shared backend");
    expect(existsSync(join(home("joining-f"), "config.json"))).toBe(false);
  });

  it("a node whose config.json pins other keys or another address refuses every command and serve, naming what differs and no secret", async () => {
    await freshBackend("pins");
    await copyNode(home("pins-a"), home("pins-b"));
    const other = (await node("pins-o", ["init", ...OTHER, "--json"])).stdout;
    const { approvalKey } = JSON.parse(other) as { approvalKey: string };
    await patchConfig(home("pins-b"), { approvalKey });
    const list = await node("pins-b", ["list", "deliveries"]);
    expect(list.code).toBe(1);
    expect(list.stderr).toMatch(/praxmail: error: this node's config\.json does not match the practice the shared backend at 127\.0\.0\.1:\d+\/pins belongs to: approvalKey \(config\.json ed25519:\S+, backend ed25519:\S+\)\n/);
    expect(list.stderr).toContain("praxmail init --join HOME");
    const seed = (await readFile(join(home("pins-b"), "portal-signing.key"))).toString("base64");
    expect(list.stderr).not.toContain(seed);
    expect(list.stderr).not.toContain(new URL(database).password);
    for (const args of [["gc"], ["audit", "--verify"], ["invite", "--list"]]) {
      const r = await node("pins-b", args);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr, args.join(" ")).toContain("does not match the practice the shared backend");
    }
    await expect(startServe(home("pins-b"), 0, [], env)).rejects.toThrow(/serve exited: [^]*does not match the practice the shared backend[^]*approvalKey/);
    await patchConfig(home("pins-b"), { approvalKey: null });
    const unpinned = await node("pins-b", ["list", "deliveries"]);
    expect(unpinned.code).toBe(1);
    expect(unpinned.stderr).toContain("praxmail: error: config.json pins no approval key or no portal key, which every node of a shared backend needs");
    const original = JSON.parse(await readFile(join(home("pins-a"), "config.json"), "utf8")) as { approvalKey: string };
    await patchConfig(home("pins-b"), { approvalKey: original.approvalKey, practiceEmail: "empfang@praxis-weber.example" });
    const moved = await node("pins-b", ["list", "deliveries"]);
    expect(moved.code).toBe(1);
    expect(moved.stderr).toContain("practiceEmail (config.json empfang@praxis-weber.example, backend praxis@praxis-weber.example)");
    // init on one node changes the address on the backend; the others follow with its config.json.
    expect((await node("pins-a", ["init", ...PRACTICE.filter((f) => f !== "praxis@praxis-weber.example" && f !== "--practice-email"), "--practice-email", "empfang@praxis-weber.example"])).code).toBe(0);
    expect((await node("pins-b", ["list", "deliveries"])).code).toBe(0);
  });

  it("a used invite stays used on every node when the database row is put back to 'no key yet', bound to the same session", async () => {
    await freshBackend("invite");
    await copyNode(home("invite-a"), home("invite-b"));
    const practice = await practiceIdentityOf(home("invite-a"));
    const a = await openContext({ home: home("invite-a") }, "portal");
    const b = await openContext({ home: home("invite-b") }, "portal");
    try {
      const email = "erika@patient.example";
      const inv = await createInvite(a, email, practice);
      await redeemInvite(a, inv.id, email, inv.code, await keyFor(email, "Erikas Secu-Pass-Key"));
      const session = randomBytes(32).toString("hex");
      await bindInviteSession(a, email, session);
      const before = await a.store.records.patient(email);
      const first = await setSecuPassRecipient(a, email, await recipientOf(generateIdentity("x25519")), session);
      expect(first.status).toBe("approved");
      // Someone who can write the database puts the row back as it was before the key.
      await a.store.records.updatePatient(before!);
      const second = await setSecuPassRecipient(b, email, await recipientOf(generateIdentity("x25519")), session);
      expect(second.status).toBe("pending-approval");
      expect((await b.store.records.patient(email))?.approval).toBeNull();
      // The mark is an object in the bucket, not a file under either home.
      expect(existsSync(join(home("invite-a"), "invite-approvals"))).toBe(false);
      expect(await a.store.blobs.mark(`invite-approvals/${inv.id}`)).toBe(false);
    } finally {
      await Promise.all([a.store.close(), b.store.close()]);
    }
  });

  it("a session made on one node is valid on another, and the login limit counts across both", async () => {
    await freshBackend("portal");
    await copyNode(home("portal-a"), home("portal-b"));
    const contexts: Context[] = [await openContext({ home: home("portal-a") }, "portal"), await openContext({ home: home("portal-b") }, "portal")];
    const [appA, appB] = await Promise.all(contexts.map((c) => buildPortal(c, pino({ level: "silent" }))));
    try {
      await registerOn(contexts[0]!, "lena@patient.example", "Lenas Secu-Pass-Key");
      const onA = new Client(appA!);
      const login = await onA.login("lena@patient.example");
      expect(login.statusCode).toBe(200);
      const onB = new Client(appB!, onA.ip);
      onB.cookies = new Map(onA.cookies);
      // Node B knows the session: its start page sends the patient on to their deliveries,
      // as it does for anyone logged in, and shows them.
      const start = await onB.get("/");
      expect(start.statusCode).toBe(303);
      expect(start.headers.location).toBe("/deliveries");
      expect((await onB.get("/deliveries")).statusCode).toBe(200);
      expect((await new Client(appB!).get("/")).statusCode).toBe(200);
      // Five wrong keys for one address, alternating between the nodes, use up its limit.
      for (let i = 0; i < 5; i++) {
        const wrong = await new Client(i % 2 ? appB! : appA!).login("lena@patient.example", "falsch falsch falsch");
        expect(wrong.statusCode, `attempt ${i + 1}`).toBe(401);
      }
      for (const app of [appA!, appB!]) expect((await new Client(app).login("lena@patient.example")).statusCode).toBe(429);
    } finally {
      await Promise.all([appA?.close(), appB?.close()]);
      await Promise.all(contexts.map((c) => c.store.close()));
    }
  });

  describe("gc on two nodes", () => {
    const setExpiry = async (ids: readonly string[], at: string): Promise<void> => {
      const sql = postgres(database, { max: 1, onnotice: () => undefined });
      try {
        await sql`UPDATE deliveries SET expires_at = ${at} WHERE id IN ${sql(ids)}`;
      } finally {
        await sql.end();
      }
    };
    const openShared = async (name: string): Promise<Context> => openContext({ home: home(name) });

    it("a gc while another node holds gc's lock does nothing, says so and exits 0", async () => {
      await freshBackend("gclock");
      await patchConfig(home("gclock-a"), { deliveries: { expiryDays: 30, remindBeforeDays: 2 } });
      await copyNode(home("gclock-a"), home("gclock-b"));
      const due = await dueDeliveries((args) => node("gclock-a", args), dir, setExpiry, "lock");
      const holder = await openShared("gclock-a");
      try {
        const held = await holder.store.exclusive("gc", async () => {
          const r = await node("gclock-b", ["gc", "--json"]);
          const text = await node("gclock-b", ["gc"]);
          return { r, text };
        });
        expect(held?.r.code, held?.r.stderr).toBe(0);
        expect(JSON.parse(held!.r.stdout)).toMatchObject({ skipped: "another node is running gc", expired: [], reminded: 0 });
        expect(held?.text.stdout).toBe("did nothing: another node is running gc\n");
        expect(await actions(holder.store)).not.toHaveProperty("delivery.expire");
        expect(await reminders(home("gclock-a"), home("gclock-b"))).toEqual([]);
        const after = await node("gclock-b", ["gc", "--json"]);
        expect(JSON.parse(after.stdout)).toMatchObject({ skipped: null, expired: due.expire, reminded: DUE / 2 });
      } finally {
        await holder.store.close();
      }
    });

    it("two nodes' gc at once expire and remind each delivery exactly once", async () => {
      await freshBackend("gcrace");
      await patchConfig(home("gcrace-a"), { deliveries: { expiryDays: 30, remindBeforeDays: 2 } });
      await copyNode(home("gcrace-a"), home("gcrace-b"));
      const due = await dueDeliveries((args) => node("gcrace-a", args), dir, setExpiry, "race");
      const runs = await Promise.all([node("gcrace-a", ["gc", "--json"]), node("gcrace-b", ["gc", "--json"])]);
      for (const r of runs) expect(r.code, r.stderr).toBe(0);
      const reports = runs.map((r) => JSON.parse(r.stdout) as GcJson);
      expect(reports.flatMap((r) => r.expired).sort()).toEqual([...due.expire].sort());
      expect(reports.reduce((n, r) => n + r.reminded, 0)).toBe(DUE / 2);
      expect(await reminders(home("gcrace-a"), home("gcrace-b"))).toEqual([...due.remind].sort());
      const ctx = await openShared("gcrace-a");
      try {
        expect(await actions(ctx.store)).toMatchObject({ "delivery.expire": DUE / 2, "delivery.remind": DUE / 2 });
      } finally {
        await ctx.store.close();
      }
    });
  });
});

describe("gc on one home from two processes (embedded)", () => {
  let dir: string;
  let name = "";
  const home = (): string => join(dir, name);
  const run = (args: readonly string[]): Promise<Run> => praxmail([...args, "--home", home()]);
  const setExpiry = (ids: readonly string[], at: string): Promise<void> => {
    const db = new Database(join(home(), "praxmail.db"));
    try {
      db.prepare(`UPDATE deliveries SET expires_at = ? WHERE id IN (${ids.map(() => "?").join(",")})`).run(at, ...ids);
    } finally {
      db.close();
    }
    return Promise.resolve();
  };

  beforeAll(async () => {
    dir = await tempDir("praxmail-gclock-");
  });
  afterAll(async () => {
    await cleanup(dir);
  });

  /** A new home with reminders two days before expiry. */
  const newHome = async (n: string): Promise<void> => {
    name = n;
    expect((await run(["init", ...PRACTICE])).code).toBe(0);
    await patchConfig(home(), { deliveries: { expiryDays: 30, remindBeforeDays: 2 } });
  };

  it("a gc while another process holds the lock does nothing, says so and exits 0", async () => {
    await newHome("held");
    const due = await dueDeliveries(run, dir, setExpiry, "one");
    const store = openStore(home());
    try {
      const held = await store.exclusive("gc", () => run(["gc", "--json"]));
      expect(held?.code, held?.stderr).toBe(0);
      expect(JSON.parse(held!.stdout)).toMatchObject({ skipped: "another node is running gc", expired: [], reminded: 0 });
      expect(await reminders(home())).toEqual([]);
      expect(await actions(store)).not.toHaveProperty("delivery.expire");
    } finally {
      await store.close();
    }
    const after = await run(["gc", "--json"]);
    expect(JSON.parse(after.stdout)).toMatchObject({ skipped: null, expired: due.expire, reminded: DUE / 2 });
  });

  it("two gc processes at once on one home expire and remind each delivery once", async () => {
    await newHome("race");
    const due = await dueDeliveries(run, dir, setExpiry, "two");
    const runs = await Promise.all([run(["gc", "--json"]), run(["gc", "--json"])]);
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const reports = runs.map((r) => JSON.parse(r.stdout) as GcJson);
    expect(reports.flatMap((r) => r.expired).sort()).toEqual([...due.expire].sort());
    expect(reports.reduce((n, r) => n + r.reminded, 0)).toBe(DUE / 2);
    const store = openStore(home());
    try {
      expect(await actions(store)).toMatchObject({ "delivery.expire": DUE / 2, "delivery.remind": DUE / 2 });
    } finally {
      await store.close();
    }
  });
});

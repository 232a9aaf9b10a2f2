// praxmail doctor on the shared backend (issue 14, item 5), on real engines: the database's
// version, schema and round trip, and a probe object written, read back and deleted in the
// bucket; a missing bucket, wrong S3 keys, a schema behind or ahead, and a stopped database.
import { join } from "node:path";
import { ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LATENCY_WARN_MS, judgeDatabase } from "../src/commands/doctor-shared.js";
import { PG_MIGRATIONS } from "../src/store/postgres/schema.js";
import { cleanup, initHome, praxmail, tempDir, type Run } from "./helpers/cli.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { startS3, type TestS3 } from "./helpers/s3.js";

import { sharedEnginesInstalled } from "./helpers/backends.js";

interface Check {
  name: string;
  status: string;
  reason: string;
  hint?: string;
}
interface DoctorJson {
  ok: boolean;
  backend: string | null;
  checks: Check[];
}

const LATEST = PG_MIGRATIONS.at(-1)!.version;
const SHARED = ["database", "schema", "latency", "bucket"];

// What no engine on this machine shows: a server older than 15, and a slow round trip.
describe("the database verdicts", () => {
  const facts = { major: 16, version: "16.4", applied: 3, expected: 3, latencyMs: 0.4 };
  it("refuses PostgreSQL older than 15 with the fix", () => {
    const [database] = judgeDatabase("db.praxis.internal:5432/praxmail", { ...facts, major: 14, version: "14.12 (Debian 14.12-1)" }, 15);
    expect(database).toEqual({
      name: "database",
      status: "fail",
      reason: "db.praxis.internal:5432/praxmail runs PostgreSQL 14.12 (Debian 14.12-1), older than 15",
      hint: "praxmail needs PostgreSQL 15 or newer: upgrade the server (pg_upgrade), then run praxmail doctor again",
    });
    expect(judgeDatabase("db:5432/p", { ...facts, major: 15 }, 15)[0]!.status).toBe("ok");
  });

  it(`warns when a query's round trip is above ${String(LATENCY_WARN_MS)} ms`, () => {
    expect(judgeDatabase("db:5432/p", { ...facts, latencyMs: 35.26 }, 15)[2]).toEqual({
      name: "latency",
      status: "warn",
      reason: `a query takes 35.3 ms there and back, more than ${String(LATENCY_WARN_MS)} ms`,
      hint: "run the nodes near the database: every write holds the one lock all nodes share for about ten round trips",
    });
    expect(judgeDatabase("db:5432/p", { ...facts, latencyMs: LATENCY_WARN_MS }, 15)[2]!.status).toBe("ok");
  });
});

describe.runIf(
  sharedEnginesInstalled(),
)("praxmail doctor on the shared backend (PostgreSQL + S3)", () => {
  let dir: string;
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  let client: S3Client | undefined;
  let database: string;
  let env: Record<string, string>;
  let home: string;

  /** doctor --json on the shared home; every other check's address is left free. */
  async function doctor(extra: Record<string, string> = {}, args: readonly string[] = ["--json"]): Promise<Run & { json: DoctorJson; by: (name: string) => Check }> {
    const r = await praxmail(["doctor", "--home", home, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--timeout", "5", ...args], { env: { ...env, ...extra } });
    const json = (args.includes("--json") ? JSON.parse(r.stdout) : { ok: false, backend: null, checks: [] }) as DoctorJson;
    const by = (name: string): Check => {
      const c = json.checks.find((x) => x.name === name);
      if (!c) throw new Error(`no check ${name} in ${r.stdout}`);
      return c;
    };
    return { ...r, json, by };
  }
  const secrets = (): string[] => [new URL(database).password, s3!.secretAccessKey];

  beforeAll(async () => {
    dir = await tempDir("praxmail-doctor-");
    [pg, s3] = await Promise.all([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
    client = s3.client();
    await s3.bucket("praxis");
    database = await pg.database("praxis");
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint };
    home = join(dir, "shared");
    const init = await praxmail(["init", "--home", home, "--practice-name", "Praxis Dr. Weber", "--practice-email", "praxis@praxis-weber.example", "--recipient-type", "x25519", "--no-keyring", "--yes", "--database", database, "--blobs", "s3://praxis/site-a"], { env });
    expect(init.code, init.stderr).toBe(0);
    // A node opening the store migrates the database (init only writes the config).
    const list = await praxmail(["list", "deliveries", "--home", home], { env });
    expect(list.code, list.stderr).toBe(0);
  });
  afterAll(async () => {
    client?.destroy();
    await Promise.all([pg?.stop(), s3?.stop()]);
    await cleanup(dir);
  });

  it("all ok: the server's version, every migration applied, a quick round trip, and a probe object that leaves nothing behind", async () => {
    const r = await doctor();
    expect(r.json.backend).toBe("shared");
    expect(r.json.checks.slice(-4).map((c) => c.name)).toEqual(SHARED);
    const port = new URL(database).port;
    expect(r.by("database")).toEqual({ name: "database", status: "ok", reason: expect.stringMatching(new RegExp(`^127\\.0\\.0\\.1:${port}/praxis runs PostgreSQL ${String(pg!.version)}\\.\\d+`)) as unknown });
    expect(r.by("schema")).toEqual({ name: "schema", status: "ok", reason: `migration ${LATEST} of ${LATEST} applied` });
    expect(r.by("latency")).toMatchObject({ status: "ok", reason: expect.stringMatching(/^a query takes \d+\.\d ms there and back$/) as unknown });
    expect(r.by("bucket")).toMatchObject({ status: "ok", reason: expect.stringMatching(/^s3:\/\/praxis\/site-a: wrote, read back and deleted a 32-byte probe object \(\d+ ms\)$/) as unknown });
    const left = await client!.send(new ListObjectsV2Command({ Bucket: "praxis", Prefix: "site-a/" }));
    expect(left.KeyCount).toBe(0);
    for (const s of secrets()) expect(r.stdout + r.stderr).not.toContain(s);
    const human = await doctor({}, []);
    expect(human.stdout).toMatch(/^ok {4}bucket +s3:\/\/praxis\/site-a: wrote, read back/m);
    expect(human.stdout).toMatch(/^ok {4}schema +migration \d+ of \d+ applied$/m);
  });

  it("an embedded home shows none of these checks, and says so in --json", async () => {
    const embedded = join(dir, "embedded");
    await initHome(embedded, ["--recipient-type", "x25519"]);
    const r = await praxmail(["doctor", "--home", embedded, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--json"]);
    const json = JSON.parse(r.stdout) as DoctorJson;
    expect(json.backend).toBe("embedded");
    expect(json.checks.map((c) => c.name).filter((n) => SHARED.includes(n))).toEqual([]);
  });

  it("a bucket that does not exist fails the write with its S3 code and a hint; the database checks still pass", async () => {
    const r = await doctor({ PRAXMAIL_BLOBS: "s3://no-such-bucket/site-a" });
    expect(r.code).toBe(1);
    expect(r.json.ok).toBe(false);
    expect(r.by("bucket")).toEqual({ name: "bucket", status: "fail", reason: "cannot write to s3://no-such-bucket/site-a: NoSuchBucket", hint: "create the bucket, or correct the bucket in PRAXMAIL_BLOBS or config.json" });
    expect(r.by("database").status).toBe("ok");
    expect(r.stderr).toContain("praxmail: error: ");
  });

  it("a wrong S3 secret fails the write with the server's code, and the secret is printed nowhere", async () => {
    const wrong = "Falsches-Geheimnis-0815";
    const r = await doctor({ AWS_SECRET_ACCESS_KEY: wrong });
    expect(r.code).toBe(1);
    expect(r.by("bucket")).toMatchObject({ status: "fail", reason: "cannot write to s3://praxis/site-a: SignatureDoesNotMatch" });
    expect(r.by("bucket").hint).toContain("check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy");
    expect(r.stdout + r.stderr).not.toContain(wrong);
  });

  it("a database behind this praxmail is an error with the fix; one ahead of it says this node is older", async () => {
    const behind = await pg!.database("behind");
    const b = await doctor({ PRAXMAIL_DATABASE: behind });
    expect(b.code).toBe(1);
    expect(b.by("schema")).toEqual({
      name: "schema",
      status: "fail",
      reason: `the database is behind: migration 0 of ${LATEST} applied`,
      hint: "start praxmail serve (or run praxmail list) on this node: it migrates the database when it opens it, one node at a time",
    });
    // doctor itself never migrates.
    expect((await doctor({ PRAXMAIL_DATABASE: behind })).by("schema").status).toBe("fail");

    const ahead = await pg!.database("ahead");
    const listed = await praxmail(["list", "deliveries", "--home", home], { env: { ...env, PRAXMAIL_DATABASE: ahead } });
    expect(listed.code, listed.stderr).toBe(0);
    const sql = postgres(ahead, { max: 1, onnotice: () => undefined });
    try {
      await sql`INSERT INTO schema_migrations (version, applied_at) VALUES (${LATEST + 1}, 'by a newer praxmail')`;
    } finally {
      await sql.end();
    }
    const a = await doctor({ PRAXMAIL_DATABASE: ahead });
    expect(a.code).toBe(1);
    expect(a.by("schema")).toEqual({
      name: "schema",
      status: "fail",
      reason: `this node is older than the database: its schema is at migration ${LATEST + 1}, this praxmail knows ${LATEST}`,
      hint: "upgrade praxmail on this node to the release the other nodes run",
    });
    expect(a.by("database").status).toBe("ok");
  });

  // Last: it stops the cluster.
  it("a stopped database fails the database check with the driver's code, skips schema and latency, and never prints the password", async () => {
    await pg!.stop();
    pg = undefined;
    const r = await doctor();
    expect(r.code).toBe(1);
    const port = new URL(database).port;
    expect(r.by("database")).toEqual({
      name: "database",
      status: "fail",
      reason: `cannot reach the database at 127.0.0.1:${port}/praxis: ECONNREFUSED`,
      hint: "check that PostgreSQL runs and answers there, and the user, password and database in PRAXMAIL_DATABASE or config.json",
    });
    expect(r.by("schema")).toEqual({ name: "schema", status: "skip", reason: `needs the database at 127.0.0.1:${port}/praxis` });
    expect(r.by("latency").status).toBe("skip");
    expect(r.by("bucket").status).toBe("ok");
    for (const s of secrets()) expect(r.stdout + r.stderr).not.toContain(s);
  });
});

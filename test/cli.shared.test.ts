// The real binary on the shared backend: a home whose rows are in PostgreSQL and whose
// blobs are in an S3 bucket, on real engines. Two homes on one backend are two nodes.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, praxmail, tempDir, type Run } from "./helpers/cli.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { startS3, type TestS3 } from "./helpers/s3.js";
import { needTool } from "./helpers/tools.js";
import { sharedEnginesInstalled } from "./helpers/backends.js";

const run = promisify(execFile);
const PRACTICE = ["--practice-name", "Praxis Dr. Weber", "--practice-email", "praxis@praxis-weber.example", "--recipient-type", "x25519", "--no-keyring", "--yes"];

describe.runIf(
  sharedEnginesInstalled() &&
    needTool("age"),
)("a home on the shared backend (PostgreSQL + S3)", () => {
  let dir: string;
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  let client: S3Client | undefined;
  let database: string;
  let env: Record<string, string>;
  const node = (name: string, args: readonly string[], extra: Record<string, string> = {}): Promise<Run> => praxmail([...args, "--home", join(dir, name)], { env: { ...env, ...extra } });

  beforeAll(async () => {
    dir = await tempDir("praxmail-shared-");
    [pg, s3] = await Promise.all([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
    client = s3.client();
    await s3.bucket("praxis");
    database = await pg.database("praxis");
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint };
  });
  afterAll(async () => {
    client?.destroy();
    await Promise.all([pg?.stop(), s3?.stop()]);
    await cleanup(dir);
  });

  it("init --database --blobs: send keeps rows and blobs off the home, and age opens the object in the bucket", async () => {
    const init = await node("a", ["init", ...PRACTICE, "--database", database, "--blobs", "s3://praxis/site-a"]);
    expect(init.code, init.stderr).toBe(0);
    const letter = join(dir, "befund.pdf");
    await writeFile(letter, "%PDF-1.7 Befund Weber");
    const sent = await node("a", ["send", "--json", "--to", "anna@patient.example", "--level", "1", letter]);
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stderr).not.toMatch(/Warning/);
    const [d] = (JSON.parse(sent.stdout) as { deliveries: { id: string; link: string }[] }).deliveries;
    const listed = JSON.parse((await node("a", ["list", "deliveries", "--json"])).stdout) as { id: string; files: { name: string; blob: string }[] }[];
    expect(listed.map((x) => x.id)).toEqual([d!.id]);
    const key = listed[0]!.files[0]!.blob;
    expect(key).toMatch(/^blobs\/[0-9a-f]{2}\/[0-9a-f]{32}\.age$/);
    // Nothing of the delivery under home: no database file, no blob folder.
    expect(existsSync(join(dir, "a", "praxmail.db"))).toBe(false);
    expect(existsSync(join(dir, "a", "blobs"))).toBe(false);
    // The object is an age file that the key in the level-1 link opens.
    const object = await client!.send(new GetObjectCommand({ Bucket: "praxis", Key: `site-a/${key}` }));
    const encrypted = join(dir, "object.age");
    await writeFile(encrypted, await object.Body!.transformToByteArray());
    const identity = join(dir, "link-key.txt");
    await writeFile(identity, `${decodeURIComponent(new URL(d!.link).hash.replace(/^#k=/, ""))}\n`);
    const { stdout } = await run("age", ["-d", "-i", identity, encrypted]);
    expect(stdout).toBe("%PDF-1.7 Befund Weber");
  });

  it("a second home on the same backend is a second node: it sees the same deliveries", async () => {
    const init = await node("b", ["init", "--join", join(dir, "a")]);
    expect(init.code, init.stderr).toBe(0);
    const fromA = JSON.parse((await node("a", ["list", "deliveries", "--json"])).stdout) as { id: string }[];
    const fromB = JSON.parse((await node("b", ["list", "deliveries", "--json"])).stdout) as { id: string }[];
    expect(fromB.map((x) => x.id)).toEqual(fromA.map((x) => x.id));
    expect(fromB).toHaveLength(1);
  });

  it("PRAXMAIL_DATABASE and PRAXMAIL_BLOBS choose the backend over config.json, and a wrong password is a precise error without it", async () => {
    // A node of the practice whose config.json names no shared backend.
    const init = await node("c", ["init", "--join", join(dir, "a")]);
    expect(init.code, init.stderr).toBe(0);
    const config = JSON.parse(await readFile(join(dir, "c", "config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(join(dir, "c", "config.json"), JSON.stringify({ ...config, shared: null }), { mode: 0o600 });
    expect((await node("c", ["list", "deliveries", "--json"])).stdout.trim()).toBe("[]");
    const viaEnv = await node("c", ["list", "deliveries", "--json"], { PRAXMAIL_DATABASE: database, PRAXMAIL_BLOBS: "s3://praxis/site-a" });
    expect(viaEnv.code, viaEnv.stderr).toBe(0);
    expect(JSON.parse(viaEnv.stdout)).toHaveLength(1);
    const wrong = new URL(database);
    wrong.password = "not-the-password";
    const refused = await node("c", ["list", "deliveries"], { PRAXMAIL_DATABASE: wrong.href, PRAXMAIL_BLOBS: "s3://praxis/site-a" });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/cannot open the shared backend at 127\.0\.0\.1:\d+\/praxis: password authentication failed/);
    expect(refused.stderr).not.toContain("not-the-password");
    const half = await node("c", ["list", "deliveries"], { PRAXMAIL_DATABASE: database });
    expect(half.code).toBe(1);
    expect(half.stderr).toContain("the shared backend needs both a database and a bucket");
  });

  it("init refuses half a shared backend and URLs of the wrong kind", async () => {
    const half = await node("d", ["init", ...PRACTICE, "--database", database]);
    expect(half.code).toBe(2);
    expect(half.stderr).toContain("--database and --blobs go together");
    const http = await node("d", ["init", ...PRACTICE, "--database", "http://db.example/x", "--blobs", "s3://praxis/x"]);
    expect(http.code).toBe(1);
    expect(http.stderr).toContain("the database must be a postgres://user:password@host:port/database URL");
    const bucket = await node("d", ["init", ...PRACTICE, "--database", database, "--blobs", "https://praxis/x"]);
    expect(bucket.code).toBe(1);
    expect(bucket.stderr).toContain('the blobs must be an s3://bucket/prefix URL, not "https://praxis/x"');
    expect(existsSync(join(dir, "d", "config.json"))).toBe(false);
  });
});

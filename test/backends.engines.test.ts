// The real engines the shared backend runs on (issue 14): the test setup's own PostgreSQL
// cluster and Swift S3 endpoint start, speak the protocols the shared backend uses, and stop
// without leaving a process behind.
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, tempDir } from "./helpers/cli.js";
import { postgresBin, startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { hasSwift, startS3, type TestS3 } from "./helpers/s3.js";
import { needInstalled } from "./helpers/tools.js";

const MiB = 1024 * 1024;
const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** @returns Whether a pid is a live (not zombie) process. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.runIf(needInstalled("PostgreSQL 15+", postgresBin() !== null, "apt-get install postgresql"))("the test PostgreSQL cluster", () => {
  let dir: string;
  let pg: TestPostgres;
  beforeAll(async () => {
    dir = await tempDir("praxmail-pg-");
    pg = await startPostgres(`${dir}/pg`);
  });
  afterAll(async () => {
    await pg.stop();
    await cleanup(dir);
  });

  it("is PostgreSQL 15 or newer and commits or rolls back a transaction as a whole", async () => {
    expect(pg.version).toBeGreaterThanOrEqual(15);
    const sql = postgres(pg.url, { max: 2, onnotice: () => undefined });
    try {
      await sql`CREATE TABLE t (id int PRIMARY KEY, body text NOT NULL)`;
      await sql.begin(async (tx) => {
        await tx`INSERT INTO t VALUES (1, 'kept')`;
      });
      await expect(
        sql.begin(async (tx) => {
          await tx`INSERT INTO t VALUES (2, 'rolled back')`;
          await tx`INSERT INTO t VALUES (1, 'duplicate')`;
        }),
      ).rejects.toMatchObject({ code: "23505" });
      expect(await sql`SELECT id, body FROM t ORDER BY id`).toEqual([{ id: 1, body: "kept" }]);
    } finally {
      await sql.end();
    }
  });

  it("refuses a wrong password over TCP (scram-sha-256), and each database() is its own", async () => {
    const wrong = new URL(pg.url);
    wrong.password = "wrong";
    const bad = postgres(wrong.href, { max: 1, onnotice: () => undefined });
    await expect(bad`SELECT 1`).rejects.toMatchObject({ code: "28P01" });
    await bad.end();
    const other = postgres(await pg.database("other"), { max: 1, onnotice: () => undefined });
    try {
      expect(await other`SELECT count(*)::int AS n FROM pg_tables WHERE tablename = 't'`).toEqual([{ n: 0 }]);
    } finally {
      await other.end();
    }
  });
});

describe.runIf(needInstalled("OpenStack Swift", hasSwift(), "apt-get install swift-proxy swift-object swift-container swift-account python3-swift memcached"))("the test S3 endpoint", () => {
  let dir: string;
  let s3: TestS3;
  beforeAll(async () => {
    dir = await tempDir("praxmail-s3-");
    s3 = await startS3(dir);
  });
  afterAll(async () => {
    await s3.stop();
    await cleanup(dir);
  });

  it("streams a multipart upload in and a ranged read out, byte for byte", async () => {
    const client = s3.client();
    const bucket = await s3.bucket("blobs-multipart");
    const body = randomBytes(12 * MiB);
    // 5 MiB is S3's smallest part: three parts, streamed from a Readable of unknown length.
    await new Upload({ client, params: { Bucket: bucket, Key: "a/b.age", Body: Readable.from([body.subarray(0, 7 * MiB), body.subarray(7 * MiB)]) }, partSize: 5 * MiB, queueSize: 2 }).done();
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: "a/b.age" }));
    expect(head.ContentLength).toBe(body.length);
    expect(head.ETag).toMatch(/-3"$/);
    const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: "a/b.age" }));
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(body));
    const range = await client.send(new GetObjectCommand({ Bucket: bucket, Key: "a/b.age", Range: `bytes=${6 * MiB}-${6 * MiB + 99}` }));
    expect(Buffer.from(await range.Body!.transformToByteArray())).toEqual(body.subarray(6 * MiB, 6 * MiB + 100));
  });

  it("takes a streamed single PUT, lists by prefix, deletes in a batch, and answers NoSuchKey after", async () => {
    const client = s3.client();
    const bucket = await s3.bucket("blobs-batch");
    const body = randomBytes(MiB + 17);
    for (const key of ["x/1", "x/2", "y/3"]) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Readable.from([body]), ContentLength: body.length }));
    }
    const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "x/" }));
    expect(listed.Contents?.map((o) => o.Key)).toEqual(["x/1", "x/2"]);
    const deleted = await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: "x/1" }, { Key: "x/2" }] } }));
    expect(deleted.Errors ?? []).toEqual([]);
    await expect(client.send(new GetObjectCommand({ Bucket: bucket, Key: "x/1" }))).rejects.toMatchObject({ name: "NoSuchKey" });
    const left = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
    expect(left.Contents?.map((o) => o.Key)).toEqual(["y/3"]);
  });

  it("refuses a wrong secret with SignatureDoesNotMatch", async () => {
    const bucket = await s3.bucket("blobs-auth");
    const wrong = s3.client({ accessKeyId: s3.accessKeyId, secretAccessKey: "wrong" });
    await expect(wrong.send(new PutObjectCommand({ Bucket: bucket, Key: "k", Body: "x" }))).rejects.toMatchObject({ name: "SignatureDoesNotMatch" });
    wrong.destroy();
  });

  it("stops without leaving a process behind", async () => {
    const other = await startS3(`${dir}/second`);
    const pids = other.pids();
    expect(pids.length).toBeGreaterThan(0);
    expect(pids.every(alive)).toBe(true);
    await other.stop();
    expect(pids.filter(alive)).toEqual([]);
  });
});

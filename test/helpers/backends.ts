// The two backends that the store-level and core tests run on (issue 14): the embedded one
// (SQLite and files under home) and the shared one (PostgreSQL and S3) on the test setup's own
// engines. describeBackends runs a suite once on each. The engines start once per test file,
// on first use; every location a test opens gets a database and a blob prefix of its own.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  UploadPartCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect } from "vitest";
import { openSharedStore, openStore, type Store } from "../../src/store/index.js";
import { cleanup, tempDir, walk } from "./cli.js";
import { postgresBin, startPostgres, type TestPostgres } from "./postgres.js";
import { hasSwift, startS3, type TestS3 } from "./s3.js";
import { needInstalled } from "./tools.js";

const run = promisify(execFile);

/** A piece of what a backend holds at rest, named for messages. */
export interface AtRest {
  readonly name: string;
  readonly bytes: Buffer;
}

/** One backend, as a suite of {@link describeBackends} sees it. */
export interface Backend {
  readonly name: "embedded" | "shared";
  /**
   * Opens the store of a location: a folder (a home, for the core), which the embedded
   * backend keeps its data in and the shared one names a database and blob prefix by.
   * Opened twice with one location, it gives two handles on the same data, as two
   * processes (or nodes) would have.
   *
   * @param where - An existing folder.
   * @returns The store.
   */
  readonly open: (where: string) => Promise<Store>;
  /**
   * Leaves an unfinished write behind, as a process that died in the middle of one does:
   * a temp file under blobs/tmp; a multipart upload with one part, never completed.
   *
   * @param where - A location opened before.
   */
  readonly abandonWrite: (where: string) => Promise<void>;
  /**
   * Makes the cleanup of the write in progress fail, as a disk or bucket that fails at the
   * wrong moment. Once the write has stored data, a folder takes the place of its temp file
   * (removing that fails: EISDIR); its multipart upload, once it holds a part, is aborted
   * behind its back (aborting it again fails: NoSuchUpload). The write's data stream calls
   * it before it fails; the shared backend uploads parts of 8 MiB, so it must have sent more.
   *
   * @param where - The location of the store that writes.
   * @returns What the failed cleanup step reports (core's errorFields), to expect.
   */
  readonly spoilWriteCleanup: (where: string) => Promise<Record<string, unknown>>;
  /**
   * @param where - A location opened before.
   * @returns Everything the backend keeps at rest for it: every file under where, and for
   *   the shared backend also a data dump of its database and every object under its prefix.
   */
  readonly atRest: (where: string) => Promise<AtRest[]>;
}

/** The running engines of one test file, and the database and prefix of each location. */
interface Engines {
  readonly dir: string;
  readonly pg: TestPostgres;
  readonly s3: TestS3;
  readonly client: S3Client;
  readonly bucket: string;
  readonly locations: Map<string, { url: string; prefix: string }>;
}

let engines: Promise<Engines> | undefined;
let stopRegistered = false;
let installed: boolean | undefined;

/** @returns Whether both engines are installed; throws if not and PRAXMAIL_REQUIRE_E2E=1. */
export function sharedEnginesInstalled(): boolean {
  installed ??=
    needInstalled("PostgreSQL 15+", postgresBin() !== null, "apt-get install postgresql") &&
    needInstalled("OpenStack Swift", hasSwift(), "apt-get install swift-proxy swift-object swift-container swift-account python3-swift memcached");
  return installed;
}

async function startEngines(): Promise<Engines> {
  const dir = await tempDir("praxmail-be-");
  const [pg, s3] = await Promise.allSettled([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
  const stop = async (): Promise<void> => {
    await Promise.allSettled([pg.status === "fulfilled" && pg.value.stop(), s3.status === "fulfilled" && s3.value.stop()]);
    await cleanup(dir);
  };
  if (pg.status === "rejected" || s3.status === "rejected") {
    await stop();
    throw new Error("the test engines did not start", { cause: pg.status === "rejected" ? pg.reason : (s3 as PromiseRejectedResult).reason });
  }
  try {
    const bucket = await s3.value.bucket("praxmail-tests");
    return { dir, pg: pg.value, s3: s3.value, client: s3.value.client(), bucket, locations: new Map() };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function stopEngines(): Promise<void> {
  const running = engines;
  engines = undefined;
  if (!running) return;
  const e = await running.catch(() => undefined);
  if (!e) return;
  e.client.destroy();
  await Promise.all([e.pg.stop(), e.s3.stop()]);
  await cleanup(e.dir);
}

const embedded: Backend = {
  name: "embedded",
  open: (where) => Promise.resolve(openStore(where)),
  async abandonWrite(where) {
    const tmp = join(where, "blobs", "tmp");
    await mkdir(tmp, { recursive: true, mode: 0o700 });
    await writeFile(join(tmp, `${randomBytes(16).toString("hex")}.partial`), randomBytes(1000));
  },
  async spoilWriteCleanup(where) {
    const tmp = join(where, "blobs", "tmp");
    const [partial] = await readdir(tmp);
    if (partial === undefined) throw new Error(`no write in progress under ${tmp}`);
    await rm(join(tmp, partial));
    await mkdir(join(tmp, partial));
    return { name: "SystemError", code: "ERR_FS_EISDIR", message: expect.stringContaining("is a directory") as unknown };
  },
  async atRest(where) {
    return Promise.all((await walk(where)).map(async (f) => ({ name: f, bytes: await readFile(f) })));
  },
};

/** @returns The engines, once running, and the location's database and prefix. */
async function locate(where: string): Promise<Engines & { url: string; prefix: string }> {
  if (!engines) throw new Error("the test engines are not running (describeBackends starts them)");
  const e = await engines;
  let at = e.locations.get(where);
  if (!at) {
    const n = e.locations.size;
    at = { url: await e.pg.database(`loc${n}`), prefix: `loc${n}/` };
    e.locations.set(where, at);
  }
  return { ...e, ...at };
}

const shared: Backend = {
  name: "shared",
  async open(where) {
    const { url, s3, bucket, prefix } = await locate(where);
    // The production door (PRAXMAIL_DATABASE, PRAXMAIL_BLOBS and AWS_*), a client per store.
    return openSharedStore(url, `s3://${bucket}/${prefix}`, { endpoint: s3.endpoint, region: s3.region, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  },
  async abandonWrite(where) {
    const { client, bucket, prefix } = await locate(where);
    const name = randomBytes(16).toString("hex");
    const Key = `${prefix}blobs/${name.slice(0, 2)}/${name}.age`;
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }));
    await client.send(new UploadPartCommand({ Bucket: bucket, Key, UploadId, PartNumber: 1, Body: randomBytes(1000) }));
  },
  async spoilWriteCleanup(where) {
    const { client, bucket, prefix } = await locate(where);
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
      const { Uploads = [] } = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
      const [upload, ...more] = Uploads;
      if (upload === undefined) continue;
      if (more.length > 0) throw new Error(`more than one write in progress under ${prefix}`);
      const at = { Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId };
      const { Parts = [] } = await client.send(new ListPartsCommand(at));
      if (Parts.length === 0) continue;
      await client.send(new AbortMultipartUploadCommand(at));
      return { name: "NoSuchUpload", code: null, message: expect.any(String) as unknown };
    }
    throw new Error(`no multipart upload with a part under ${prefix} within 60 s`);
  },
  async atRest(where) {
    const { url, client, bucket, prefix } = await locate(where);
    const dump = await run(join(postgresBin() ?? "", "pg_dump"), ["--data-only", "--no-owner", `--dbname=${url}`], { maxBuffer: 256 << 20, encoding: "buffer" });
    const out: AtRest[] = [...(await embedded.atRest(where)), { name: "pg_dump", bytes: dump.stdout }];
    let token: string | undefined;
    do {
      const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of r.Contents ?? []) {
        const body = await client.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key }));
        out.push({ name: `s3://${bucket}/${o.Key ?? ""}`, bytes: Buffer.from(await body.Body!.transformToByteArray()) });
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  },
};

/** What {@link describeBackends} adds to a suite's title on each backend (docs.test.ts reads it). */
export const ON_BACKEND = {
  embedded: "on the embedded backend (SQLite + files)",
  shared: "on the shared backend on real engines (PostgreSQL + S3)",
} as const;

/**
 * Runs a suite once on the embedded backend and once on the shared one (PostgreSQL + S3).
 * The shared run is skipped, with a printed reason, only when the engines are not installed;
 * with PRAXMAIL_REQUIRE_E2E=1 (CI) that fails instead. Call it at the top level of a test
 * file: the engines start on the first shared suite that runs and stop after the file.
 *
 * @param title - The suite's title; each run adds ", " and its {@link ON_BACKEND} text.
 * @param suite - Declares the tests (describe, it, hooks) against a backend.
 */
export function describeBackends(title: string, suite: (backend: Backend) => void): void {
  describe(`${title}, ${ON_BACKEND.embedded}`, () => {
    suite(embedded);
  });
  const present = sharedEnginesInstalled();
  if (present && !stopRegistered) {
    stopRegistered = true;
    afterAll(stopEngines);
  }
  describe.runIf(present)(`${title}, ${ON_BACKEND.shared}`, () => {
    beforeAll(async () => {
      engines ??= startEngines();
      await engines;
    });
    suite(shared);
  });
}

// backup and restore of a home on the shared backend (PostgreSQL and S3), on real engines:
// the same encrypted format as the embedded backend's (rows written into an SQLite database,
// blobs streamed out of the bucket), restored into an empty shared backend only.
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import Database from "better-sqlite3";
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import {
  bindInviteSession,
  createDelivery,
  createInvite,
  loadConfig,
  markSent,
  markUsedInvites,
  redeemInvite,
  revokeDelivery,
  setSecuPassRecipient,
  type Context,
} from "../src/core/index.js";
import { decryptStream, readIdentityFile } from "../src/crypto/index.js";
import { fileStream, openSharedStore, readManifest, type Store, type TableRow } from "../src/store/index.js";
import { cleanup, initHome, praxmail, practiceIdentityOf, tempDir, walk, type Run } from "./helpers/cli.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { startS3, type TestS3 } from "./helpers/s3.js";
import { newKey } from "./helpers/patient.js";
import { collect } from "./helpers/store.js";
import { readAll } from "./helpers/streams.js";

import { sharedEnginesInstalled } from "./helpers/backends.js";

const INVITED = "berta@patient.example";

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** Rows of a table in a stable order, for comparing two stores. */
function sorted(rows: readonly TableRow[]): string[] {
  return rows.map((r) => JSON.stringify(Object.keys(r).sort().map((k) => [k, r[k] instanceof Uint8Array ? Buffer.from(r[k]).toString("hex") : r[k]]))).sort();
}

describe.runIf(
  sharedEnginesInstalled(),
)("backup and restore on the shared backend", () => {
  let dir: string;
  let home: string;
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  let client: S3Client;
  let env: Record<string, string>;
  let database: string;
  let identityFile: string;
  let inviteId: string;

  const shared = (db: string, blobs: string): Promise<Store> =>
    openSharedStore(db, blobs, { endpoint: s3!.endpoint, region: s3!.region, credentials: { accessKeyId: s3!.accessKeyId, secretAccessKey: s3!.secretAccessKey } });
  const objects = async (bucket: string, prefix: string): Promise<Map<string, string>> => {
    const out = new Map<string, string>();
    const list = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
    for (const o of list.Contents ?? []) {
      const body = await client.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key }));
      out.set(o.Key!.slice(prefix.length), sha(await body.Body!.transformToByteArray()));
    }
    return out;
  };
  // The blobs among them; the invite marks beside them are not blobs (src/store/s3/blobs.ts).
  const blobsIn = async (bucket: string, prefix: string): Promise<Map<string, string>> => new Map([...(await objects(bucket, prefix))].filter(([key]) => key.startsWith("blobs/")));
  const tables = async (store: Store): Promise<Map<string, string[]>> =>
    store.snapshot(async (tx) => {
      const out = new Map<string, string[]>();
      for (const t of (await tx.tables()).keys()) out.set(t, sorted(await collect(tx.tableRows(t))));
      return out;
    });
  const rowsOf = async (db: string, blobs: string): Promise<Map<string, string[]>> => {
    const s = await shared(db, blobs);
    try {
      return await tables(s);
    } finally {
      await s.close();
    }
  };
  const run = (args: readonly string[], extra: Record<string, string> = {}): Promise<Run> => praxmail(args, { env: { ...env, ...extra } });
  const opener = async () => {
    const identity = await readIdentityFile(identityFile, () => Promise.resolve(undefined));
    return (sealed: ReadableStream<Uint8Array>) => decryptStream(sealed, [identity]);
  };

  beforeAll(async () => {
    dir = await tempDir("praxmail-backup-shared-");
    [pg, s3] = await Promise.all([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
    client = s3.client();
    for (const b of ["praxis", "zweite"]) await s3.bucket(b);
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint };

    // An embedded home with an invited (so invite-approved) patient and deliveries, moved to the shared backend.
    home = join(dir, "home");
    await initHome(home, ["--recipient-type", "x25519"]);
    identityFile = join(home, "practice-identity.txt");
    const ctx: Context = await openContext({ home });
    try {
      const invite = await createInvite(ctx, INVITED, await practiceIdentityOf(home));
      inviteId = invite.id;
      const key = await newKey(INVITED, "Sonnenblume-Leuchtturm-42");
      await redeemInvite(ctx, invite.id, INVITED, invite.code, key);
      await bindInviteSession(ctx, INVITED, "sitzung-1");
      await setSecuPassRecipient(ctx, INVITED, key.recipient, "sitzung-1");
      for (let i = 0; i < 12; i++) {
        const data = randomBytes(3000 + i * 500);
        const d = await createDelivery(ctx, {
          recipient: i % 2 === 0 ? INVITED : `patient${String(i)}@example.org`,
          level: (i % 4) + 1,
          message: i % 4 === 3 ? "Ihr Befund" : null,
          files: [{ name: `befund-${String(i)}.pdf`, open: () => Readable.toWeb(Readable.from([data])) as ReadableStream<Uint8Array> }],
        });
        await markSent(ctx, [d.id]);
        if (i === 5) await revokeDelivery(ctx, d.id);
      }
    } finally {
      await ctx.store.close();
    }
    database = await pg.database("praxis");
    const moved = await run(["migrate", "--home", home, "--database", database, "--blobs", "s3://praxis/a"]);
    expect(moved.code, moved.stderr).toBe(0);
  }, 240_000);
  afterAll(async () => {
    client.destroy();
    await Promise.all([pg?.stop(), s3?.stop()]);
    await cleanup(dir);
  });

  it("backs up a shared home in the embedded format: the rows of PostgreSQL in the sealed database, the blobs of the bucket byte for byte", async () => {
    const bk = join(dir, "backup");
    const r = await run(["backup", bk, "--home", home, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const inBucket = await blobsIn("praxis", "a/");
    expect(JSON.parse(r.stdout)).toMatchObject({ counts: { deliveries: 12, patients: 1, blobs: inBucket.size }, auditIntact: true });
    const m = await readManifest(bk, await opener());
    expect(m.files.map((f) => f.path)).toEqual(["portal-signing.key", "config.json"]);
    expect((await walk(bk)).map((f) => f.slice(bk.length + 1)).sort()).toEqual(
      ["backup.json", "config.json.age", "manifest.age", "portal-signing.key.age", "praxmail.db.age", ...inBucket.keys()].sort(),
    );
    expect(new Map(await Promise.all(m.blobs.map(async (b) => [b.path, sha(await readFile(join(bk, b.path)))] as const)))).toEqual(inBucket);
    for (const b of m.blobs) expect(b.sha256).toBe(inBucket.get(b.path));
    // Nothing of the snapshot was left in home.
    expect((await readdir(home)).filter((n) => n.startsWith("."))).toEqual([]);

    // The sealed database holds every row PostgreSQL held when the backup was taken: all but the backup's own audit row.
    const plainDb = join(dir, "backup.db");
    await writeFile(plainDb, await readAll(await (await opener())(fileStream(join(bk, "praxmail.db.age")))));
    expect(sha(await readFile(plainDb))).toBe(m.database.sha256);
    const db = new Database(plainDb, { readonly: true });
    const inBackup = new Map(
      (db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").pluck().all() as string[]).map((t) => [t, sorted(db.prepare(`SELECT * FROM ${t}`).all() as TableRow[])]),
    );
    db.close();
    const live = await rowsOf(database, "s3://praxis/a");
    expect([...inBackup.keys()].sort()).toEqual([...live.keys()].sort());
    for (const [t, rows] of live) {
      if (t === "audit") expect(inBackup.get(t)).toEqual(rows.filter((row) => !row.includes('["action","backup"]')));
      else expect(inBackup.get(t), t).toEqual(rows);
    }
  });

  it("restores into an empty shared backend: the same rows and blobs, the audit chain verifies, and the invite marks are set again", async () => {
    const target = await pg!.database("zweite");
    const restored = join(dir, "restored");
    const into = { PRAXMAIL_DATABASE: target, PRAXMAIL_BLOBS: "s3://zweite/r" };
    const r = await run(["restore", join(dir, "backup"), "--home", restored, "--identity", identityFile, "--json"], into);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ home: restored, counts: { deliveries: 12 } });
    // Home holds the files, not the rows or blobs.
    expect((await readdir(restored)).filter((n) => !n.startsWith("invite-approvals")).sort()).toEqual(["config.json", "portal-signing.key"]);
    expect(existsSync(join(restored, "praxmail.db"))).toBe(false);

    expect(await objects("zweite", "r/")).toEqual(await objects("praxis", "a/"));
    const [before, after] = [await rowsOf(database, "s3://praxis/a"), await rowsOf(target, "s3://zweite/r")];
    for (const [t, rows] of before) {
      if (t === "audit") expect(after.get(t)!.filter((row) => !row.includes('["action","restore"]'))).toEqual(rows.filter((row) => !row.includes('["action","backup"]')));
      else expect(after.get(t), t).toEqual(rows);
    }
    const verify = await run(["audit", "--verify", "--home", restored], into);
    expect(verify.code, verify.stderr).toBe(0);
    const audit = JSON.parse((await run(["audit", "--json", "--home", restored], into)).stdout) as { action: string }[];
    expect(audit.at(-1)!.action).toBe("restore");
    expect((await run(["list", "deliveries", "--json", "--home", restored], into)).stdout).toBe((await run(["list", "deliveries", "--json", "--home", home])).stdout);

    // The invited patient's invite is marked as used in the restored home: nothing left to mark.
    const store = await shared(target, "s3://zweite/r");
    try {
      const ctx: Context = { home: restored, config: loadConfig(restored), store, notifier: { send: () => Promise.resolve() }, actor: "test", now: () => new Date() };
      const p = await store.records.patient(INVITED);
      expect(p).toMatchObject({ status: "approved", inviteId });
      expect(JSON.parse(p!.approval!)).toMatchObject({ by: "invite", inviteId });
      expect(await markUsedInvites(ctx)).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("refuses a shared backend that is not empty, rows or blobs, and leaves home and backend as they were", async () => {
    const bk = join(dir, "backup");
    // Without PRAXMAIL_DATABASE: the restored config.json names the live backend, which holds the practice.
    const live = await rowsOf(database, "s3://praxis/a");
    const first = join(dir, "again-1");
    const r = await run(["restore", bk, "--home", first, "--identity", identityFile]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `praxmail: error: the shared backend that the restored config.json (or PRAXMAIL_DATABASE and PRAXMAIL_BLOBS) names is not empty: rows in ${[...live].filter(([, rows]) => rows.length > 0).map(([t]) => t).join(", ")}, ${String((await blobsIn("praxis", "a/")).size)} blob(s)\n` +
        "praxmail: hint: restore into an empty database and bucket prefix (set PRAXMAIL_DATABASE and PRAXMAIL_BLOBS to them); restore never overwrites\n",
    );
    expect(await readdir(first).catch(() => [])).toEqual([]);
    expect(await rowsOf(database, "s3://praxis/a")).toEqual(live);

    // An empty database, but a bucket prefix with blobs in it.
    const empty = await pg!.database("leer");
    const second = join(dir, "again-2");
    const b = await run(["restore", bk, "--home", second, "--identity", identityFile], { PRAXMAIL_DATABASE: empty, PRAXMAIL_BLOBS: "s3://praxis/a" });
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/^praxmail: error: the shared backend that .* names is not empty: \d+ blob\(s\)\n/);
    expect(await readdir(second).catch(() => [])).toEqual([]);
    expect([...(await rowsOf(empty, "s3://praxis/a")).values()].every((rows) => rows.length === 0)).toBe(true);
  });
});

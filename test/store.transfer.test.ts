// src/store/transfer.ts on its own: copyBlob checks what the target gives back, and copyRows
// refuses two schemas that differ. Real embedded stores; the one stand-in is a target whose
// reads give other bytes than it was given (a bucket that does not keep what it stores).
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { TransferError, copyBlob, copyRows, openStore, type BlobStore, type Store } from "../src/store/index.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { readAll, sha256, streamOf } from "./helpers/streams.js";

let dir: string;
let source: Store;
let target: Store;
beforeEach(async () => {
  dir = await tempDir();
  for (const d of ["a", "b"]) await mkdir(join(dir, d));
  source = openStore(join(dir, "a"));
  target = openStore(join(dir, "b"));
});
afterEach(async () => {
  await source.close();
  await target.close();
  await cleanup(dir);
});

describe("copyBlob", () => {
  it("copies a blob under its key and reports its size and SHA-256", async () => {
    const data = new Uint8Array(300_000).map((_, i) => i % 251);
    const key = await source.blobs.write(streamOf(data));
    expect(await copyBlob(source.blobs, target.blobs, key, false)).toEqual({ key, size: data.length, sha256: sha256(data), present: false });
    expect(sha256(await readAll(target.blobs.read(key)))).toBe(sha256(data));
    // Run again with the blob there: compared, not written.
    expect(await copyBlob(source.blobs, target.blobs, key, true)).toMatchObject({ present: true, sha256: sha256(data) });
  });

  it("fails when the target reads back other bytes than it was given, and when it holds other bytes under the key", async () => {
    const key = await source.blobs.write(streamOf(new Uint8Array([1, 2, 3])));
    const lossy: BlobStore = { ...target.blobs, put: (k, d) => target.blobs.put(k, d), read: () => streamOf(new Uint8Array([1, 2, 4])) };
    const e = await copyBlob(source.blobs, lossy, key, false).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TransferError);
    expect(e).toMatchObject({ code: "mismatch", message: `${key} reads back from the target with another size or SHA-256 than it was written with` });

    await target.blobs.put(key, streamOf(new Uint8Array([9, 9])));
    await expect(copyBlob(source.blobs, target.blobs, key, true)).rejects.toMatchObject({ code: "foreign", message: `the target holds other bytes under ${key} than the source` });
    // The target's blob was not touched.
    expect([...(await readAll(target.blobs.read(key)))]).toEqual([9, 9]);
  });
});

describe("copyRows", () => {
  it("refuses two stores whose tables or columns differ, and copies nothing", async () => {
    await source.close();
    const db = new Database(join(dir, "a", "praxmail.db"));
    db.exec("ALTER TABLE invites ADD COLUMN extra TEXT");
    db.close();
    source = openStore(join(dir, "a"));
    await expect(source.snapshot((from) => target.transaction((to) => copyRows(from, to)))).rejects.toMatchObject({
      code: "schema",
      message: "the two stores' schemas differ in invites",
    });
  });
});

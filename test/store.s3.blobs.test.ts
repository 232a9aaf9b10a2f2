// The shared backend's blobs (src/store/s3/) on a real S3 server (Swift's s3api).
import { createHash, randomBytes } from "node:crypto";
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, UploadPartCommand, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3Blobs, parseBlobsUrl } from "../src/store/s3/blobs.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { hasSwift, startS3, type TestS3 } from "./helpers/s3.js";
import { needInstalled } from "./helpers/tools.js";

const MiB = 1024 * 1024;
const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** A stream of bytes in chunks of 1 MiB, failing after `failAfter` bytes if given. */
function chunks(bytes: Uint8Array, failAfter?: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(ctl) {
      if (failAfter !== undefined && at >= failAfter) {
        ctl.error(new Error("the encryption failed"));
        return;
      }
      if (at >= bytes.length) {
        ctl.close();
        return;
      }
      ctl.enqueue(bytes.subarray(at, at + MiB));
      at += MiB;
    },
  });
}

async function bytesOf(s: ReadableStream<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of s as unknown as AsyncIterable<Uint8Array>) parts.push(c);
  return Buffer.concat(parts);
}

describe("parseBlobsUrl", () => {
  it.each([
    ["s3://praxmail-blobs", { bucket: "praxmail-blobs", prefix: "" }],
    ["s3://praxmail-blobs/", { bucket: "praxmail-blobs", prefix: "" }],
    ["s3://praxmail-blobs/praxis-a", { bucket: "praxmail-blobs", prefix: "praxis-a/" }],
    ["s3://b.example/site/one/", { bucket: "b.example", prefix: "site/one/" }],
  ])("%s", (url, want) => {
    expect(parseBlobsUrl(url)).toEqual(want);
  });
  it.each(["https://bucket/x", "s3://", "s3://Upper/x", "s3://b/../x", "s3://bucket//x", "s3://bucket/a/./b"])("refuses %s", (url) => {
    expect(() => parseBlobsUrl(url)).toThrow(/s3:\/\/bucket\/prefix|prefix of/);
  });
});

describe.runIf(needInstalled("OpenStack Swift", hasSwift(), "apt-get install swift-proxy swift-object swift-container swift-account python3-swift memcached"))("S3 blobs", () => {
  let dir: string;
  let s3: TestS3;
  let client: S3Client;
  let bucket: string;
  beforeAll(async () => {
    dir = await tempDir("praxmail-s3b-");
    s3 = await startS3(dir);
    client = s3.client();
    bucket = await s3.bucket("praxmail-blobs");
  });
  afterAll(async () => {
    client.destroy();
    await s3.stop();
    await cleanup(dir);
  });

  it("a blob of several parts streams in and out byte for byte, under the embedded backend's key", async () => {
    const blobs = new S3Blobs(client, { bucket, prefix: "roundtrip/" });
    const data = randomBytes(19 * MiB + 5);
    const key = await blobs.write(chunks(data));
    expect(key).toMatch(/^blobs\/[0-9a-f]{2}\/[0-9a-f]{32}\.age$/);
    expect(await blobs.size(key)).toBe(data.length);
    expect(sha256(await bytesOf(blobs.read(key)))).toBe(sha256(data));
    expect((await blobs.scan()).map((b) => [b.key, b.temp])).toEqual([[key, false]]);
  });

  it("a stream that fails midway leaves no object and no unfinished upload", async () => {
    const blobs = new S3Blobs(client, { bucket, prefix: "failing/" });
    await expect(blobs.write(chunks(randomBytes(20 * MiB), 12 * MiB))).rejects.toThrow("the encryption failed");
    expect(await blobs.scan()).toEqual([]);
    const open = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: "failing/" }));
    expect(open.Uploads ?? []).toEqual([]);
  });

  it("remove deletes, ignores a missing key, and a removed blob's read errors", async () => {
    const blobs = new S3Blobs(client, { bucket, prefix: "remove/" });
    const a = await blobs.write(chunks(randomBytes(100)));
    const b = await blobs.write(chunks(randomBytes(100)));
    await blobs.remove([a, "blobs/00/00000000000000000000000000000000.age"]);
    await expect(bytesOf(blobs.read(a))).rejects.toMatchObject({ name: "NoSuchKey" });
    expect((await blobs.scan()).map((s) => s.key)).toEqual([b]);
  });

  it("scan finds the unfinished upload of a node that died, and removeScanned aborts it", async () => {
    const blobs = new S3Blobs(client, { bucket, prefix: "dead/" });
    const Key = "dead/blobs/ab/abababababababababababababababab.age";
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }));
    await client.send(new UploadPartCommand({ Bucket: bucket, Key, UploadId, PartNumber: 1, Body: randomBytes(5 * MiB) }));
    const found = await blobs.scan();
    expect(found).toEqual([{ key: `uploads/blobs/ab/abababababababababababababababab.age/${UploadId!}`, mtime: expect.any(Date) as Date, temp: true }]);
    await blobs.removeScanned(found[0]!.key);
    expect(await blobs.scan()).toEqual([]);
  });

  it("two prefixes in one bucket do not see each other's blobs", async () => {
    const a = new S3Blobs(client, { bucket, prefix: "site-a/" });
    const b = new S3Blobs(client, { bucket, prefix: "site-b/" });
    const key = await a.write(chunks(randomBytes(10)));
    expect(await b.scan()).toEqual([]);
    await expect(b.size(key)).rejects.toMatchObject({ name: "NotFound" });
  });

  it("refuses keys that are not blob keys, before any request", async () => {
    const blobs = new S3Blobs(client, { bucket, prefix: "keys/" });
    for (const key of ["blobs/../../x", "../blobs/ab/x.age", "blobs/ab/ABABABABABABABABABABABABABABABAB.age", "uploads/x"]) {
      expect(() => blobs.read(key)).toThrow("invalid blob key");
      await expect(blobs.size(key)).rejects.toThrow("invalid blob key");
    }
    await expect(blobs.removeScanned("uploads/blobs/../x/y")).rejects.toThrow("invalid blob key");
  });
});

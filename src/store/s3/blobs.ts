// The blobs of the shared backend: objects in an S3-compatible bucket (AWS, Ceph, MinIO,
// Swift's s3api), under a prefix. A blob streams in as a multipart upload while it is being
// encrypted and streams out with ranged reads, so memory stays flat in the file's size. Keys
// are the embedded backend's (`blobs/3f/3f9a….age`), so a home moves over unchanged.
import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  DeleteObjectsCommand,
  HeadBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { MARKER_NAME, newBlobKey } from "../blobs.js";
import { cleanUpAfter } from "../cleanup.js";
import type { BlobStore, ScannedBlob } from "../types.js";

/** A blob's key, as the embedded backend names it. */
const BLOB_KEY = /^blobs\/[0-9a-f]{2}\/[0-9a-f]{32}\.age$/;
/** The key {@link S3Blobs.scan} gives an unfinished multipart upload: its object key and upload id. */
const UPLOAD_KEY = /^uploads\/(blobs\/[0-9a-f]{2}\/[0-9a-f]{32}\.age)\/([^/]+)$/;
/** Part size of a multipart upload: 8 MiB, two in flight, so a write holds about 16 MiB. */
const PART_SIZE = 8 << 20;
const QUEUE = 2;
/** DeleteObjects takes at most 1,000 keys. */
const DELETE_BATCH = 1000;

/** Where the blobs live. */
export interface S3Location {
  readonly bucket: string;
  /** A prefix for every object, "" or ending in "/". */
  readonly prefix: string;
}

/**
 * @param url - `s3://bucket/prefix` (the prefix may be empty).
 * @returns The bucket and prefix.
 * @throws If the URL is not of that form.
 */
export function parseBlobsUrl(url: string): S3Location {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  const [, bucket, prefix = ""] = m ?? [];
  if (bucket === undefined) throw new Error(`not an s3://bucket/prefix URL: ${url}`);
  if (prefix.split("/").some((p, i, all) => p === "." || p === ".." || (p === "" && i < all.length - 1))) {
    throw new Error(`the prefix of ${url} has an empty, "." or ".." segment`);
  }
  return { bucket, prefix: prefix === "" || prefix.endsWith("/") ? prefix : `${prefix}/` };
}

/** Blobs as objects in one bucket under one prefix. */
export class S3Blobs implements BlobStore {
  /** Whether the server honours If-None-Match on PUT (Swift's s3api refuses it). */
  private conditionalPut = true;

  constructor(
    private readonly s3: S3Client,
    private readonly at: S3Location,
  ) {}

  private object(key: string): string {
    if (!BLOB_KEY.test(key)) throw new Error("invalid blob key");
    return this.at.prefix + key;
  }

  /**
   * Streams data into a new object by multipart upload.
   *
   * @param data - The bytes, usually age ciphertext.
   * @returns The blob's key, once the upload is complete (durable in the bucket).
   * @throws If the stream or the upload fails; the upload is aborted, no object is left
   *   (an abort that fails travels with the failure: cleanUpAfter).
   */
  async write(data: ReadableStream<Uint8Array>): Promise<string> {
    const key = newBlobKey();
    await this.put(key, data);
    return key;
  }

  /**
   * Streams data into the object of a given key by multipart upload.
   *
   * @param key - A blob key, e.g. from another store.
   * @param data - The bytes.
   * @throws If the key is not a blob key, or the stream or the upload fails; the upload is
   *   aborted, no object is left (an object that was there before stays as it was).
   */
  async put(key: string, data: ReadableStream<Uint8Array>): Promise<void> {
    const at = { Bucket: this.at.bucket, Key: this.object(key) };
    // lib-storage would abort the multipart upload itself, but an abort that fails then
    // replaces the failure the caller must hear: the upload is aborted here instead, as a
    // cleanup step. What a dead node leaves behind, scan() finds and gc aborts.
    const upload = new Upload({ client: this.s3, params: { ...at, Body: Readable.fromWeb(data) }, partSize: PART_SIZE, queueSize: QUEUE, leavePartsOnError: true });
    try {
      await upload.done();
    } catch (e) {
      const { uploadId } = upload;
      throw await cleanUpAfter(e, uploadId === undefined ? [] : [() => this.s3.send(new AbortMultipartUploadCommand({ ...at, UploadId: uploadId }))]);
    }
  }

  /**
   * @param key - A key returned by {@link write}.
   * @returns The object's bytes; a missing object errors the stream.
   */
  read(key: string): ReadableStream<Uint8Array> {
    const object = this.object(key);
    // A read cancelled before the object is open (a HEAD download) still closes its body.
    let opening: Promise<ReadableStreamDefaultReader<Uint8Array>> | undefined;
    const open = (): Promise<ReadableStreamDefaultReader<Uint8Array>> =>
      (opening ??= this.s3.send(new GetObjectCommand({ Bucket: this.at.bucket, Key: object })).then((r) => {
        if (!r.Body) throw new Error(`blob ${key} has no body`);
        return r.Body.transformToWebStream().getReader() as ReadableStreamDefaultReader<Uint8Array>;
      }));
    return new ReadableStream<Uint8Array>({
      start: async () => {
        await open();
      },
      pull: async (ctl) => {
        const { done, value } = await (await open()).read();
        if (done) ctl.close();
        else ctl.enqueue(value);
      },
      cancel: async (reason) => {
        const body = await open().catch(() => undefined);
        await body?.cancel(reason);
      },
    });
  }

  /**
   * @param key - A key returned by {@link write}.
   * @returns The object's size in bytes.
   * @throws The SDK's NotFound, with code `ENOENT`, if there is no such object.
   */
  async size(key: string): Promise<number> {
    try {
      const r = await this.s3.send(new HeadObjectCommand({ Bucket: this.at.bucket, Key: this.object(key) }));
      return r.ContentLength ?? 0;
    } catch (e) {
      // As a missing file says it: callers tell a missing blob from a failing bucket by code.
      if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) Object.assign(e as object, { code: "ENOENT" });
      throw e;
    }
  }

  /**
   * Deletes objects, 1,000 per request; missing ones are ignored.
   *
   * @param keys - Keys returned by {@link write}.
   * @throws If the bucket refuses any of them.
   */
  async remove(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH).map((k) => ({ Key: this.object(k) }));
      const r = await this.s3.send(new DeleteObjectsCommand({ Bucket: this.at.bucket, Delete: { Objects: batch, Quiet: true } }));
      const failed = (r.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
      if (failed.length) throw new Error(`the bucket refused to delete ${failed.length} blob(s): ${failed[0]?.Code ?? "?"} ${failed[0]?.Message ?? ""}`);
    }
  }

  /**
   * Lists every object under the prefix's blobs/ and every unfinished multipart upload
   * (an upload a node started and never completed or aborted, e.g. because it died).
   *
   * @returns Keys and times; unfinished uploads are flagged temp.
   */
  async scan(): Promise<ScannedBlob[]> {
    const out: ScannedBlob[] = [];
    const prefix = `${this.at.prefix}blobs/`;
    let token: string | undefined;
    do {
      const r = await this.s3.send(new ListObjectsV2Command({ Bucket: this.at.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of r.Contents ?? []) {
        if (o.Key) out.push({ key: o.Key.slice(this.at.prefix.length), mtime: o.LastModified ?? new Date(0), temp: false });
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    do {
      const r = await this.s3.send(new ListMultipartUploadsCommand({ Bucket: this.at.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: idMarker }));
      for (const u of r.Uploads ?? []) {
        if (u.Key && u.UploadId) out.push({ key: `uploads/${u.Key.slice(this.at.prefix.length)}/${u.UploadId}`, mtime: u.Initiated ?? new Date(0), temp: true });
      }
      [keyMarker, idMarker] = r.IsTruncated ? [r.NextKeyMarker, r.NextUploadIdMarker] : [undefined, undefined];
    } while (keyMarker);
    return out;
  }

  /**
   * Creates an empty object under the prefix unless one is there: HEAD, then a conditional
   * PUT (If-None-Match: *), which AWS, MinIO and Ceph honour. Swift's s3api (2.30) answers
   * that with 501 NotImplemented, so there the PUT goes without the condition, and two
   * racing calls may both return true. That is still safe for what markers guard: the race
   * is decided in the database (setSecuPassRecipient re-reads the patient in its write
   * transaction, so one of two racing requests commits); the marker only keeps a later
   * database rewrite from re-opening what was used, and by then it exists.
   *
   * @param name - A marker name.
   * @returns True if this call created it, false if it was there.
   */
  async mark(name: string): Promise<boolean> {
    if (!MARKER_NAME.test(name)) throw new Error("invalid marker name");
    const Key = this.at.prefix + name;
    const status = (e: unknown): number | undefined => (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    try {
      await this.s3.send(new HeadObjectCommand({ Bucket: this.at.bucket, Key }));
      return false;
    } catch (e) {
      if (status(e) !== 404) throw e;
    }
    const put = (IfNoneMatch?: string) => this.s3.send(new PutObjectCommand({ Bucket: this.at.bucket, Key, Body: new Uint8Array(0), ...(IfNoneMatch ? { IfNoneMatch } : {}) }));
    try {
      await (this.conditionalPut ? put("*") : put());
      return true;
    } catch (e) {
      if (status(e) === 412) return false;
      if (status(e) !== 501) throw e;
    }
    this.conditionalPut = false;
    await put();
    return true;
  }

  /** Checks that the bucket exists and these credentials reach it. */
  async ping(): Promise<void> {
    await this.s3.send(new HeadBucketCommand({ Bucket: this.at.bucket }));
  }

  /**
   * Removes an object or aborts an unfinished upload that {@link scan} found.
   *
   * @param key - A key from {@link scan}.
   */
  async removeScanned(key: string): Promise<void> {
    const [, object, uploadId] = UPLOAD_KEY.exec(key) ?? [];
    if (object !== undefined && uploadId !== undefined) {
      await this.s3.send(new AbortMultipartUploadCommand({ Bucket: this.at.bucket, Key: this.object(object), UploadId: uploadId }));
      return;
    }
    await this.remove([key]);
  }
}

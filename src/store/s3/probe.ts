// What `praxmail doctor` asks of the shared bucket: that this node may write an object under
// the prefix, read the same bytes back and delete it. The probe object lives beside blobs/,
// never in it, so gc's scan never sees one that a failed delete left behind.
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { S3Location } from "./blobs.js";

/** A step of the probe, in order. */
export type ProbeStep = "write" | "read" | "delete";

/** How the probe went. */
export type BucketProbe =
  | { readonly ok: true; readonly bytes: number; readonly ms: number }
  /** `code`: the S3 error code (NoSuchBucket, AccessDenied, …), an errno, or "mismatch" when the bytes read back differ. */
  | { readonly ok: false; readonly step: ProbeStep; readonly code: string; readonly key: string };

/** @returns The S3 error code, errno or error name of an SDK failure: never its message, which may echo a request. */
function codeOf(e: unknown): string {
  const err = e as { code?: unknown; Code?: unknown; name?: unknown };
  for (const c of [err.code, err.Code, err.name]) if (typeof c === "string" && c !== "" && c !== "Error") return c;
  return "unknown error";
}

/**
 * Writes, reads back and deletes one small object under the prefix.
 *
 * @param s3 - The client.
 * @param at - Bucket and prefix.
 * @param timeoutMs - How long each request may take.
 * @returns Ok with the time all three took, or the first step that failed and why. After a
 *   failed read the object is still deleted (best effort).
 */
export async function probeBucket(s3: S3Client, at: S3Location, timeoutMs: number): Promise<BucketProbe> {
  const key = `${at.prefix}doctor/probe-${randomBytes(8).toString("hex")}`;
  const body = randomBytes(32);
  const opts = (): { abortSignal: AbortSignal } => ({ abortSignal: AbortSignal.timeout(timeoutMs) });
  const started = performance.now();
  const failed = (step: ProbeStep, code: string): BucketProbe => ({ ok: false, step, code, key });
  try {
    await s3.send(new PutObjectCommand({ Bucket: at.bucket, Key: key, Body: body, ContentLength: body.length }), opts());
  } catch (e) {
    return failed("write", codeOf(e));
  }
  let read: BucketProbe | null = null;
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: at.bucket, Key: key }), opts());
    const back = Buffer.from((await r.Body?.transformToByteArray()) ?? []);
    if (!back.equals(body)) read = failed("read", "mismatch");
  } catch (e) {
    read = failed("read", codeOf(e));
  }
  try {
    await s3.send(new DeleteObjectCommand({ Bucket: at.bucket, Key: key }), opts());
  } catch (e) {
    return read ?? failed("delete", codeOf(e));
  }
  return read ?? { ok: true, bytes: body.length, ms: performance.now() - started };
}

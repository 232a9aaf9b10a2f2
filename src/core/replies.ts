// Secure replies, the second way: the patient's browser encrypts a message and files to
// the practice recipient; the server stores only the ciphertext; `praxmail receive`
// decrypts with the practice identity into a folder.
import { constants } from "node:fs";
import { mkdir, open, readFile, realpath, rm } from "node:fs/promises";
import { join, sep } from "node:path";
import { Readable } from "node:stream";
import { decryptBytes, decryptStream } from "../crypto/index.js";
import { writeStream, type ReplyRow } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { mustGetActivePatient } from "./patients.js";
import { newId } from "./tokens.js";

/** Bounds on one reply. */
export const REPLY_LIMITS = { partBytes: 100 * 1024 * 1024, parts: 21, messageBytes: 1024 * 1024 };

/** What the message part of a reply holds (inside its encryption). */
export interface ReplyMessage {
  readonly v: 1;
  readonly text: string;
  /** File names, in the order of the file parts. */
  readonly files: readonly string[];
}

/** A reply as `praxmail inbox` shows it. */
export interface ReplyView {
  readonly id: string;
  readonly from: string;
  readonly deliveryId: string | null;
  readonly status: ReplyRow["status"];
  readonly createdAt: string;
  readonly files: number;
  readonly bytes: number;
}

const AGE_MAGIC = new TextEncoder().encode("age-encryption.org/v1\n");

/**
 * Starts a reply from a logged-in patient.
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @param deliveryId - The delivery it answers, if any (must be the patient's).
 * @returns The reply id.
 * @throws {@link PraxmailError} `wrong-state` for a patient who may not reply (revoked, unknown).
 */
export function startReply(ctx: Context, email: string, deliveryId: string | null): string {
  const p = ctx.store.records.patient(email);
  if (!p || p.status === "revoked") throw new PraxmailError("wrong-state", "this account may not send replies");
  if (deliveryId !== null && ctx.store.records.delivery(deliveryId)?.recipient !== email) throw new PraxmailError("no-such-delivery", "no such delivery");
  const id = newId("r");
  const now = ctx.now();
  ctx.store.transaction(() => {
    stillOpen(ctx, email, null);
    ctx.store.accounts.insertReply({ id, email, deliveryId, status: "uploading", createdAt: now.toISOString(), receivedAt: null });
    ctx.store.audit({ actor: ctx.actor, action: "reply.start", subject: id, details: { from: email } }, now);
  });
  return id;
}

/**
 * Inside the transaction that changes a reply: the patient is not revoked, and the reply
 * (if given) is still being uploaded (a revocation deletes unfinished replies).
 *
 * @throws {@link PraxmailError} `wrong-state` otherwise.
 */
function stillOpen(ctx: Context, email: string, id: string | null): void {
  try {
    mustGetActivePatient(ctx, email);
  } catch {
    throw new PraxmailError("wrong-state", "this account may not send replies");
  }
  if (id !== null && ctx.store.accounts.reply(id)?.status !== "uploading") throw new PraxmailError("wrong-state", "reply is finished");
}

function own(ctx: Context, email: string, id: string): ReplyRow {
  const r = ctx.store.accounts.reply(id);
  if (r?.email !== email) throw new PraxmailError("no-such-delivery", "no such reply");
  return r;
}

/**
 * Stores one uploaded part while it streams in: it must be an age file, and no larger
 * than the limit (the upload is cut off there).
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @param id - The reply.
 * @param kind - The message (first) or a file.
 * @param body - The upload.
 * @param limit - Largest part in bytes.
 * @returns The stored size.
 * @throws {@link PraxmailError} `invalid-input` (not age, too large, too many parts) or `wrong-state`.
 */
export async function addReplyPart(ctx: Context, email: string, id: string, kind: "message" | "file", body: Readable, limit = REPLY_LIMITS.partBytes): Promise<number> {
  const r = own(ctx, email, id);
  if (r.status !== "uploading") throw new PraxmailError("wrong-state", "reply is finished");
  const parts = ctx.store.accounts.replyParts(id);
  if (parts.length >= REPLY_LIMITS.parts) throw new PraxmailError("invalid-input", "too many files in one reply");
  if ((parts.length === 0) !== (kind === "message")) throw new PraxmailError("invalid-input", "the message comes first, then the files");
  let size = 0;
  const checked = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctl) {
      const start = size;
      size += chunk.byteLength;
      if (size > limit) throw new PraxmailError("too-large", `upload is larger than ${limit} bytes`);
      for (let i = start; i < Math.min(size, AGE_MAGIC.length); i++) {
        if (chunk[i - start] !== AGE_MAGIC[i]) throw new PraxmailError("invalid-input", "upload is not an age file");
      }
      ctl.enqueue(chunk);
    },
    flush() {
      if (size < AGE_MAGIC.length) throw new PraxmailError("invalid-input", "upload is not an age file");
    },
  });
  const blob = await ctx.store.blobs.write((Readable.toWeb(body) as ReadableStream<Uint8Array>).pipeThrough(checked));
  try {
    ctx.store.transaction(() => {
      stillOpen(ctx, email, id);
      ctx.store.accounts.insertReplyPart({ replyId: id, position: parts.length, kind, size, blob });
    });
  } catch (e) {
    await ctx.store.blobs.remove([blob]);
    throw e;
  }
  return size;
}

/**
 * Finishes a reply and tells the practice (a neutral mail).
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @param id - The reply.
 * @throws {@link PraxmailError} `invalid-input` without a message part.
 */
export async function finishReply(ctx: Context, email: string, id: string): Promise<void> {
  const r = own(ctx, email, id);
  if (r.status !== "uploading") throw new PraxmailError("wrong-state", "reply is finished");
  if (ctx.store.accounts.replyParts(id).length === 0) throw new PraxmailError("invalid-input", "reply has no message");
  const now = ctx.now();
  ctx.store.transaction(() => {
    stillOpen(ctx, email, id);
    ctx.store.accounts.setReplyStatus(id, "new", null);
    ctx.store.audit({ actor: ctx.actor, action: "reply.finish", subject: id }, now);
  });
  await ctx.notifier.send({ kind: "reply", to: ctx.config.practiceEmail, replyId: id });
}

/**
 * @param ctx - The core context.
 * @returns Finished replies, oldest first.
 */
export function listReplies(ctx: Context): ReplyView[] {
  return ctx.store.accounts.replies().map((r) => {
    const parts = ctx.store.accounts.replyParts(r.id);
    return {
      id: r.id,
      from: r.email,
      deliveryId: r.deliveryId,
      status: r.status,
      createdAt: r.createdAt,
      files: parts.filter((p) => p.kind === "file").length,
      bytes: parts.reduce((n, p) => n + p.size, 0),
    };
  });
}

/**
 * Checks a file name from a reply before anything is written: a plain name, no folders.
 *
 * @param name - The name the patient's browser gave.
 * @returns The same name.
 * @throws {@link PraxmailError} `invalid-input` naming it.
 */
function safeName(name: string): string {
  // eslint-disable-next-line no-control-regex
  if (name === "" || name === "." || name === ".." || /[/\\\u0000-\u001f\u007f]/.test(name) || name.length > 255 || name === "message.txt") {
    throw new PraxmailError("invalid-input", `refusing the file name ${JSON.stringify(name)}: it would leave the folder or is not a plain name`);
  }
  return name;
}

/**
 * Decrypts a reply into a folder: `message.txt` and the files. Names are checked before
 * anything is written; existing files are never overwritten; on failure what was written
 * is removed.
 *
 * @param ctx - The core context.
 * @param id - The reply.
 * @param practiceIdentity - P's secret.
 * @param outDir - The folder (created if missing).
 * @returns The paths written.
 * @throws {@link PraxmailError} for an unknown reply, a bad name, or an existing file.
 */
export async function receiveReply(ctx: Context, id: string, practiceIdentity: string, outDir: string): Promise<string[]> {
  const r = ctx.store.accounts.reply(id);
  if (!r || r.status === "uploading") throw new PraxmailError("invalid-input", `no such reply ${JSON.stringify(id)}`, "run praxmail inbox");
  const parts = ctx.store.accounts.replyParts(id);
  const [messagePart, ...fileParts] = parts;
  if (messagePart?.kind !== "message") throw new Error("reply has no message part");
  let raw: { v?: unknown; text?: unknown; files?: unknown };
  try {
    const plain = await decryptBytes(await readFile(ctx.store.blobs.path(messagePart.blob)), [practiceIdentity]);
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain)) as typeof raw;
  } catch (e) {
    throw new PraxmailError("identity", `cannot open the reply: ${(e as Error).message}`, "is this the practice identity of this home?");
  }
  if (raw.v !== 1 || typeof raw.text !== "string" || !Array.isArray(raw.files) || raw.files.length !== fileParts.length) {
    throw new PraxmailError("invalid-input", "the reply's message part is malformed");
  }
  const message = { text: raw.text };
  const names = (raw.files as unknown[]).map((n) => safeName(String(n)));
  if (new Set(names).size !== names.length) throw new PraxmailError("invalid-input", "the reply names the same file twice");
  await mkdir(outDir, { recursive: true });
  const root = await realpath(outDir);
  const written: string[] = [];
  try {
    const create = async (name: string): Promise<import("node:fs/promises").FileHandle> => {
      const path = join(root, name);
      if (!path.startsWith(root + sep)) throw new PraxmailError("invalid-input", `refusing the file name ${JSON.stringify(name)}`);
      try {
        const fh = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
        written.push(path);
        return fh;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new PraxmailError("file", `${path} exists already`, "receive into an empty folder");
        throw e;
      }
    };
    const text = await create("message.txt");
    await text.writeFile(message.text);
    await text.close();
    for (const [i, part] of fileParts.entries()) {
      const fh = await create(names[i] ?? "");
      const plain = await decryptStream(ctx.store.blobs.read(part.blob), [practiceIdentity]);
      try {
        await writeStream(plain, fh);
      } finally {
        await fh.close();
      }
    }
  } catch (e) {
    for (const p of written) await rm(p, { force: true });
    throw e;
  }
  const now = ctx.now();
  ctx.store.transaction(() => {
    ctx.store.accounts.setReplyStatus(id, "received", now.toISOString());
    ctx.store.audit({ actor: ctx.actor, action: "reply.receive", subject: id, details: { files: fileParts.length } }, now);
  });
  return written;
}

/**
 * Removes replies whose upload never finished (gc).
 *
 * @param ctx - The core context.
 * @param before - Started before this time.
 * @returns How many.
 */
export async function dropUnfinishedReplies(ctx: Context, before: Date): Promise<number> {
  const stale = ctx.store.accounts.unfinishedReplies(before.toISOString());
  for (const r of stale) {
    const blobs = ctx.store.transaction(() => ctx.store.accounts.deleteReply(r.id));
    await ctx.store.blobs.remove(blobs);
  }
  return stale.length;
}

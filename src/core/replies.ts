// Secure replies, the second way: the patient's browser encrypts a message and files to
// the practice recipient; the server stores only the ciphertext; `praxmail receive`
// decrypts with the practice identity into a folder.
import { constants } from "node:fs";
import { mkdir, open, realpath, rm } from "node:fs/promises";
import { join, sep } from "node:path";
import { Readable } from "node:stream";
import { decryptBytes, decryptStream } from "../crypto/index.js";
import { writeStream, type PatientStatus, type ReplyRow, type StoreTx } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError, cleanUpAfter } from "./errors.js";
import { writeBlob } from "./meter.js";
import { newId } from "./tokens.js";
import { cleanFileName, uniqueFileName } from "./validate.js";

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
  /** The sender's account status now, or null when the account is gone. */
  readonly accountStatus: PatientStatus | null;
  readonly deliveryId: string | null;
  readonly status: ReplyRow["status"];
  readonly createdAt: string;
  readonly files: number;
  readonly bytes: number;
}

const AGE_MAGIC = new TextEncoder().encode("age-encryption.org/v1\n");

/** Why a patient may not reply: every status but `approved`. */
export type ReplyRefusal = Exclude<PatientStatus, "approved">;

/** A reply refused because the patient is not approved; `status` says which state it is in. */
export class ReplyRefusedError extends PraxmailError {
  /**
   * @param email - The patient.
   * @param status - The patient's status.
   */
  constructor(
    email: string,
    readonly status: ReplyRefusal,
  ) {
    super("wrong-state", `patient ${email} is ${status}: only approved patients may send replies`);
    this.name = "ReplyRefusedError";
  }
}

/**
 * Checks that a patient may send replies: only an approved account may, since only then has
 * the practice compared the safety code and knows who writes.
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @throws {@link ReplyRefusedError} for a pending or revoked patient, {@link PraxmailError}
 *   `no-such-patient` for an unknown one.
 */
export async function checkMayReply(ctx: Context, email: string): Promise<void> {
  await mayReply(ctx.store, email);
}

async function mayReply(rows: StoreTx, email: string): Promise<void> {
  const p = await rows.records.patient(email);
  if (!p) throw new PraxmailError("no-such-patient", "no such patient");
  if (p.status !== "approved") throw new ReplyRefusedError(p.email, p.status);
}

/**
 * Starts a reply from a logged-in, approved patient.
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @param deliveryId - The delivery it answers, if any (must be the patient's).
 * @returns The reply id.
 * @throws {@link ReplyRefusedError} for a patient who is not approved.
 */
export async function startReply(ctx: Context, email: string, deliveryId: string | null): Promise<string> {
  await checkMayReply(ctx, email);
  if (deliveryId !== null && (await ctx.store.records.delivery(deliveryId))?.recipient !== email) throw new PraxmailError("no-such-delivery", "no such delivery");
  const id = newId("r");
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    await stillOpen(tx, email, null);
    await tx.accounts.insertReply({ id, email, deliveryId, status: "uploading", createdAt: now.toISOString(), receivedAt: null });
    await tx.audit({ actor: ctx.actor, action: "reply.start", subject: id, details: { from: email } }, now);
  });
  return id;
}

/**
 * Inside the transaction that changes a reply: the patient is still approved (a revocation
 * or a Secu-Pass reset during an upload stops it), and the reply (if given) is still being
 * uploaded (a revocation deletes unfinished replies).
 *
 * @throws {@link ReplyRefusedError} or {@link PraxmailError} `wrong-state` otherwise.
 */
async function stillOpen(tx: StoreTx, email: string, id: string | null): Promise<void> {
  await mayReply(tx, email);
  if (id !== null && (await tx.accounts.reply(id))?.status !== "uploading") throw new PraxmailError("wrong-state", "reply is finished");
}

async function own(ctx: Context, email: string, id: string): Promise<ReplyRow> {
  const r = await ctx.store.accounts.reply(id);
  if (r?.email !== email) throw new PraxmailError("no-such-delivery", "no such reply");
  await checkMayReply(ctx, email);
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
 * @throws {@link PraxmailError} `invalid-input` (not age, too large, too many parts) or `wrong-state`;
 *   {@link ReplyRefusedError} for a patient who is no longer approved.
 */
export async function addReplyPart(ctx: Context, email: string, id: string, kind: "message" | "file", body: Readable, limit = REPLY_LIMITS.partBytes): Promise<number> {
  const r = await own(ctx, email, id);
  if (r.status !== "uploading") throw new PraxmailError("wrong-state", "reply is finished");
  const parts = await ctx.store.accounts.replyParts(id);
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
  const blob = await writeBlob(ctx, (Readable.toWeb(body) as ReadableStream<Uint8Array>).pipeThrough(checked));
  try {
    await ctx.store.transaction(async (tx) => {
      await stillOpen(tx, email, id);
      await tx.accounts.insertReplyPart({ replyId: id, position: parts.length, kind, size, blob });
    });
  } catch (e) {
    throw await cleanUpAfter(e, [() => ctx.store.blobs.remove([blob])]);
  }
  return size;
}

/**
 * Finishes a reply and tells the practice (a neutral mail).
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @param id - The reply.
 * @throws {@link PraxmailError} `invalid-input` without a message part; {@link ReplyRefusedError}
 *   for a patient who is no longer approved.
 */
export async function finishReply(ctx: Context, email: string, id: string): Promise<void> {
  const r = await own(ctx, email, id);
  if (r.status !== "uploading") throw new PraxmailError("wrong-state", "reply is finished");
  if ((await ctx.store.accounts.replyParts(id)).length === 0) throw new PraxmailError("invalid-input", "reply has no message");
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    await stillOpen(tx, email, id);
    await tx.accounts.setReplyStatus(id, "new", null);
    await tx.audit({ actor: ctx.actor, action: "reply.finish", subject: id }, now);
  });
  await ctx.notifier.send({ kind: "reply", to: ctx.config.practiceEmail, replyId: id });
}

/**
 * @param ctx - The core context.
 * @returns Finished replies, oldest first, each with its sender's account status now.
 */
export async function listReplies(ctx: Context): Promise<ReplyView[]> {
  const out: ReplyView[] = [];
  for (const r of await ctx.store.accounts.replies()) {
    const parts = await ctx.store.accounts.replyParts(r.id);
    out.push({
      id: r.id,
      from: r.email,
      accountStatus: (await ctx.store.records.patient(r.email))?.status ?? null,
      deliveryId: r.deliveryId,
      status: r.status,
      createdAt: r.createdAt,
      files: parts.filter((p) => p.kind === "file").length,
      bytes: parts.reduce((n, p) => n + p.size, 0),
    });
  }
  return out;
}

/**
 * Refuses a reply's file name that holds a path: a browser gives only a file's own name, so
 * a separator means a client that tries to write outside the folder.
 *
 * @param name - The name the patient's browser gave.
 * @returns The same name.
 * @throws {@link PraxmailError} `invalid-input` naming it.
 */
function plainName(name: string): string {
  if (/[/\\]/.test(name)) throw new PraxmailError("invalid-input", `refusing the file name ${JSON.stringify(name)}: it would leave the folder or is not a plain name`);
  return name;
}

/**
 * Decrypts a reply into a folder: `message.txt` and the files. A file name with a path is
 * refused before anything is written; the others are cleaned ({@link cleanFileName}) and
 * numbered where two would collide; existing files are never overwritten; on failure what
 * was written is removed.
 *
 * @param ctx - The core context.
 * @param id - The reply.
 * @param practiceIdentity - P's secret.
 * @param outDir - The folder (created if missing).
 * @returns The paths written.
 * @throws {@link PraxmailError} for an unknown reply, a malformed message part, a name with a
 *   path, or an existing file.
 */
export async function receiveReply(ctx: Context, id: string, practiceIdentity: string, outDir: string): Promise<string[]> {
  const r = await ctx.store.accounts.reply(id);
  if (!r || r.status === "uploading") throw new PraxmailError("invalid-input", `no such reply ${JSON.stringify(id)}`, "run praxmail inbox");
  const parts = await ctx.store.accounts.replyParts(id);
  const [messagePart, ...fileParts] = parts;
  if (messagePart?.kind !== "message") throw new Error("reply has no message part");
  let raw: { v?: unknown; text?: unknown; files?: unknown };
  try {
    const plain = await decryptBytes(new Uint8Array(await new Response(ctx.store.blobs.read(messagePart.blob)).arrayBuffer()), [practiceIdentity]);
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain)) as typeof raw;
  } catch (e) {
    throw new PraxmailError("identity", `cannot open the reply: ${(e as Error).message}`, "is this the practice identity of this home?");
  }
  if (raw.v !== 1 || typeof raw.text !== "string" || !Array.isArray(raw.files) || raw.files.length !== fileParts.length) {
    throw new PraxmailError("invalid-input", "the reply's message part is malformed");
  }
  const message = { text: raw.text };
  const taken = new Set(["message.txt"]);
  const names = (raw.files as unknown[]).map((n) => uniqueFileName(cleanFileName(plainName(String(n))), taken));
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
    throw await cleanUpAfter(e, written.map((p) => () => rm(p, { force: true })));
  }
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    await tx.accounts.setReplyStatus(id, "received", now.toISOString());
    await tx.audit({ actor: ctx.actor, action: "reply.receive", subject: id, details: { files: fileParts.length } }, now);
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
  const stale = await ctx.store.accounts.unfinishedReplies(before.toISOString());
  for (const r of stale) {
    const blobs = await ctx.store.transaction((tx) => tx.accounts.deleteReply(r.id));
    await ctx.store.blobs.remove(blobs);
  }
  return stale.length;
}

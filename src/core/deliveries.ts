// Creating a delivery: D, encrypted files, wrap[P], wrap[U] for approved patients, link token.
import {
  encryptBytes,
  encryptStream,
  generateIdentity,
  recipientOf,
  wrapIdentity,
} from "../crypto/index.js";
import type { DeliveryRow, DeliveryStatus, FileRow, WrapRow } from "../store/index.js";
import type { Context, FileSummary, Notification } from "./context.js";
import { PraxmailError } from "./errors.js";
import { hashToken, newId, newToken } from "./tokens.js";
import { checkLevel, cleanFileName, normaliseEmail } from "./validate.js";

/** A file to deliver; open() is called once and must return a fresh stream. */
export interface FileInput {
  readonly name: string;
  open(): ReadableStream<Uint8Array>;
}

/** What to deliver to one recipient. */
export interface DeliveryInput {
  readonly recipient: string;
  readonly level: number;
  readonly subject?: string | null;
  readonly message?: string | null;
  readonly files: readonly FileInput[];
  readonly sender?: string | null;
  /** Idempotency key of a relayed message: a second create with it returns the first. */
  readonly sourceKey?: string | null;
  /** Plaintext bytes read so far of file number `index`. */
  readonly onProgress?: (index: number, bytes: number) => void;
}

/** A delivery as the CLI prints it (DESIGN.md §5). */
export interface CreatedDelivery {
  readonly id: string;
  readonly recipient: string;
  readonly level: number;
  readonly status: DeliveryStatus;
  /** The download link; holds D in the #fragment at levels 1–2. Shown once, never stored. */
  readonly link: string;
  readonly expiresAt: Date;
  /** Real names, also at level 4, where only neutral names are stored in clear. */
  readonly files: readonly FileSummary[];
  /** The recipient has no account yet and will register through the link. */
  readonly firstTime: boolean;
  /** For the notification at levels 1–3; always null at level 4. */
  readonly subject: string | null;
  readonly message: string | null;
}

/** The encrypted message part of a level-4 delivery (or a message at any level). */
export interface SealedMessage {
  readonly v: 1;
  readonly subject: string | null;
  readonly text: string | null;
  /** Real file names by position, at level 4 where the stored names are neutral. */
  readonly files: readonly string[];
}

const MAX_SUBJECT = 998;
const MAX_MESSAGE = 1024 * 1024;

function counting(onBytes: (total: number) => void): TransformStream<Uint8Array, Uint8Array> {
  let total = 0;
  return new TransformStream({
    transform(chunk, ctl) {
      total += chunk.byteLength;
      onBytes(total);
      ctl.enqueue(chunk);
    },
  });
}

function neutralName(position: number, name: string): string {
  const ext = /\.[A-Za-z0-9]{1,8}$/.exec(name)?.[0] ?? "";
  return `Anhang-${position + 1}${ext.toLowerCase()}`;
}

/**
 * Creates one delivery and makes it durable: every blob fsynced, every row committed.
 * Nothing is mailed; see {@link sendDelivery}. On failure nothing stays behind.
 *
 * @param ctx - The core context.
 * @param input - Recipient, level, files, optional subject and message.
 * @returns The delivery with its one-time link.
 * @throws {@link PraxmailError} for bad input; I/O errors pass through.
 */
export async function createDelivery(ctx: Context, input: DeliveryInput): Promise<CreatedDelivery> {
  const recipient = normaliseEmail(input.recipient);
  const level = checkLevel(input.level);
  const subject = input.subject?.trim() || null;
  const message = input.message ?? null;
  if (subject !== null && (subject.length > MAX_SUBJECT || /[\r\n]/.test(subject))) {
    throw new PraxmailError("invalid-input", "subject must be one line of at most 998 characters");
  }
  if (message !== null && message.length > MAX_MESSAGE) {
    throw new PraxmailError("invalid-input", "message text is larger than 1 MiB", "send long texts as a file");
  }
  if (input.files.length === 0 && !(level === 4 && (message !== null || subject !== null))) {
    throw new PraxmailError("invalid-input", "nothing to send", "give at least one file, or a level 4 message");
  }
  if (input.sourceKey) {
    const existing = ctx.store.records.deliveryBySource(input.sourceKey);
    if (existing) {
      throw new PraxmailError("wrong-state", `message was already delivered as ${existing.id}`);
    }
  }

  const now = ctx.now();
  const id = newId("d");
  const identity = generateIdentity(ctx.config.crypto.recipientType);
  const deliveryRecipient = await recipientOf(identity);
  const written: string[] = [];
  try {
    const files: FileRow[] = [];
    const realNames: string[] = [];
    for (const [position, file] of input.files.entries()) {
      const name = cleanFileName(file.name);
      let size = 0;
      const plain = file.open().pipeThrough(
        counting((n) => {
          size = n;
          input.onProgress?.(position, n);
        }),
      );
      const blob = await ctx.store.blobs.write(await encryptStream(plain, [deliveryRecipient]));
      written.push(blob);
      realNames.push(name);
      files.push({
        id: newId("f"),
        deliveryId: id,
        position,
        kind: "attachment",
        name: level === 4 ? neutralName(position, name) : name,
        size,
        blob,
      });
    }
    if (level === 4) {
      const sealed: SealedMessage = { v: 1, subject, text: message, files: realNames };
      const bytes = new TextEncoder().encode(JSON.stringify(sealed));
      const ct = await encryptBytes(bytes, [deliveryRecipient]);
      const blob = await ctx.store.blobs.write(new Blob([ct]).stream());
      written.push(blob);
      files.push({ id: newId("f"), deliveryId: id, position: files.length, kind: "message", name: "Nachricht", size: bytes.byteLength, blob });
    }

    const at = now.toISOString();
    const wraps: WrapRow[] = [
      {
        deliveryId: id,
        holder: "practice",
        recipient: ctx.config.practiceRecipient,
        ciphertext: await wrapIdentity(identity, ctx.config.practiceRecipient),
        createdAt: at,
      },
    ];
    const patient = ctx.store.records.patient(recipient);
    const approved = patient?.status === "approved" && patient.recipient !== null;
    if (level >= 3 && approved && patient.recipient !== null) {
      wraps.push({
        deliveryId: id,
        holder: "patient",
        recipient: patient.recipient,
        ciphertext: await wrapIdentity(identity, patient.recipient),
        createdAt: at,
      });
    }
    const status: DeliveryStatus = level >= 3 && !approved ? "pending-approval" : "ready";
    const expiresAt = new Date(now.getTime() + ctx.config.deliveries.expiryDays * 86_400_000);
    const token = newToken();
    const delivery: DeliveryRow = {
      id,
      recipient,
      level,
      status,
      subject: level === 4 ? null : subject,
      sender: input.sender ?? null,
      createdAt: at,
      expiresAt: expiresAt.toISOString(),
      downloadedAt: null,
      endedAt: null,
      sourceKey: input.sourceKey ?? null,
    };
    ctx.store.transaction(() => {
      ctx.store.records.insertDelivery(delivery, files, wraps, {
        hash: hashToken(token),
        deliveryId: id,
        email: recipient,
        createdAt: at,
      });
      ctx.store.audit(
        {
          actor: ctx.actor,
          action: "delivery.create",
          subject: id,
          details: { recipient, level, status, files: input.files.length },
        },
        now,
      );
    });
    const fragment = level <= 2 ? `#k=${identity}` : "";
    return {
      id,
      recipient,
      level,
      status,
      link: `${ctx.config.portalUrl}/d/${token}${fragment}`,
      expiresAt,
      files: files.filter((f) => f.kind === "attachment").map((f) => ({ name: realNames[f.position] ?? f.name, size: f.size })),
      firstTime: level >= 2 && (patient === undefined || patient.status === "revoked"),
      subject: level === 4 ? null : subject,
      message: level === 4 ? null : message,
    };
  } catch (e) {
    await ctx.store.blobs.remove(written);
    throw e;
  }
}

/**
 * Removes a delivery that was created but whose mail could not be sent, so the sender can
 * retry without a dead link staying behind. The audit log keeps both events.
 *
 * @param ctx - The core context.
 * @param id - The delivery.
 * @param reason - Why, for the audit log.
 */
export async function discardDelivery(ctx: Context, id: string, reason: string): Promise<void> {
  const blobs = ctx.store.transaction(() => {
    const blobs = ctx.store.records.files(id).flatMap((f) => (f.blob ? [f.blob] : []));
    ctx.store.records.deleteDelivery(id);
    ctx.store.audit({ actor: ctx.actor, action: "delivery.discard", subject: id, details: { reason } }, ctx.now());
    return blobs;
  });
  await ctx.store.blobs.remove(blobs);
}

/**
 * The mail that tells the recipient about a delivery.
 *
 * @param d - A created delivery.
 * @returns The notification; at level 4 it carries no subject and no text.
 */
export function deliveryNotification(d: CreatedDelivery): Notification {
  return {
    kind: "new-delivery",
    to: d.recipient,
    level: d.level,
    link: d.link,
    firstTime: d.firstTime,
    files: d.files,
    expiresAt: d.expiresAt,
    subject: d.subject,
    message: d.message,
  };
}

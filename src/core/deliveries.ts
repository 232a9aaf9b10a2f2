// Creating deliveries: one fresh identity D per recipient, the files encrypted to D (one
// pass over each file, fanned out to every recipient), wrap[P], wrap[U] for patients whose
// signed approval verifies (src/core/trust.ts), and a link token. Rows are committed
// invisible (sent_at null) and become visible once the mail carrying the link was accepted.
import {
  encryptBytes,
  encryptStream,
  generateIdentity,
  recipientOf,
  wrapIdentity,
} from "../crypto/index.js";
import type { DeliveryRow, DeliveryStatus, FileRow, PatientRow, WrapRow } from "../store/index.js";
import type { Context, FileSummary, Notification } from "./context.js";
import { PraxmailError, cleanUpAfter } from "./errors.js";
import { fanOut } from "./fanout.js";
import { writeBlob } from "./meter.js";
import { hashToken, newId, newToken } from "./tokens.js";
import { raiseTrustAlarm, trustedRecipient } from "./trust.js";
import { levelRules } from "./levels.js";
import { deliveryState, nextState, reaches } from "./retry.js";
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

/** The encrypted message part of a level-4 delivery. */
export interface SealedMessage {
  readonly v: 1;
  readonly subject: string | null;
  readonly text: string | null;
  /** Real file names by position; the stored names are neutral. */
  readonly files: readonly string[];
}

/** How the deliveries of an intake are finished. */
export interface CommitOptions {
  readonly level: number;
  readonly subject?: string | null;
  readonly message?: string | null;
  readonly sender?: string | null;
  /** Idempotency key per recipient (same order as the intake's recipients). */
  readonly sourceKeys?: readonly (string | null)[];
}

/** What every delivery of one commit shares. */
interface RowTexts {
  readonly level: number;
  readonly subject: string | null;
  readonly message: string | null;
  readonly sender: string | null;
  readonly now: Date;
  readonly expiresAt: Date;
}

/** One recipient's rows, ready for the transaction, and what to tell the caller. */
interface PreparedRow {
  readonly row: DeliveryRow;
  readonly files: FileRow[];
  readonly wraps: WrapRow[];
  readonly token: { hash: string; deliveryId: string; email: string; createdAt: string };
  readonly created: CreatedDelivery;
  /** The patient's stored approval does not verify: raise the alarm once the rows are in. */
  readonly alarm: { patient: PatientRow; reason: string } | null;
}

const MAX_SUBJECT = 998;
const MAX_MESSAGE = 8 * 1024 * 1024;

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

function checkText(subject: string | null, message: string | null): void {
  if (subject !== null && (subject.length > MAX_SUBJECT || /[\r\n]/.test(subject))) {
    throw new PraxmailError("invalid-input", "subject must be one line of at most 998 characters");
  }
  if (message !== null && message.length > MAX_MESSAGE) {
    throw new PraxmailError("invalid-input", "message text is larger than 8 MiB", "send long texts as a file");
  }
}

/**
 * The deliveries of one message to one or more recipients while its files arrive. Each
 * recipient gets its own identity D, blobs and link. Nothing is visible until
 * {@link commit} and {@link markSent}; {@link abort} removes what was written.
 */
export class Intake {
  private readonly files: { name: string; size: number; blobs: string[] }[] = [];
  private readonly written: string[] = [];
  private readonly dropped = new Set<number>();

  private constructor(
    private readonly ctx: Context,
    readonly recipients: readonly string[],
    private readonly identities: readonly string[],
    private readonly deliveryRecipients: readonly string[],
  ) {}

  /**
   * @param ctx - The core context.
   * @param recipients - Addresses; each gets its own delivery.
   * @returns A new intake.
   * @throws {@link PraxmailError} `invalid-input` for a bad address.
   */
  static async open(ctx: Context, recipients: readonly string[]): Promise<Intake> {
    const addrs = [...new Set(recipients.map((r) => normaliseEmail(r)))];
    if (addrs.length === 0) throw new PraxmailError("invalid-input", "no recipient");
    const identities = addrs.map(() => generateIdentity(ctx.config.crypto.recipientType));
    return new Intake(ctx, addrs, identities, await Promise.all(identities.map((i) => recipientOf(i))));
  }

  /** @returns The files added so far, with their plaintext sizes. */
  get fileSummaries(): FileSummary[] {
    return this.files.map((f) => ({ name: f.name, size: f.size }));
  }

  /**
   * Encrypts one file for every recipient in one pass and stores the blobs durably.
   *
   * @param name - The file name as given (cleaned here).
   * @param input - The plaintext.
   * @param onBytes - Progress: plaintext bytes read so far.
   * @returns The file's cleaned name and size.
   * @throws What reading, encrypting or writing throws; blobs of this file are removed.
   */
  async addFile(name: string, input: ReadableStream<Uint8Array>, onBytes?: (n: number) => void): Promise<FileSummary> {
    let size = 0;
    const plain = input.pipeThrough(
      counting((n) => {
        size = n;
        onBytes?.(n);
      }),
    );
    const branches = fanOut(plain, this.recipients.length);
    const results = await Promise.allSettled(
      branches.map(async (b, i) => writeBlob(this.ctx, await encryptStream(b, [this.deliveryRecipients[i] ?? ""]))),
    );
    const blobs = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw await cleanUpAfter(failed.reason, [() => this.ctx.store.blobs.remove(blobs)]);
    this.written.push(...blobs);
    const file = { name: cleanFileName(name), size, blobs };
    this.files.push(file);
    return { name: file.name, size };
  }

  /**
   * Writes the rows: one delivery per recipient, with files, wraps and a link token.
   * They stay invisible until {@link markSent}.
   *
   * @param opts - Level, texts, sender, idempotency keys.
   * @returns One delivery per recipient, in the order of {@link recipients}.
   * @throws {@link PraxmailError} for bad input; the intake is aborted.
   */
  async commit(opts: CommitOptions): Promise<CreatedDelivery[]> {
    try {
      const level = checkLevel(opts.level);
      const subject = opts.subject?.trim() || null;
      const message = opts.message ?? null;
      checkText(subject, message);
      const rules = levelRules(level);
      if (this.files.length === 0 && !(rules.deliveryWithoutAttachments && (message !== null || subject !== null))) {
        throw new PraxmailError("invalid-input", "nothing to send", "give at least one file, or a level 4 message");
      }
      const now = this.ctx.now();
      const expiresAt = new Date(now.getTime() + this.ctx.config.deliveries.expiryDays * 86_400_000);
      const texts: RowTexts = { level, subject, message, sender: opts.sender ?? null, now, expiresAt };
      const prepared: PreparedRow[] = [];
      for (const [i, recipient] of this.recipients.entries()) {
        if (!this.dropped.has(i)) prepared.push(await this.prepareRow(i, recipient, texts, opts.sourceKeys?.[i] ?? null));
      }
      await this.ctx.store.transaction(async (tx) => {
        for (const p of prepared) {
          await tx.records.insertDelivery(p.row, p.files, p.wraps, p.token);
          await tx.audit(
            { actor: this.ctx.actor, action: "delivery.create", subject: p.row.id, details: { recipient: p.row.recipient, level, status: p.row.status, files: this.files.length } },
            now,
          );
        }
      });
      this.written.length = 0;
      this.ctx.meter?.deliveriesCreated(level, prepared.length);
      for (const p of prepared) if (p.alarm) await raiseTrustAlarm(this.ctx, p.alarm.patient, p.alarm.reason, [p.row.id]);
      return prepared.map((p) => p.created);
    } catch (e) {
      throw await cleanUpAfter(e, [() => this.abort()]);
    }
  }

  /** One recipient's rows (files, wraps, token) and the delivery as the caller sees it; nothing is written to the database yet. */
  private async prepareRow(i: number, recipient: string, t: RowTexts, sourceKey: string | null): Promise<PreparedRow> {
    const rules = levelRules(t.level);
    const at = t.now.toISOString();
    const identity = this.identities[i] ?? "";
    const id = newId("d");
    const files = await this.fileRows(i, id, t);
    const practice = this.ctx.config.practiceRecipient;
    const wraps: WrapRow[] = [{ deliveryId: id, holder: "practice", recipient: practice, ciphertext: await wrapIdentity(identity, practice), createdAt: at }];
    const patient = await this.ctx.store.records.patient(recipient);
    const trust = rules.patientKey ? await trustedRecipient(this.ctx, this.ctx.store, patient) : ({ kind: "not-approved" } as const);
    const approvedRecipient = trust.kind === "trusted" ? trust.recipient : null;
    const alarm = trust.kind === "untrusted" && patient ? { patient, reason: trust.reason } : null;
    if (approvedRecipient !== null) {
      wraps.push({ deliveryId: id, holder: "patient", recipient: approvedRecipient, ciphertext: await wrapIdentity(identity, approvedRecipient), createdAt: at });
    }
    const token = newToken();
    const row: DeliveryRow = {
      id,
      recipient,
      level: t.level,
      status: rules.patientKey && approvedRecipient === null ? "pending-approval" : "ready",
      subject: rules.encryptsContent ? null : t.subject,
      sender: t.sender,
      createdAt: at,
      expiresAt: t.expiresAt.toISOString(),
      downloadedAt: null,
      endedAt: null,
      sourceKey,
      sentAt: null,
      remindedAt: null,
    };
    const created: CreatedDelivery = {
      id,
      recipient,
      level: t.level,
      status: row.status,
      link: `${this.ctx.config.portalUrl}/d/${token}${rules.keyInLink ? `#k=${identity}` : ""}`,
      expiresAt: t.expiresAt,
      files: this.fileSummaries,
      firstTime: rules.login && (patient === undefined || patient.status === "revoked"),
      subject: rules.encryptsContent ? null : t.subject,
      message: rules.encryptsContent ? null : t.message,
    };
    return { row, files, wraps, token: { hash: hashToken(token), deliveryId: id, email: recipient, createdAt: at }, created, alarm };
  }

  /** Recipient `i`'s file rows; at level 4 neutral names, and the sealed message written as one more blob. */
  private async fileRows(i: number, id: string, t: RowTexts): Promise<FileRow[]> {
    const rules = levelRules(t.level);
    const files: FileRow[] = this.files.map((f, position) => ({
      id: newId("f"),
      deliveryId: id,
      position,
      kind: "attachment",
      name: rules.encryptsContent ? neutralName(position, f.name) : f.name,
      size: f.size,
      blob: f.blobs[i] ?? null,
    }));
    if (rules.encryptsContent) {
      const sealed: SealedMessage = { v: 1, subject: t.subject, text: t.message, files: this.files.map((f) => f.name) };
      const bytes = new TextEncoder().encode(JSON.stringify(sealed));
      const ct = await encryptBytes(bytes, [this.deliveryRecipients[i] ?? ""]);
      const blob = await writeBlob(this.ctx, new Blob([ct]).stream());
      this.written.push(blob);
      files.push({ id: newId("f"), deliveryId: id, position: files.length, kind: "message", name: "Nachricht", size: bytes.byteLength, blob });
    }
    return files;
  }

  /**
   * Leaves recipients out: their blobs are removed and commit creates nothing for them
   * (they already got this message in an earlier attempt).
   *
   * @param recipients - Addresses from {@link recipients}.
   */
  async drop(recipients: readonly string[]): Promise<void> {
    for (const r of recipients) {
      const i = this.recipients.indexOf(r);
      if (i === -1 || this.dropped.has(i)) continue;
      this.dropped.add(i);
      const blobs = this.files.flatMap((f) => (f.blobs[i] ? [f.blobs[i]] : []));
      await this.ctx.store.blobs.remove(blobs);
    }
  }

  /**
   * Announces again a delivery that an earlier attempt of the same message created but never
   * saw accepted. A crash (or a lost reply) after upstream took that attempt's mail leaves
   * the delivery unsent although its mail may be with the patient: discarding it would break
   * the link in that mail, and a new delivery would be a second one for one message. So the
   * recipient is dropped from this intake, and the existing delivery gets one more link token
   * (the earlier ones stay valid). Its files are this intake's: the same content, since the
   * idempotency key covers it. Levels 1–2 cannot be announced again: their link carries D,
   * which only the attempt that created the delivery held. The milter also announces a sent
   * delivery again: it marks one sent when it hands the edits to Postfix, which may still
   * defer that attempt; such a delivery keeps its first sent time.
   *
   * @param existing - A delivery of an earlier attempt, for one of {@link recipients}.
   * @returns The delivery with a fresh link, to be sent and then marked sent.
   * @throws If the retry rules refuse it (src/core/retry.ts: a level 1–2 or a discarded
   *   delivery), or it is not for one of the recipients.
   */
  async announceAgain(existing: DeliveryRow): Promise<CreatedDelivery> {
    if (!this.recipients.includes(existing.recipient)) throw new Error("delivery cannot be announced again: not one of this intake's recipients");
    const now = this.ctx.now();
    const token = newToken();
    await this.ctx.store.transaction(async (tx) => {
      // Asked of the row as it is now: another attempt may have discarded it meanwhile.
      nextState(deliveryState(await tx.records.delivery(existing.id)), "announce-again", existing.level);
      await tx.records.insertToken({ hash: hashToken(token), deliveryId: existing.id, email: existing.recipient, createdAt: now.toISOString() });
      await tx.audit({ actor: this.ctx.actor, action: "delivery.announce-again", subject: existing.id, details: { level: existing.level } }, now);
    });
    await this.drop([existing.recipient]);
    const patient = await this.ctx.store.records.patient(existing.recipient);
    return {
      id: existing.id,
      recipient: existing.recipient,
      level: existing.level,
      status: existing.status,
      link: `${this.ctx.config.portalUrl}/d/${token}`,
      expiresAt: new Date(existing.expiresAt),
      files: this.fileSummaries,
      firstTime: patient === undefined || patient.status === "revoked",
      subject: existing.subject,
      message: null,
    };
  }

  /** Removes every blob this intake wrote; call when the message is refused. */
  async abort(): Promise<void> {
    await this.ctx.store.blobs.remove(this.written.splice(0));
  }
}

/**
 * Makes deliveries visible once their mail was accepted. One sent before keeps its first sent
 * time.
 *
 * @param ctx - The core context.
 * @param ids - The deliveries.
 * @throws Error, and marks none, if one was discarded (src/core/retry.ts): its link is dead.
 */
export async function markSent(ctx: Context, ids: readonly string[]): Promise<void> {
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    for (const id of ids) nextState(deliveryState(await tx.records.delivery(id)), "accepted");
    await tx.records.markSent(ids, now.toISOString());
  });
}

/**
 * Creates one delivery and makes it durable (blobs fsynced, rows committed, still
 * invisible). On failure nothing stays behind.
 *
 * @param ctx - The core context.
 * @param input - Recipient, level, files, optional subject and message.
 * @returns The delivery with its one-time link.
 * @throws {@link PraxmailError} for bad input; I/O errors pass through.
 */
export async function createDelivery(ctx: Context, input: DeliveryInput): Promise<CreatedDelivery> {
  checkLevel(input.level);
  checkText(input.subject?.trim() || null, input.message ?? null);
  const intake = await Intake.open(ctx, [input.recipient]);
  try {
    for (const [i, f] of input.files.entries()) await intake.addFile(f.name, f.open(), (n) => input.onProgress?.(i, n));
  } catch (e) {
    throw await cleanUpAfter(e, [() => intake.abort()]);
  }
  const [d] = await intake.commit({ level: input.level, subject: input.subject ?? null, message: input.message ?? null, sender: input.sender ?? null });
  if (!d) throw new Error("intake returned no delivery");
  return d;
}

/**
 * Removes a delivery that was created but whose mail could not be sent, so the sender can
 * retry without a dead link staying behind. The audit log keeps both events. A delivery
 * that is gone already (discarded by gc or another node first) is left as it is.
 *
 * @param ctx - The core context.
 * @param id - The delivery.
 * @param reason - Why, for the audit log.
 */
export async function discardDelivery(ctx: Context, id: string, reason: string): Promise<void> {
  const blobs = await ctx.store.transaction(async (tx) => {
    const state = deliveryState(await tx.records.delivery(id));
    // Another process (gc, or a node racing this one) discarded it first: done, once.
    if (state === "discarded") return [];
    if (!reaches(state, "discarded")) throw new Error(`illegal retry transition: delivery ${id} is ${state} and cannot be discarded`);
    const blobs = (await tx.records.files(id)).flatMap((f) => (f.blob ? [f.blob] : []));
    await tx.records.deleteDelivery(id);
    await tx.audit({ actor: ctx.actor, action: "delivery.discard", subject: id, details: { reason } }, ctx.now());
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

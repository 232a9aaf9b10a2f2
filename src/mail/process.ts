// One message through praxmail: classify by its headers, stream the original to the
// recipients who get it unchanged, split the rest, encrypt attachments into deliveries,
// and render each external recipient's copy. The relay and the milter both use this; they
// differ only in how the copies leave.
import { createHash, type Hash } from "node:crypto";
import { Readable } from "node:stream";
import { Headers } from "@zone-eu/mailsplit";
import { convert as htmlToText } from "html-to-text";
import libmime from "libmime";
import {
  Intake,
  PraxmailError,
  cleanUpAfter,
  discardDelivery,
  discardedBy,
  markSent,
  levelRules,
  needsDelivery,
  patientLanguage,
  retryAction,
  warnsWithoutDelivery,
  type Context,
  type CreatedDelivery,
  type Level,
} from "../core/index.js";
import { applyPolicy, classify, isInternal, type Classification, type Policy } from "./classify.js";
import { MailRejection } from "./errors.js";
import { hashHead, sourceKey } from "./idempotency.js";
import { renderCopy, textOf } from "./render.js";
import { SPLIT_LIMITS, splitMessage, type AttachmentMeta, type MimeNode, type Skeleton, type SplitLimits } from "./split.js";
import { renderBlock, renderNotification } from "./templates.js";
import { compose, type Envelope, type RawSink, type Transport } from "./transport.js";

/** How a message is processed. */
export interface ProcessOptions {
  readonly policy: Policy;
  readonly limits?: SplitLimits;
  /** A trace header line (without line end) put on top of everything that leaves. */
  readonly trace?: string;
  /**
   * Opens where the original goes, for recipients who get it unchanged (internal ones,
   * or everyone when the message is untagged). It must not deliver before end().
   */
  readonly openOriginal: (recipients: readonly string[]) => RawSink;
  /**
   * Whether a delivery that an earlier attempt marked sent is known to have left. The relay
   * marks it sent on upstream's 250 (true, the default), so a retry skips that recipient. The
   * milter marks it sent when it hands its edits to Postfix, which may still defer the
   * message (false), so a retry carries the delivery again, as for an unsent one.
   */
  readonly sentIsFinal?: boolean;
}

/** A rewritten message for some recipients, and the deliveries it announces. */
export interface Copy {
  readonly recipients: readonly string[];
  readonly bytes: Buffer;
  readonly deliveries: readonly string[];
}

/** A processed message, ready to leave. */
export interface Prepared {
  /** The effective level for external recipients (0: untagged). */
  readonly level: Level;
  readonly attachments: number;
  /** Recipients who get the original, and its sink (not ended yet). */
  readonly original: { readonly recipients: readonly string[]; readonly sink: RawSink } | null;
  readonly copies: readonly Copy[];
  /** Every delivery created for this message (invisible until marked sent). */
  readonly deliveries: readonly string[];
  /**
   * Deliveries of an earlier attempt announced again (their mail may have left already).
   * They are marked sent with their copy, but never discarded when this attempt fails.
   */
  readonly announcedAgain: readonly string[];
  /** External recipients who already got this message in an earlier attempt. */
  readonly alreadyDelivered: readonly string[];
  /** Things the admin should know, e.g. a level-3 mail without attachments. */
  readonly warnings: readonly string[];
}

const MAX_HEAD = 256 * 1024;

/**
 * Top-level headers that may appear only once (RFC 5322 3.6, RFC 2045). With two, praxmail
 * would read one and the recipient's client might show the other: a tag in a second Subject
 * would be missed, a second Content-Type would make the attachments something else.
 */
const ONCE = ["Subject", "From", "To", "Content-Type"];

/**
 * Refuses a message with one of {@link ONCE} given twice at the top.
 *
 * @throws {@link MailRejection} 554 naming the header.
 */
function checkSingleHeaders(headers: Headers): void {
  for (const name of ONCE) {
    if (headers.get(name).length > 1) {
      throw new MailRejection(554, `message has more than one ${name} header; praxmail cannot tell which one the recipient sees, so it was not sent`, "5.6.0");
    }
  }
}

/** Reads the header block (through the blank line) and gives back a stream of the whole message. */
async function readHead(input: Readable): Promise<{ head: Buffer; all: Readable }> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const seen: Buffer[] = [];
  let size = 0;
  let head: Buffer | null = null;
  while (head === null) {
    const r = await it.next();
    if (r.done) {
      head = Buffer.concat(seen);
      break;
    }
    seen.push(r.value);
    size += r.value.length;
    const buf = Buffer.concat(seen);
    const m = /\r?\n\r?\n/.exec(buf.toString("latin1"));
    if (m) head = buf.subarray(0, m.index + m[0].length);
    else if (size > MAX_HEAD) throw new MailRejection(554, "message headers are too large", "5.6.0");
  }
  const first = Buffer.concat(seen);
  async function* all(): AsyncGenerator<Buffer> {
    if (first.length) yield first;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  }
  return { head, all: Readable.from(all(), { objectMode: false }) };
}

/** Text for the sealed message of a level-4 delivery: the plain bodies, else the HTML as text. */
function sealedText(sk: Skeleton): string | null {
  const plain = sk.texts.filter((t) => t.kind === "plain").map(textOf);
  if (plain.length) return plain.join("\n\n");
  const html = sk.texts.filter((t) => t.kind === "html").map((t) => htmlToText(textOf(t), { wordwrap: false }));
  return html.length ? html.join("\n\n") : null;
}

function decodedHeader(root: MimeNode, key: string): string | undefined {
  if (!root.headers || !root.headers.hasHeader(key)) return undefined;
  const v = root.headers.getFirst(key);
  try {
    return libmime.decodeWords(v);
  } catch {
    return v;
  }
}

/** The neutral notice a level-4 recipient gets instead of the message. */
async function notice(ctx: Context, sk: Skeleton, d: CreatedDelivery, trace: string | undefined): Promise<Buffer> {
  const r = renderNotification(
    { kind: "new-delivery", to: d.recipient, level: d.level, link: d.link, firstTime: d.firstTime, files: d.files, expiresAt: d.expiresAt, subject: null, message: null },
    ctx.config.practiceName,
    await patientLanguage(ctx.store, d.recipient),
  );
  const raw = await compose({
    from: { name: ctx.config.practiceName, address: ctx.config.practiceEmail },
    to: decodedHeader(sk.root, "to") ?? d.recipient,
    subject: r.subject,
    text: r.text,
    html: r.html,
    headers: { "X-Praxmail-Delivery": d.id },
  });
  return withTrace(raw, trace);
}

function withTrace(bytes: Buffer, trace: string | undefined): Buffer {
  return trace ? Buffer.concat([Buffer.from(`${trace}\r\n`), bytes]) : bytes;
}

/** What the header block says about a message, and who gets what. */
interface Classified {
  readonly cls: Classification;
  readonly messageId: string;
  /** Recipients outside the practice's domains. */
  readonly externals: readonly string[];
  /** The tag or the policy (at most: with attachments) asks for encryption. */
  readonly rewrite: boolean;
  /** Who gets the original: internal recipients, or everyone when it is not rewritten. */
  readonly originalTo: readonly string[];
}

/**
 * Classifies a message by its header block.
 *
 * @throws {@link MailRejection} for a header given twice, or a bad tag.
 */
function classifyHead(ctx: Context, envelope: Envelope, head: Buffer, policy: Policy): Classified {
  const headers = new Headers(head);
  checkSingleHeaders(headers);
  const levels = headers.getDecoded("x-praxmail-level").map((h) => h.value);
  const cls = classify(headers.hasHeader("subject") ? headers.getFirst("subject") : undefined, levels);
  const messageId = headers.hasHeader("message-id") ? headers.getFirst("message-id") : "";
  const externals = envelope.to.filter((r) => !isInternal(r, ctx.config.internalDomains));
  const rewrite = externals.length > 0 && levelRules(applyPolicy(cls.level, policy, true)).encryptsAttachments;
  const originalTo = rewrite ? envelope.to.filter((r) => !externals.includes(r)) : [...envelope.to];
  return { cls, messageId, externals, rewrite, originalTo };
}

/**
 * The message's bytes as they pass: each goes into the retry key's digest (after the head,
 * which {@link hashHead} hashed without its trace fields) and to the original's sink.
 */
function tap(all: Readable, head: Buffer, digest: Hash, sink: RawSink | null): Readable {
  let skipped = 0;
  return Readable.from(
    (async function* () {
      for await (const chunk of all as AsyncIterable<Buffer>) {
        const inHead = Math.min(chunk.length, head.length - skipped);
        skipped += inHead;
        digest.update(chunk.subarray(inHead));
        if (sink) await sink.write(chunk);
        yield chunk;
      }
    })(),
    { objectMode: false },
  );
}

/** What one attempt has written so far, for the cleanup when it fails. */
interface Attempt {
  /** Opened at the first attachment (or at the end, for a level-4 message without any). */
  intake: Intake | null;
  /** Deliveries this attempt created. */
  readonly created: string[];
  /** Deliveries of an earlier attempt that this one carries again. */
  readonly carried: CreatedDelivery[];
}

/**
 * What an earlier attempt of this message left for each recipient, as the retry rules say:
 * recipients to skip, deliveries announced again (in `attempt.carried`), replaced ones
 * discarded. Skipped recipients are dropped from the intake.
 *
 * @returns The recipients who already got this message.
 */
async function applyRetryRules(ctx: Context, take: Intake, keys: readonly string[], level: Level, sentIsFinal: boolean, attempt: Attempt): Promise<string[]> {
  const skip: string[] = [];
  for (const [i, r] of take.recipients.entries()) {
    const existing = await ctx.store.records.deliveryBySource(keys[i] ?? "");
    const action = retryAction(existing, level, sentIsFinal);
    if (action === "skip") skip.push(r);
    else if (existing && action === "announce-again") attempt.carried.push(await take.announceAgain(existing));
    else if (existing && action === "replace") await discardDelivery(ctx, existing.id, "retried");
  }
  await take.drop(skip);
  return skip;
}

/** One recipient's copy: the message with the block in place of its attachments, or the level-4 notice. */
async function copyFor(ctx: Context, sk: Skeleton, level: Level, subject: string | null, d: CreatedDelivery, trace: string | undefined): Promise<Copy> {
  const bytes = levelRules(level).noticeReplacesText
    ? await notice(ctx, sk, d, trace)
    : withTrace(
        renderCopy(sk, {
          subject,
          block: renderBlock(
            { practiceName: ctx.config.practiceName, level, link: d.link, files: d.files, expiresAt: d.expiresAt, firstTime: d.firstTime },
            await patientLanguage(ctx.store, d.recipient),
          ),
          headers: { "X-Praxmail-Delivery": d.id },
        }),
        trace,
      );
  return { recipients: [d.recipient], bytes, deliveries: [d.id] };
}

/** A message that needs deliveries: the retry rules, the new deliveries, and every recipient's copy. */
async function withDeliveries(
  ctx: Context,
  envelope: Envelope,
  msg: Classified,
  sk: Skeleton,
  level: Level,
  content: string,
  attempt: Attempt,
  opts: ProcessOptions,
): Promise<Pick<Prepared, "copies" | "deliveries" | "announcedAgain" | "alreadyDelivered" | "warnings">> {
  const rules = levelRules(level);
  const take = (attempt.intake ??= await Intake.open(ctx, msg.externals));
  // By the intake's recipients (normalised, without duplicates), so that index i matches.
  const keys = take.recipients.map((r) => sourceKey(msg.messageId, envelope.from, r, content));
  const skip = await applyRetryRules(ctx, take, keys, level, opts.sentIsFinal ?? true, attempt);
  const fresh =
    take.recipients.length === skip.length + attempt.carried.length
      ? []
      : await take.commit({
          level,
          subject: rules.encryptsContent ? msg.cls.subject : null,
          message: rules.encryptsContent ? sealedText(sk) : null,
          sender: envelope.from || null,
          sourceKeys: keys,
        });
  attempt.created.push(...fresh.map((d) => d.id));
  const copies: Copy[] = [];
  for (const d of [...attempt.carried, ...fresh]) copies.push(await copyFor(ctx, sk, level, msg.cls.subject, d, opts.trace));
  return { copies, deliveries: attempt.created, announcedAgain: attempt.carried.map((d) => d.id), alreadyDelivered: skip, warnings: [] };
}

/** A message at a level with nothing to protect: it leaves as it came, without the tag. */
function withoutDelivery(sk: Skeleton, msg: Classified, level: Level, trace: string | undefined): Pick<Prepared, "copies" | "deliveries" | "announcedAgain" | "alreadyDelivered" | "warnings"> {
  const bytes = withTrace(renderCopy(sk, { subject: levelRules(level).subject === "unchanged" ? null : msg.cls.subject, block: null }), trace);
  const warnings = warnsWithoutDelivery(level, sk.attachments > 0) ? [`level ${level} message without attachments was sent without a delivery`] : [];
  return { copies: [{ recipients: msg.externals, bytes, deliveries: [] }], deliveries: [], announcedAgain: [], alreadyDelivered: [], warnings };
}

/**
 * Processes one message up to the point where its copies can leave. Nothing is visible
 * yet: the original's sink has not ended and the deliveries are not marked sent. On
 * failure everything written is removed again.
 *
 * @param ctx - The core context.
 * @param envelope - SMTP sender and recipients.
 * @param input - The raw message.
 * @param opts - Policy, limits, trace header and the original's sink.
 * @returns What to send.
 * @throws {@link MailRejection} for messages that must be refused; other errors mean
 *   "try again later".
 */
export async function prepareMessage(ctx: Context, envelope: Envelope, input: Readable, opts: ProcessOptions): Promise<Prepared> {
  const { head, all } = await readHead(input);
  const msg = classifyHead(ctx, envelope, head, opts.policy);
  const digest = createHash("sha256");
  const sink = msg.originalTo.length > 0 ? opts.openOriginal(msg.originalTo) : null;
  const original = sink && { recipients: msg.originalTo, sink };
  const attempt: Attempt = { intake: null, created: [], carried: [] };
  try {
    if (sink && opts.trace) await sink.write(Buffer.from(`${opts.trace}\r\n`));
    // The retry key covers the head without its trace fields, then every byte of the body;
    // every byte is streamed to the original's sink where there is one.
    hashHead(digest, head);
    const tapped = tap(all, head, digest, sink);
    if (!msg.rewrite) {
      // Untagged: the original goes to everyone; just drive the bytes through the tap.
      await new Promise<void>((resolve, reject) => {
        tapped.on("error", reject).on("end", resolve).resume();
      });
      return { level: 0, attachments: 0, original, copies: [], deliveries: [], announcedAgain: [], alreadyDelivered: [], warnings: [] };
    }
    const attachment = async (meta: AttachmentMeta, body: ReadableStream<Uint8Array>): Promise<void> => {
      attempt.intake ??= await Intake.open(ctx, msg.externals);
      await attempt.intake.addFile(meta.name, body);
    };
    const sk = await splitMessage(tapped, { attachment }, opts.limits ?? SPLIT_LIMITS);
    const level = applyPolicy(msg.cls.level, opts.policy, sk.attachments > 0);
    const base = { level, attachments: sk.attachments, original };
    if (!needsDelivery(level, sk.attachments > 0)) return { ...base, ...withoutDelivery(sk, msg, level, opts.trace) };
    return { ...base, ...(await withDeliveries(ctx, envelope, msg, sk, level, digest.digest("hex"), attempt, opts)) };
  } catch (e) {
    const failure = e instanceof PraxmailError && e.code === "invalid-input" ? new MailRejection(554, e.message, "5.6.0") : e;
    const discard = discardedBy("failed", { created: attempt.created, carried: attempt.carried.map((d) => d.id) });
    throw await cleanUpAfter(failure, [
      () => sink?.abort(e instanceof Error ? e : new Error(String(e))),
      () => attempt.intake?.abort(),
      ...discard.map((id) => () => discardDelivery(ctx, id, "message refused")),
    ]);
  }
}

/**
 * Sends a prepared message: every copy to upstream (or the outbox), then the original.
 * A delivery becomes visible as soon as its copy was accepted. If anything fails, what this
 * attempt created and did not send is discarded and the message is refused with 451, so the
 * sender retries; the retry skips the recipients whose copy was accepted. Deliveries whose
 * copy left stay, also when recording that failed (the store went away): their link is out,
 * and the retry announces them again. So do deliveries announced again (unsent): a mail of
 * theirs may be out, and the retry announces them once more.
 *
 * @param ctx - The core context.
 * @param transport - Where mail goes.
 * @param envelope - The SMTP envelope of the message.
 * @param p - From {@link prepareMessage}.
 * @throws {@link MailRejection} 451 when a copy or the original was not accepted; what the
 *   store threw when a copy left and could not be recorded as sent.
 */
export async function deliverPrepared(ctx: Context, transport: Transport, envelope: Envelope, p: Prepared): Promise<void> {
  const out = new Set<string>();
  const refused = (e: unknown): MailRejection => {
    const why = (e as NodeJS.ErrnoException).code ?? (e as { responseCode?: number }).responseCode ?? "error";
    return new MailRejection(451, `upstream did not accept the message (${String(why)}); try again later`, "4.4.1");
  };
  try {
    for (const c of p.copies) {
      await transport.sendRaw({ from: envelope.from, to: c.recipients }, c.bytes).catch((e: unknown) => {
        throw refused(e);
      });
      for (const id of c.deliveries) out.add(id);
      await markSent(ctx, c.deliveries);
    }
    await p.original?.sink.end().catch((e: unknown) => {
      throw refused(e);
    });
  } catch (e) {
    const upstream = e instanceof MailRejection;
    const discard = discardedBy(upstream ? "refused" : "failed", { created: p.deliveries, carried: p.announcedAgain, accepted: out });
    throw await cleanUpAfter(e, [() => p.original?.sink.abort(e instanceof Error ? e : new Error(String(e))), ...discard.map((id) => () => discardDelivery(ctx, id, upstream ? "upstream refused" : "send failed"))]);
  }
}

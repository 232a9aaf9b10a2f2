// The streaming half of the rewrite: mailsplit's Splitter turns the message into MIME
// objects. Attachments are decoded and handed to a callback as streams (they are never
// held whole); the rest of the message (headers, multipart structure, text bodies) is kept
// as a skeleton from which each recipient's copy is rendered.
import { once } from "node:events";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Splitter, type MessageChunk, type SplitterChunk } from "@zone-eu/mailsplit";
import { detectExtension } from "nodemailer/lib/mime-funcs";
import { MailRejection } from "./errors.js";

/** A parsed MIME node (mailsplit's node interface). */
export type MimeNode = Exclude<SplitterChunk, MessageChunk>;

/** Bounds on what one message may hold; beyond them the message is refused. */
export interface SplitLimits {
  /** MIME parts in the whole message. */
  readonly maxParts: number;
  /** Nesting depth of multiparts. */
  readonly maxDepth: number;
  /** Encoded bytes of all text bodies together (they are kept in memory). */
  readonly maxTextBytes: number;
}

/** Defaults for {@link SplitLimits}. */
export const SPLIT_LIMITS: SplitLimits = { maxParts: 1000, maxDepth: 40, maxTextBytes: 8 * 1024 * 1024 };

/** An attachment as it is found. */
export interface AttachmentMeta {
  /** From Content-Disposition or Content-Type, or made up from the type. */
  readonly name: string;
  readonly contentType: string;
}

/** A text body kept for rendering. */
export interface TextPart {
  readonly node: MimeNode;
  readonly kind: "plain" | "html";
  /** The decoded (transfer encoding removed) bytes in the part's charset. */
  readonly bytes: Buffer;
  /** The body as it came, for copies that leave it unchanged. */
  readonly encoded: Buffer;
  readonly charset: string;
}

/** One piece of the skeleton, in message order. */
export type Item =
  | { readonly kind: "node"; readonly node: MimeNode }
  | { readonly kind: "data"; value: Buffer }
  | { readonly kind: "text"; readonly part: TextPart };

/** The message without its attachments. */
export interface Skeleton {
  readonly root: MimeNode;
  readonly items: Item[];
  readonly texts: TextPart[];
  readonly attachments: number;
  /** The whole message was one attachment (a single-part body that is not text). */
  readonly rootIsAttachment: boolean;
}

/** Callbacks while splitting. */
export interface SplitHooks {
  /**
   * An attachment begins. The stream must be read to its end (or cancelled with an error).
   *
   * @param meta - Name and type.
   * @param body - The decoded content.
   */
  attachment(meta: AttachmentMeta, body: ReadableStream<Uint8Array>): Promise<void>;
}

function depthOf(node: MimeNode): number {
  let d = 0;
  for (let n: MimeNode | false = node; n && !n.root; n = n.parentNode) d++;
  return d;
}

/**
 * Which kind of body a leaf is: a text body that stays in the mail, or an attachment.
 *
 * @param node - A leaf node.
 * @returns plain, html, or null for an attachment.
 */
function textKind(node: MimeNode): "plain" | "html" | null {
  if (node.filename !== false || node.disposition === "attachment") return null;
  const type = node.contentType || "text/plain";
  if (type === "text/plain") return "plain";
  if (type === "text/html") return "html";
  return null;
}

function attachmentName(node: MimeNode, n: number): string {
  if (node.filename) return node.filename;
  const type = node.contentType || "application/octet-stream";
  if (type === "message/rfc822") return `Weitergeleitete-Nachricht-${n}.eml`;
  const ext = detectExtension(type);
  return `Anhang-${n}.${ext === "bin" ? "dat" : ext}`;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Removes the delimiter line that opened a part we are dropping. */
function dropDelimiter(items: Item[], node: MimeNode): void {
  const last = items.at(-1);
  const boundary = node._parentBoundary;
  if (last?.kind !== "data" || !boundary) return;
  const re = new RegExp(`(?:\\r?\\n)?--${escapeRegExp(boundary.toString("latin1"))}[ \\t]*\\r?\\n$`);
  const text = last.value.toString("latin1");
  const m = re.exec(text);
  if (m) last.value = last.value.subarray(0, m.index);
}

// Fail closed on structure praxmail cannot be sure it reads as the recipient's client will
// (found by test/relay.fuzz.test.ts). Whatever is not an attachment leaves in clear, so a
// message whose parts are in doubt is refused rather than guessed at.

/** A header line: a field name of printable ASCII without a colon, then the colon (RFC 5322 2.2). */
const FIELD = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;
/** A CR that is not part of a CRLF: some clients take it for a line end, praxmail does not. */
const BARE_CR = /\r(?!\n)/;
/** The headers that decide what a part is; each may appear once (RFC 2045). */
const SINGLE = ["content-type", "content-transfer-encoding", "content-disposition"];
/**
 * A part's headers at the start of a line of a text body or of the text between parts: a
 * delimiter was damaged, and what follows it (perhaps an attachment) would leave as text.
 */
const PART_HEADER = /(?:^|[\r\n])content-(?:type|transfer-encoding|disposition)[ \t]*:/i;

function damaged(what: string): MailRejection {
  return new MailRejection(554, `MIME structure is damaged (${what}); the message was not sent, so that no attachment leaves unencrypted`, "5.6.0");
}

/**
 * Refuses a node whose headers cannot be read with certainty: a line that is no header field
 * (it may be a damaged Content-Type), a bare CR, or a Content-* header given twice.
 */
function checkHeaders(node: MimeNode): void {
  if (!node.headers) return;
  for (const { line } of node.headers.getList()) {
    if (!FIELD.test(line)) throw damaged("a header line without a field name");
    if (BARE_CR.test(line)) throw damaged("a bare CR in a header");
  }
  for (const key of SINGLE) if (node.headers.get(key).length > 1) throw damaged(`more than one ${key} header in a part`);
}

function checkText(bytes: Buffer, where: string): void {
  if (PART_HEADER.test(bytes.toString("latin1"))) throw damaged(`part headers inside ${where}; is a boundary broken?`);
}

function decode(node: MimeNode, encoded: Buffer[]): Promise<Buffer> {
  const decoder = node.getDecoder();
  const out: Buffer[] = [];
  decoder.on("data", (c: Buffer) => out.push(c));
  const done = once(decoder, "end");
  for (const c of encoded) decoder.write(c);
  decoder.end();
  return done.then(() => Buffer.concat(out));
}

/** The leaf whose body chunks are arriving: a text body kept, or an attachment streamed to its hook. */
type Leaf =
  | { readonly kind: "text"; readonly node: MimeNode; readonly textKind: "plain" | "html"; readonly chunks: Buffer[] }
  | { readonly kind: "attachment"; readonly decoder: NodeJS.ReadWriteStream & { destroy(e?: Error): void }; readonly done: Promise<void> };

/** The skeleton of one message, built from the splitter's objects as they arrive. */
class SkeletonBuilder {
  private readonly items: Item[] = [];
  private readonly texts: TextPart[] = [];
  private root: MimeNode | undefined;
  private parts = 0;
  private textBytes = 0;
  private attachments = 0;
  private rootIsAttachment = false;
  private current: Leaf | null = null;

  constructor(
    private readonly hooks: SplitHooks,
    private readonly limits: SplitLimits,
  ) {}

  /** Takes the splitter's next object: a body chunk of the current leaf, text between parts, or a node. */
  async take(obj: SplitterChunk): Promise<void> {
    if (obj.type === "body") {
      await this.body(obj.value);
      return;
    }
    await this.endLeaf();
    if (obj.type === "data") this.data(obj.value);
    else this.node(obj as MimeNode);
  }

  /** Ends the current leaf: a text body is checked and decoded, an attachment's stream ended. */
  async endLeaf(): Promise<void> {
    const c = this.current;
    this.current = null;
    if (c?.kind === "text") {
      const encoded = Buffer.concat(c.chunks);
      checkText(encoded, "a text body");
      const bytes = await decode(c.node, c.chunks);
      const part: TextPart = { node: c.node, kind: c.textKind, bytes, encoded, charset: c.node.charset || "utf-8" };
      this.texts.push(part);
      this.items.push({ kind: "text", part });
    } else if (c?.kind === "attachment") {
      c.decoder.end();
      await c.done;
    }
  }

  /** After a failure: stops the attachment being read, and waits for its hook to give up. */
  async abort(e: unknown): Promise<void> {
    const c = this.current;
    if (c?.kind !== "attachment") return;
    c.decoder.destroy(e instanceof Error ? e : new Error(String(e)));
    await c.done.catch(() => undefined);
  }

  /**
   * @returns The skeleton, once every object was taken.
   * @throws {@link MailRejection} for a message without headers, or damaged text between parts.
   */
  skeleton(): Skeleton {
    if (!this.root) throw new MailRejection(554, "message has no headers", "5.6.0");
    for (const item of this.items) if (item.kind === "data") checkText(item.value, "the text between parts");
    return { root: this.root, items: this.items, texts: this.texts, attachments: this.attachments, rootIsAttachment: this.rootIsAttachment };
  }

  private async body(value: Buffer): Promise<void> {
    const c = this.current;
    if (c?.kind === "text") {
      this.textBytes += value.length;
      if (this.textBytes > this.limits.maxTextBytes) {
        throw new MailRejection(552, `message text is larger than ${this.limits.maxTextBytes >> 20} MiB; send long texts as an attachment`, "5.3.4");
      }
      c.chunks.push(value);
    } else if (c?.kind === "attachment") {
      if (!c.decoder.write(value)) {
        await Promise.race([once(c.decoder, "drain"), c.done]);
      }
    }
  }

  private data(value: Buffer): void {
    const last = this.items.at(-1);
    // Text between parts is kept in memory and leaves in clear, as text bodies do.
    this.textBytes += value.length;
    if (this.textBytes > this.limits.maxTextBytes) throw damaged(`more than ${this.limits.maxTextBytes >> 20} MiB outside any part`);
    if (last?.kind === "data") last.value = Buffer.concat([last.value, value]);
    else this.items.push({ kind: "data", value });
  }

  private node(node: MimeNode): void {
    if (++this.parts > this.limits.maxParts) throw new MailRejection(554, `message has more than ${this.limits.maxParts} MIME parts`, "5.6.0");
    if (depthOf(node) > this.limits.maxDepth) throw new MailRejection(554, `message nests MIME parts deeper than ${this.limits.maxDepth}`, "5.6.0");
    checkHeaders(node);
    if (node.root) this.root = node;
    if (node.multipart) {
      this.items.push({ kind: "node", node });
      return;
    }
    const kind = textKind(node);
    if (kind !== null) {
      this.items.push({ kind: "node", node });
      this.current = { kind: "text", node, textKind: kind, chunks: [] };
      return;
    }
    this.attachment(node);
  }

  /** Starts an attachment: its part leaves the skeleton (unless it is the whole message), its body goes to the hook. */
  private attachment(node: MimeNode): void {
    this.attachments++;
    if (node.root) {
      this.rootIsAttachment = true;
      this.items.push({ kind: "node", node });
    } else {
      dropDelimiter(this.items, node);
    }
    const decoder = node.getDecoder() as unknown as NodeJS.ReadWriteStream & { destroy(e?: Error): void };
    const meta = { name: attachmentName(node, this.attachments), contentType: node.contentType || "application/octet-stream" };
    const done = this.hooks.attachment(meta, Readable.toWeb(decoder as unknown as Readable) as ReadableStream<Uint8Array>);
    // Keep a rejection from going unhandled while body chunks are still being written.
    done.catch(() => undefined);
    this.current = { kind: "attachment", decoder, done };
  }
}

/**
 * Splits a message, streaming every attachment to `hooks.attachment` and keeping the rest.
 *
 * @param input - The raw message.
 * @param hooks - Called for each attachment.
 * @param limits - Bounds on parts, depth and text.
 * @returns The skeleton.
 * @throws {@link MailRejection} for a message beyond the limits or with broken headers;
 *   whatever the hooks throw.
 */
export async function splitMessage(input: Readable, hooks: SplitHooks, limits: SplitLimits = SPLIT_LIMITS): Promise<Skeleton> {
  const builder = new SkeletonBuilder(hooks, limits);
  const splitter = new Splitter({ ignoreEmbedded: true, maxHeadSize: 256 * 1024 });
  // What the loop below threw. pipeline() may reject instead with the AbortError that the
  // loop's iterator gives the splitter on the way out, which turned refusals into 451s.
  let thrown: unknown = null;
  try {
    await pipeline(input, splitter, async (objects: AsyncIterable<SplitterChunk>) => {
      try {
        for await (const obj of objects) await builder.take(obj);
        await builder.endLeaf();
      } catch (e) {
        thrown ??= e;
        throw e;
      }
    });
  } catch (caught) {
    const e = thrown ?? caught;
    await builder.abort(e);
    if ((e as { code?: string }).code === "EMAXLEN") throw new MailRejection(554, "message headers are too large", "5.6.0");
    throw e;
  }
  return builder.skeleton();
}

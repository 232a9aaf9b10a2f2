// The second half of the rewrite: a recipient's copy from the skeleton, through
// mailsplit's Joiner format (headers of kept nodes, multipart data, bodies), with the
// block added to the first plain and the first HTML body.
import { encode as qpEncode, wrap as qpWrap } from "nodemailer/lib/qp";
import { encodeWords } from "nodemailer/lib/mime-funcs";
import type { MimeNode, Skeleton, TextPart } from "./split.js";

/** How one copy differs from the original. */
export interface CopyOptions {
  /** The subject without tags; null leaves the Subject header as it is. */
  readonly subject: string | null;
  /** Added to the text bodies; null adds nothing (a level-3 mail without attachments). */
  readonly block: { readonly text: string; readonly html: string } | null;
  /** Headers to set on the root (e.g. X-Praxmail-Delivery). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** Headers that never leave in a rewritten copy. */
const DROP = ["x-praxmail-level", "bcc"];

/**
 * Decodes text in a part's charset; unknown charsets fall back to UTF-8 with replacement.
 *
 * @param part - A kept text body.
 * @returns The text.
 */
export function textOf(part: TextPart): string {
  try {
    return new TextDecoder(part.charset).decode(part.bytes);
  } catch {
    return new TextDecoder("utf-8").decode(part.bytes);
  }
}

function qp(text: string): Buffer {
  return Buffer.from(qpWrap(qpEncode(Buffer.from(text.replace(/\r?\n/g, "\r\n"))), 76), "latin1");
}

function asUtf8Qp(node: MimeNode): void {
  if (!node.headers) return;
  node.setCharset("utf-8");
  node.headers.update("Content-Transfer-Encoding", "quoted-printable");
}

function withBlock(part: TextPart, block: { text: string; html: string }): string {
  const text = textOf(part);
  if (part.kind === "plain") return `${block.text}\n${text}`;
  const html = text.replace(/<meta[^>]*charset\s*=\s*["']?[\w-]+["']?[^>]*>/gi, '<meta charset="utf-8">');
  const body = /<body[^>]*>/i.exec(html);
  if (!body) return block.html + html;
  const at = body.index + body[0].length;
  return `${html.slice(0, at)}\n${block.html}${html.slice(at)}`;
}

function rootBoundary(root: MimeNode): string | null {
  return root._boundary ? root._boundary.toString("latin1") : null;
}

function injectedPart(boundary: string, block: { text: string }): Buffer {
  const head = `--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n`;
  return Buffer.concat([Buffer.from(head), qp(block.text), Buffer.from("\r\n")]);
}

/**
 * Renders one recipient's copy.
 *
 * @param sk - The skeleton from splitMessage.
 * @param opts - Subject, block and headers for this copy.
 * @returns The message bytes (CRLF line ends in everything praxmail writes).
 */
export function renderCopy(sk: Skeleton, opts: CopyOptions): Buffer {
  const headers = sk.root.headers;
  if (headers) {
    for (const h of DROP) headers.remove(h);
    if (opts.subject !== null) headers.update("Subject", encodeWords(opts.subject, "Q", 52));
    for (const [k, v] of Object.entries(opts.headers ?? {})) headers.update(k, v);
  }
  const block = opts.block;
  const out: Buffer[] = [];
  if (sk.rootIsAttachment) {
    // The whole body was the attachment: the copy becomes a plain text mail with the block.
    if (headers) {
      headers.update("Content-Type", "text/plain; charset=utf-8");
      headers.update("Content-Transfer-Encoding", "quoted-printable");
      headers.remove("Content-Disposition");
    }
    out.push(sk.root.getHeaders(), qp(block?.text ?? ""));
    return Buffer.concat(out);
  }
  const firstPlain = sk.texts.find((t) => t.kind === "plain");
  const firstHtml = sk.texts.find((t) => t.kind === "html");
  const needsInjection = block !== null && sk.texts.length === 0;
  const boundary = rootBoundary(sk.root);
  const closing = boundary === null ? null : `--${boundary}--`;
  let injected = false;
  for (const item of sk.items) {
    if (item.kind === "node") {
      const part = sk.texts.find((t) => t.node === item.node);
      if (block && part && (part === firstPlain || part === firstHtml)) asUtf8Qp(item.node);
      out.push(item.node.getHeaders());
    } else if (item.kind === "data") {
      if (needsInjection && !injected && closing !== null) {
        const at = item.value.indexOf(closing);
        if (at !== -1) {
          // Before the closing delimiter, keeping the CRLF that belongs to it.
          const cut = at >= 2 && item.value[at - 2] === 0x0d ? at - 2 : at >= 1 && item.value[at - 1] === 0x0a ? at - 1 : at;
          out.push(item.value.subarray(0, cut), Buffer.from("\r\n"), injectedPart(boundary ?? "", block));
          out.push(Buffer.from(item.value.subarray(cut).toString("latin1").replace(/^\r?\n/, "")));
          injected = true;
          continue;
        }
      }
      out.push(item.value);
    } else {
      const p = item.part;
      out.push(block && (p === firstPlain || p === firstHtml) ? qp(withBlock(p, block)) : p.encoded);
    }
  }
  if (needsInjection && !injected) {
    if (boundary !== null) out.push(Buffer.from("\r\n"), injectedPart(boundary, block), Buffer.from(`--${boundary}--\r\n`));
    else out.push(qp(block.text));
  }
  return Buffer.concat(out);
}

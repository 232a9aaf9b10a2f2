// The retry key: when is a message the same message again? The one rule for both front
// doors (relay and milter), so that a retry never becomes a second delivery.
//
// A message is the same when its Message-ID, envelope sender, recipient and content are.
// The content is every byte of the message except the top-level header fields that mail
// servers add or replace in transit (TRACE_FIELDS): each attempt through an MTA gets a new
// Received line (its own queue id and time), a DKIM or ARC signature with a new timestamp, a
// new Authentication-Results, and a Date of its own when the client sent none (Postfix adds
// one for local clients, and the milter sees it). Everything else the sender wrote stays in
// the key, the body and the headers of MIME parts included, so a changed message is another
// message. A message without a Message-ID gets a new one from Postfix on every attempt, so
// its retries cannot be recognised; practice software sets one.
import { createHash, type Hash } from "node:crypto";
import { Headers } from "@zone-eu/mailsplit";

/**
 * Top-level header fields left out of the retry key (lower case). Trace fields (RFC 5321
 * 4.4), what a delivering MTA adds (Postfix's Delivered-To and X-Original-To), what checking
 * or signing in transit adds (RFC 6376, 8601, 8617, 7208), and Date, which an MTA stamps per
 * attempt on a message that came without one (the Message-ID still tells messages apart).
 */
export const TRACE_FIELDS: ReadonlySet<string> = new Set([
  "date",
  "received",
  "return-path",
  "delivered-to",
  "x-original-to",
  "dkim-signature",
  "arc-seal",
  "arc-message-signature",
  "arc-authentication-results",
  "authentication-results",
  "received-spf",
]);

/**
 * Feeds a message's header block into a hash as the retry key sees it: every field but
 * {@link TRACE_FIELDS}, in order, with its line ends made LF (the milter rebuilds the header
 * block from Postfix's callbacks with CRLF; a relay client may send LF).
 *
 * @param hash - The hash to update.
 * @param head - The header block, through the blank line.
 */
export function hashHead(hash: Hash, head: Buffer): void {
  for (const h of new Headers(head).getList()) {
    if (TRACE_FIELDS.has(h.key)) continue;
    hash.update(Buffer.from(`${h.line.replace(/\r?\n/g, "\n").replace(/\n+$/, "")}\n`, "binary"));
  }
  hash.update("\n");
}

/**
 * The idempotency key of one recipient's delivery (the deliveries' `source_key`).
 *
 * @param messageId - The Message-ID header as given ("" without one).
 * @param from - The envelope sender.
 * @param recipient - One recipient.
 * @param content - Hex digest of {@link hashHead} and then the body.
 * @returns A hex SHA-256.
 */
export function sourceKey(messageId: string, from: string, recipient: string, content: string): string {
  return createHash("sha256").update(`${messageId}\n${from}\n${recipient.toLowerCase()}\n${content}`).digest("hex");
}

// Security-level classification (DESIGN.md §2): the X-Praxmail-Level header or a subject
// tag, raised by the practice's policy; internal recipients are left alone.
import libmime from "libmime";
import { LEVELS, type Level } from "../core/index.js";
import { MailRejection } from "./errors.js";

/** Minimum levels the practice sets for mail to external recipients. */
export interface Policy {
  /** Every external mail is at least this level (0–4). */
  readonly minLevel?: number;
  /** Every external mail with attachments is at least this level (0–4). */
  readonly minLevelWithAttachments?: number;
}

/** What the headers say. */
export interface Classification {
  readonly level: Level;
  /** The decoded subject with every tag removed, or null without a Subject. */
  readonly subject: string | null;
}

// [S3] [SL3] [Stufe 3] [sicher], case-insensitive, with optional spaces inside the brackets.
const TAG = /\[\s*(?:(?:sl|s|stufe)\s*(\d+)|(sicher))\s*\]/giu;

// What a client does not show, dropped before tags are looked for: zero-width space and
// joiners (U+200B–U+200D), word joiner (U+2060), BOM (U+FEFF), soft hyphen (U+00AD), the
// bidi marks, and the rest of what Unicode calls default-ignorable or format characters.
const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\p{Cf}]/gu;
/**
 * An RFC 2047 encoded word in UTF-7, which libmime reads as UTF-8 (so `+AFs-S3+AF0-` stays
 * as it is) while a client that knows UTF-7 shows `[S3]`.
 */
const UTF7_WORD = /=\?(?:unicode-1-1-)?utf-?7(?:-imap)?(?:\*[^?]*)?\?[bq]\?/i;

function checkLevel(n: number, what: string): Level {
  const rules = Number.isInteger(n) ? LEVELS[n] : undefined;
  if (rules) return rules.level;
  throw new MailRejection(554, `unknown security level in ${what}; use 0 to 4`, "5.6.0");
}

/**
 * A header value as the recipient reads it: unfolded, RFC 2047 encoded words decoded.
 *
 * @throws {@link MailRejection} 554 for an encoded word in UTF-7, which praxmail does not
 *   decode and a client might, showing a tag praxmail did not see.
 */
function decodeValue(raw: string, what: string): string {
  if (UTF7_WORD.test(raw)) throw new MailRejection(554, `${what} has an encoded word in UTF-7, which praxmail does not read; send it in UTF-8`, "5.6.0");
  let decoded: string;
  try {
    decoded = libmime.decodeWords(raw.replace(/\r?\n[ \t]/g, " "));
  } catch {
    decoded = raw;
  }
  return decoded;
}

/**
 * The text tags are matched in: each character NFKC-normalised (a fullwidth ３ is 3, ［ is [)
 * and invisible characters dropped, with where each UTF-16 unit of it came from, so that a
 * tag found in it can be cut out of the text as it was.
 */
function tagView(text: string): { readonly text: string; readonly start: number[]; readonly end: number[] } {
  let out = "";
  const start: number[] = [];
  const end: number[] = [];
  let at = 0;
  for (const ch of text) {
    const n = ch.normalize("NFKC").replace(INVISIBLE, "");
    out += n;
    for (let i = 0; i < n.length; i++) {
      start.push(at);
      end.push(at + ch.length);
    }
    at += ch.length;
  }
  return { text: out, start, end };
}

/**
 * Classifies a message by its headers. Tags and levels are read after NFKC normalisation
 * and with invisible characters removed, as the recipient's client shows them.
 *
 * @param subjectHeader - The raw Subject value (RFC 2047 encoded words allowed), if any.
 * @param levelHeaders - Every raw X-Praxmail-Level value.
 * @returns The highest level named anywhere, and the subject without tags.
 * @throws {@link MailRejection} 554 for a level outside 0–4, or an encoded word in UTF-7.
 */
export function classify(subjectHeader: string | undefined, levelHeaders: readonly string[]): Classification {
  let level: Level = 0;
  for (const raw of levelHeaders) {
    const v = tagView(decodeValue(raw, "X-Praxmail-Level")).text.trim();
    if (!/^\d{1,3}$/.test(v)) throw new MailRejection(554, `X-Praxmail-Level must be a number from 0 to 4, not ${JSON.stringify(v.slice(0, 20))}`, "5.6.0");
    level = Math.max(level, checkLevel(Number(v), "X-Praxmail-Level")) as Level;
  }
  if (subjectHeader === undefined) return { level, subject: null };
  const decoded = decodeValue(subjectHeader, "the subject");
  const view = tagView(decoded);
  let subject = "";
  let from = 0;
  for (const m of view.text.matchAll(TAG)) {
    const n = m[2] ? 3 : Number(m[1]);
    level = Math.max(level, checkLevel(n, `the subject tag ${m[0]}`)) as Level;
    // The tag as it was written, with whatever invisible characters it held.
    subject += `${decoded.slice(from, view.start[m.index])} `;
    from = view.end[m.index + m[0].length - 1] ?? decoded.length;
  }
  subject = (subject + decoded.slice(from)).replace(/\s{2,}/g, " ").trim();
  return { level, subject };
}

/**
 * Raises a level by the practice's policy.
 *
 * @param level - The level from the headers.
 * @param policy - The policy.
 * @param hasAttachments - Whether the message has at least one attachment.
 * @returns The effective level for external recipients.
 */
export function applyPolicy(level: Level, policy: Policy, hasAttachments: boolean): Level {
  let l = Math.max(level, policy.minLevel ?? 0);
  if (hasAttachments) l = Math.max(l, policy.minLevelWithAttachments ?? 0);
  return l as Level;
}

/**
 * Tells whether an address belongs to the practice (its domain or a subdomain of it). A local
 * part that can route elsewhere (`%`, `!`, `@`, `:`, or quoted) is never internal: the
 * practice's own server might forward such mail on, and it would leave unencrypted.
 *
 * @param address - An envelope recipient.
 * @param internalDomains - Lowercase domains.
 * @returns True for internal recipients, who get the original.
 */
export function isInternal(address: string, internalDomains: readonly string[]): boolean {
  const at = address.lastIndexOf("@");
  if (/["%!@:\\]/.test(address.slice(0, Math.max(at, 0)))) return false;
  const domain = address.slice(at + 1).toLowerCase().replace(/\.$/, "");
  return internalDomains.some((d) => domain === d || domain.endsWith(`.${d}`));
}

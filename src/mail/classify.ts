// Security-level classification (DESIGN.md §2): the X-Praxmail-Level header or a subject
// tag, raised by the practice's policy; internal recipients are left alone.
import libmime from "libmime";
import { MailRejection } from "./errors.js";

/** 0 means untagged. */
export type Level = 0 | 1 | 2 | 3 | 4;

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

function checkLevel(n: number, what: string): Level {
  if (Number.isInteger(n) && n >= 0 && n <= 4) return n as Level;
  throw new MailRejection(554, `unknown security level in ${what}; use 0 to 4`, "5.6.0");
}

/**
 * Classifies a message by its headers.
 *
 * @param subjectHeader - The raw Subject value (RFC 2047 encoded words allowed), if any.
 * @param levelHeaders - Every raw X-Praxmail-Level value.
 * @returns The highest level named anywhere, and the subject without tags.
 * @throws {@link MailRejection} 554 for a level outside 0–4.
 */
export function classify(subjectHeader: string | undefined, levelHeaders: readonly string[]): Classification {
  let level: Level = 0;
  for (const raw of levelHeaders) {
    const v = raw.trim();
    if (!/^\d{1,3}$/.test(v)) throw new MailRejection(554, `X-Praxmail-Level must be a number from 0 to 4, not ${JSON.stringify(v.slice(0, 20))}`, "5.6.0");
    level = Math.max(level, checkLevel(Number(v), "X-Praxmail-Level")) as Level;
  }
  if (subjectHeader === undefined) return { level, subject: null };
  let decoded: string;
  try {
    decoded = libmime.decodeWords(subjectHeader.replace(/\r?\n[ \t]/g, " "));
  } catch {
    decoded = subjectHeader;
  }
  for (const m of decoded.matchAll(TAG)) {
    const n = m[2] ? 3 : Number(m[1]);
    level = Math.max(level, checkLevel(n, `the subject tag ${m[0]}`)) as Level;
  }
  const subject = decoded.replace(TAG, " ").replace(/\s{2,}/g, " ").trim();
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
 * Tells whether an address belongs to the practice (its domain or a subdomain of it).
 *
 * @param address - An envelope recipient.
 * @param internalDomains - Lowercase domains.
 * @returns True for internal recipients, who get the original.
 */
export function isInternal(address: string, internalDomains: readonly string[]): boolean {
  const domain = address.slice(address.lastIndexOf("@") + 1).toLowerCase().replace(/\.$/, "");
  return internalDomains.some((d) => domain === d || domain.endsWith(`.${d}`));
}

import { PraxmailError } from "./errors.js";
import { LEVELS, type Level } from "./levels.js";

const EMAIL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$/;

/**
 * Normalises and checks an e-mail address (lowercased; no display name, no comments).
 *
 * @param input - The address as given.
 * @returns The lowercased address.
 * @throws {@link PraxmailError} `invalid-input` if it is not a plain address.
 */
export function normaliseEmail(input: string): string {
  const email = input.trim().toLowerCase();
  if (email.length > 254 || !EMAIL.test(email) || email.includes("..")) {
    throw new PraxmailError("invalid-input", `not an e-mail address: ${JSON.stringify(input.slice(0, 80))}`, "give a plain address such as patient@example.org");
  }
  return email;
}

/**
 * Checks a security level.
 *
 * @param level - The candidate.
 * @returns The level as 1–4.
 * @throws {@link PraxmailError} `usage` if it is not an integer from 1 to 4.
 */
export function checkLevel(level: unknown): Level {
  const rules = typeof level === "number" ? LEVELS[level] : undefined;
  if (rules?.encryptsAttachments) return rules.level;
  throw new PraxmailError("usage", `unknown security level ${JSON.stringify(level)}`, "use a level from 1 to 4");
}

// Characters that are never shown: C0/C1 controls and DEL, format characters (the bidi
// embeddings, overrides and isolates U+202A–U+202E and U+2066–U+2069, the marks U+200E,
// U+200F and U+061C, zero-width characters, the soft hyphen), line and paragraph
// separators, lone surrogates, and whatever else Unicode marks as default-ignorable.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Default_Ignorable_Code_Point}]/gu;
/** What Windows forbids in a name, besides the path separators (only a path's last part is kept). */
const FORBIDDEN = /[<>:"|?*]/g;
/** Names Windows gives to devices, with or without an extension (CON, CON.txt, com1.tar.gz). */
const DEVICE = /^(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)$/i;
/** At most this many UTF-8 bytes, well inside the 255 that file systems allow. */
const MAX_NAME_BYTES = 200;
/** A last `.xyz` of at most this many bytes counts as the extension and is always kept. */
const MAX_EXT_BYTES = 16;
const FALLBACK_NAME = "Anhang";

const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8");

/** The longest start of `s` (whole code points) that fits in `bytes` UTF-8 bytes. */
function cutToBytes(s: string, bytes: number): string {
  let out = "";
  for (const ch of s) {
    if (utf8Length(out) + utf8Length(ch) > bytes) break;
    out += ch;
  }
  return out;
}

/**
 * Makes a file name from outside (a MIME header, a path, a patient's browser) safe to store,
 * show and write on any system: of a path only the last part is kept, invisible and control
 * characters (bidi overrides included) are removed, characters Windows forbids become `_`,
 * runs of white space become one space, leading and trailing dots and spaces go, device
 * names such as `CON` get a leading `_`, and a long name is shortened in its stem so that
 * the extension stays visible at the end. Every path that takes a file name uses this.
 *
 * @param name - The name as given.
 * @returns A plain name (no folders) of at most 200 UTF-8 bytes that is never empty.
 */
export function cleanFileName(name: string): string {
  let clean = (name.split(/[/\\]/).pop() ?? "")
    .replace(INVISIBLE, "")
    .normalize("NFC")
    .replace(FORBIDDEN, "_")
    .replace(/\s+/gu, " ")
    .replace(/^[. ]+|[. ]+$/g, "");
  const dot = clean.lastIndexOf(".");
  const ext = dot > 0 && utf8Length(clean.slice(dot)) <= MAX_EXT_BYTES && !clean.slice(dot).includes(" ") ? clean.slice(dot) : "";
  let stem = ext ? clean.slice(0, dot) : clean;
  if (DEVICE.test(stem.split(".")[0]?.trimEnd() ?? "")) stem = `_${stem}`;
  if (utf8Length(stem) + utf8Length(ext) > MAX_NAME_BYTES) stem = cutToBytes(stem, MAX_NAME_BYTES - utf8Length(ext)).replace(/[. ]+$/, "");
  clean = stem === "" ? "" : stem + ext;
  return clean === "" ? FALLBACK_NAME : clean;
}

/**
 * Picks a name that is not taken yet, by numbering the stem: `Befund.pdf`, `Befund (2).pdf`.
 * Names are compared without case, as on Windows and macOS.
 *
 * @param name - A name from {@link cleanFileName}.
 * @param taken - Names in use (lowercase); the result is added to it.
 * @returns The name, numbered if it was taken.
 */
export function uniqueFileName(name: string, taken: Set<string>): string {
  const dot = name.lastIndexOf(".");
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
  let candidate = name;
  for (let n = 2; taken.has(candidate.toLowerCase()); n++) {
    const suffix = ` (${n})${ext}`;
    candidate = cutToBytes(stem, MAX_NAME_BYTES - utf8Length(suffix)) + suffix;
  }
  taken.add(candidate.toLowerCase());
  return candidate;
}

import { PraxmailError } from "./errors.js";

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
export function checkLevel(level: unknown): 1 | 2 | 3 | 4 {
  if (level === 1 || level === 2 || level === 3 || level === 4) return level;
  throw new PraxmailError("usage", `unknown security level ${JSON.stringify(level)}`, "use a level from 1 to 4");
}

/**
 * Makes a file name safe to store and show: no path, no control characters, bounded length.
 *
 * @param name - A name from a path, a MIME header or a form.
 * @returns A name that is never empty.
 */
export function cleanFileName(name: string): string {
  const base = name.split(/[/\\]/).pop() ?? "";
  // eslint-disable-next-line no-control-regex
  let clean = base.normalize("NFC").replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "").trim();
  clean = clean.replace(/^\.+/, "");
  if (clean.length > 200) {
    const dot = clean.lastIndexOf(".");
    const ext = dot > 0 && clean.length - dot <= 10 ? clean.slice(dot) : "";
    clean = clean.slice(0, 200 - ext.length) + ext;
  }
  return clean === "" ? "Anhang" : clean;
}

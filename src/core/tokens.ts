import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * @param prefix - e.g. `d` for deliveries.
 * @returns A short random id such as `d_k3m9x2q7hw4t`.
 */
export function newId(prefix: string): string {
  // 32 symbols, so 5 bits each without bias; no 0/o or 1/l look-alikes.
  const alphabet = "23456789abcdefghijkmnpqrstuvwxyz";
  let s = "";
  for (const b of randomBytes(12)) s += alphabet.charAt(b & 31);
  return `${prefix}_${s}`;
}

/** @returns 32 random bytes, base64url: a link token. */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

/**
 * @param token - A link token.
 * @returns Its SHA-256, hex: the only form stored.
 */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/**
 * Compares two strings in constant time (for their length): secrets, hashes of secrets.
 *
 * @param a - One string.
 * @param b - The other.
 * @returns Whether they are equal.
 */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The login link of a mail to a patient: the address filled in, so the patient types only
 * the Secu-Pass-Key, and the page to go to afterwards.
 *
 * @param portalUrl - The portal's public base URL.
 * @param email - The patient's address.
 * @param next - A local path, e.g. `/deliveries/d_…`; the message list if absent.
 * @returns `<portal>/login?email=…&next=…`.
 */
export function loginLink(portalUrl: string, email: string, next = "/deliveries"): string {
  return `${portalUrl}/login?${new URLSearchParams({ email, next }).toString()}`;
}

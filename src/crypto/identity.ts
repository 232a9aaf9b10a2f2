import { bech32 } from "@scure/base";

/** The age recipient types praxmail can use: classic X25519 or the ML-KEM-768 + X25519 hybrid. */
export type RecipientType = "x25519" | "mlkem768x25519";

/** Every supported recipient type, in the order the CLI lists them. */
export const RECIPIENT_TYPES: readonly RecipientType[] = ["mlkem768x25519", "x25519"];

const IDENTITY_PREFIX: Record<RecipientType, string> = {
  x25519: "AGE-SECRET-KEY-",
  mlkem768x25519: "AGE-SECRET-KEY-PQ-",
};

/**
 * Tells whether a string names a supported recipient type.
 *
 * @param s - The candidate, e.g. from the config file or a CLI flag.
 * @returns True for `x25519` and `mlkem768x25519`.
 */
export function isRecipientType(s: unknown): s is RecipientType {
  return s === "x25519" || s === "mlkem768x25519";
}

/**
 * Encodes a 32-byte seed as an age identity of the given type.
 *
 * Both identity types are Bech32 of 32 bytes, so any seed (random or from a KDF) is valid.
 *
 * @param seed - Exactly 32 bytes.
 * @param type - The recipient type the identity belongs to.
 * @returns `AGE-SECRET-KEY-1…` or `AGE-SECRET-KEY-PQ-1…`.
 * @throws If the seed is not 32 bytes.
 */
export function identityFromSeed(seed: Uint8Array, type: RecipientType): string {
  if (seed.length !== 32) throw new Error("identity seed must be 32 bytes");
  // The limit check is off because it does not apply to identities of this length anyway.
  return bech32.encode(IDENTITY_PREFIX[type], bech32.toWords(seed), false).toUpperCase();
}

/**
 * Generates a fresh random age identity.
 *
 * @param type - The recipient type.
 * @returns The identity string.
 */
export function generateIdentity(type: RecipientType): string {
  return identityFromSeed(crypto.getRandomValues(new Uint8Array(32)), type);
}

/**
 * Tells the type of an identity string, or null if it is not a native age identity.
 *
 * @param identity - The candidate string.
 * @returns The recipient type, or null.
 */
export function identityType(identity: string): RecipientType | null {
  if (/^AGE-SECRET-KEY-PQ-1[02-9AC-HJ-NP-Z]+$/.test(identity)) return "mlkem768x25519";
  if (/^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]+$/.test(identity)) return "x25519";
  return null;
}

/**
 * Tells the type of a recipient string, or null if it is not a native age recipient.
 *
 * @param recipient - The candidate string.
 * @returns The recipient type, or null.
 */
export function recipientType(recipient: string): RecipientType | null {
  if (/^age1pq1[02-9ac-hj-np-z]{1000,}$/.test(recipient)) return "mlkem768x25519";
  if (/^age1[02-9ac-hj-np-z]{58}$/.test(recipient)) return "x25519";
  return null;
}

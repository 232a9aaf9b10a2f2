// Ed25519 signatures over domain-separated statements (DESIGN.md §3, signed approvals).
// The practice signing key is derived from the practice identity P with HKDF, so whoever
// holds P can sign and nobody needs a second secret; its public key is pinned in the config.
import { createHash, createPrivateKey, createPublicKey, hkdfSync, sign, verify, type KeyObject } from "node:crypto";
import { bech32 } from "@scure/base";
import { identityType } from "./identity.js";

/** A private signing key and its public key as pinned in the config (`ed25519:<base64>`). */
export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: string;
}

// DER prefixes of an Ed25519 PKCS#8 private key and SPKI public key (RFC 8410).
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
const PUBLIC_PREFIX = "ed25519:";

/**
 * Makes a signing key from a 32-byte seed.
 *
 * @param seed - Exactly 32 secret bytes.
 * @returns The key pair.
 * @throws If the seed is not 32 bytes.
 */
export function signingKeyFromSeed(seed: Uint8Array): SigningKey {
  if (seed.length !== 32) throw new Error("signing key seed must be 32 bytes");
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { privateKey, publicKey: PUBLIC_PREFIX + spki.subarray(SPKI_PREFIX.length).toString("base64") };
}

/**
 * Derives the practice signing key from the practice identity P. The same P always gives
 * the same key; the key reveals nothing about P.
 *
 * @param identity - An `AGE-SECRET-KEY-1…` or `AGE-SECRET-KEY-PQ-1…` identity.
 * @returns The practice signing key.
 * @throws If the identity is not a native age identity.
 */
export function practiceSigningKey(identity: string): SigningKey {
  if (identityType(identity) === null) throw new Error("not a native age identity");
  const seed = Uint8Array.from(bech32.fromWords(bech32.decode(identity.toLowerCase() as `${string}1${string}`, false).words));
  return signingKeyFromSeed(new Uint8Array(hkdfSync("sha256", seed, new Uint8Array(0), "praxmail practice signing key v1", 32)));
}

/**
 * Builds the bytes that are signed: a kind, then one field per line. Fields may not contain
 * a line break, so no two different statements have the same bytes.
 *
 * @param kind - What the statement says, e.g. `praxmail approval v1`.
 * @param fields - Its fields, in a fixed order.
 * @returns The statement.
 * @throws If a field contains a line break.
 */
export function statement(kind: string, fields: readonly string[]): string {
  for (const f of [kind, ...fields]) if (/[\r\n]/.test(f)) throw new Error("a signed field may not contain a line break");
  return [kind, ...fields].join("\n");
}

/**
 * @param key - The signing key.
 * @param text - A statement from {@link statement}.
 * @returns The signature, base64.
 */
export function signStatement(key: SigningKey, text: string): string {
  return sign(null, Buffer.from(text, "utf8"), key.privateKey).toString("base64");
}

/**
 * Verifies a signature. Never throws: anything malformed is simply not valid.
 *
 * @param publicKey - `ed25519:<base64>`, as pinned in the config.
 * @param text - The statement.
 * @param signature - base64.
 * @returns Whether the signature is valid for exactly this statement and key.
 */
export function verifyStatement(publicKey: string, text: string, signature: string): boolean {
  try {
    if (!publicKey.startsWith(PUBLIC_PREFIX) || !/^[A-Za-z0-9+/]{86}==$/.test(signature)) return false;
    const raw = Buffer.from(publicKey.slice(PUBLIC_PREFIX.length), "base64");
    if (raw.length !== 32) return false;
    const key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: "der", type: "spki" });
    return verify(null, Buffer.from(text, "utf8"), key, Buffer.from(signature, "base64"));
  } catch {
    return false;
  }
}

/**
 * A short fingerprint of a public key, to compare by eye: `SHA256:` and unpadded base64,
 * as OpenSSH prints them.
 *
 * @param publicKey - `ed25519:<base64>`.
 * @returns The fingerprint.
 */
export function keyFingerprint(publicKey: string): string {
  return "SHA256:" + createHash("sha256").update(publicKey).digest("base64").replace(/=+$/, "");
}

// A new Secu-Pass-Key as the browser sends it (registration, a reset): fresh parameters,
// U's recipient and the login credential, never the key or U. See login.ts for the login.
import { createHash } from "node:crypto";
import { KdfParamsError, parseNewKeyKdfParams, recipientType, type KdfParams } from "../crypto/index.js";
import { PraxmailError } from "./errors.js";

/** 32 bytes in base64url without padding: a login credential, or a challenge's nonce. */
export const CREDENTIAL = /^[A-Za-z0-9_-]{43}$/;

/**
 * The stored form of a login credential: `SHA-256("praxmail login credential v1" ‖ 0x00 ‖
 * credential)`, hex. One unsalted hash is enough here, unlike for a password: the credential
 * is 256 bits out of scrypt (N=2^17) and HKDF, so the hash cannot be inverted, and the only
 * way to test a guess against a stolen hash is through the Secu-Pass-Key, at one scrypt per
 * guess (the address is in scrypt's salt, so no guess serves two accounts).
 *
 * @param credential - 32 bytes, base64url, as the browser sends them.
 * @returns The hash to store or compare.
 * @throws {@link PraxmailError} `invalid-input` for anything but 32 bytes in base64url.
 */
export function credentialHash(credential: string): string {
  if (!CREDENTIAL.test(credential) || Buffer.from(credential, "base64url").length !== 32) {
    throw new PraxmailError("invalid-input", "the login credential must be 32 bytes, base64url");
  }
  return createHash("sha256").update(`praxmail login credential v1\0${credential}`).digest("hex");
}

/** What the browser sends to set a new Secu-Pass-Key: fresh parameters, U's recipient and the credential. */
export interface NewKey {
  /** The KDF parameters the browser made (version 3, random salt); checked here. */
  readonly kdf: unknown;
  readonly recipient: string;
  readonly credential: string;
}

/** A {@link NewKey}, checked. */
export interface CheckedKey {
  readonly kdf: KdfParams;
  readonly recipient: string;
  readonly credentialHash: string;
}

/**
 * Checks a new key from the browser: version 3 parameters at full cost, a recipient of
 * their type, a well-formed credential.
 *
 * @param key - As posted.
 * @returns The parameters, the recipient and the credential's hash.
 * @throws {@link PraxmailError} `invalid-input`, naming what is wrong.
 */
export function checkNewKey(key: NewKey): CheckedKey {
  let kdf: KdfParams;
  try {
    kdf = parseNewKeyKdfParams(key.kdf);
  } catch (e) {
    if (e instanceof KdfParamsError) throw new PraxmailError("invalid-input", e.message);
    throw e;
  }
  if (recipientType(key.recipient) !== kdf.type) throw new PraxmailError("invalid-input", `recipient is not an ${kdf.type} age recipient`);
  return { kdf, recipient: key.recipient, credentialHash: credentialHash(key.credential) };
}

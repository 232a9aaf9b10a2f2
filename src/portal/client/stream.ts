// Decrypting a downloaded age file in the browser. typage parses the header and unwraps
// the file key; the payload is opened by src/crypto/stream-open.ts (the same code the
// server uses) with libsodium's WASM ChaCha20-Poly1305, about twice as fast as typage's
// pure-JS ChaCha (bench/browser.ts). Where WebAssembly cannot start, typage does it all.
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { Decrypter } from "age-encryption";
import { openPayload, type Aead } from "../../crypto/stream-open.js";

const PAYLOAD = new TextEncoder().encode("payload");

/**
 * Starts loading libsodium (a separate chunk of the bundle) and its WASM module.
 *
 * @returns Its AEAD, or null when it cannot start here (no WebAssembly, a CSP without
 *   'wasm-unsafe-eval', the chunk failed to load).
 */
export function loadAead(): Promise<Aead | null> {
  return import("./sodium.js").then((m) => m.sodiumAead()).catch(() => null);
}

/**
 * Decrypts a downloaded age file with an identity.
 *
 * @param input - The binary age file, as it arrives.
 * @param identity - `AGE-SECRET-KEY-1…`.
 * @param aead - From {@link loadAead}; null means typage's own payload code.
 * @returns The plaintext stream; it errors at the first damaged or missing chunk.
 * @throws If the header does not parse or the identity does not match.
 */
export async function decryptFile(input: ReadableStream<Uint8Array>, identity: string, aead: Promise<Aead | null>): Promise<ReadableStream<Uint8Array>> {
  const d = new Decrypter();
  d.addIdentity(identity);
  const a = await aead;
  if (!a) return d.decrypt(input);
  return openPayload(input, {
    openHeader: (header) => d.decryptHeader(header),
    payloadKey: (fileKey, nonce) => hkdf(sha256, fileKey, nonce, PAYLOAD, 32),
    aead: a,
  });
}

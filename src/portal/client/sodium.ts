// libsodium's ChaCha20-Poly1305 (IETF) behind the small AEAD interface of stream.ts. Its own
// chunk of the bundle (about 430 kB, mostly the WASM module), loaded only to decrypt files.
import sodium from "libsodium-wrappers";
import type { Aead } from "../../crypto/stream-open.js";

/**
 * Waits for libsodium's WASM module.
 *
 * @returns The AEAD.
 * @throws If WebAssembly cannot be instantiated (for one, a CSP without 'wasm-unsafe-eval').
 */
export async function sodiumAead(): Promise<Aead> {
  await sodium.ready;
  return {
    open(key, nonce, sealed) {
      try {
        return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(null, sealed, null, nonce, key);
      } catch {
        // libsodium throws on a wrong tag and on input shorter than one.
        return null;
      }
    },
  };
}

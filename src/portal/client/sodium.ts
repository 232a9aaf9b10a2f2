// libsodium's ChaCha20-Poly1305 (IETF) behind the small AEAD interface of stream.ts. Its own
// chunk of the bundle (about 430 kB, mostly the WASM module), loaded only to decrypt files.
//
// It calls the WASM export directly on one buffer reserved once in the WASM heap: the
// wrappers' crypto_aead_chacha20poly1305_ietf_decrypt checks every argument, allocates and
// frees four buffers and a fresh output array per 64 KiB chunk, which cost more than the
// cipher itself (bench/browser.ts).
import sodium from "libsodium-wrappers";
import { CHUNK, type Aead } from "../../crypto/stream-open.js";

/** The parts of libsodium's Emscripten module used here (the wrappers export it as `libsodium`). */
interface SodiumModule {
  /** The WASM memory; replaced when the heap grows, so it is read anew on every call. */
  readonly HEAPU8: Uint8Array;
  _malloc(size: number): number;
  /** 64-bit lengths are passed as two 32-bit halves; nsec, ad and mlen_p may be 0. */
  _crypto_aead_chacha20poly1305_ietf_decrypt(m: number, mlenP: number, nsec: number, c: number, clenLo: number, clenHi: number, ad: number, adlenLo: number, adlenHi: number, npub: number, k: number): number;
}

const TAG = 16;

/**
 * Waits for libsodium's WASM module.
 *
 * @returns The AEAD. Each call opens one chunk of up to 64 KiB plus its tag, in place in
 *   the WASM heap, and returns a copy of the plaintext; the key is wiped from the heap after
 *   each call.
 * @throws If WebAssembly cannot be instantiated (for one, a CSP without 'wasm-unsafe-eval').
 */
export async function sodiumAead(): Promise<Aead> {
  await sodium.ready;
  const lib = (sodium as unknown as { libsodium: SodiumModule }).libsodium;
  const key = lib._malloc(32 + 12 + CHUNK + TAG);
  if (key === 0) throw new Error("libsodium: no memory");
  const nonce = key + 32;
  const buf = nonce + 12;
  return {
    open(k, n, sealed) {
      if (sealed.length < TAG || sealed.length > CHUNK + TAG || k.length !== 32 || n.length !== 12) return null;
      const heap = lib.HEAPU8;
      heap.set(k, key);
      heap.set(n, nonce);
      heap.set(sealed, buf);
      // In place: libsodium checks the tag over the ciphertext first, then decrypts it.
      const bad = lib._crypto_aead_chacha20poly1305_ietf_decrypt(buf, 0, 0, buf, sealed.length, 0, 0, 0, 0, nonce, key);
      heap.fill(0, key, buf);
      return bad === 0 ? heap.slice(buf, buf + sealed.length - TAG) : null;
    },
  };
}

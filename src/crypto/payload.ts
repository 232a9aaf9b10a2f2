// The age v1 payload (the STREAM construction) on node:crypto, both ways: HKDF-SHA-256
// payload key, ChaCha20-Poly1305 over 64 KiB chunks, the last-chunk flag. The header comes
// from header.ts for X25519 recipients, and from age-encryption for every other kind.
// Decryption is stream-open.ts (shared with the browser) with node:crypto's AEAD.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { encodeHeader, newFileKey, wrapX25519, x25519Recipient } from "./header.js";
import { CHUNK, chunkNonce, openPayload, type Aead, type PayloadOpener } from "./stream-open.js";

const TAG = 16;

/** Seals one chunk; returns ciphertext and tag as two buffers (written with writev, not copied). */
function seal(key: Uint8Array, nonce: Buffer, counter: number, last: boolean, plain: Uint8Array): [Buffer, Buffer] {
  const c = createCipheriv("chacha20-poly1305", key, chunkNonce(nonce, counter, last), { authTagLength: TAG });
  const body = c.update(plain);
  c.final();
  return [body, c.getAuthTag()];
}

// How much plaintext one pull seals: fewer promise turns, same flat memory.
const BATCH = 16 * CHUNK;

/**
 * A header for a fresh file key: on node:crypto when every recipient is X25519; otherwise
 * age-encryption writes it (its Encrypter over an empty payload, with one more recipient
 * that only records the file key).
 */
async function writeHeader(recipients: readonly string[]): Promise<{ head: Uint8Array; fileKey: Uint8Array }> {
  if (recipients.length === 0) throw new Error("no recipients");
  const keys = recipients.map(x25519Recipient);
  if (keys.every((k) => k !== null)) {
    const fileKey = newFileKey();
    return { head: encodeHeader(keys.map((k) => wrapX25519(fileKey, k)), fileKey), fileKey };
  }
  const { Encrypter } = await import("age-encryption");
  const e = new Encrypter();
  for (const r of recipients) e.addRecipient(r);
  const seen: { fileKey?: Uint8Array } = {};
  e.addRecipient({
    wrapFileKey(k) {
      seen.fileKey = k.slice();
      return [];
    },
  });
  // header ‖ nonce (16) ‖ the tag of an empty final chunk (16)
  const empty = await e.encrypt(new Uint8Array(0));
  if (!seen.fileKey) throw new Error("no file key");
  return { head: empty.subarray(0, empty.length - 32), fileKey: seen.fileKey };
}

/** Plaintext read ahead of sealing, as the pieces the input gave, in order. */
class Pending {
  private readonly pieces: Uint8Array[] = [];
  /** How many bytes are waiting. */
  length = 0;

  push(piece: Uint8Array): void {
    this.pieces.push(piece);
    this.length += piece.length;
  }

  /** The next n bytes (n ≤ length), without copying when they lie in one piece. */
  take(n: number): Uint8Array {
    const pending = this.pieces;
    const first = pending[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) pending.shift();
      else pending[0] = first.subarray(n);
      this.length -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const head = pending[0];
      if (!head) break;
      const part = head.subarray(0, n - at);
      out.set(part, at);
      at += part.length;
      if (part.length === head.length) pending.shift();
      else pending[0] = head.subarray(part.length);
    }
    this.length -= n;
    return out;
  }
}

/**
 * Encrypts a stream to age recipients: the header, then the payload sealed 64 KiB at a
 * time as the input arrives.
 *
 * @param input - The plaintext.
 * @param recipients - `age1…` recipients.
 * @returns A standard age v1 file.
 */
export async function encryptPayload(input: ReadableStream<Uint8Array>, recipients: readonly string[]): Promise<ReadableStream<Uint8Array>> {
  const { head, fileKey } = await writeHeader(recipients);
  const nonce = randomBytes(16);
  const key = new Uint8Array(hkdfSync("sha256", fileKey, nonce, "payload", 32));
  const reader = input.getReader();
  const nonceBuf = Buffer.alloc(12);
  const pending = new Pending();
  let counter = 0;
  let eof = false;
  let started = false;
  return new ReadableStream<Uint8Array>(
    {
      async pull(ctl) {
        if (!started) {
          started = true;
          ctl.enqueue(head);
          ctl.enqueue(nonce);
          return;
        }
        // A chunk is final only when nothing follows it, so read one byte beyond it.
        while (!eof && pending.length <= BATCH) {
          const r = await reader.read();
          if (r.done) eof = true;
          else if (r.value.length > 0) pending.push(r.value);
        }
        while (pending.length > CHUNK) {
          for (const b of seal(key, nonceBuf, counter++, false, pending.take(CHUNK))) ctl.enqueue(b);
        }
        if (!eof) return;
        for (const b of seal(key, nonceBuf, counter++, true, pending.take(pending.length))) ctl.enqueue(b);
        ctl.close();
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 1 },
  );
}

const nodeAead: Aead = {
  open(key, nonce, sealed) {
    const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG });
    d.setAuthTag(sealed.subarray(sealed.length - TAG));
    const out = d.update(sealed.subarray(0, sealed.length - TAG));
    try {
      d.final();
    } catch {
      return null;
    }
    return out;
  },
};

/** Opens a header: returns the file key, or throws. */
export type HeaderOpener = PayloadOpener["openHeader"];

/**
 * Decrypts an age file on node:crypto.
 *
 * @param input - The binary age file.
 * @param openHeader - Turns the header into the file key (identities or passphrases).
 * @returns The plaintext stream; it errors at the first damaged or missing chunk.
 * @throws If the header does not parse, no identity matches, the MAC is wrong, or the
 *   nonce is missing.
 */
export function decryptPayload(input: ReadableStream<Uint8Array>, openHeader: HeaderOpener): Promise<ReadableStream<Uint8Array>> {
  return openPayload(input, {
    openHeader,
    payloadKey: (fileKey, nonce) => new Uint8Array(hkdfSync("sha256", fileKey, nonce, "payload", 32)),
    aead: nodeAead,
  });
}

// The age v1 payload (the STREAM construction) on node:crypto, both ways: HKDF-SHA-256
// payload key, ChaCha20-Poly1305 over 64 KiB chunks, the last-chunk flag. The header comes
// from header.ts for X25519 recipients, and from age-encryption for every other kind.
// Decryption releases each authenticated chunk as soon as it is verified, as the Go
// implementation does, and fails at the first bad chunk, a missing final chunk, or
// trailing data.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { encodeHeader, newFileKey, wrapX25519, x25519Recipient } from "./header.js";

const CHUNK = 64 * 1024;
const TAG = 16;
const ENC_CHUNK = CHUNK + TAG;
const MAX_HEADER = 1024 * 1024;

/** Buffered reads of exact sizes from a web stream. */
class ByteReader {
  private buf: Uint8Array = new Uint8Array(0);
  private eof = false;

  constructor(private readonly src: ReadableStreamDefaultReader<Uint8Array>) {}

  /** Appends input until `min` bytes are buffered or the input ends (header only: it copies). */
  private async fill(min: number): Promise<void> {
    const parts: Uint8Array[] = [this.buf];
    let have = this.buf.length;
    while (have < min && !this.eof) {
      const { done, value } = await this.src.read();
      if (done) this.eof = true;
      else if (value.length > 0) {
        parts.push(value);
        have += value.length;
      }
    }
    if (parts.length > 1) this.buf = Buffer.concat(parts);
  }

  /**
   * Up to n bytes; fewer only at the end of the stream. A read within one input piece is a
   * view; only a read across pieces copies, and then only the n bytes it returns.
   */
  async read(n: number): Promise<Uint8Array> {
    if (this.buf.length >= n) {
      const out = this.buf.subarray(0, n);
      this.buf = this.buf.subarray(n);
      return out;
    }
    const parts = [this.buf];
    let have = this.buf.length;
    while (have < n && !this.eof) {
      const { done, value } = await this.src.read();
      if (done) this.eof = true;
      else if (value.length > 0) {
        parts.push(value);
        have += value.length;
      }
    }
    const out = Buffer.allocUnsafe(Math.min(n, have));
    let at = 0;
    for (const p of parts) {
      const take = p.subarray(0, out.length - at);
      out.set(take, at);
      at += take.length;
      this.buf = p.subarray(take.length);
    }
    return out;
  }

  /** The header: every byte up to and including the end of the first line starting with "---". */
  async readHeader(): Promise<Uint8Array> {
    let from = 0;
    for (;;) {
      const text = this.buf;
      let i = from;
      for (; i + 3 < text.length; i++) {
        if (text[i] === 0x0a && text[i + 1] === 0x2d && text[i + 2] === 0x2d && text[i + 3] === 0x2d) break;
      }
      const end = i + 3 < text.length ? text.indexOf(0x0a, i + 1) : -1;
      if (end !== -1) {
        const macLine = Buffer.from(text.subarray(i + 1, end)).toString("latin1");
        // typage would call a malformed MAC line an HMAC failure; it is a header failure.
        if (!/^--- [A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]$/.test(macLine)) throw new Error("malformed header: bad MAC line");
        this.buf = text.subarray(end + 1);
        return text.subarray(0, end + 1);
      }
      from = i;
      if (this.eof || text.length > MAX_HEADER) throw new Error("malformed header: no MAC line");
      await this.fill(text.length + 1);
      if (this.buf.length === text.length) throw new Error("malformed header: no MAC line");
    }
  }

  cancel(reason?: unknown): Promise<void> {
    return this.src.cancel(reason);
  }
}

function chunkNonce(counter: number, last: boolean, into: Buffer = Buffer.alloc(12)): Buffer {
  // 11-byte big-endian counter (we never exceed 2^40 chunks), then the last-chunk flag.
  into.fill(0, 0, 6);
  into[6] = Math.floor(counter / 2 ** 32) & 0xff;
  into.writeUInt32BE(counter % 2 ** 32, 7);
  into[11] = last ? 1 : 0;
  return into;
}

/** Seals one chunk; returns ciphertext and tag as two buffers (written with writev, not copied). */
function seal(key: Uint8Array, nonce: Buffer, counter: number, last: boolean, plain: Uint8Array): [Buffer, Buffer] {
  const c = createCipheriv("chacha20-poly1305", key, chunkNonce(counter, last, nonce), { authTagLength: TAG });
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
  const pending: Uint8Array[] = [];
  let pendingLength = 0;
  let counter = 0;
  let eof = false;
  let started = false;
  // The next n bytes, without copying when they lie in one piece.
  const take = (n: number): Uint8Array => {
    const first = pending[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) pending.shift();
      else pending[0] = first.subarray(n);
      pendingLength -= n;
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
    pendingLength -= n;
    return out;
  };
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
        while (!eof && pendingLength <= BATCH) {
          const r = await reader.read();
          if (r.done) eof = true;
          else if (r.value.length > 0) {
            pending.push(r.value);
            pendingLength += r.value.length;
          }
        }
        while (pendingLength > CHUNK) {
          for (const b of seal(key, nonceBuf, counter++, false, take(CHUNK))) ctl.enqueue(b);
        }
        if (!eof) return;
        for (const b of seal(key, nonceBuf, counter++, true, take(pendingLength))) ctl.enqueue(b);
        ctl.close();
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 1 },
  );
}

const decryptNonce = Buffer.alloc(12);

function open(key: Uint8Array, counter: number, last: boolean, chunk: Uint8Array): Uint8Array | null {
  const d = createDecipheriv("chacha20-poly1305", key, chunkNonce(counter, last, decryptNonce), { authTagLength: TAG });
  d.setAuthTag(chunk.subarray(chunk.length - TAG));
  const out = d.update(chunk.subarray(0, chunk.length - TAG));
  try {
    d.final();
  } catch {
    return null;
  }
  return out;
}

/** Opens a header: returns the file key, or throws. */
export type HeaderOpener = (header: Uint8Array) => Promise<Uint8Array> | Uint8Array;

/**
 * Decrypts an age file.
 *
 * @param input - The binary age file.
 * @param openHeader - Turns the header into the file key (identities or passphrases).
 * @returns The plaintext stream; it errors at the first damaged or missing chunk.
 * @throws If the header does not parse, no identity matches, the MAC is wrong, or the
 *   nonce is missing.
 */
export async function decryptPayload(input: ReadableStream<Uint8Array>, openHeader: HeaderOpener): Promise<ReadableStream<Uint8Array>> {
  const src = new ByteReader(input.getReader());
  let key: Uint8Array;
  try {
    const header = await src.readHeader();
    const fileKey = await openHeader(header);
    const nonce = await src.read(16);
    if (nonce.length !== 16) throw new Error("malformed header: payload nonce is truncated");
    key = new Uint8Array(hkdfSync("sha256", fileKey, nonce, "payload", 32));
  } catch (e) {
    await src.cancel(e).catch(() => undefined);
    throw e;
  }
  let counter = 0;
  let lastSeen = false;
  // Pull-based, one chunk per pull: a chunk released before an error reaches the reader
  // before the error does (a TransformStream would drop it from its queue).
  return new ReadableStream<Uint8Array>(
    {
      async pull(ctl) {
        const chunk = await src.read(ENC_CHUNK);
        if (lastSeen) {
          if (chunk.length > 0) ctl.error(new Error("trailing data after the final chunk"));
          else ctl.close();
          return;
        }
        if (chunk.length === 0) {
          ctl.error(new Error("payload is truncated: no final chunk"));
          return;
        }
        if (chunk.length < TAG) {
          ctl.error(new Error("payload is truncated: short chunk"));
          return;
        }
        let plain: Uint8Array | null;
        if (chunk.length === ENC_CHUNK) {
          plain = open(key, counter, false, chunk);
          if (plain === null) {
            plain = open(key, counter, true, chunk);
            lastSeen = plain !== null;
          }
        } else {
          plain = open(key, counter, true, chunk);
          lastSeen = true;
        }
        if (plain === null) {
          ctl.error(new Error(`payload chunk ${counter} failed to authenticate`));
          return;
        }
        if (lastSeen && plain.length === 0 && counter > 0) {
          ctl.error(new Error("final chunk is empty"));
          return;
        }
        counter++;
        ctl.enqueue(plain);
        if (lastSeen && chunk.length < ENC_CHUNK) ctl.close();
      },
      cancel(reason) {
        return src.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

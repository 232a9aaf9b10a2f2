// The age v1 payload (the STREAM construction) on node:crypto, for decryption on the Node
// side. typage parses the header and unwraps the file key; this file does the rest. It
// releases each authenticated chunk as soon as it is verified, as the Go implementation
// does, and fails at the first bad chunk, a missing final chunk, or trailing data.
import { createDecipheriv, hkdfSync } from "node:crypto";
import type { Decrypter } from "age-encryption";

const CHUNK = 64 * 1024;
const TAG = 16;
const ENC_CHUNK = CHUNK + TAG;
const MAX_HEADER = 1024 * 1024;

/** Buffered reads of exact sizes from a web stream. */
class ByteReader {
  private buf: Uint8Array = new Uint8Array(0);
  private eof = false;

  constructor(private readonly src: ReadableStreamDefaultReader<Uint8Array>) {}

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

  /** Up to n bytes; fewer only at the end of the stream. */
  async read(n: number): Promise<Uint8Array> {
    await this.fill(n);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(out.length);
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

function chunkNonce(counter: number, last: boolean): Uint8Array {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setUint32(7, counter);
  new DataView(nonce.buffer).setUint8(6, Math.floor(counter / 2 ** 32));
  nonce[11] = last ? 1 : 0;
  return nonce;
}

function open(key: Uint8Array, counter: number, last: boolean, chunk: Uint8Array): Uint8Array | null {
  const d = createDecipheriv("chacha20-poly1305", key, chunkNonce(counter, last), { authTagLength: TAG });
  d.setAuthTag(chunk.subarray(chunk.length - TAG));
  const out = d.update(chunk.subarray(0, chunk.length - TAG));
  try {
    d.final();
  } catch {
    return null;
  }
  return out;
}

/**
 * Decrypts an age file whose header the given typage Decrypter can open.
 *
 * @param input - The binary age file.
 * @param decrypter - Holds the identities or passphrases.
 * @returns The plaintext stream; it errors at the first damaged or missing chunk.
 * @throws If the header does not parse, no identity matches, the MAC is wrong, or the
 *   nonce is missing.
 */
export async function decryptPayload(input: ReadableStream<Uint8Array>, decrypter: Decrypter): Promise<ReadableStream<Uint8Array>> {
  const src = new ByteReader(input.getReader());
  let key: Uint8Array;
  try {
    const header = await src.readHeader();
    const fileKey = await decrypter.decryptHeader(header);
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

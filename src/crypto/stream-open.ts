// Opening the age v1 payload (the STREAM construction), for node and browser alike: the
// caller brings the header opener, the payload-key HKDF and a ChaCha20-Poly1305 "open"
// (node:crypto on the server, libsodium's WASM in the portal). Each authenticated chunk is
// released as soon as it is verified, as the Go implementation does; decryption fails at
// the first bad chunk, a missing final chunk, trailing data, or an empty final chunk after
// the first. A full 64 KiB chunk may be the final one. No Node or DOM APIs here.

/** Plaintext bytes per chunk. */
export const CHUNK = 64 * 1024;
const TAG = 16;
const ENC_CHUNK = CHUNK + TAG;
const MAX_HEADER = 1024 * 1024;
// Chunks opened per pull of the plaintext stream.
const BATCH = 16;

/** ChaCha20-Poly1305 (IETF, 12-byte nonce) opening. */
export interface Aead {
  /**
   * @param key - 32 bytes.
   * @param nonce - 12 bytes.
   * @param sealed - Ciphertext followed by the 16-byte tag.
   * @returns The plaintext, or null when the tag does not verify.
   */
  open(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array): Uint8Array | null;
}

/** What opening a file needs besides its bytes. */
export interface PayloadOpener {
  /** Turns the header into the 16-byte file key, or throws. */
  openHeader(header: Uint8Array): Promise<Uint8Array> | Uint8Array;
  /** HKDF-SHA-256(fileKey, salt = nonce, info = "payload"), 32 bytes. */
  payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Uint8Array;
  readonly aead: Aead;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Buffered reads of exact sizes from a web stream. */
class ByteReader {
  private buf: Uint8Array = new Uint8Array(0);
  private eof = false;

  constructor(private readonly src: ReadableStreamDefaultReader<Uint8Array>) {}

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
    const out = new Uint8Array(Math.min(n, have));
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
        // "--- " and 43 base64 characters; checked before the line becomes a string.
        if (end - i - 1 !== 47) throw new Error("malformed header: bad MAC line");
        const macLine = String.fromCharCode(...text.subarray(i + 1, end));
        // typage would call a malformed MAC line an HMAC failure; it is a header failure.
        if (!/^--- [A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]$/.test(macLine)) throw new Error("malformed header: bad MAC line");
        this.buf = text.subarray(end + 1);
        return text.subarray(0, end + 1);
      }
      from = i;
      if (this.eof || text.length > MAX_HEADER) throw new Error("malformed header: no MAC line");
      const { done, value } = await this.src.read();
      if (done) throw new Error("malformed header: no MAC line");
      this.buf = concat([text, value]);
    }
  }

  cancel(reason?: unknown): Promise<void> {
    return this.src.cancel(reason);
  }
}

/**
 * The 12-byte STREAM nonce: an 11-byte big-endian counter (we never exceed 2^40 chunks),
 * then the last-chunk flag.
 *
 * @param into - Reused 12-byte buffer.
 * @param counter - The chunk number.
 * @param last - Whether this is the final chunk.
 * @returns `into`.
 */
export function chunkNonce(into: Uint8Array, counter: number, last: boolean): Uint8Array {
  into.fill(0, 0, 6);
  into[6] = Math.floor(counter / 2 ** 32) & 0xff;
  new DataView(into.buffer, into.byteOffset, 12).setUint32(7, counter % 2 ** 32);
  into[11] = last ? 1 : 0;
  return into;
}

/** Reads the header and the payload nonce and derives the payload key; on failure cancels the input and throws. */
async function readPayloadKey(src: ByteReader, opener: PayloadOpener): Promise<Uint8Array> {
  try {
    const header = await src.readHeader();
    const fileKey = await opener.openHeader(header);
    const nonce = await src.read(16);
    if (nonce.length !== 16) throw new Error("malformed header: payload nonce is truncated");
    return opener.payloadKey(fileKey, nonce);
  } catch (e) {
    await src.cancel(e).catch(() => undefined);
    throw e;
  }
}

/** Opens the payload's chunks in order, checking the last-chunk rules. */
class ChunkOpener {
  private readonly nonce = new Uint8Array(12);
  private counter = 0;
  private lastSeen = false;
  /** The final chunk is open and was short, so the input has ended: nothing trails. */
  done = false;

  constructor(
    private readonly src: ByteReader,
    private readonly key: Uint8Array,
    private readonly aead: Aead,
  ) {}

  /** The next plaintext chunk, or null at a clean end; throws on damage. */
  async next(): Promise<Uint8Array | null> {
    const { aead, key, nonce, counter } = this;
    const chunk = await this.src.read(ENC_CHUNK);
    if (this.lastSeen) {
      if (chunk.length > 0) throw new Error("trailing data after the final chunk");
      return null;
    }
    if (chunk.length === 0) throw new Error("payload is truncated: no final chunk");
    if (chunk.length < TAG) throw new Error("payload is truncated: short chunk");
    let plain: Uint8Array | null;
    if (chunk.length === ENC_CHUNK) {
      plain = aead.open(key, chunkNonce(nonce, counter, false), chunk);
      if (plain === null) {
        plain = aead.open(key, chunkNonce(nonce, counter, true), chunk);
        this.lastSeen = plain !== null;
      }
    } else {
      plain = aead.open(key, chunkNonce(nonce, counter, true), chunk);
      this.lastSeen = true;
    }
    if (plain === null) throw new Error(`payload chunk ${counter} failed to authenticate`);
    if (this.lastSeen && plain.length === 0 && counter > 0) throw new Error("final chunk is empty");
    this.counter++;
    // A short final chunk ends the input (reads are short only at the end): nothing trails.
    this.done = this.lastSeen && chunk.length < ENC_CHUNK;
    return plain;
  }
}

/**
 * The plaintext stream: up to BATCH chunks per pull, each released as soon as it is
 * verified. An error after some chunks of a pull waits for the next pull: erroring now would
 * drop them from the queue, and the reader must get every good chunk before the error.
 */
function plaintextStream(chunks: ChunkOpener, src: ByteReader): ReadableStream<Uint8Array> {
  let failure: unknown = null;
  return new ReadableStream<Uint8Array>(
    {
      async pull(ctl) {
        if (failure !== null) {
          ctl.error(failure);
          return;
        }
        for (let n = 0; n < BATCH; n++) {
          let plain: Uint8Array | null;
          try {
            plain = await chunks.next();
          } catch (e) {
            if (n === 0) ctl.error(e);
            else failure = e;
            return;
          }
          if (plain === null) {
            ctl.close();
            return;
          }
          ctl.enqueue(plain);
          if (chunks.done) {
            ctl.close();
            return;
          }
        }
      },
      cancel(reason) {
        return src.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/**
 * Decrypts an age file.
 *
 * @param input - The binary age file.
 * @param opener - Header opener, payload HKDF and AEAD.
 * @returns The plaintext stream; it errors at the first damaged or missing chunk.
 * @throws If the header does not parse, no identity matches, the MAC is wrong, or the
 *   nonce is missing.
 */
export async function openPayload(input: ReadableStream<Uint8Array>, opener: PayloadOpener): Promise<ReadableStream<Uint8Array>> {
  const src = new ByteReader(input.getReader());
  const key = await readPayloadKey(src, opener);
  return plaintextStream(new ChunkOpener(src, key, opener.aead), src);
}

// The age v1 header for X25519 recipients on node:crypto: X25519 stanzas, the header MAC,
// a strict parser, and recipientOf. With it, a file to or from X25519 keys needs no
// age-encryption at all (whose import alone costs about 70 ms); other recipient types still
// go through age-encryption, loaded on first use. Node only: the browser bundle must not
// import this file (identity.ts and secupass.ts are the isomorphic ones).
import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from "node:crypto";
import { bech32 } from "@scure/base";

const VERSION = "age-encryption.org/v1";
const X25519_LABEL = "age-encryption.org/v1/X25519";
// DER prefixes that turn 32 raw bytes into an X25519 PKCS #8 private or SPKI public key.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");
const ZERO_NONCE = Buffer.alloc(12);

/** One recipient stanza: `-> arg arg…` and its binary body. */
export interface Stanza {
  readonly args: readonly string[];
  readonly body: Uint8Array;
}

/** Base64 without padding, as age writes it. */
function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64").replace(/=+$/, "");
}

/** Strict unpadded base64: the alphabet only, and canonical (unused bits zero). */
function unb64(s: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*$/.test(s) || s.length % 4 === 1) throw new Error("malformed header: invalid base64");
  const bytes = Buffer.from(s, "base64");
  if (b64(bytes) !== s) throw new Error("malformed header: non-canonical base64");
  return bytes;
}

function publicKey(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: "der", type: "spki" });
}

function rawPublic(key: KeyObject): Buffer {
  return key.export({ format: "der", type: "spki" }).subarray(SPKI_PREFIX.length);
}

function aead(key: Uint8Array, data: Uint8Array): Buffer {
  const c = createCipheriv("chacha20-poly1305", key, ZERO_NONCE, { authTagLength: 16 });
  return Buffer.concat([c.update(data), c.final(), c.getAuthTag()]);
}

function unaead(key: Uint8Array, data: Uint8Array): Buffer | null {
  const d = createDecipheriv("chacha20-poly1305", key, ZERO_NONCE, { authTagLength: 16 });
  d.setAuthTag(data.subarray(data.length - 16));
  const out = d.update(data.subarray(0, data.length - 16));
  try {
    d.final();
  } catch {
    return null;
  }
  return out;
}

function wrapKey(shared: Uint8Array, share: Uint8Array, recipient: Uint8Array): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", shared, Buffer.concat([share, recipient]), X25519_LABEL, 32));
}

function headerMac(fileKey: Uint8Array, headerNoMac: Uint8Array): Buffer {
  const key = new Uint8Array(hkdfSync("sha256", fileKey, Buffer.alloc(0), "header", 32));
  return createHmac("sha256", key).update(headerNoMac).digest();
}

/**
 * The 32-byte key of a classic X25519 recipient, or null for any other kind (hybrid,
 * plugin, tag…), which age-encryption handles.
 *
 * @param recipient - An `age1…` string.
 * @returns The public key, or null.
 * @throws If it looks like an X25519 recipient but its checksum is wrong.
 */
export function x25519Recipient(recipient: string): Uint8Array | null {
  // bech32 never uses "1" in its data part, so this shape means the prefix is exactly "age".
  if (!/^age1[02-9ac-hj-np-z]{58}$/.test(recipient)) return null;
  const { prefix, bytes } = bech32.decodeToBytes(recipient);
  if (prefix !== "age" || bytes.length !== 32) throw new Error("invalid X25519 recipient");
  return bytes;
}

/** An X25519 identity ready to unwrap stanzas: its private key and its public bytes. */
export interface X25519Identity {
  readonly key: KeyObject;
  readonly recipient: Uint8Array;
}

/**
 * Parses a classic X25519 identity, or returns null for any other kind.
 *
 * @param identity - An `AGE-SECRET-KEY-1…` string.
 * @returns The identity, or null.
 * @throws If it looks like an X25519 identity but does not decode.
 */
export function x25519Identity(identity: string): X25519Identity | null {
  if (!/^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/.test(identity)) return null;
  const { prefix, bytes } = bech32.decodeToBytes(identity);
  if (prefix.toUpperCase() !== "AGE-SECRET-KEY-" || bytes.length !== 32) throw new Error("invalid X25519 identity");
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, bytes]), format: "der", type: "pkcs8" });
  return { key, recipient: rawPublic(createPublicKey(key)) };
}

/**
 * Wraps a file key to an X25519 recipient, as the age spec defines it.
 *
 * @param fileKey - 16 bytes.
 * @param recipient - The recipient's 32-byte public key.
 * @returns The stanza.
 */
export function wrapX25519(fileKey: Uint8Array, recipient: Uint8Array): Stanza {
  const eph = generateKeyPairSync("x25519");
  const share = rawPublic(eph.publicKey);
  const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: publicKey(recipient) });
  return { args: ["X25519", b64(share)], body: aead(wrapKey(shared, share, recipient), fileKey) };
}

/**
 * Encodes a header with its MAC.
 *
 * @param stanzas - The recipient stanzas.
 * @param fileKey - The file key the MAC is derived from.
 * @returns The header bytes, ending with the MAC line's newline.
 */
export function encodeHeader(stanzas: readonly Stanza[], fileKey: Uint8Array): Uint8Array {
  let text = `${VERSION}\n`;
  for (const s of stanzas) {
    text += `-> ${s.args.join(" ")}\n`;
    const body = b64(s.body);
    // 64 columns per line; a body whose last line is full gets an empty final line.
    for (let i = 0; i <= body.length; i += 64) text += `${body.slice(i, i + 64)}\n`;
  }
  const noMac = Buffer.from(`${text}---`, "latin1");
  return Buffer.concat([noMac, Buffer.from(` ${b64(headerMac(fileKey, noMac))}\n`, "latin1")]);
}

interface ParsedHeader {
  stanzas: Stanza[];
  noMac: Uint8Array;
  mac: Uint8Array;
}

/**
 * Parses a header strictly: printable ASCII only, canonical base64, body lines of at most
 * 64 columns, and a MAC line.
 *
 * @param header - Every byte up to and including the MAC line's newline.
 * @returns The stanzas, the bytes the MAC covers, and the MAC.
 * @throws On any deviation from the format.
 */
export function parseHeader(header: Uint8Array): ParsedHeader {
  for (const b of header) {
    if (b !== 0x0a && (b < 0x20 || b > 0x7e)) throw new Error("malformed header: invalid byte");
  }
  const text = Buffer.from(header).toString("latin1");
  const lines = text.split("\n");
  if (lines.pop() !== "") throw new Error("malformed header: no final newline");
  let i = 0;
  if (lines[i++] !== VERSION) throw new Error("malformed header: unsupported version");
  const stanzas: Stanza[] = [];
  for (;;) {
    const line = lines[i++];
    if (line === undefined) throw new Error("malformed header: no MAC line");
    const parts = line.split(" ");
    if (parts.length < 2 || parts[0] !== "->") {
      if (!line.startsWith("--- ") || i !== lines.length) throw new Error("malformed header: invalid stanza");
      const mac = unb64(line.slice(4));
      return { stanzas, noMac: header.subarray(0, header.length - line.length + 2), mac };
    }
    const args = parts.slice(1);
    if (args.some((a) => a.length === 0)) throw new Error("malformed header: empty stanza argument");
    const body: Uint8Array[] = [];
    for (;;) {
      const bodyLine = lines[i++];
      if (bodyLine === undefined) throw new Error("malformed header: unterminated stanza");
      const bytes = unb64(bodyLine);
      if (bytes.length > 48) throw new Error("malformed header: stanza line too long");
      body.push(bytes);
      if (bytes.length < 48) break;
    }
    stanzas.push({ args, body: Buffer.concat(body) });
  }
}

/**
 * Opens a header with X25519 identities: the first stanza one of them unwraps gives the
 * file key, which must then verify the header MAC.
 *
 * @param header - The header bytes.
 * @param identities - Parsed identities.
 * @returns The 16-byte file key.
 * @throws On a malformed header or X25519 stanza, when no identity matches, or on a bad MAC.
 */
export function openHeader(header: Uint8Array, identities: readonly X25519Identity[]): Uint8Array {
  const h = parseHeader(header);
  let fileKey: Uint8Array | null = null;
  for (const id of identities) {
    for (const s of h.stanzas) {
      if (s.args[0] !== "X25519") continue;
      const shareArg = s.args[1];
      if (s.args.length !== 2 || shareArg === undefined) throw new Error("malformed header: invalid X25519 stanza");
      const share = unb64(shareArg);
      if (share.length !== 32 || s.body.length !== 32) throw new Error("malformed header: invalid X25519 stanza");
      let shared: Buffer;
      try {
        shared = diffieHellman({ privateKey: id.key, publicKey: publicKey(share) });
      } catch {
        throw new Error("malformed header: X25519 share of low order");
      }
      fileKey = unaead(wrapKey(shared, share, id.recipient), s.body);
      if (fileKey) break;
    }
    if (fileKey) break;
  }
  if (!fileKey) throw new Error("no identity matched any of the file's recipients");
  const mac = headerMac(fileKey, h.noMac);
  if (mac.length !== h.mac.length || !timingSafeEqual(mac, h.mac)) throw new Error("invalid header HMAC");
  return fileKey;
}

/** @returns A fresh 16-byte file key. */
export function newFileKey(): Uint8Array {
  return randomBytes(16);
}

/**
 * Computes the public recipient of an identity.
 *
 * @param identity - An `AGE-SECRET-KEY-1…` or `AGE-SECRET-KEY-PQ-1…` string.
 * @returns The `age1…` or `age1pq1…` recipient.
 * @throws If the identity is malformed.
 */
export async function recipientOf(identity: string): Promise<string> {
  const x25519 = x25519Identity(identity);
  if (x25519) return bech32.encode("age", bech32.toWords(x25519.recipient));
  const { identityToRecipient } = await import("age-encryption");
  return identityToRecipient(identity);
}

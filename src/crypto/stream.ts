import { openHeader, x25519Identity } from "./header.js";
import { decryptPayload, encryptPayload, type HeaderOpener } from "./payload.js";
import { identityType } from "./identity.js";

/**
 * Encrypts a stream to one or more age recipients. Memory stays flat: the payload is
 * sealed in 64 KiB STREAM chunks on node:crypto, with backpressure.
 *
 * @param input - The plaintext.
 * @param recipients - `age1…` recipients.
 * @returns The ciphertext, a standard age v1 file.
 */
export async function encryptStream(
  input: ReadableStream<Uint8Array>,
  recipients: readonly string[],
): Promise<ReadableStream<Uint8Array>> {
  return encryptPayload(input, recipients);
}

/**
 * How to open a header with these secrets: on node:crypto when they are all X25519
 * identities, otherwise through age-encryption (hybrid identities, passphrases).
 */
function headerOpener(identities: readonly string[], passphrases: readonly string[]): HeaderOpener {
  const native = identities.map(x25519Identity);
  if (passphrases.length === 0 && native.every((i) => i !== null)) {
    return (header) => openHeader(header, native);
  }
  return async (header) => {
    const { Decrypter } = await import("age-encryption");
    const d = new Decrypter();
    for (const i of identities) d.addIdentity(i);
    for (const p of passphrases) d.addPassphrase(p);
    return d.decryptHeader(header);
  };
}

/**
 * Decrypts an age stream with the given identities or passphrases.
 *
 * @param input - The ciphertext (binary; see {@link dearmor} for armored text).
 * @param identities - `AGE-SECRET-KEY-…` strings.
 * @param passphrases - Passphrases for scrypt-encrypted files.
 * @returns The plaintext stream; it errors if the payload is damaged.
 * @throws If the header does not parse, no identity matches, or the header MAC is wrong.
 */
export async function decryptStream(
  input: ReadableStream<Uint8Array>,
  identities: readonly string[],
  passphrases: readonly string[] = [],
): Promise<ReadableStream<Uint8Array>> {
  return decryptPayload(input, headerOpener(identities, passphrases));
}

/**
 * Decodes an ASCII-armored age file (`-----BEGIN AGE ENCRYPTED FILE-----`).
 *
 * @param text - The armored text.
 * @returns The binary age file.
 * @throws If the armor is malformed.
 */
export async function dearmor(text: string): Promise<Uint8Array> {
  const { armor } = await import("age-encryption");
  return armor.decode(text);
}

/**
 * Encrypts a small value in one piece (wraps, messages).
 *
 * @param data - Plaintext bytes or UTF-8 text.
 * @param recipients - `age1…` recipients.
 * @returns The age file.
 */
export async function encryptBytes(data: Uint8Array | string, recipients: readonly string[]): Promise<Uint8Array> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const cipher = await encryptPayload(new Blob([bytes]).stream(), recipients);
  return new Uint8Array(await new Response(cipher).arrayBuffer());
}

/**
 * Decrypts a small age file in one piece.
 *
 * @param data - The age file.
 * @param identities - `AGE-SECRET-KEY-…` strings.
 * @param passphrases - Passphrases for scrypt-encrypted files.
 * @returns The plaintext.
 * @throws If no identity matches or the file is damaged.
 */
export async function decryptBytes(data: Uint8Array, identities: readonly string[], passphrases: readonly string[] = []): Promise<Uint8Array> {
  const plain = await decryptStream(new Blob([data]).stream(), identities, passphrases);
  return new Uint8Array(await new Response(plain).arrayBuffer());
}

/**
 * Wraps a delivery identity D to a holder (the practice P or a patient U).
 *
 * @param deliveryIdentity - D's secret.
 * @param recipient - The holder's recipient.
 * @returns wrap = age(D) to the holder.
 */
export async function wrapIdentity(deliveryIdentity: string, recipient: string): Promise<Uint8Array> {
  return encryptBytes(deliveryIdentity, [recipient]);
}

/**
 * Opens a wrap with the holder's identity.
 *
 * @param wrap - A wrap made by {@link wrapIdentity}.
 * @param identity - The holder's identity.
 * @returns D's secret.
 * @throws If the identity does not open the wrap, or it does not hold an age identity.
 */
export async function unwrapIdentity(wrap: Uint8Array, identity: string): Promise<string> {
  const d = new TextDecoder("utf-8", { fatal: true }).decode(await decryptBytes(wrap, [identity]));
  if (identityType(d) === null) throw new Error("wrap does not hold an age identity");
  return d;
}

import { createHash } from "node:crypto";

/**
 * Reads a web stream to the end.
 *
 * @param s - The stream.
 * @returns All its bytes.
 */
export async function readAll(s: ReadableStream<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of s as unknown as AsyncIterable<Uint8Array>) parts.push(c);
  return Buffer.concat(parts);
}

/**
 * @param data - Bytes.
 * @returns A web stream of them, in chunks of the given size.
 */
export function streamOf(data: Uint8Array, chunk = 65_536): ReadableStream<Uint8Array> {
  let pos = 0;
  return new ReadableStream({
    pull(ctl) {
      if (pos >= data.length) {
        ctl.close();
        return;
      }
      ctl.enqueue(data.slice(pos, pos + chunk));
      pos += chunk;
    },
  });
}

/**
 * @param data - Bytes.
 * @returns SHA-256, hex.
 */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

// Decrypt-and-save of one file: the plaintext chunks become one Blob, which the browser
// saves as a download or opens in a new tab. Copying the chunks into a few 8 MiB parts
// first, or grouping them into intermediate Blobs, measured slower in headless Chromium.
import type { Aead } from "../../crypto/stream-open.js";
import { decryptFile } from "./stream.js";

const TYPES: Record<string, string> = { pdf: "application/pdf", png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", txt: "text/plain", eml: "message/rfc822" };

/**
 * @param name - The file's name.
 * @returns The MIME type a browser needs to show it, by its extension.
 */
function typeOf(name: string): string {
  const ext = /\.([a-z0-9]+)$/i.exec(name)?.[1]?.toLowerCase() ?? "";
  return TYPES[ext] ?? "application/octet-stream";
}

/**
 * Reads a plaintext stream into a Blob.
 *
 * @param plain - The plaintext, as decryptFile releases it.
 * @param type - The Blob's MIME type.
 * @param onBytes - Called with the bytes read so far, after each chunk.
 * @returns The whole plaintext; rejects at the first damaged chunk, and nothing is kept.
 */
async function collect(plain: ReadableStream<Uint8Array>, type: string, onBytes: (done: number) => void): Promise<Blob> {
  const parts: Uint8Array[] = [];
  let done = 0;
  for await (const chunk of plain) {
    parts.push(chunk);
    done += chunk.length;
    onBytes(done);
  }
  return new Blob(parts as BlobPart[], { type });
}

/** One file to decrypt and hand to the patient. */
export interface SaveRequest {
  /** Where its age ciphertext is. */
  readonly url: string;
  /** The name to save it under (and whose extension gives the MIME type). */
  readonly name: string;
  /** The delivery key, `AGE-SECRET-KEY-…`. */
  readonly identity: string;
  /** From loadAead(). */
  readonly aead: Promise<Aead | null>;
  /** "save" downloads it; "open" opens it in a new tab. */
  readonly action: "save" | "open";
  /** For "open": the tab opened at the tap, to show the file in (else a new one). */
  readonly tab?: Window | null;
  /** Called with the bytes decrypted so far. */
  readonly onBytes: (done: number) => void;
}

/**
 * Fetches, decrypts and saves (or opens) one file.
 *
 * @param req - What to fetch and how to hand it over.
 * @throws If the fetch fails, the key does not match or any chunk is damaged; then nothing
 *   is saved.
 */
export async function saveFile(req: SaveRequest): Promise<void> {
  const res = await fetch(req.url, { credentials: "same-origin" });
  if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
  const blob = await collect(await decryptFile(res.body, req.identity, req.aead), typeOf(req.name), req.onBytes);
  const url = URL.createObjectURL(blob);
  if (req.action === "open" && req.tab) {
    req.tab.location.href = url;
  } else {
    const a = document.createElement("a");
    a.href = url;
    if (req.action === "save") a.download = req.name;
    else a.target = "_blank";
    a.rel = "noopener";
    document.body.append(a);
    a.click();
    a.remove();
  }
  setTimeout(() => {
    URL.revokeObjectURL(url);
  }, 60_000);
}

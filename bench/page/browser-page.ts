// The page side of the browser benchmark (bench/browser.ts bundles it with esbuild and
// drives it in Chromium). It exposes one object on globalThis; every timing is taken here,
// with performance.now(), so the DevTools round trips are not counted.
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { Decrypter } from "age-encryption";
import { deriveSecuPassIdentity, newKdfParams } from "../src/crypto/secupass.js";
import { sodiumAead } from "../src/portal/client/sodium.js";
import type { Aead } from "../src/crypto/stream-open.js";
import { decryptFile, loadAead } from "../src/portal/client/stream.js";

/**
 * The ways of decrypting a file that the benchmark compares: "before" is the portal's
 * download path before libsodium, "portal" the one now; "fetch" only reads the file.
 */
export type Method = "fetch" | "before" | "portal" | "typage" | "sodium";

/** One decryption: its time, the plaintext length and (when asked) its SHA-256. */
export interface DecryptRun {
  seconds: number;
  bytes: number;
  sha256: string | null;
}

/** What the page offers to page.evaluate. */
export interface PageApi {
  /** @returns Milliseconds from module start until libsodium's WASM was ready (as the portal loads it). */
  sodiumReady(): Promise<number>;
  /** @returns Seconds for one Secu-Pass derivation at the portal's cost. */
  scrypt(): Promise<number>;
  decrypt(method: Method, url: string, identity: string, size: number, verify: boolean): Promise<DecryptRun>;
  /** @returns Seconds to open 1,024 sealed 64 KiB chunks in memory, no I/O: the bare primitive. */
  aead(impl: "noble" | "sodium"): Promise<number>;
}

const started = performance.now();
const aead = loadAead();
const ready = aead.then((a) => {
  if (!a) throw new Error("libsodium did not start");
  return performance.now() - started;
});

async function body(url: string): Promise<ReadableStream<Uint8Array>> {
  const res = await fetch(url, { credentials: "same-origin" });
  if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
  return res.body;
}

/** Collects the plaintext into a Blob, as deliveryPage in src/portal/client/main.ts does. */
async function collect(plain: ReadableStream<Uint8Array>, size: number): Promise<Blob> {
  const parts: Uint8Array[] = [];
  let done = 0;
  let fraction = 0;
  for await (const chunk of plain) {
    parts.push(chunk);
    done += chunk.byteLength;
    fraction = size > 0 ? done / size : 1;
  }
  if (fraction !== 1) throw new Error("short plaintext");
  return new Blob(parts, { type: "application/octet-stream" });
}

/**
 * The portal's download path before libsodium, line for line (it was a closure inside
 * deliveryPage, not importable): typage's Decrypter on the fetch body, into a Blob.
 */
async function before(url: string, identity: string, size: number): Promise<Blob> {
  const res = await fetch(url, { credentials: "same-origin" });
  if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
  const d = new Decrypter();
  d.addIdentity(identity);
  return collect(await d.decrypt(res.body), size);
}

/** The portal's download path now: decryptFile (libsodium, typage as fallback), into a Blob. */
async function portal(url: string, identity: string, size: number): Promise<Blob> {
  const res = await fetch(url, { credentials: "same-origin" });
  if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
  return collect(await decryptFile(res.body, identity, aead), size);
}

async function open(method: "fetch" | "typage" | "sodium", url: string, identity: string): Promise<ReadableStream<Uint8Array>> {
  if (method === "fetch") return body(url);
  if (method === "typage") {
    const d = new Decrypter();
    d.addIdentity(identity);
    return d.decrypt(await body(url));
  }
  const a = await aead;
  if (!a) throw new Error("libsodium did not start");
  return decryptFile(await body(url), identity, Promise.resolve(a));
}

// typage opens each chunk with @noble/ciphers' chacha20poly1305, exactly like this.
const nobleAead: Aead = {
  open(key, nonce, sealed) {
    try {
      return chacha20poly1305(key, nonce).decrypt(sealed);
    } catch {
      return null;
    }
  },
};

const api: PageApi = {
  sodiumReady: () => ready,

  async scrypt() {
    const params = newKdfParams("x25519");
    const t0 = performance.now();
    const identity = await deriveSecuPassIdentity("Korrekt Pferd Batterie Heftklammer", params, "bench@patient.example");
    const seconds = (performance.now() - t0) / 1000;
    if (!identity.startsWith("AGE-SECRET-KEY-1")) throw new Error("no identity");
    return seconds;
  },

  async aead(impl) {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const nonce = new Uint8Array(12);
    const sealed = chacha20poly1305(key, nonce).encrypt(crypto.getRandomValues(new Uint8Array(64 * 1024)));
    const a = impl === "noble" ? nobleAead : await sodiumAead();
    const t0 = performance.now();
    let bytes = 0;
    for (let i = 0; i < 1024; i++) bytes += a.open(key, nonce, sealed)?.length ?? 0;
    const seconds = (performance.now() - t0) / 1000;
    if (bytes !== 64 * 1024 * 1024) throw new Error("aead failed");
    return seconds;
  },

  async decrypt(method, url, identity, size, verify) {
    if (method === "before" || method === "portal") {
      const t0 = performance.now();
      const blob = await (method === "before" ? before : portal)(url, identity, size);
      const seconds = (performance.now() - t0) / 1000;
      const digest = verify ? bytesToHex(new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()))) : null;
      return { seconds, bytes: blob.size, sha256: digest };
    }
    const hash = verify ? sha256.create() : null;
    const t0 = performance.now();
    const reader = (await open(method, url, identity)).getReader();
    let bytes = 0;
    let touch = 0;
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      bytes += r.value.length;
      // Read the bytes, so that no engine could skip producing them.
      touch ^= (r.value[0] ?? 0) ^ (r.value[r.value.length - 1] ?? 0);
      hash?.update(r.value);
    }
    const seconds = (performance.now() - t0) / 1000;
    if (touch < 0) throw new Error("unreachable");
    return { seconds, bytes, sha256: hash ? bytesToHex(hash.digest()) : null };
  },
};

(globalThis as unknown as { praxBench: PageApi }).praxBench = api;

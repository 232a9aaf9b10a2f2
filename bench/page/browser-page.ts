// The page side of the browser benchmark (bench/browser.ts bundles it with esbuild and
// drives it in Chromium; its own folder, because it is typechecked with the DOM's types). It exposes one object on globalThis; every timing is taken here,
// with performance.now(), so the DevTools round trips are not counted, except for
// decrypt-and-save, which ends when Chromium has the download on disk (bench/browser.ts).
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { Decrypter } from "age-encryption";
import { deriveSecuPass, newKdfParams } from "../../src/crypto/secupass.js";
import type { Aead } from "../../src/crypto/stream-open.js";
import { deriveInWorker } from "../../src/portal/client/derive.js";
import { saveFile } from "../../src/portal/client/save.js";
import { sodiumAead } from "../../src/portal/client/sodium.js";
import { decryptFile, loadAead } from "../../src/portal/client/stream.js";
import type { Method, PageApi } from "../browser-api.js";

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

async function open(method: Method, url: string, identity: string): Promise<ReadableStream<Uint8Array>> {
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

/** Counts requestAnimationFrame callbacks until stopped. */
function frameCounter(): { stop(): number } {
  let frames = 0;
  let on = true;
  const tick = (): void => {
    if (!on) return;
    frames++;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  return {
    stop() {
      on = false;
      return frames;
    },
  };
}

const api: PageApi = {
  sodiumReady: () => ready,

  async unlock(where) {
    const params = newKdfParams("x25519");
    const key = "Korrekt Pferd Batterie Heftklammer";
    const address = "bench@patient.example";
    const counter = frameCounter();
    const t0 = performance.now();
    const { identity } = where === "worker" ? await deriveInWorker(key, params, address, () => undefined) : await deriveSecuPass(key, params, address);
    const seconds = (performance.now() - t0) / 1000;
    const frames = counter.stop();
    if (!identity.startsWith("AGE-SECRET-KEY-1")) throw new Error("no identity");
    return { seconds, frames };
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

  async save(url, identity) {
    await saveFile({ url, name: "file.bin", identity, aead, action: "save", onBytes: () => undefined });
  },

  async decrypt(method, url, identity, verify) {
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

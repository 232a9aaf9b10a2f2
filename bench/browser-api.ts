// What the benchmark page (bench/page/browser-page.ts) offers bench/browser.ts, in a file
// without the DOM's types, so that both sides can import it.

/** Stream decryptions the benchmark compares; "fetch" only reads the file. */
export type Method = "fetch" | "typage" | "sodium";

/** One decryption: its time, the plaintext length and (when asked) its SHA-256. */
export interface DecryptRun {
  seconds: number;
  bytes: number;
  sha256: string | null;
}

/** One Secu-Pass derivation: how long it took and how many frames the page painted meanwhile. */
export interface UnlockRun {
  seconds: number;
  frames: number;
}

/** What the page offers to page.evaluate. */
export interface PageApi {
  /** @returns Milliseconds from module start until libsodium's WASM was ready (as the portal loads it). */
  sodiumReady(): Promise<number>;
  /** One Secu-Pass derivation at the portal's cost, in the portal's worker or on this thread. */
  unlock(where: "worker" | "main"): Promise<UnlockRun>;
  /** Starts decrypting and saving the file; it is saved when Chromium reports the download done. */
  save(url: string, identity: string): Promise<void>;
  decrypt(method: Method, url: string, identity: string, verify: boolean): Promise<DecryptRun>;
  /** @returns Seconds to open 1,024 sealed 64 KiB chunks in memory, no I/O: the bare primitive. */
  aead(impl: "noble" | "sodium"): Promise<number>;
}

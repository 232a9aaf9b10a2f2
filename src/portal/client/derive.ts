// Starts the Secu-Pass derivation in a Web Worker (derive-worker.ts, bundled as derive.js
// next to this bundle): on the page's own thread, scrypt would hold back painting for its
// whole run, so neither the progress bar nor anything else on the page would move.
import type { KdfParams, SecuPassKeys } from "../../crypto/secupass.js";

/** What the page sends the worker. */
export interface DeriveRequest {
  readonly secret: string;
  /** Already checked with parseKdfParams; the worker checks them again. */
  readonly kdf: KdfParams;
  readonly address: string;
}

/** What the worker answers: progress (0…1), then U and the credential, or a failure. */
export type DeriveReply = { readonly progress: number } | { readonly keys: SecuPassKeys } | { readonly error: true };

/**
 * Derives U and the login credential from a Secu-Pass-Key in a Web Worker (deriveSecuPass
 * of src/crypto/secupass.ts, the same code as on Node).
 *
 * @param secret - The Secu-Pass-Key the patient typed.
 * @param kdf - The patient's checked KDF parameters.
 * @param address - The patient's address (mixed into the salt by version 2).
 * @param onProgress - Called with 0…1 while scrypt runs.
 * @returns U (`AGE-SECRET-KEY-…`) and the credential.
 * @throws If the worker cannot start or the derivation fails (an empty key, bad parameters).
 */
export function deriveInWorker(secret: string, kdf: KdfParams, address: string, onProgress: (fraction: number) => void): Promise<SecuPassKeys> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./derive.js", import.meta.url), { type: "module", name: "secupass" });
    const end = (): void => {
      worker.terminate();
    };
    worker.onmessage = (ev: MessageEvent<DeriveReply>) => {
      const reply = ev.data;
      if ("progress" in reply) {
        onProgress(reply.progress);
        return;
      }
      end();
      if ("keys" in reply) resolve(reply.keys);
      else reject(new Error("secu-pass derivation failed"));
    };
    worker.onerror = () => {
      end();
      reject(new Error("secu-pass worker did not start"));
    };
    worker.postMessage({ secret, kdf, address } satisfies DeriveRequest);
  });
}

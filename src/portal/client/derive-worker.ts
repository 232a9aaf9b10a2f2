// The Secu-Pass derivation (scrypt at N=2^17: half a second or more) in a Web Worker, so that
// the page keeps painting, scrolling and showing progress meanwhile. Built by
// scripts/build-portal.mjs as its own entry point (derive.js); derive.ts starts it. The
// secret comes in one message and U and the login credential go back in one; the worker is
// ended after.
import { deriveSecuPass } from "../../crypto/secupass.js";
import type { DeriveReply, DeriveRequest } from "./derive.js";

// The DOM typings describe a window; this file runs in a dedicated worker.
const scope = self as unknown as { postMessage(reply: DeriveReply): void; onmessage: ((ev: MessageEvent<DeriveRequest>) => void) | null };

scope.onmessage = (ev) => {
  const { secret, kdf, address } = ev.data;
  let shown = -1;
  deriveSecuPass(secret, kdf, address, (f) => {
    // One message per percent, not one per scrypt step.
    const percent = Math.floor(f * 100);
    if (percent === shown) return;
    shown = percent;
    scope.postMessage({ progress: f });
  }).then(
    (keys) => {
      scope.postMessage({ keys });
    },
    () => {
      scope.postMessage({ error: true });
    },
  );
};

// The patient identity U for this visit: held in this page's memory only, never in
// sessionStorage, localStorage, IndexedDB or a cookie. It lives as long as the page does; the
// portal moves between its pages without reloading (nav.ts), so one unlock serves a visit.

let identity: string | null = null;

/**
 * Keeps U for the rest of this visit (after a login with the Secu-Pass-Key, an unlock or a
 * passkey with PRF).
 *
 * @param u - `AGE-SECRET-KEY-…` (or the post-quantum form).
 */
export function rememberIdentity(u: string): void {
  identity = u;
}

/** @returns U if it was unlocked during this visit, else null. */
export function rememberedIdentity(): string | null {
  return identity;
}

/** Drops U (logout, a wrong key). */
export function forgetIdentity(): void {
  identity = null;
}

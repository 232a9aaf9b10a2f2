// Passkeys for known devices. The login page offers one tap; after an unlock or a login with
// the key, the page offers to remember this device. U is sealed here, under AES-256-GCM with a
// key derived (HKDF-SHA256) from the authenticator's PRF output, and bound to the credential and
// the address; only the sealed form is posted. U, the PRF output and the AES key never reach
// storage or a request.
import { startAuthentication, startRegistration } from "@simplewebauthn/browser";
import type { AuthenticationExtensionsClientOutputs, PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON } from "@simplewebauthn/browser";
import { carryLinkKey } from "./delivery.js";
import { byId, postJson } from "./dom.js";
import { rememberIdentity, rememberedIdentity } from "./keys.js";
import { go } from "./nav.js";

const enc = new TextEncoder();
/** What the PRF is evaluated on; the output differs per credential (each has its own secret). */
const PRF_INPUT = enc.encode("praxmail passkey prf v1");
/** HKDF's info: ties the AES key to this use. */
const HKDF_INFO = enc.encode("praxmail passkey v1");
/**
 * This tab's visit began with a passkey: no offer to remember the device again. Only this
 * flag is kept (sessionStorage, this tab); nothing secret.
 */
const FROM_PASSKEY = "praxmail-passkey-visit";

const b64u = (b: Uint8Array): string => btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const fromB64u = (s: string): Uint8Array<ArrayBuffer> => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

/** The PRF's first output of an answer, if the authenticator gave one. */
function prfOutput(results: AuthenticationExtensionsClientOutputs): ArrayBuffer | null {
  const first = (results as { prf?: { results?: { first?: unknown } } }).prf?.results?.first;
  return first instanceof ArrayBuffer ? first : ArrayBuffer.isView(first) ? (first.buffer.slice(first.byteOffset, first.byteOffset + first.byteLength) as ArrayBuffer) : null;
}

/** The AES key of a credential: HKDF-SHA256 over its PRF output with the credential's own salt. */
async function sealKey(prf: ArrayBuffer, salt: Uint8Array<ArrayBuffer>, usage: KeyUsage): Promise<CryptoKey> {
  const ikm = await crypto.subtle.importKey("raw", prf, "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt, info: HKDF_INFO }, ikm, { name: "AES-GCM", length: 256 }, false, [usage]);
}

const boundTo = (credentialId: string, address: string): Uint8Array<ArrayBuffer> => enc.encode(`${credentialId}\n${address}`);

/** Seals U: `v1.<salt>.<iv>.<ciphertext>`, base64url. */
async function seal(u: string, prf: ArrayBuffer, credentialId: string, address: string): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(32));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: boundTo(credentialId, address) }, await sealKey(prf, salt, "encrypt"), enc.encode(u));
  return `v1.${b64u(salt)}.${b64u(iv)}.${b64u(new Uint8Array(ct))}`;
}

/** Opens what {@link seal} made; throws for another credential, address or PRF output. */
async function unseal(sealed: string, prf: ArrayBuffer, credentialId: string, address: string): Promise<string> {
  const [v, salt = "", iv = "", ct = ""] = sealed.split(".");
  if (v !== "v1") throw new Error("unknown sealed format");
  const pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv: fromB64u(iv), additionalData: boundTo(credentialId, address) }, await sealKey(prf, fromB64u(salt), "decrypt"), fromB64u(ct));
  return new TextDecoder().decode(pt);
}

const prfExtension = { prf: { eval: { first: PRF_INPUT } } };

/** What /passkeys/login and /passkeys/unlock answer: U sealed for the patient (`next` only at a login). */
interface PasskeyReply {
  next?: string;
  address: string;
  sealed: string | null;
}

/**
 * One assertion: the authenticator picks the patient's credential and evaluates the PRF; the
 * answer goes to `url` without the PRF output, which stays here. With PRF and a sealed U in
 * the server's reply, U is opened and kept for this visit.
 *
 * @returns The server's reply, and whether U is now known.
 */
async function assertPasskey(csrf: string, url: string, body: Record<string, unknown>): Promise<{ reply: PasskeyReply; unlocked: boolean }> {
  const res = await postJson("/passkeys/login/options", csrf, {});
  if (!res.ok) throw new Error(`status ${res.status}`);
  const { options } = (await res.json()) as { options: PublicKeyCredentialRequestOptionsJSON };
  // The salt is bytes, which the JSON options cannot carry; @simplewebauthn/browser passes extensions on as they are.
  const answer = await startAuthentication({ optionsJSON: { ...options, extensions: prfExtension } });
  const prf = prfOutput(answer.clientExtensionResults);
  const done = await postJson(url, csrf, { ...body, response: { ...answer, clientExtensionResults: {} } });
  if (!done.ok) throw new Error(`status ${done.status}`);
  const reply = (await done.json()) as PasskeyReply;
  // This visit began with a passkey: no offer to remember the device again.
  sessionStorage.setItem(FROM_PASSKEY, "1");
  if (!prf || reply.sealed === null) return { reply, unlocked: false };
  try {
    rememberIdentity(await unseal(reply.sealed, prf, answer.id, reply.address));
    return { reply, unlocked: true };
  } catch {
    // Sealed for another key or credential: the key is asked for once instead.
    return { reply, unlocked: false };
  }
}

/** One tap on the login page: logs in, and with PRF opens U for this visit. */
async function passkeyLogin(box: HTMLElement): Promise<void> {
  const { reply } = await assertPasskey(box.dataset.csrf ?? "", "/passkeys/login", { next: box.dataset.next ?? "/deliveries" });
  carryLinkKey();
  go(reply.next ?? "/deliveries");
}

/**
 * One tap on a page that asks for the key within a live session: the session's own passkey
 * opens U for this visit.
 *
 * @returns U, or null when this passkey cannot open it (no PRF, or sealed for an older key).
 */
export async function passkeyIdentity(box: HTMLElement): Promise<string | null> {
  const { unlocked } = await assertPasskey(box.dataset.csrf ?? "", "/passkeys/unlock", {});
  return unlocked ? rememberedIdentity() : null;
}

/** Whether this browser can use passkeys at all. */
export const hasPasskeys = (): boolean => typeof PublicKeyCredential !== "undefined";

/** Shows the passkey button on the login page where the browser has WebAuthn. */
export function passkeyLoginPage(box: HTMLElement): void {
  // The login page starts a new visit: whether the last one began with a passkey no longer matters.
  sessionStorage.removeItem(FROM_PASSKEY);
  if (!hasPasskeys()) return;
  const button = byId<HTMLButtonElement>("passkey-login-button");
  const error = byId("passkey-error");
  box.hidden = false;
  button?.addEventListener("click", () => {
    if (error) error.hidden = true;
    if (button.disabled) return;
    button.disabled = true;
    passkeyLogin(box).catch(() => {
      button.disabled = false;
      if (!error) return;
      error.textContent = box.dataset.failed ?? "";
      error.hidden = false;
    });
  });
}

/** The PRF output of a new credential: from its creation, or else from one assertion with it. */
async function newCredentialPrf(results: AuthenticationExtensionsClientOutputs, credentialId: string, rpId: string): Promise<ArrayBuffer | null> {
  const atCreate = prfOutput(results);
  if (atCreate) return atCreate;
  if ((results as { prf?: { enabled?: boolean } }).prf?.enabled !== true) return null;
  const got = (await navigator.credentials.get({
    publicKey: {
      // Local only: this assertion is never sent; it only evaluates the PRF.
      challenge: crypto.getRandomValues(new Uint8Array(32)),
      rpId,
      allowCredentials: [{ type: "public-key", id: fromB64u(credentialId) }],
      userVerification: "required",
      extensions: prfExtension,
    },
  })) as PublicKeyCredential | null;
  return got ? prfOutput(got.getClientExtensionResults()) : null;
}

/** Registers this device's passkey, with U sealed under its PRF output where it has one. */
async function rememberDevice(box: HTMLElement, u: string): Promise<boolean> {
  const csrf = box.dataset.csrf ?? "";
  const res = await postJson("/passkeys/register/options", csrf, {});
  if (!res.ok) throw new Error(`status ${res.status}`);
  const { options, address } = (await res.json()) as { options: PublicKeyCredentialCreationOptionsJSON; address: string };
  const created = await startRegistration({ optionsJSON: { ...options, extensions: prfExtension } });
  const prf = await newCredentialPrf(created.clientExtensionResults, created.id, options.rp.id ?? location.hostname);
  const sealed = prf ? await seal(u, prf, created.id, address) : null;
  const done = await postJson("/passkeys/register", csrf, { response: { ...created, clientExtensionResults: {} }, sealed });
  if (!done.ok) throw new Error(`status ${done.status}`);
  return sealed !== null;
}

/**
 * Offers "Auf diesem Gerät merken" once U is known in this page and the visit did not start
 * with a passkey. Call it when a page is set up, and again after an unlock.
 */
export function offerPasskey(): void {
  const box = byId("passkey-offer");
  const u = rememberedIdentity();
  if (!box || u === null || !hasPasskeys() || sessionStorage.getItem(FROM_PASSKEY) !== null) return;
  if (box.dataset.ready === "1") return;
  box.dataset.ready = "1";
  const button = byId<HTMLButtonElement>("passkey-offer-button");
  const status = byId("passkey-offer-status");
  box.hidden = false;
  button?.addEventListener("click", () => {
    button.disabled = true;
    rememberDevice(box, u).then(
      (prf) => {
        button.hidden = true;
        if (status) status.textContent = (prf ? box.dataset.done : box.dataset.doneNoPrf) ?? "";
      },
      () => {
        button.disabled = false;
        if (status) status.textContent = box.dataset.failed ?? "";
      },
    );
  });
}

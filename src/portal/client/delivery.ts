// The delivery page: unwrap the delivery key with the patient identity U (the one this visit
// already knows, keys.ts, or derived from the Secu-Pass-Key in a worker) or take it from the
// link's #fragment (levels 1–2), show the sealed message, then decrypt each file on request.
// Keys live in this page's memory only.
import { Decrypter } from "age-encryption";
import { KdfParamsError, parseKdfParams, type KdfParams } from "../../crypto/secupass.js";
import type { Aead } from "../../crypto/stream-open.js";
import { deriveInWorker } from "./derive.js";
import { byId } from "./dom.js";
import { rememberIdentity, rememberedIdentity } from "./keys.js";
import { hasPasskeys, offerPasskey, passkeyIdentity } from "./passkeys.js";
import { saveFile } from "./save.js";
import { loadAead } from "./stream.js";

interface FileInfo {
  id: string;
  name: string;
  size: number;
  kind: "attachment" | "message";
  url: string;
}

/** The page's data, from the server's JSON in #delivery-data. */
export interface DeliveryData {
  id: string;
  /** Levels 1–2: the delivery key rides in the link's #fragment (the server's level policy). */
  keyInLink: boolean;
  files: FileInfo[];
  wrapUrl: string | null;
  kdf: unknown;
  /** The logged-in patient's address, mixed into the Secu-Pass salt. */
  address: string | null;
}

/** The page's texts (German by default), from the server's JSON in #texts. */
export type Texts = Record<"wrongKey" | "decrypting" | "downloading" | "done" | "failed" | "missingKey" | "deriving" | "kdfWeak" | "unlockFirst" | "keyNotThis", string>;

/** The sessionStorage entry that carries a level-2 link key over the login form (main.ts). */
const CARRY = "praxmail-link-key";

/** What the steps of the page share. */
interface DeliveryState {
  readonly data: DeliveryData;
  readonly t: Texts;
  readonly attachments: FileInfo[];
  /** Real file names, once the sealed message has named them. */
  readonly names: Map<string, string>;
  /** Started while the patient reads the page, so the first download does not wait for it. */
  readonly aead: Promise<Aead | null>;
  /** The unlock form (patient-key deliveries), else null. */
  readonly form: HTMLFormElement | null;
  /** The delivery key, once known. */
  key: string | null;
  /** An unlock under way: true once `key` is set, false when it was not. */
  unlocking: Promise<boolean> | null;
  /** Whether this page is still the one shown (nav.ts swaps pages without reloading). */
  live(): boolean;
  say(msg: string, error?: boolean): void;
  progress(fraction: number | null): void;
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url, { credentials: "same-origin" });
  // A redirect is the login's (the session ended): no wrap to try a key on.
  if (!res.ok || res.redirected) throw new Error(`status ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** @returns The delivery key a level 1–2 link carries in its #fragment, if any. */
function fragmentKey(): string | null {
  return /[#&]k=(AGE-SECRET-KEY-[0-9A-Z-]+)/.exec(location.hash)?.[1] ?? null;
}

/** Before a login from a level-2 link (the form's or a passkey's): keeps the #fragment's key in this tab for the page after it; it is never sent. */
export function carryLinkKey(): void {
  const key = fragmentKey();
  if (key) sessionStorage.setItem(CARRY, key);
}

/** Levels 1–2: the key from the #fragment, or carried over the login in this tab only (then dropped). */
function linkKey(): string | null {
  const key = fragmentKey();
  const carried = sessionStorage.getItem(CARRY);
  sessionStorage.removeItem(CARRY);
  return key ?? (carried && /^AGE-SECRET-KEY-[0-9A-Z-]+$/.test(carried) ? carried : null);
}

/** Opens the sealed message: its subject and text (as text, never as HTML) and the real file names. */
async function showMessage(s: DeliveryState): Promise<void> {
  const m = s.data.files.find((f) => f.kind === "message");
  if (!m || !s.key) return;
  const d = new Decrypter();
  d.addIdentity(s.key);
  const sealed = JSON.parse(await d.decrypt(await fetchBytes(m.url), "text")) as { subject: string | null; text: string | null; files: string[] };
  if (!s.live()) return;
  const box = byId("message");
  const subject = byId("message-subject");
  const text = byId("message-text");
  if (subject) subject.textContent = sealed.subject ?? "";
  if (text) text.textContent = sealed.text ?? "";
  if (box) box.hidden = false;
  s.attachments.forEach((f, i) => {
    const real = sealed.files[i];
    if (!real) return;
    s.names.set(f.id, real);
    const el = document.querySelector(`li[data-file="${f.id}"] .name`);
    if (el) el.textContent = real;
  });
}

/**
 * @returns The delivery key from the wrap, or null when `identity` does not open it.
 * @throws When the wrap cannot be fetched or holds no age key.
 */
async function openWrap(s: DeliveryState, identity: string): Promise<string | null> {
  const wrap = await fetchBytes(s.data.wrapUrl ?? "");
  const d = new Decrypter();
  d.addIdentity(identity);
  let opened: string;
  try {
    opened = (await d.decrypt(wrap, "text")).trim();
  } catch {
    return null;
  }
  if (!/^AGE-SECRET-KEY-/.test(opened)) throw new Error("bad wrap");
  return opened;
}

/** The delivery key is known: the form goes, the sealed message shows. */
async function unlocked(s: DeliveryState, key: string): Promise<void> {
  s.key = key;
  if (s.form) s.form.hidden = true;
  await showMessage(s);
}

/**
 * Unlocks with the U this visit already knows, without asking. If it does not open this
 * delivery (a wrap for another key), the form comes back with a plain text, and U stays.
 */
async function unlockRemembered(s: DeliveryState, u: string): Promise<boolean> {
  if (s.form) s.form.hidden = true;
  const key = await openWrap(s, u);
  if (!s.live()) return false;
  if (key) {
    await unlocked(s, key);
    return true;
  }
  if (s.form) s.form.hidden = false;
  s.say(s.t.keyNotThis, true);
  return false;
}

/** Derives U from the typed Secu-Pass-Key, unwraps the delivery key with it and keeps U for the visit. */
async function unlockTyped(s: DeliveryState, kdf: KdfParams): Promise<boolean> {
  const input = byId<HTMLInputElement>("unlock-key");
  s.say(s.t.deriving);
  s.progress(0);
  const { identity } = await deriveInWorker(input?.value ?? "", kdf, s.data.address ?? "", (f) => {
    s.progress(f);
  });
  const key = await openWrap(s, identity);
  if (!s.live()) return false;
  s.progress(null);
  if (!key) {
    s.say(s.t.wrongKey, true);
    input?.focus();
    return false;
  }
  rememberIdentity(identity);
  offerPasskey();
  if (input) input.value = "";
  s.say(s.t.done);
  await unlocked(s, key);
  return true;
}

/** Unlocks with U that this device's passkey opens (one tap, nothing typed); the form stays for the key when it cannot. */
async function unlockByPasskey(s: DeliveryState, box: HTMLElement): Promise<boolean> {
  const error = byId("passkey-unlock-error");
  if (error) error.hidden = true;
  let u: string | null = null;
  try {
    u = await passkeyIdentity(box);
  } catch {
    // Cancelled, another patient's passkey, or removed: the key is typed instead.
  }
  if (!s.live()) return false;
  if (u === null) {
    if (error) {
      error.textContent = box.dataset.failed ?? "";
      error.hidden = false;
    }
    byId<HTMLInputElement>("unlock-key")?.focus();
    return false;
  }
  box.hidden = true;
  return unlockRemembered(s, u);
}

/**
 * Runs an unlock, one at a time; a failure shows the failed text (and the form, while the key
 * is unknown).
 *
 * @returns Whether the delivery key is known afterwards.
 */
function startUnlock(s: DeliveryState, run: () => Promise<boolean>): Promise<boolean> {
  if (s.unlocking) return s.unlocking;
  const p = run()
    .catch(() => {
      if (s.form && !s.key) s.form.hidden = false;
      s.progress(null);
      s.say(s.t.failed, true);
      return s.key !== null;
    })
    .finally(() => {
      s.unlocking = null;
    });
  s.unlocking = p;
  return p;
}

/** Unlocks with the typed key, once its derivation parameters pass; false (and a text) when they do not. */
function startTyped(s: DeliveryState): Promise<boolean> {
  let kdf: KdfParams;
  try {
    kdf = parseKdfParams(s.data.kdf);
  } catch (e) {
    s.say(e instanceof KdfParamsError && e.reason === "weak" ? s.t.kdfWeak : s.t.failed, true);
    return Promise.resolve(false);
  }
  return startUnlock(s, () => unlockTyped(s, kdf));
}

/**
 * What a tap on Öffnen or Speichern waits for: the key, known; an unlock under way; or the
 * unlock with the key typed into the field, in the same tap.
 *
 * @returns Whether the key is (or will be) known, or null when the patient must type the key
 *   first (then the field has the focus and a hint says so).
 */
function whenUnlocked(s: DeliveryState): Promise<boolean> | null {
  if (s.key) return Promise.resolve(true);
  if (s.unlocking) return s.unlocking;
  const input = byId<HTMLInputElement>("unlock-key");
  if (!s.form || !input) {
    s.say(s.t.missingKey, true);
    return null;
  }
  if (input.value !== "") return startTyped(s);
  s.say(s.t.unlockFirst, true);
  input.focus();
  return null;
}

/**
 * A tab for a file to open, opened while the tap still counts as the patient's (an unlock may
 * take longer than the browser allows a script to open one); it says that the file is being
 * decrypted until it shows the file. Without opener, like any link to another page.
 */
function tabFor(s: DeliveryState): Window | null {
  const tab = open("", "_blank");
  if (!tab) return null;
  tab.opener = null;
  tab.document.title = s.t.decrypting;
  tab.document.body.textContent = s.t.decrypting;
  return tab;
}

/** Decrypts one file and saves or opens it, with progress. */
async function download(s: DeliveryState, file: FileInfo, key: string, action: "save" | "open", tab: Window | null): Promise<void> {
  s.say(s.t.downloading);
  s.progress(0);
  let started = false;
  await saveFile({
    url: file.url,
    name: s.names.get(file.id) ?? file.name,
    identity: key,
    aead: s.aead,
    action,
    tab,
    onBytes: (done) => {
      if (!started) s.say(s.t.decrypting);
      started = true;
      s.progress(file.size > 0 ? done / file.size : 1);
    },
  });
  s.progress(null);
  s.say(s.t.done);
}

function fileButtons(s: DeliveryState): void {
  document.querySelectorAll<HTMLButtonElement>("button[data-action]").forEach((button) => {
    button.addEventListener("click", () => {
      const file = s.attachments.find((f) => f.id === button.dataset.file);
      if (!file) return;
      const ready = whenUnlocked(s);
      if (!ready) return;
      const action = button.dataset.action === "save" ? "save" : "open";
      const tab = action === "open" ? tabFor(s) : null;
      ready
        .then(async (ok) => {
          if (!ok || !s.key) {
            tab?.close();
            return;
          }
          await download(s, file, s.key, action, tab);
        })
        .catch(() => {
          tab?.close();
          s.progress(null);
          s.say(s.t.failed, true);
        });
    });
  });
}

/**
 * Wires up the delivery page.
 *
 * @param data - The page's data.
 * @param t - Its texts.
 */
export function deliveryPage(data: DeliveryData, t: Texts): void {
  const status = byId("status");
  const bar = byId<HTMLProgressElement>("progress");
  const main = byId("main");
  const attachments = data.files.filter((f) => f.kind === "attachment");
  const s: DeliveryState = {
    data,
    t,
    attachments,
    names: new Map(attachments.map((f) => [f.id, f.name])),
    aead: attachments.length > 0 ? loadAead() : Promise.resolve(null),
    form: byId<HTMLFormElement>("unlock-form"),
    key: data.keyInLink ? linkKey() : null,
    unlocking: null,
    live: () => main?.isConnected ?? false,
    say(msg, error = false) {
      if (!status) return;
      status.textContent = msg;
      status.classList.toggle("error", error);
    },
    progress(fraction) {
      if (!bar) return;
      bar.hidden = fraction === null;
      bar.value = Math.round((fraction ?? 0) * 100);
    },
  };
  s.form?.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void startTyped(s);
  });
  const u = rememberedIdentity();
  if (s.key) {
    showMessage(s).catch(() => {
      s.say(t.failed, true);
    });
  } else if (s.form && data.wrapUrl && u) {
    void startUnlock(s, () => unlockRemembered(s, u));
  } else {
    // Within a live session, where the patient has remembered a device: one tap instead of the key.
    const box = byId("passkey-unlock");
    if (box && s.form && data.wrapUrl && hasPasskeys()) {
      box.hidden = false;
      byId("passkey-unlock-button")?.addEventListener("click", () => {
        void startUnlock(s, () => unlockByPasskey(s, box));
      });
    }
  }
  fileButtons(s);
}

// The delivery page: unwrap the delivery key with the patient identity (derived from the
// Secu-Pass-Key in a worker) or take it from the link's #fragment (levels 1–2), show the
// sealed message, then decrypt each file on request. Keys live in this page's memory only.
import { Decrypter } from "age-encryption";
import { KdfParamsError, parseKdfParams, type KdfParams } from "../../crypto/secupass.js";
import type { Aead } from "../../crypto/stream-open.js";
import { deriveInWorker } from "./derive.js";
import { byId } from "./dom.js";
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
export type Texts = Record<"wrongKey" | "decrypting" | "downloading" | "done" | "failed" | "missingKey" | "deriving" | "kdfWeak", string>;

/** The sessionStorage entry that carries a level-2 link key over the login form (main.ts). */
export const CARRY = "praxmail-link-key";

/** What the steps of the page share. */
interface DeliveryState {
  readonly data: DeliveryData;
  readonly t: Texts;
  readonly attachments: FileInfo[];
  /** Real file names, once the sealed message has named them. */
  readonly names: Map<string, string>;
  /** Started while the patient reads the page, so the first download does not wait for it. */
  readonly aead: Promise<Aead | null>;
  /** The delivery key, once known. */
  key: string | null;
  say(msg: string, error?: boolean): void;
  progress(fraction: number | null): void;
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url, { credentials: "same-origin" });
  if (!res.ok) throw new Error(`status ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Levels 1–2: the key from the #fragment, or carried over the login form in this tab only (then dropped). */
function linkKey(): string | null {
  const key = /[#&]k=(AGE-SECRET-KEY-[0-9A-Z-]+)/.exec(location.hash)?.[1] ?? null;
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

/** Derives the identity from the Secu-Pass-Key and unwraps the delivery key with it. */
async function unlock(s: DeliveryState, form: HTMLFormElement, kdf: KdfParams): Promise<void> {
  const input = byId<HTMLInputElement>("unlock-key");
  s.say(s.t.deriving);
  s.progress(0);
  const { identity } = await deriveInWorker(input?.value ?? "", kdf, s.data.address ?? "", (f) => {
    s.progress(f);
  });
  const d = new Decrypter();
  d.addIdentity(identity);
  let opened: string;
  try {
    opened = (await d.decrypt(await fetchBytes(s.data.wrapUrl ?? ""), "text")).trim();
  } catch {
    s.progress(null);
    s.say(s.t.wrongKey, true);
    input?.focus();
    return;
  }
  if (!/^AGE-SECRET-KEY-/.test(opened)) throw new Error("bad wrap");
  s.key = opened;
  if (input) input.value = "";
  form.hidden = true;
  s.progress(null);
  s.say(s.t.done);
  await showMessage(s);
}

function unlockForm(s: DeliveryState, form: HTMLFormElement): void {
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    let kdf: KdfParams;
    try {
      kdf = parseKdfParams(s.data.kdf);
    } catch (e) {
      s.say(e instanceof KdfParamsError && e.reason === "weak" ? s.t.kdfWeak : s.t.failed, true);
      return;
    }
    unlock(s, form, kdf).catch(() => {
      s.progress(null);
      s.say(s.t.failed, true);
    });
  });
}

/** Decrypts one file and saves or opens it, with progress. */
async function download(s: DeliveryState, file: FileInfo, key: string, action: "save" | "open"): Promise<void> {
  s.say(s.t.downloading);
  s.progress(0);
  let started = false;
  await saveFile({
    url: file.url,
    name: s.names.get(file.id) ?? file.name,
    identity: key,
    aead: s.aead,
    action,
    onBytes: (done) => {
      if (!started) s.say(s.t.decrypting);
      started = true;
      s.progress(file.size > 0 ? done / file.size : 1);
    },
  });
  s.progress(null);
  s.say(s.t.done);
}

function fileButtons(s: DeliveryState, unlockForm: HTMLFormElement | null): void {
  document.querySelectorAll<HTMLButtonElement>("button[data-action]").forEach((button) => {
    button.addEventListener("click", () => {
      const file = s.attachments.find((f) => f.id === button.dataset.file);
      if (!file) return;
      if (!s.key) {
        if (unlockForm) byId<HTMLInputElement>("unlock-key")?.focus();
        else s.say(s.t.missingKey, true);
        return;
      }
      download(s, file, s.key, button.dataset.action === "save" ? "save" : "open").catch(() => {
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
  const attachments = data.files.filter((f) => f.kind === "attachment");
  const s: DeliveryState = {
    data,
    t,
    attachments,
    names: new Map(attachments.map((f) => [f.id, f.name])),
    aead: attachments.length > 0 ? loadAead() : Promise.resolve(null),
    key: data.keyInLink ? linkKey() : null,
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
  const form = byId<HTMLFormElement>("unlock-form");
  if (form) unlockForm(s, form);
  if (s.key) {
    showMessage(s).catch(() => {
      s.say(t.failed, true);
    });
  }
  fileButtons(s, form);
}

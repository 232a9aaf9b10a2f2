// The portal's browser code: password strength, deriving the patient identity from the
// Secu-Pass-Key (only its public recipient leaves the browser), and opening deliveries:
// unwrap D with the patient identity (or take it from the #fragment at levels 1–2), then
// decrypt each file as a stream. Keys live in this page's memory only.
import { Decrypter, Encrypter, identityToRecipient } from "age-encryption";
import { KdfParamsError, deriveSecuPassIdentity, parseKdfParams, parseNewKeyKdfParams, type KdfParams } from "../../crypto/secupass.js";
import { decryptFile, loadAead } from "./stream.js";

// The element types are known from our own templates.
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters
const byId = <T extends HTMLElement>(id: string): T | null => document.getElementById(id) as T | null;

/** 0 (too short) to 4 (very good). */
function strength(pw: string): number {
  const length = Array.from(pw).length;
  if (length < 10) return 0;
  const classes = [/[a-zäöüß]/, /[A-ZÄÖÜ]/, /\d/, /[^\w\s]/, /\s/].filter((r) => r.test(pw)).length;
  const words = pw.trim().split(/\s+/).length;
  return Math.min(4, 1 + (classes >= 3 ? 1 : 0) + (length >= 14 ? 1 : 0) + (words >= 3 || length >= 20 ? 1 : 0));
}

const CARRY = "praxmail-link-key";

/**
 * A level-2 link's key is in its #fragment, which a form post loses. The login page keeps
 * it in this tab's sessionStorage for the page after the login; it is never sent.
 */
function loginPage(form: HTMLFormElement): void {
  const key = /[#&]k=(AGE-SECRET-KEY-[0-9A-Z-]+)/.exec(location.hash)?.[1];
  if (!key) return;
  form.addEventListener("submit", () => {
    sessionStorage.setItem(CARRY, key);
  });
}

function registerPage(): void {
  const pw = byId<HTMLInputElement>("password");
  const out = byId("password-strength");
  if (!pw || !out) return;
  const levels = (out.dataset.levels ?? "").split("|");
  pw.addEventListener("input", () => {
    out.textContent = pw.value ? `${out.dataset.label ?? ""}: ${levels[strength(pw.value)] ?? ""}` : "";
  });
}

function secupassPage(form: HTMLFormElement): void {
  const err = byId("secupass-error");
  const box = byId("secupass-progress");
  const bar = byId<HTMLProgressElement>("derive-progress");
  const show = (msg: string): void => {
    if (!err) return;
    err.textContent = msg;
    err.hidden = false;
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = byId<HTMLInputElement>("secupass")?.value ?? "";
    const again = byId<HTMLInputElement>("secupass2")?.value ?? "";
    if (key !== again) {
      show(form.dataset.differ ?? "");
      return;
    }
    if (Array.from(key).length < 10) {
      show(form.dataset.short ?? "");
      return;
    }
    // A new key is only derived with parameters of full cost that bind the salt to the
    // address; anything else is refused before any work, and nothing is posted.
    let kdf: KdfParams;
    try {
      kdf = parseNewKeyKdfParams(JSON.parse(form.dataset.kdf ?? "null"));
    } catch (e) {
      const reason = e instanceof KdfParamsError ? e.reason : "invalid";
      show((reason === "weak" ? form.dataset.kdfWeak : reason === "legacy" ? form.dataset.kdfLegacy : form.dataset.failed) ?? "");
      return;
    }
    const address = form.dataset.address ?? "";
    if (err) err.hidden = true;
    if (box) box.hidden = false;
    const button = form.querySelector("button");
    if (button) button.disabled = true;
    void (async () => {
      try {
        const identity = await deriveSecuPassIdentity(key, kdf, address, (f) => {
          if (bar) bar.value = Math.round(f * 100);
        });
        const recipient = await identityToRecipient(identity);
        const res = await fetch(form.dataset.url ?? "/secupass", {
          method: "POST",
          credentials: "same-origin",
          headers: { "content-type": "application/json", "x-csrf-token": form.dataset.csrf ?? "" },
          body: JSON.stringify({ recipient }),
        });
        if (!res.ok) throw new Error(`status ${res.status}`);
        const { next } = (await res.json()) as { next: string };
        location.assign(next);
      } catch {
        if (button) button.disabled = false;
        if (box) box.hidden = true;
        show(form.dataset.failed ?? "");
      }
    })();
  });
}

interface FileInfo {
  id: string;
  name: string;
  size: number;
  kind: "attachment" | "message";
  url: string;
}
interface DeliveryData {
  id: string;
  /** Levels 1–2: the delivery key rides in the link's #fragment (the server's level policy). */
  keyInLink: boolean;
  files: FileInfo[];
  wrapUrl: string | null;
  kdf: unknown;
  /** The logged-in patient's address, mixed into the Secu-Pass salt. */
  address: string | null;
}
type Texts = Record<"wrongKey" | "decrypting" | "downloading" | "done" | "failed" | "missingKey" | "deriving" | "kdfWeak", string>;

const TYPES: Record<string, string> = { pdf: "application/pdf", png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", txt: "text/plain", eml: "message/rfc822" };

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url, { credentials: "same-origin" });
  if (!res.ok) throw new Error(`status ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

function deliveryPage(data: DeliveryData, t: Texts): void {
  const status = byId("status");
  const bar = byId<HTMLProgressElement>("progress");
  const say = (msg: string, error = false): void => {
    if (!status) return;
    status.textContent = msg;
    status.classList.toggle("error", error);
  };
  const progress = (fraction: number | null): void => {
    if (!bar) return;
    bar.hidden = fraction === null;
    bar.value = Math.round((fraction ?? 0) * 100);
  };
  const attachments = data.files.filter((f) => f.kind === "attachment");
  // Loaded while the patient reads the page, so the first download does not wait for it.
  const aead = attachments.length > 0 ? loadAead() : Promise.resolve(null);
  const names = new Map(attachments.map((f) => [f.id, f.name]));
  let key: string | null = null;
  if (data.keyInLink) {
    key = /[#&]k=(AGE-SECRET-KEY-[0-9A-Z-]+)/.exec(location.hash)?.[1] ?? null;
    // Carried over the login form in this tab only (see loginPage), then dropped.
    const carried = sessionStorage.getItem(CARRY);
    sessionStorage.removeItem(CARRY);
    key ??= carried && /^AGE-SECRET-KEY-[0-9A-Z-]+$/.test(carried) ? carried : null;
  }

  const showMessage = async (): Promise<void> => {
    const m = data.files.find((f) => f.kind === "message");
    if (!m || !key) return;
    const d = new Decrypter();
    d.addIdentity(key);
    const sealed = JSON.parse(await d.decrypt(await fetchBytes(m.url), "text")) as { subject: string | null; text: string | null; files: string[] };
    const box = byId("message");
    const subject = byId("message-subject");
    const text = byId("message-text");
    // Shown as text, never as HTML.
    if (subject) subject.textContent = sealed.subject ?? "";
    if (text) text.textContent = sealed.text ?? "";
    if (box) box.hidden = false;
    attachments.forEach((f, i) => {
      const real = sealed.files[i];
      if (!real) return;
      names.set(f.id, real);
      const el = document.querySelector(`li[data-file="${f.id}"] .name`);
      if (el) el.textContent = real;
    });
  };

  const unlock = byId<HTMLFormElement>("unlock-form");
  unlock?.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = byId<HTMLInputElement>("unlock-key");
    const secret = input?.value ?? "";
    let kdf: KdfParams;
    try {
      kdf = parseKdfParams(data.kdf);
    } catch (e) {
      say(e instanceof KdfParamsError && e.reason === "weak" ? t.kdfWeak : t.failed, true);
      return;
    }
    void (async () => {
      try {
        say(t.deriving);
        progress(0);
        const identity = await deriveSecuPassIdentity(secret, kdf, data.address ?? "", (f) => {
          progress(f);
        });
        const d = new Decrypter();
        d.addIdentity(identity);
        let opened: string;
        try {
          opened = (await d.decrypt(await fetchBytes(data.wrapUrl ?? ""), "text")).trim();
        } catch {
          progress(null);
          say(t.wrongKey, true);
          input?.focus();
          return;
        }
        if (!/^AGE-SECRET-KEY-/.test(opened)) throw new Error("bad wrap");
        key = opened;
        if (input) input.value = "";
        unlock.hidden = true;
        progress(null);
        say(t.done);
        await showMessage();
      } catch {
        progress(null);
        say(t.failed, true);
      }
    })();
  });
  if (key) {
    showMessage().catch(() => {
      say(t.failed, true);
    });
  }

  document.querySelectorAll<HTMLButtonElement>("button[data-action]").forEach((button) => {
    button.addEventListener("click", () => {
      const file = attachments.find((f) => f.id === button.dataset.file);
      if (!file) return;
      if (!key) {
        if (unlock) byId<HTMLInputElement>("unlock-key")?.focus();
        else say(t.missingKey, true);
        return;
      }
      const identity = key;
      void (async () => {
        try {
          say(t.downloading);
          progress(0);
          const res = await fetch(file.url, { credentials: "same-origin" });
          if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
          const plain = await decryptFile(res.body, identity, aead);
          say(t.decrypting);
          const parts: Uint8Array[] = [];
          let done = 0;
          for await (const chunk of plain) {
            parts.push(chunk);
            done += chunk.byteLength;
            progress(file.size > 0 ? done / file.size : 1);
          }
          const name = names.get(file.id) ?? file.name;
          const ext = /\.([a-z0-9]+)$/i.exec(name)?.[1]?.toLowerCase() ?? "";
          const url = URL.createObjectURL(new Blob(parts as BlobPart[], { type: TYPES[ext] ?? "application/octet-stream" }));
          const a = document.createElement("a");
          a.href = url;
          if (button.dataset.action === "save") a.download = name;
          else a.target = "_blank";
          a.rel = "noopener";
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => {
            URL.revokeObjectURL(url);
          }, 60_000);
          progress(null);
          say(t.done);
        } catch {
          progress(null);
          say(t.failed, true);
        }
      })();
    });
  });
}

/** A post the server refused (403), with the text to show. */
class Refused extends Error {}

/**
 * A reply: the message (with the file names) and every file are encrypted here to the
 * practice recipient, then uploaded one by one. The server only ever sees ciphertext.
 */
function replyPage(form: HTMLFormElement): void {
  const status = byId("reply-status");
  const bar = byId<HTMLProgressElement>("reply-progress");
  const d = form.dataset;
  const say = (msg: string, error = false): void => {
    if (!status) return;
    status.textContent = msg;
    status.classList.toggle("error", error);
  };
  const post = async (url: string, body: BodyInit, type: string): Promise<Response> => {
    const res = await fetch(url, { method: "POST", credentials: "same-origin", headers: { "content-type": type, "x-csrf-token": d.csrf ?? "" }, body });
    if (res.status === 403) {
      // The server says why in the patient's language (not approved yet, or blocked).
      const why = ((await res.json().catch(() => ({}))) as { message?: unknown }).message;
      throw new Refused(typeof why === "string" ? why : (d.notAllowed ?? ""));
    }
    if (!res.ok) throw new Error(`status ${res.status}`);
    return res;
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = byId<HTMLTextAreaElement>("reply-text")?.value ?? "";
    const files = Array.from(byId<HTMLInputElement>("reply-files")?.files ?? []);
    const max = Number(d.max ?? 0);
    const tooBig = files.find((f) => f.size > max);
    if (tooBig) {
      say(`${d.tooLarge ?? ""} ${Math.floor(max / 1_000_000)} MB: ${tooBig.name}`, true);
      return;
    }
    const button = form.querySelector("button");
    if (button) button.disabled = true;
    say(d.sending ?? "");
    if (bar) bar.hidden = false;
    void (async () => {
      try {
        const encrypt = async (data: Uint8Array | ReadableStream<Uint8Array>): Promise<Blob> => {
          const e = new Encrypter();
          e.addRecipient(d.recipient ?? "");
          if (data instanceof Uint8Array) return new Blob([await e.encrypt(data) as BlobPart]);
          return new Response(await e.encrypt(data)).blob();
        };
        const message = new TextEncoder().encode(JSON.stringify({ v: 1, text, files: files.map((f) => f.name) }));
        const { id } = (await (await post("/reply", JSON.stringify({ deliveryId: d.delivery ?? "" }), "application/json")).json()) as { id: string };
        await post(`/reply/${id}/parts?kind=message`, await encrypt(message), "application/octet-stream");
        for (const [i, f] of files.entries()) {
          await post(`/reply/${id}/parts?kind=file`, await encrypt(f.stream()), "application/octet-stream");
          if (bar) bar.value = Math.round(((i + 1) / files.length) * 100);
        }
        await post(`/reply/${id}/finish`, "{}", "application/json");
        if (bar) bar.hidden = true;
        form.reset();
        say(d.sent ?? "");
      } catch (e) {
        if (bar) bar.hidden = true;
        say(e instanceof Refused ? e.message : (d.failed ?? ""), true);
      } finally {
        if (button) button.disabled = false;
      }
    })();
  });
}

if (byId("register-form")) registerPage();
const replyForm = byId<HTMLFormElement>("reply-form");
if (replyForm) replyPage(replyForm);
const loginForm = byId<HTMLFormElement>("login-form");
if (loginForm) loginPage(loginForm);
const sp = byId<HTMLFormElement>("secupass-form");
if (sp) secupassPage(sp);
const dataEl = byId("delivery-data");
const textsEl = byId("texts");
if (dataEl && textsEl) deliveryPage(JSON.parse(dataEl.textContent || "{}") as DeliveryData, JSON.parse(textsEl.textContent || "{}") as Texts);

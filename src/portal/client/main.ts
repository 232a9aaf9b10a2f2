// The portal's browser code: password strength, deriving the patient identity from the
// Secu-Pass-Key in a worker (only its public recipient leaves the browser), replies, and the
// delivery page (delivery.ts). Keys live in this page's memory only.
import { Encrypter, identityToRecipient } from "age-encryption";
import { KdfParamsError, parseNewKeyKdfParams, type KdfParams } from "../../crypto/secupass.js";
import { CARRY, deliveryPage, type DeliveryData, type Texts } from "./delivery.js";
import { deriveInWorker } from "./derive.js";
import { byId } from "./dom.js";

/** 0 (too short) to 4 (very good). */
function strength(pw: string): number {
  const length = Array.from(pw).length;
  if (length < 10) return 0;
  const classes = [/[a-zäöüß]/, /[A-ZÄÖÜ]/, /\d/, /[^\w\s]/, /\s/].filter((r) => r.test(pw)).length;
  const words = pw.trim().split(/\s+/).length;
  return Math.min(4, 1 + (classes >= 3 ? 1 : 0) + (length >= 14 ? 1 : 0) + (words >= 3 || length >= 20 ? 1 : 0));
}

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

/** Derives U from the new key in the worker, posts only its recipient, and goes where the server says. */
async function setKey(form: HTMLFormElement, key: string, kdf: KdfParams): Promise<void> {
  const bar = byId<HTMLProgressElement>("derive-progress");
  const { identity } = await deriveInWorker(key, kdf, form.dataset.address ?? "", (f) => {
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
}

function secupassPage(form: HTMLFormElement): void {
  const err = byId("secupass-error");
  const box = byId("secupass-progress");
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
    if (err) err.hidden = true;
    if (box) box.hidden = false;
    const button = form.querySelector<HTMLButtonElement>("button[type=submit]");
    if (button) button.disabled = true;
    setKey(form, key, kdf).catch(() => {
      if (button) button.disabled = false;
      if (box) box.hidden = true;
      show(form.dataset.failed ?? "");
    });
  });
}

/** Encrypts a reply's part to the practice recipient, as one Blob to upload. */
async function encryptTo(recipient: string, data: Uint8Array | ReadableStream<Uint8Array>): Promise<Blob> {
  const e = new Encrypter();
  e.addRecipient(recipient);
  if (data instanceof Uint8Array) return new Blob([(await e.encrypt(data)) as BlobPart]);
  return new Response(await e.encrypt(data)).blob();
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
        const to = d.recipient ?? "";
        const message = new TextEncoder().encode(JSON.stringify({ v: 1, text, files: files.map((f) => f.name) }));
        const { id } = (await (await post("/reply", JSON.stringify({ deliveryId: d.delivery ?? "" }), "application/json")).json()) as { id: string };
        await post(`/reply/${id}/parts?kind=message`, await encryptTo(to, message), "application/octet-stream");
        for (const [i, f] of files.entries()) {
          await post(`/reply/${id}/parts?kind=file`, await encryptTo(to, f.stream()), "application/octet-stream");
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

/**
 * Gives every secret field a show/hide toggle: a real button after the field, labelled in
 * the page's language (the layout's `data-show`), whose aria-pressed says whether the secret
 * is shown. It is added here, so that a page without JavaScript has no button that does nothing.
 */
function secretToggles(): void {
  const label = document.body.dataset.show ?? "";
  for (const input of Array.from(document.querySelectorAll<HTMLInputElement>("input[type=password]"))) {
    const row = document.createElement("div");
    row.className = "secret";
    input.replaceWith(row);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary reveal";
    button.textContent = label;
    button.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-controls", input.id);
    button.addEventListener("click", () => {
      const shown = input.type === "password";
      input.type = shown ? "text" : "password";
      button.setAttribute("aria-pressed", String(shown));
    });
    // A secret shown on screen is hidden again when its form is sent.
    input.form?.addEventListener("submit", () => {
      input.type = "password";
      button.setAttribute("aria-pressed", "false");
    });
    row.append(input, button);
  }
}

secretToggles();
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

// The portal's browser code: the login and every new key with the Secu-Pass-Key, derived in
// a worker (the key, U and the scrypt seed never leave the browser; the server gets the
// login credential and U's public recipient), replies, and the delivery page (delivery.ts).
// Keys live in this page's memory only (keys.ts).
import { Decrypter, Encrypter, identityToRecipient } from "age-encryption";
import { KdfParamsError, newKdfParams, parseKdfParams, parseNewKeyKdfParams, type KdfParams } from "../../crypto/secupass.js";
import { carryLinkKey, deliveryPage, type DeliveryData, type Texts } from "./delivery.js";
import { deriveInWorker } from "./derive.js";
import { byId, postJson } from "./dom.js";
import { rememberIdentity } from "./keys.js";
import { go, onPage } from "./nav.js";
import { offerPasskey, passkeyLoginPage } from "./passkeys.js";

/** A post the server refused, with the text to show. */
class Refused extends Error {}

/**
 * A form's JSON post.
 *
 * @returns The answer's JSON.
 * @throws {@link Refused} with the server's text when it refused with one, else an Error (the form then says that it failed).
 */
async function send(url: string, csrf: string, body: unknown): Promise<{ next?: unknown; kdf?: unknown; challenge?: unknown }> {
  const res = await postJson(url, csrf, body);
  const data = (await res.json().catch(() => ({}))) as { next?: unknown; error?: unknown; kdf?: unknown; challenge?: unknown };
  if (res.ok) return data;
  throw typeof data.error === "string" ? new Refused(data.error) : new Error(`status ${res.status}`);
}

/** Where a form's answer sends the browser. */
function nextOf(answer: { next?: unknown }): string {
  if (typeof answer.next !== "string") throw new Error("the answer names no page");
  return answer.next;
}

/** The parts of a form that say what is going on: the error line, the progress bar, the button. */
function formState(form: HTMLFormElement, errorId: string, boxId: string): { show: (msg: string) => void; busy: (on: boolean) => void; progress: (f: number) => void } {
  const err = byId(errorId);
  const box = byId(boxId);
  const bar = byId<HTMLProgressElement>("derive-progress");
  const button = form.querySelector<HTMLButtonElement>("button[type=submit]");
  return {
    show: (msg) => {
      if (!err) return;
      err.textContent = msg;
      err.hidden = false;
    },
    busy: (on) => {
      if (err && on) err.hidden = true;
      if (box) box.hidden = !on;
      if (bar) bar.value = 0;
      if (button) button.disabled = on;
    },
    progress: (f) => {
      if (bar) bar.value = Math.round(f * 100);
    },
  };
}

/** The nonce in a login challenge, if U opens it (an account that still has to move over). */
async function openChallenge(challenge: unknown, identity: string): Promise<string | null> {
  if (typeof challenge !== "string") return null;
  try {
    const d = new Decrypter();
    d.addIdentity(identity);
    return await d.decrypt(Uint8Array.from(atob(challenge), (c) => c.charCodeAt(0)), "text");
  } catch {
    return null;
  }
}

/**
 * The login: asks the server for the account's parameters (refused below full cost before
 * anything else), derives U and the credential in the worker, posts the credential (and the
 * opened challenge of an account that moves over), then keeps U for this visit. A level-2
 * link's key, in the #fragment, is kept in this tab's sessionStorage for the page after.
 */
function loginPage(form: HTMLFormElement): void {
  const d = form.dataset;
  const ui = formState(form, "login-error", "login-progress");
  // "Forgot" takes the address typed so far along: it is not typed twice.
  const email = byId<HTMLInputElement>("email");
  const forgot = byId<HTMLAnchorElement>("forgot-link");
  email?.addEventListener("input", () => {
    if (forgot) forgot.search = email.value.trim() ? `?email=${encodeURIComponent(email.value.trim())}` : "";
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const address = (email?.value ?? "").trim();
    const secret = byId<HTMLInputElement>("login-key")?.value ?? "";
    ui.busy(true);
    void (async () => {
      try {
        const asked = await send("/login/params", d.csrf ?? "", { email: address });
        let kdf: KdfParams;
        try {
          kdf = parseKdfParams(asked.kdf);
        } catch (e) {
          throw new Refused((e instanceof KdfParamsError && e.reason === "weak" ? d.kdfWeak : d.failed) ?? "");
        }
        const { identity, credential } = await deriveInWorker(secret, kdf, address, ui.progress);
        const nonce = await openChallenge(asked.challenge, identity);
        const next = nextOf(await send("/login", d.csrf ?? "", { email: address, credential, next: d.next ?? "", ...(nonce === null ? {} : { nonce }) }));
        carryLinkKey();
        rememberIdentity(identity);
        go(next);
      } catch (e) {
        ui.busy(false);
        ui.show(e instanceof Refused ? e.message : (d.failed ?? ""));
      }
    })();
  });
}

/**
 * A new Secu-Pass-Key (registration by link or invite, a reset by mail or while logged in):
 * typed once (the show toggle lets the patient check it), fresh version 3 parameters made here, U and the credential derived in the
 * worker; the server gets the parameters, U's recipient and the credential with the form's
 * other fields, and says where to go.
 */
function newKeyPage(form: HTMLFormElement): void {
  const d = form.dataset;
  const ui = formState(form, "secupass-error", "secupass-progress");
  // The QR code that reception shows or prints carries the invite code in the #fragment,
  // which never reaches the server: it fills the field, and leaves the address bar.
  const codeField = byId<HTMLInputElement>("code");
  const carried = /[#&]code=([A-Za-z0-9-]{1,40})/.exec(location.hash)?.[1];
  if (codeField && carried) {
    codeField.value = carried;
    history.replaceState(history.state, "", location.pathname + location.search);
    byId<HTMLInputElement>("secupass")?.focus();
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = byId<HTMLInputElement>("secupass")?.value ?? "";
    if (Array.from(key).length < 10) {
      ui.show(d.short ?? "");
      return;
    }
    const email = (byId<HTMLInputElement>("email")?.value ?? "").trim();
    const code = byId<HTMLInputElement>("code")?.value;
    ui.busy(true);
    void (async () => {
      try {
        // Checked as the server will check it (an unknown identity type is refused here).
        const kdf = parseNewKeyKdfParams(newKdfParams((d.type ?? "") as Parameters<typeof newKdfParams>[0]));
        const { identity, credential } = await deriveInWorker(key, kdf, d.address ?? email, ui.progress);
        const recipient = await identityToRecipient(identity);
        const fields = { ...(d.token === undefined ? {} : { token: d.token }), ...(code === undefined ? {} : { email, code }) };
        const next = nextOf(await send(d.url ?? "", d.csrf ?? "", { ...fields, kdf, recipient, credential }));
        rememberIdentity(identity);
        go(next);
      } catch (e) {
        ui.busy(false);
        ui.show(e instanceof Refused ? e.message : (d.failed ?? ""));
      }
    })();
  });
}

/** Encrypts a reply's part to the practice recipient, as one Blob to upload. */
async function encryptTo(recipient: string, data: Uint8Array | ReadableStream<Uint8Array>): Promise<Blob> {
  const e = new Encrypter();
  e.addRecipient(recipient);
  if (data instanceof Uint8Array) return new Blob([(await e.encrypt(data)) as BlobPart]);
  return new Response(await e.encrypt(data)).blob();
}

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

/** Wires up the page now in the document, chosen by its elements' ids: at load and after each page change (nav.ts). */
function initPage(): void {
  secretToggles();
  const replyForm = byId<HTMLFormElement>("reply-form");
  if (replyForm) replyPage(replyForm);
  const passkeyBox = byId("passkey-login");
  if (passkeyBox) passkeyLoginPage(passkeyBox);
  offerPasskey();
  const loginForm = byId<HTMLFormElement>("login-form");
  if (loginForm) loginPage(loginForm);
  const newKeyForm = byId<HTMLFormElement>("newkey-form");
  if (newKeyForm) newKeyPage(newKeyForm);
  const dataEl = byId("delivery-data");
  const textsEl = byId("texts");
  if (dataEl && textsEl) deliveryPage(JSON.parse(dataEl.textContent || "{}") as DeliveryData, JSON.parse(textsEl.textContent || "{}") as Texts);
}

onPage(initPage);
initPage();

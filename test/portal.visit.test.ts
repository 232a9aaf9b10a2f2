// One unlock per visit (issue 16, item 3), in real Chromium at 390×844 against the real app:
// the portal changes page without reloading, U stays in the page's memory only (never in any
// storage the browser keeps), a delivery page unlocks by itself when U is known, and Öffnen or
// Speichern with the key typed but not yet unlocked act in the same tap.
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { base64, base64urlnopad, bech32, hex } from "@scure/base";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDelivery, markSent, type CreatedDelivery } from "../src/core/index.js";
import { deriveSecuPass, parseKdfParams, recipientOf, unwrapIdentity, wrapIdentity } from "../src/crypto/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { practiceIdentityOf } from "./helpers/cli.js";
import { approveWithTheirCodes, keyOf, registerThroughCore } from "./helpers/patient.js";
import { usePortal } from "./helpers/portal.js";
import { streamOf } from "./helpers/streams.js";

const LENA = "lena.vogel@patient.example";
const LENA_KEY = "Lenas Secu-Pass-Key – Grüße 2026";
const JONAS = "jonas.berg@patient.example";
const JONAS_KEY = "Jonas' Secu-Pass-Key 2026";
const JONAS_NEW_KEY = "Jonas' neuer Secu-Pass-Key 2027";
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** Run in the page: localStorage, sessionStorage, every IndexedDB record, Cache Storage and document.cookie. */
const DUMP = `(async () => {
  const dbs = [];
  for (const info of await indexedDB.databases()) {
    const db = await new Promise((ok, no) => {
      const r = indexedDB.open(info.name);
      r.onsuccess = () => ok(r.result);
      r.onerror = () => no(r.error);
    });
    for (const store of Array.from(db.objectStoreNames)) {
      const all = await new Promise((ok) => {
        const r = db.transaction(store).objectStore(store).getAll();
        r.onsuccess = () => ok(r.result);
      });
      dbs.push({ db: info.name, store, all: JSON.stringify(all) });
    }
    db.close();
  }
  const cached = [];
  for (const name of await caches.keys()) {
    const cache = await caches.open(name);
    for (const req of await cache.keys()) cached.push({ name, url: req.url, body: await (await cache.match(req)).text() });
  }
  const entries = (s) => Array.from({ length: s.length }, (_, i) => [s.key(i), s.getItem(s.key(i))]);
  return { local: entries(localStorage), session: entries(sessionStorage), dbNames: await indexedDB.databases(), dbs, cacheNames: await caches.keys(), cached, cookie: document.cookie };
})()`;

/**
 * Before the portal's script: keeps each Blob the page makes a URL for, so that the test can
 * read what a tab shows (the tab itself may not fetch it: its CSP is the portal's).
 */
const KEEP_BLOBS = `
const make = URL.createObjectURL.bind(URL);
globalThis.blobs = new Map();
URL.createObjectURL = (b) => {
  const url = make(b);
  globalThis.blobs.set(url, b);
  return url;
};
`;

/** The files of Lena's two deliveries: A (level 4, two files) and B (level 3, one file). */
const FILES = {
  letter: { name: "Brief.txt", bytes: Buffer.from(`Liebe Frau Vogel,\nIhr Befund ist unauffällig.\n${randomBytes(24).toString("hex")}\n`) },
  report: { name: "Befund.pdf", bytes: Buffer.concat([Buffer.from("%PDF-1.4\n"), randomBytes(200_000), Buffer.from("\n%%EOF\n")]) },
  xray: { name: "Röntgen.png", bytes: randomBytes(300_000) },
};
const A_SUBJECT = "Ihre Befunde";
const A_TEXT = "Liebe Frau Vogel,\nanbei Brief und Befund.";
let a: CreatedDelivery;
let b: CreatedDelivery;
let jonasOld: CreatedDelivery;
let jonasNew: CreatedDelivery;
let lenaU: string;

const portal = usePortal({
  beforeOpen: async (home) => {
    lenaU = await registerThroughCore(home, LENA, LENA_KEY);
    await registerThroughCore(home, JONAS, JONAS_KEY);
  },
  afterOpen: async (ctx) => {
    const practice = await practiceIdentityOf(ctx.home);
    await approveWithTheirCodes(ctx, [LENA, JONAS], practice);
    const deliver = async (to: string, level: number, subject: string, files: { name: string; bytes: Buffer }[], message: string | null = null): Promise<CreatedDelivery> => {
      const d = await createDelivery(ctx, { recipient: to, level, subject, message, files: files.map((f) => ({ name: f.name, open: () => streamOf(f.bytes) })) });
      await markSent(ctx, [d.id]);
      return d;
    };
    a = await deliver(LENA, 4, A_SUBJECT, [FILES.letter, FILES.report], A_TEXT);
    b = await deliver(LENA, 3, "Ihr Röntgenbild", [FILES.xray]);
    jonasOld = await deliver(JONAS, 3, "Älterer Befund", [FILES.letter]);
    jonasNew = await deliver(JONAS, 3, "Neuer Befund", [FILES.xray]);
    // Jonas' newer delivery is wrapped to another key (one he set later), so that the U of
    // this visit does not open it.
    const row = (await ctx.store.records.patient(JONAS))!;
    const newU = (await deriveSecuPass(JONAS_NEW_KEY, parseKdfParams(JSON.parse(row.kdf!)), JONAS)).identity;
    const deliveryKey = await unwrapIdentity((await ctx.store.records.wrap(jonasNew.id, "practice"))!.ciphertext, practice);
    const wrap = (await ctx.store.records.wrap(jonasNew.id, "patient"))!;
    await ctx.store.transaction(async (tx) => {
      await tx.records.putWrap({ ...wrap, recipient: await recipientOf(newU), ciphertext: await wrapIdentity(deliveryKey, await recipientOf(newU)) });
    });
  },
  listen: true,
});

describe.runIf(needChromium())("one unlock per visit, in Chromium at 390×844", () => {
  let chromium: Browser;
  beforeAll(async () => {
    chromium = await launch();
  });
  afterAll(async () => {
    await chromium.close();
  });

  const base = (): string => `http://127.0.0.1:${String(portal.port)}`;

  /** A fresh browser: its own cookies and storage. */
  async function open(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await chromium.newContext({ viewport: { width: 390, height: 844 }, locale: "de-DE", acceptDownloads: true });
    await context.addInitScript(KEEP_BLOBS);
    return { context, page: await context.newPage() };
  }

  /**
   * The login with the address and the Secu-Pass-Key, ending on `next` (the list by default).
   * The login's key unlocks too (U stays for the visit); unless `keep`, the page is then
   * reloaded, which forgets U and leaves the session: the delivery pages start locked.
   */
  async function login(page: Page, email: string, next?: string, keep = false): Promise<void> {
    await page.goto(`${base()}/login${next ? `?next=${encodeURIComponent(next)}` : ""}`);
    await page.locator("#email").fill(email);
    if (keep) await typeKey(page, keyOf(email), "#login-key");
    else await page.locator("#login-key").fill(keyOf(email));
    await page.locator("#login-form button[type=submit]").click();
    await page.waitForURL((u) => u.pathname === (next ?? "/deliveries"), { timeout: 60_000 });
    await page.locator("main h1").waitFor();
    if (!keep) await page.reload();
  }

  /** Each time the patient types the Secu-Pass-Key, counted. */
  let typed = 0;
  async function typeKey(page: Page, key: string, field = "#unlock-key"): Promise<void> {
    typed++;
    await page.locator(field).fill(key);
  }

  const file = (page: Page, i: number): ReturnType<Page["locator"]> => page.locator("ul.files li").nth(i);

  /** Taps Speichern on the i-th file and returns the saved file. */
  async function save(page: Page, i: number): Promise<{ name: string; bytes: Buffer }> {
    const [dl] = await Promise.all([page.waitForEvent("download", { timeout: 60_000 }), file(page, i).getByRole("button", { name: "Speichern" }).click()]);
    return { name: dl.suggestedFilename(), bytes: await readFile(await dl.path()) };
  }

  /** Taps Öffnen on the i-th file and returns what the new tab shows, byte for byte. */
  async function openFile(page: Page, i: number): Promise<Buffer> {
    const [tab] = await Promise.all([page.context().waitForEvent("page"), file(page, i).getByRole("button", { name: "Öffnen" }).click()]);
    await tab.waitForURL(/^blob:http:\/\/127\.0\.0\.1:\d+\//, { timeout: 60_000 });
    // The tab cannot reach back into the portal's page.
    expect(await tab.evaluate("window.opener === null")).toBe(true);
    const bytes = await page.evaluate<number[], string>(
      async (url) => Array.from(new Uint8Array(await (globalThis as unknown as { blobs: Map<string, { arrayBuffer(): Promise<ArrayBuffer> }> }).blobs.get(url)!.arrayBuffer())),
      tab.url(),
    );
    await tab.close();
    return Buffer.from(bytes);
  }

  /** Opens a delivery from the list by its subject. */
  async function fromList(page: Page, subject: string, id: string): Promise<void> {
    await page.locator("a.entry", { hasText: subject }).click();
    await page.waitForURL(new RegExp(`/deliveries/${id}$`));
    await page.locator("#delivery-data").waitFor({ state: "attached" });
  }

  /** Level 4 unlocked: the sealed message and the real file names are shown. */
  async function showsA(page: Page): Promise<void> {
    await page.locator("#message").waitFor({ state: "visible", timeout: 60_000 });
    expect(await page.locator("#message-subject").textContent()).toBe(A_SUBJECT);
    expect(await page.locator("#message-text").textContent()).toBe(A_TEXT);
    expect(await page.locator("ul.files .name").allTextContents()).toEqual([FILES.letter.name, FILES.report.name]);
  }

  /** Everything this origin left in the browser's storage, as one string to search. */
  async function storageDump(context: BrowserContext, page: Page): Promise<string> {
    const inPage = await page.evaluate(DUMP);
    return JSON.stringify({ inPage, state: await context.storageState({ indexedDB: true }) });
  }

  it("types the Secu-Pass-Key once for a whole visit: list → A → back → B, three files opened or saved byte for byte, back and forward", async () => {
    typed = 0;
    const { context, page } = await open();
    // The key typed once, at the login: it logs in and unlocks.
    await login(page, LENA, undefined, true);
    // The same document for the whole visit: nothing reloads.
    await page.evaluate(() => {
      (globalThis as unknown as { visit: string }).visit = "one";
    });
    await fromList(page, "Vertrauliche Nachricht", a.id);
    await page.getByRole("heading", { name: "Nachricht von Praxis" }).waitFor();
    // The focus is on the new page's heading, which a screen reader reads out.
    expect(await page.locator("main h1:focus").count()).toBe(1);
    await showsA(page);
    expect(await page.locator("#unlock-form").isHidden()).toBe(true);
    expect(await openFile(page, 0)).toEqual(FILES.letter.bytes);
    const report = await save(page, 1);
    expect(report.name).toBe(FILES.report.name);
    expect(sha(report.bytes)).toBe(sha(FILES.report.bytes));

    await page.goBack();
    await page.getByRole("heading", { name: "Meine Nachrichten" }).waitFor();
    await fromList(page, "Ihr Röntgenbild", b.id);
    // B unlocks by itself: no form, and Speichern saves at once.
    await page.locator("#unlock-form").waitFor({ state: "hidden" });
    const xray = await save(page, 0);
    expect(xray.name).toBe(FILES.xray.name);
    expect(sha(xray.bytes)).toBe(sha(FILES.xray.bytes));

    // Back to the list and forward to B (unlocked by itself), back again and to A (the same).
    await page.goBack();
    await page.getByRole("heading", { name: "Meine Nachrichten" }).waitFor();
    await page.goForward();
    await page.waitForURL(new RegExp(`/deliveries/${b.id}$`));
    await page.locator("#delivery-data").waitFor({ state: "attached" });
    await page.locator("#unlock-form").waitFor({ state: "hidden" });
    await page.goBack();
    await page.getByRole("heading", { name: "Meine Nachrichten" }).waitFor();
    await fromList(page, "Vertrauliche Nachricht", a.id);
    await showsA(page);
    expect(await page.locator("#unlock-form").isHidden()).toBe(true);
    const again = await save(page, 0);
    expect([again.name, sha(again.bytes)]).toEqual([FILES.letter.name, sha(FILES.letter.bytes)]);
    expect(await page.evaluate(() => (globalThis as unknown as { visit?: string }).visit)).toBe("one");
    expect(typed).toBe(1);

    // Nothing the browser keeps holds U, its seed or the Secu-Pass-Key.
    const dump = await storageDump(context, page);
    expect(dump).toContain(`"name":"praxmail"`); // the session cookie is there: the dump is real
    const seed = bech32.decodeToBytes(lenaU.toLowerCase()).bytes;
    const needles = [lenaU, lenaU.toLowerCase(), hex.encode(seed), base64.encode(seed), base64urlnopad.encode(seed), LENA_KEY, JSON.stringify(LENA_KEY).slice(1, -1), encodeURIComponent(LENA_KEY), "AGE-SECRET-KEY"];
    for (const n of needles) expect(dump.includes(n), `${n.slice(0, 12)}… in the browser's storage`).toBe(false);

    // A reload ends the visit's memory: the key is asked again, and Speichern says so.
    await page.reload();
    await page.locator("#unlock-form").waitFor({ state: "visible" });
    await file(page, 0).getByRole("button", { name: "Speichern" }).click();
    await expect.poll(() => page.locator("#status").textContent()).toBe("Bitte geben Sie zuerst Ihren Secu-Pass-Key ein.");
    expect(await page.locator(":focus").getAttribute("id")).toBe("unlock-key");
    expect(await page.locator("#unlock-form").isVisible()).toBe(true);
    await context.close();
  }, 180_000);

  it("back while the next page is still loading stays on the page it went back to, in history too", async () => {
    const { context, page } = await open();
    await login(page, LENA);
    await page.evaluate(() => {
      (globalThis as unknown as { visit: string }).visit = "one";
    });
    await fromList(page, "Ihr Röntgenbild", b.id);
    await page.goBack();
    await page.getByRole("heading", { name: "Meine Nachrichten" }).waitFor();
    // Forward to B, whose page the server holds back until the patient has gone back again.
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    let asked = false;
    await page.route(`**/deliveries/${b.id}`, async (route) => {
      asked = true;
      await held;
      await route.continue();
    });
    await page.goForward();
    await expect.poll(() => asked).toBe(true);
    await page.goBack();
    const late = page.waitForResponse(`**/deliveries/${b.id}`);
    release();
    await (await late).finished();
    // B's late answer is dropped: the list stays, at the list's address, in the same document.
    await page.waitForTimeout(200);
    expect(await page.getByRole("heading", { name: "Meine Nachrichten" }).isVisible()).toBe(true);
    expect(await page.locator("#delivery-data").count()).toBe(0);
    expect(new URL(page.url()).pathname).toBe("/deliveries");
    expect(await page.evaluate(() => (globalThis as unknown as { visit?: string }).visit)).toBe("one");
    // History is intact: forward is still B.
    await page.unroute(`**/deliveries/${b.id}`);
    await page.goForward();
    await page.waitForURL(new RegExp(`/deliveries/${b.id}$`));
    await page.locator("#delivery-data").waitFor({ state: "attached" });
    await context.close();
  }, 120_000);

  it("Öffnen with the key typed but not yet unlocked opens the file in one tap", async () => {
    typed = 0;
    const { context, page } = await open();
    await login(page, LENA);
    await fromList(page, "Vertrauliche Nachricht", a.id);
    await typeKey(page, LENA_KEY);
    expect(await openFile(page, 0)).toEqual(FILES.letter.bytes);
    await showsA(page);
    // Speichern now acts at once, and the next delivery opens without the key.
    const report = await save(page, 1);
    expect(sha(report.bytes)).toBe(sha(FILES.report.bytes));
    expect(typed).toBe(1);
    await context.close();
  }, 120_000);

  it("Speichern with the key typed saves in the same tap; with the field empty it moves the focus there and says why", async () => {
    const { context, page } = await open();
    await login(page, LENA);
    await fromList(page, "Ihr Röntgenbild", b.id);
    await file(page, 0).getByRole("button", { name: "Speichern" }).click();
    await expect.poll(() => page.locator("#status").textContent()).toBe("Bitte geben Sie zuerst Ihren Secu-Pass-Key ein.");
    expect(await page.locator(":focus").getAttribute("id")).toBe("unlock-key");
    await page.locator("#unlock-key").fill(LENA_KEY);
    const xray = await save(page, 0);
    expect(sha(xray.bytes)).toBe(sha(FILES.xray.bytes));
    expect(await page.locator("#unlock-form").isHidden()).toBe(true);
    await context.close();
  }, 120_000);

  it("logout ends the visit: back leads to the login, and after a new login the key is asked again", async () => {
    const { context, page } = await open();
    await login(page, LENA);
    await fromList(page, "Vertrauliche Nachricht", a.id);
    await typeKey(page, LENA_KEY);
    await page.locator("#unlock-form button[type=submit]").click();
    await showsA(page);
    // Unlocked for the visit: B opens by itself.
    await page.locator("footer").getByRole("link", { name: "Meine Nachrichten" }).click();
    await fromList(page, "Ihr Röntgenbild", b.id);
    await page.locator("#unlock-form").waitFor({ state: "hidden" });
    const xray = await save(page, 0);
    expect(sha(xray.bytes)).toBe(sha(FILES.xray.bytes));
    await page.getByRole("button", { name: "Abmelden" }).click();
    await page.getByText("Sie sind abgemeldet.").waitFor();
    await page.goBack();
    await page.waitForURL((u) => u.pathname === "/login");
    expect(await page.locator("#message").count()).toBe(0);
    await login(page, LENA, `/deliveries/${b.id}`);
    await page.locator("#unlock-form").waitFor({ state: "visible" });
    await file(page, 0).getByRole("button", { name: "Speichern" }).click();
    await expect.poll(() => page.locator("#status").textContent()).toBe("Bitte geben Sie zuerst Ihren Secu-Pass-Key ein.");
    expect(await page.locator("#unlock-form").isVisible()).toBe(true);
    await context.close();
  }, 120_000);

  it("what is no portal page is left to the browser: a server fault and an ended session load in full, and the ended session's U goes", async () => {
    const { context, page } = await open();
    await login(page, LENA);
    const mark = async (): Promise<void> => {
      await page.evaluate(() => {
        (globalThis as unknown as { visit: string }).visit = "one";
      });
    };
    const sameDocument = (): Promise<boolean> => page.evaluate(() => (globalThis as unknown as { visit?: string }).visit === "one");
    // A 5xx answer to the page change: the browser loads the page itself (here the real one).
    await mark();
    await page.route(`${base()}/help`, (route) => route.fulfill({ status: 502, contentType: "text/html", body: "<!doctype html><title>Bad Gateway</title>" }), { times: 1 });
    await page.locator("footer").getByRole("link", { name: "Hilfe" }).click();
    await page.getByRole("heading", { name: "Hilfe: Ihr Secu-Pass-Key" }).waitFor();
    expect(await sameDocument()).toBe(false);
    // Unlocked, then the session ends: the next page change lands on the login by a full
    // navigation, and after logging in again the key is asked again.
    await page.locator("footer").getByRole("link", { name: "Meine Nachrichten" }).click();
    await fromList(page, "Ihr Röntgenbild", b.id);
    await typeKey(page, LENA_KEY);
    await page.locator("#unlock-form button[type=submit]").click();
    await page.locator("#unlock-form").waitFor({ state: "hidden", timeout: 60_000 });
    await mark();
    await context.clearCookies();
    await page.locator("footer").getByRole("link", { name: "Meine Nachrichten" }).click();
    await page.waitForURL((u) => u.pathname === "/login");
    await page.locator("#login-form").waitFor();
    expect(await sameDocument()).toBe(false);
    await login(page, LENA, `/deliveries/${b.id}`);
    await file(page, 0).getByRole("button", { name: "Speichern" }).click();
    await expect.poll(() => page.locator("#status").textContent()).toBe("Bitte geben Sie zuerst Ihren Secu-Pass-Key ein.");
    await context.close();
  }, 120_000);

  it("a remembered key that does not open a delivery shows the form with a plain text, and the other key opens it", async () => {
    const { context, page } = await open();
    await login(page, JONAS);
    await fromList(page, "Älterer Befund", jonasOld.id);
    await page.locator("#unlock-key").fill(JONAS_KEY);
    await page.locator("#unlock-form button[type=submit]").click();
    await page.locator("#unlock-form").waitFor({ state: "hidden", timeout: 60_000 });
    await page.goBack();
    await fromList(page, "Neuer Befund", jonasNew.id);
    await expect.poll(() => page.locator("#status").textContent()).toBe(
      "Mit dem Secu-Pass-Key dieses Besuchs lässt sich diese Nachricht nicht öffnen. Vielleicht gehört sie zu einem anderen Secu-Pass-Key. Bitte geben Sie ihn hier ein.",
    );
    expect(await page.locator("#unlock-form").isVisible()).toBe(true);
    await page.locator("#unlock-key").fill(JONAS_NEW_KEY);
    const xray = await save(page, 0);
    expect(sha(xray.bytes)).toBe(sha(FILES.xray.bytes));
    await context.close();
  }, 120_000);

  it("the language switch keeps the unlock", async () => {
    typed = 0;
    const { context, page } = await open();
    await login(page, LENA);
    await fromList(page, "Vertrauliche Nachricht", a.id);
    await typeKey(page, LENA_KEY);
    await page.locator("#unlock-form button[type=submit]").click();
    await showsA(page);
    await page.locator("#lang-select").selectOption("en");
    await page.locator("#lang-form button[type=submit]").click();
    await page.getByRole("heading", { name: "Message from Praxis" }).waitFor();
    expect(await page.locator("html").getAttribute("lang")).toBe("en");
    expect(await page.title()).toBe("Secure messages · Praxis Dr. Weber");
    expect(new URL(page.url()).pathname).toBe(`/deliveries/${a.id}`);
    await showsA(page);
    expect(await page.locator("#unlock-form").isHidden()).toBe(true);
    // Arabic too: the page turns right to left, still unlocked.
    await page.locator("#lang-select").selectOption("ar");
    await page.locator("#lang-form button[type=submit]").click();
    await expect.poll(() => page.locator("html").getAttribute("dir")).toBe("rtl");
    await showsA(page);
    // And back to German (the account keeps the choice).
    await page.locator("#lang-select").selectOption("de");
    await page.locator("#lang-form button[type=submit]").click();
    await page.getByRole("heading", { name: "Nachricht von Praxis" }).waitFor();
    await showsA(page);
    expect(typed).toBe(1);
    await context.close();
  }, 120_000);
});

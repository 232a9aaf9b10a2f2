// The browser refuses weak or legacy Secu-Pass derivation parameters, in real Chromium: a
// server (or anything between) that serves N=2^15, or parameters that do not bind the salt
// to the address, gets a clear German message and no post. Untampered, a patient whose
// stored parameters predate version 2 gets fresh ones, and Chromium derives exactly what
// Node derives for the logged-in address.
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import type { Browser, Page } from "playwright-core";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import type { Context } from "../src/core/index.js";
import { deriveSecuPassIdentity, parseKdfParams, recipientOf, type KdfParams } from "../src/crypto/index.js";
import { buildPortal } from "../src/portal/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, praxmail, tempDir } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";

const NEW = "neu.patientin@patient.example";
const OLD = "alt.patient@patient.example";
const RESET = "reset.patient@patient.example";
const PASSWORD = "ein langes Passwort";
const KEY = "Mein neuer Secu-Pass-Key 2026";
const WEAK = "Der Server verlangt eine zu schwache Schlüsselableitung. Zu Ihrem Schutz wurde nichts berechnet und nichts gesendet. Bitte wenden Sie sich an Ihre Praxis.";
const LEGACY = "Der Server hat veraltete Schlüsselparameter ohne Bindung an Ihre E-Mail-Adresse geschickt. Zu Ihrem Schutz wurde kein Schlüssel festgelegt und nichts gesendet. Bitte laden Sie die Seite neu oder wenden Sie sich an Ihre Praxis.";

/** Parameters as stored before version 2: the same, without `v`. */
const legacyOf = (kdf: KdfParams): Record<string, unknown> => {
  const o: Record<string, unknown> = { ...kdf };
  delete o.v;
  return o;
};
const unescapeHtml = (s: string): string => s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
const escapeHtml = (s: string): string => s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

describe.runIf(needChromium())("Secu-Pass parameters in the browser", () => {
  let dir: string;
  let home: string;
  let ctx: Context;
  let app: FastifyInstance;
  let browser: Browser;
  let base: string;

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, NEW, undefined, PASSWORD);
    await registerThroughCore(home, OLD, undefined, PASSWORD);
    await registerThroughCore(home, RESET, "der alte Secu-Pass-Key", PASSWORD);
    expect((await praxmail(["approve", RESET, "--yes", "--home", home])).code).toBe(0);
    ctx = await openContext({ home }, "portal");
    app = await buildPortal(ctx, pino({ level: "silent" }));
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    browser = await launch();
  }, 60_000);
  afterAll(async () => {
    await browser.close();
    await app.close();
    ctx.store.close();
    await cleanup(dir);
  });

  /**
   * Logs in and opens a page that sets a key; `tamper` rewrites the parameters the server
   * put into the page, as a hostile server would.
   */
  const open = async (email: string, path: string, tamper?: (kdf: KdfParams) => unknown): Promise<{ page: Page; posts: string[] }> => {
    const page = await (await browser.newContext({ locale: "de-DE" })).newPage();
    const posts: string[] = [];
    page.on("request", (r) => {
      if (r.method() === "POST" && !r.url().endsWith("/login")) posts.push(r.url());
    });
    await page.goto(`${base}/login`);
    await page.getByLabel("E-Mail-Adresse").fill(email);
    await page.getByLabel("Passwort").fill(PASSWORD);
    await page.getByRole("button", { name: "Anmelden" }).click();
    await page.waitForURL(/\/(deliveries|secupass)/);
    if (tamper) {
      await page.route(`${base}${path}`, async (route) => {
        const res = await route.fetch();
        const html = await res.text();
        const kdf = JSON.parse(unescapeHtml(/data-kdf="([^"]*)"/.exec(html)![1]!)) as KdfParams;
        await route.fulfill({ response: res, body: html.replace(/data-kdf="[^"]*"/, `data-kdf="${escapeHtml(JSON.stringify(tamper(kdf)))}"`) });
      });
    }
    await page.goto(`${base}${path}`);
    return { page, posts };
  };

  const setKey = async (page: Page, submit: string): Promise<void> => {
    await page.getByLabel("Secu-Pass-Key", { exact: true }).fill(KEY);
    await page.getByLabel("Secu-Pass-Key wiederholen").fill(KEY);
    await page.getByRole("button", { name: submit }).click();
  };

  it("refuses N=2^15 from the server with a German message, derives nothing and posts nothing", async () => {
    const { page, posts } = await open(NEW, "/secupass", (kdf) => ({ ...kdf, logN: 15 }));
    await setKey(page, "Secu-Pass-Key festlegen");
    await expect.poll(() => page.locator("#secupass-error").textContent()).toBe(WEAK);
    expect(await page.locator("#secupass-error").isVisible()).toBe(true);
    expect(await page.locator("#secupass-progress").isHidden()).toBe(true);
    await page.waitForTimeout(500);
    expect(posts).toEqual([]);
    expect(ctx.store.records.patient(NEW)).toMatchObject({ status: "pending-secupass", recipient: null });
  });

  it("refuses legacy parameters (no address in the salt) for a new key, at registration and at a Secu-Pass reset", async () => {
    for (const [email, path, submit] of [
      [NEW, "/secupass", "Secu-Pass-Key festlegen"],
      [RESET, "/secupass/reset", "Neuen Secu-Pass-Key festlegen"],
    ] as const) {
      const before = ctx.store.records.patient(email)!;
      const { page, posts } = await open(email, path, legacyOf);
      await setKey(page, submit);
      await expect.poll(() => page.locator("#secupass-error").textContent()).toBe(LEGACY);
      await page.waitForTimeout(500);
      expect(posts).toEqual([]);
      expect(ctx.store.records.patient(email)).toMatchObject({ status: before.status, recipient: before.recipient });
    }
  });

  it("gives a waiting patient with legacy parameters fresh version 2 ones, and Chromium derives what Node derives for the address", async () => {
    const row = ctx.store.records.patient(OLD)!;
    const legacy = legacyOf(JSON.parse(row.kdf!) as KdfParams);
    ctx.store.transaction(() => {
      ctx.store.records.updatePatient({ ...row, kdf: JSON.stringify(legacy) });
    });
    const { page, posts } = await open(OLD, "/secupass");
    await setKey(page, "Secu-Pass-Key festlegen");
    await page.getByRole("heading", { name: "Ihre Praxis gibt Ihren Zugang frei" }).waitFor({ timeout: 60_000 });
    expect(posts).toEqual([`${base}/secupass`]);
    const after = ctx.store.records.patient(OLD)!;
    const kdf = parseKdfParams(JSON.parse(after.kdf!));
    expect(kdf.v).toBe(2);
    expect(kdf.salt).not.toBe(legacy.salt);
    expect(after.status).toBe("pending-approval");
    expect(after.recipient).toBe(await recipientOf(await deriveSecuPassIdentity(KEY, kdf, OLD)));
    expect(after.recipient).not.toBe(await recipientOf(await deriveSecuPassIdentity(KEY, kdf, NEW)));
  }, 60_000);
});

// The browser refuses weak or legacy Secu-Pass derivation parameters, in real Chromium: a
// server (or anything between) that serves N=2^15, or parameters that do not bind the salt
// to the address for a new key, gets a clear German message and no post (nor a wrap fetch).
// Untampered, a waiting patient with legacy parameters gets fresh version 3 ones, Chromium
// derives exactly what Node derives for the logged-in address, and keys set before
// version 2 still unlock.
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import type { Browser, Page } from "playwright-core";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import { approvePatients, createDelivery, markSent, type Context } from "../src/core/index.js";
import { deriveSecuPass, parseKdfParams, recipientOf, safetyCode, type KdfParams } from "../src/crypto/index.js";
import { buildPortal } from "../src/portal/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, practiceIdentityOf, praxmail, tempDir } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";
import { streamOf } from "./helpers/streams.js";

const NEW = "neu.patientin@patient.example";
const OLD = "alt.patient@patient.example";
const RESET = "reset.patient@patient.example";
const BEFORE_V2 = "frueh.patient@patient.example";
const PASSWORD = "ein langes Passwort";
const KEY = "Mein neuer Secu-Pass-Key 2026";
const OLD_KEY = "der alte Secu-Pass-Key";
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
    await registerThroughCore(home, BEFORE_V2, undefined, PASSWORD);
    await registerThroughCore(home, RESET, OLD_KEY, PASSWORD);
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
    await ctx.store.close();
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
    expect(await ctx.store.records.patient(NEW)).toMatchObject({ status: "pending-secupass", recipient: null });
  });

  it("refuses legacy parameters (no address in the salt) for a new key, at registration and at a Secu-Pass reset", async () => {
    for (const [email, path, submit] of [
      [NEW, "/secupass", "Secu-Pass-Key festlegen"],
      [RESET, "/secupass/reset", "Neuen Secu-Pass-Key festlegen"],
    ] as const) {
      const before = (await ctx.store.records.patient(email))!;
      const { page, posts } = await open(email, path, legacyOf);
      await setKey(page, submit);
      await expect.poll(() => page.locator("#secupass-error").textContent()).toBe(LEGACY);
      await page.waitForTimeout(500);
      expect(posts).toEqual([]);
      expect(await ctx.store.records.patient(email)).toMatchObject({ status: before.status, recipient: before.recipient });
    }
  });

  it("gives a waiting patient with legacy parameters fresh version 3 ones, and Chromium derives what Node derives for the address", async () => {
    const row = (await ctx.store.records.patient(OLD))!;
    const legacy = legacyOf(JSON.parse(row.kdf!) as KdfParams);
    await ctx.store.transaction(async (tx) => {
      await tx.records.updatePatient({ ...row, kdf: JSON.stringify(legacy) });
    });
    const { page, posts } = await open(OLD, "/secupass");
    await setKey(page, "Secu-Pass-Key festlegen");
    await page.getByRole("heading", { name: "Fast geschafft: Ihre Praxis schaltet Sie frei" }).waitFor({ timeout: 60_000 });
    expect(posts).toEqual([`${base}/secupass`]);
    const after = (await ctx.store.records.patient(OLD))!;
    const kdf = parseKdfParams(JSON.parse(after.kdf!));
    expect(kdf.v).toBe(3);
    expect(kdf.salt).not.toBe(legacy.salt);
    expect(after.status).toBe("pending-approval");
    expect(after.recipient).toBe(await recipientOf((await deriveSecuPass(KEY, kdf, OLD)).identity));
    expect(after.recipient).not.toBe(await recipientOf((await deriveSecuPass(KEY, kdf, NEW)).identity));
  }, 60_000);

  it("unlocks a delivery with the key Node derived for the address, and refuses N=2^15 there before fetching the wrap", async () => {
    const d = await createDelivery(ctx, { recipient: RESET, level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4 Befund")) }] });
    await markSent(ctx, [d.id]);
    for (const weak of [true, false]) {
      const { page } = await open(RESET, "/deliveries");
      const wraps: string[] = [];
      page.on("request", (r) => {
        if (r.url().endsWith("/wrap")) wraps.push(r.url());
      });
      if (weak) {
        await page.route(`${base}/deliveries/${d.id}`, async (route) => {
          const res = await route.fetch();
          const html = await res.text();
          expect(html).toContain('"logN":17');
          await route.fulfill({ response: res, body: html.replace('"logN":17', '"logN":15') });
        });
      }
      await page.goto(`${base}/deliveries/${d.id}`);
      await page.getByLabel("Secu-Pass-Key").fill(OLD_KEY);
      await page.getByRole("button", { name: "Entsperren" }).click();
      if (weak) {
        await expect.poll(() => page.locator("#status").textContent()).toBe(WEAK);
        await page.waitForTimeout(500);
        expect(wraps).toEqual([]);
      } else {
        await page.getByText("Fertig.").waitFor({ timeout: 60_000 });
        expect(wraps).toEqual([`${base}/deliveries/${d.id}/wrap`]);
      }
    }
  }, 90_000);

  it("still unlocks, in Chromium, a delivery for a key set before version 2 (legacy parameters stored)", async () => {
    // The row as a key set before this change left it: legacy parameters, U derived with them.
    const row = (await ctx.store.records.patient(BEFORE_V2))!;
    const legacy = legacyOf(JSON.parse(row.kdf!) as KdfParams);
    const recipient = await recipientOf((await deriveSecuPass(OLD_KEY, parseKdfParams(legacy), BEFORE_V2)).identity);
    const now = new Date().toISOString();
    await ctx.store.transaction(async (tx) => {
      await tx.records.updatePatient({ ...row, kdf: JSON.stringify(legacy), recipient, safetyCode: safetyCode(recipient), status: "pending-approval", secupassAt: now, approvedAt: null });
    });
    // Approved the real way, so that the approval is signed.
    await approvePatients(ctx, [{ email: BEFORE_V2, safetyCode: safetyCode(recipient) }], await practiceIdentityOf(home));
    const d = await createDelivery(ctx, { recipient: BEFORE_V2, level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4 Befund")) }] });
    await markSent(ctx, [d.id]);
    const { page } = await open(BEFORE_V2, `/deliveries/${d.id}`);
    await page.getByLabel("Secu-Pass-Key").fill(OLD_KEY);
    await page.getByRole("button", { name: "Entsperren" }).click();
    await page.getByText("Fertig.").waitFor({ timeout: 60_000 });
  }, 90_000);
});

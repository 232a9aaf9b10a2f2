// The Secu-Pass derivation in real Chromium (DESIGN.md §3, one secret): the browser refuses
// weak parameters from the server before it sends anything; every new key gets version 3
// parameters made in the browser, and Chromium derives exactly what Node derives for the
// address; the server never receives the Secu-Pass-Key, U or the scrypt seed, in any
// request of a whole visit; and keys set before version 2 still log in and unlock.
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import type { Browser, Page, Request } from "playwright-core";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { bech32 } from "@scure/base";
import { openContext } from "../src/commands/shared.js";
import { approvePatients, createDelivery, markSent, type Context } from "../src/core/index.js";
import { deriveSecuPass, parseKdfParams, recipientOf, safetyCode, secupassSalt, type KdfParams } from "../src/crypto/index.js";
import { buildPortal } from "../src/portal/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, practiceIdentityOf, praxmail, tempDir } from "./helpers/cli.js";
import { legacyPatient, registerThroughCore } from "./helpers/patient.js";
import { streamOf } from "./helpers/streams.js";

const NEW = "neu.patientin@patient.example";
const RESET = "reset.patient@patient.example";
const BEFORE_V2 = "frueh.patient@patient.example";
const KEY = "Mein neuer Secu-Pass-Key 2026";
const OLD_KEY = "der alte Secu-Pass-Key";
const WEAK = "Der Server verlangt eine zu schwache Schlüsselableitung. Zu Ihrem Schutz wurde nichts berechnet und nichts gesendet. Bitte wenden Sie sich an Ihre Praxis.";

/** Parameters as stored before version 2: the same, without `v`. */
const legacyOf = (kdf: KdfParams): Record<string, unknown> => {
  const o: Record<string, unknown> = { ...kdf };
  delete o.v;
  return o;
};

/** Every form a secret or key derived from it could take in a request: as typed, and its encodings. */
async function secretForms(key: string, kdf: KdfParams, address: string): Promise<string[]> {
  const { identity } = await deriveSecuPass(key, kdf, address);
  const seed = await scryptAsync(new TextEncoder().encode(key.normalize("NFC")), secupassSalt(kdf, address), { N: 2 ** kdf.logN, r: kdf.r, p: kdf.p, dkLen: 32, maxmem: 2 ** 28 });
  const b = Buffer.from(seed);
  const idBytes = Buffer.from(bech32.decodeToBytes(identity.toLowerCase()).bytes);
  return [
    key,
    encodeURIComponent(key),
    Buffer.from(key).toString("base64"),
    identity,
    identity.toLowerCase(),
    ...[b, idBytes].flatMap((x) => [x.toString("hex"), x.toString("base64"), x.toString("base64url")]),
  ];
}

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
    await registerThroughCore(home, RESET, OLD_KEY);
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

  /** A fresh phone-sized browser in German that records every request it sends. */
  const fresh = async (): Promise<{ page: Page; sent: Request[] }> => {
    const page = await (await browser.newContext({ locale: "de-DE" })).newPage();
    const sent: Request[] = [];
    page.on("request", (r) => sent.push(r));
    return { page, sent };
  };

  /** Logs in through the login page; `tamper` rewrites the parameters the server answers, as a hostile server would. */
  const login = async (email: string, key: string, tamper?: (kdf: KdfParams) => unknown): Promise<{ page: Page; sent: Request[] }> => {
    const { page, sent } = await fresh();
    if (tamper) {
      await page.route(`${base}/login/params`, async (route) => {
        const res = await route.fetch();
        const body = (await res.json()) as { kdf: KdfParams; challenge: string };
        await route.fulfill({ response: res, json: { ...body, kdf: tamper(body.kdf) } });
      });
    }
    await page.goto(`${base}/login?email=${encodeURIComponent(email)}`);
    await page.getByLabel("Secu-Pass-Key").fill(key);
    await page.getByRole("button", { name: "Anmelden", exact: true }).click();
    return { page, sent };
  };

  const posts = (sent: Request[]): string[] => sent.filter((r) => r.method() === "POST").map((r) => r.url());

  it("refuses N=2^15 from the server at login with a German message, derives nothing and posts nothing more", async () => {
    const { page, sent } = await login(RESET, OLD_KEY, (kdf) => ({ ...kdf, logN: 15 }));
    await expect.poll(() => page.locator("#login-error").textContent()).toBe(WEAK);
    expect(await page.locator("#login-error").isVisible()).toBe(true);
    expect(await page.locator("#login-progress").isHidden()).toBe(true);
    await page.waitForTimeout(500);
    expect(posts(sent)).toEqual([`${base}/login/params`]);
    expect(page.url()).toBe(`${base}/login?email=${encodeURIComponent(RESET)}`);
    await page.context().close();
  });

  it("registers through a link with version 3 parameters made in the browser; Chromium derives what Node derives for the address, and the server never sees the key, U or the seed", async () => {
    const d = await createDelivery(ctx, { recipient: NEW, level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4 Befund")) }] });
    await markSent(ctx, [d.id]);
    const { page, sent } = await fresh();
    await page.goto(`${base}${new URL(d.link).pathname}`);
    await page.getByLabel("Secu-Pass-Key", { exact: true }).fill(KEY);
    await page.getByRole("button", { name: "Konto anlegen" }).click();
    await page.getByRole("heading", { name: "Fast geschafft: Ihre Praxis schaltet Sie frei" }).waitFor({ timeout: 60_000 });
    const row = (await ctx.store.records.patient(NEW))!;
    const kdf = parseKdfParams(JSON.parse(row.kdf!));
    expect(kdf).toMatchObject({ v: 3, logN: 17, r: 8, p: 1, type: "x25519" });
    expect(row.status).toBe("pending-approval");
    expect(row.recipient).toBe(await recipientOf((await deriveSecuPass(KEY, kdf, NEW)).identity));
    expect(row.recipient).not.toBe(await recipientOf((await deriveSecuPass(KEY, kdf, RESET)).identity));
    // The same browser logs in again on a new page with only the key.
    const again = await login(NEW, KEY);
    await again.page.waitForURL(/\/deliveries$/, { timeout: 60_000 });
    const forms = await secretForms(KEY, kdf, NEW);
    for (const r of [...sent, ...again.sent]) {
      const seen = [r.url(), JSON.stringify(await r.allHeaders()), r.postData() ?? ""].join("\n");
      for (const f of forms) expect(seen.includes(f), `${r.method()} ${r.url()} carries a form of the secret`).toBe(false);
    }
    // The credential went out, and only its hash is stored.
    const { credential } = await deriveSecuPass(KEY, kdf, NEW);
    expect(again.sent.some((r) => r.url() === `${base}/login` && (r.postData() ?? "").includes(credential))).toBe(true);
    expect(JSON.stringify(await ctx.store.records.patient(NEW))).not.toContain(credential);
    await page.context().close();
    await again.page.context().close();
  }, 90_000);

  it("unlocks a delivery with the key Node derived for the address, and refuses N=2^15 there before fetching the wrap", async () => {
    const d = await createDelivery(ctx, { recipient: RESET, level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4 Befund")) }] });
    await markSent(ctx, [d.id]);
    for (const weak of [true, false]) {
      const { page } = await login(RESET, OLD_KEY);
      await page.waitForURL(/\/deliveries$/, { timeout: 60_000 });
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

  it("logs in, moves over and unlocks, in Chromium, an account whose key was set before version 2 (legacy parameters, a password)", async () => {
    await legacyPatient(ctx, BEFORE_V2, "ein altes Passwort", OLD_KEY);
    // The row as a key set before version 2 left it: legacy parameters, U derived with them.
    const row = (await ctx.store.records.patient(BEFORE_V2))!;
    const legacy = legacyOf(JSON.parse(row.kdf!) as KdfParams);
    const recipient = await recipientOf((await deriveSecuPass(OLD_KEY, parseKdfParams(legacy), BEFORE_V2)).identity);
    await ctx.store.transaction(async (tx) => {
      await tx.records.updatePatient({ ...row, kdf: JSON.stringify(legacy), recipient, safetyCode: safetyCode(recipient) });
    });
    // Approved the real way, so that the approval is signed.
    await approvePatients(ctx, [{ email: BEFORE_V2, safetyCode: safetyCode(recipient) }], await practiceIdentityOf(home));
    const d = await createDelivery(ctx, { recipient: BEFORE_V2, level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4 Befund")) }] });
    await markSent(ctx, [d.id]);
    const { page } = await login(BEFORE_V2, OLD_KEY);
    await page.waitForURL(/\/deliveries$/, { timeout: 60_000 });
    expect(await ctx.store.records.patient(BEFORE_V2)).toMatchObject({ passwordHash: null, recipient, kdf: JSON.stringify(legacy) });
    expect((await ctx.store.records.patient(BEFORE_V2))?.credentialHash).toMatch(/^[0-9a-f]{64}$/);
    await page.goto(`${base}/deliveries/${d.id}`);
    await page.getByLabel("Secu-Pass-Key").fill(OLD_KEY);
    await page.getByRole("button", { name: "Entsperren" }).click();
    await page.getByText("Fertig.").waitFor({ timeout: 60_000 });
    await page.context().close();
  }, 90_000);
});

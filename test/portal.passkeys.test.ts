// Passkeys for known devices, in real Chromium with its virtual authenticator (the CDP WebAuthn
// domain, a platform authenticator with user verification, with and without PRF), against the
// portal at http://localhost:<port> (WebAuthn refuses an IP address as RP id). The test watches
// the page's own WebAuthn calls only to learn the PRF output, so that it can check the sealed U
// byte for byte and that no request ever carried it.
import { createDecipheriv, hkdfSync } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import type { Browser, BrowserContext, Page, Request } from "playwright-core";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import {
  authenticatePasskey,
  resetSecuPass,
  revokePatient,
  type Context,
} from "../src/core/index.js";
import { buildPortal } from "../src/portal/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, practiceIdentityOf, praxmail, tempDir } from "./helpers/cli.js";
import { approveWithTheirCodes, newKey, registerThroughCore } from "./helpers/patient.js";
import { freePort } from "./helpers/serve.js";

const secuPass = (email: string): string => `Secu-Pass-Key von ${email} – 2026`;

/** What one browser tab saw: its requests and the PRF outputs its WebAuthn calls returned. */
interface Tab {
  readonly page: Page;
  readonly context: BrowserContext;
  readonly requests: Request[];
  readonly prf: string[];
}

/** Records each PRF output the page's own create()/get() calls return (base64), through an exposed function. */
const WATCH_PRF = `
for (const name of ["get", "create"]) {
  const orig = navigator.credentials[name].bind(navigator.credentials);
  navigator.credentials[name] = async (o) => {
    const c = await orig(o);
    const first = c?.getClientExtensionResults?.().prf?.results?.first;
    if (first) globalThis.keepPrf(btoa(String.fromCharCode(...new Uint8Array(first))));
    return c;
  };
}
`;

/** An authenticator that enables PRF at create but gives its output only on get() (as many do). */
const NO_PRF_AT_CREATE = `
const create = navigator.credentials.create.bind(navigator.credentials);
navigator.credentials.create = async (o) => {
  const c = await create(o);
  const results = c.getClientExtensionResults();
  c.getClientExtensionResults = () => ({ ...results, prf: { enabled: true } });
  return c;
};
`;

/** Opens a sealed U as the browser does: AES-256-GCM under HKDF-SHA256(PRF output, salt, "praxmail passkey v1"). */
function unsealInNode(sealed: string, prfB64: string, credentialId: string, email: string): { u: string; aes: Buffer } {
  const [v, salt, iv, ct] = sealed.split(".") as [string, string, string, string];
  expect(v).toBe("v1");
  const aes = Buffer.from(hkdfSync("sha256", Buffer.from(prfB64, "base64"), Buffer.from(salt, "base64url"), "praxmail passkey v1", 32));
  const box = Buffer.from(ct, "base64url");
  const d = createDecipheriv("aes-256-gcm", aes, Buffer.from(iv, "base64url"));
  d.setAAD(Buffer.from(`${credentialId}\n${email}`));
  d.setAuthTag(box.subarray(-16));
  return { u: Buffer.concat([d.update(box.subarray(0, -16)), d.final()]).toString(), aes };
}

describe.runIf(needChromium())("passkeys for known devices", () => {
  let dir: string;
  let home: string;
  let base: string;
  let ctx: Context;
  let app: FastifyInstance;
  let browser: Browser;
  const identities = new Map<string, string>();
  const logLines: string[] = [];

  const befund = "Ihr Befund ist unauffällig.\n";

  /** Sends Befund.txt at a level. @returns The delivery's id and its link. */
  async function send(email: string, level: number): Promise<{ id: string; link: string }> {
    const file = join(dir, "Befund.txt");
    await writeFile(file, befund);
    const r = await praxmail(["send", "--home", home, "--to", email, "--level", String(level), file, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { deliveries: { id: string; link: string }[] }).deliveries[0]!;
  }

  /** A patient with a key, approved, and one level-3 delivery for them. @returns The delivery's page. */
  async function patientWithDelivery(email: string): Promise<string> {
    const u = await registerThroughCore(home, email, secuPass(email));
    identities.set(email, u);
    await approveWithTheirCodes(ctx, [email], await practiceIdentityOf(home));
    return `/deliveries/${(await send(email, 3)).id}`;
  }

  /** A tab with its own virtual platform authenticator (user verified; PRF if asked). */
  async function tab(prf: boolean, prfAtCreate = true): Promise<Tab> {
    const context = await browser.newContext({ locale: "de-DE" });
    const page = await context.newPage();
    const requests: Request[] = [];
    const seen: string[] = [];
    page.on("request", (r) => requests.push(r));
    await page.exposeFunction("keepPrf", (b64: string) => seen.push(b64));
    if (!prfAtCreate) await page.addInitScript(NO_PRF_AT_CREATE);
    await page.addInitScript(WATCH_PRF);
    const cdp = await context.newCDPSession(page);
    await cdp.send("WebAuthn.enable", { enableUI: false });
    await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true, ...(prf ? { hasPrf: true } : {}) },
    });
    return { page, context, requests, prf: seen };
  }

  /** Logs in with the address and the Secu-Pass-Key; then reloads the list, so that the page no longer knows U. */
  async function logIn(page: Page, email: string): Promise<void> {
    await page.goto(`${base}/login`);
    await page.getByLabel("E-Mail-Adresse").fill(email);
    await page.getByLabel("Secu-Pass-Key").fill(secuPass(email));
    await page.getByRole("button", { name: "Anmelden", exact: true }).click();
    await page.getByRole("heading", { name: "Meine Nachrichten" }).waitFor({ timeout: 60_000 });
    await page.reload();
  }

  async function logOut(page: Page): Promise<void> {
    await page.getByRole("button", { name: "Abmelden" }).click();
    await page.waitForURL(/\/login\?m=out$/);
  }

  /** Unlocks a delivery with the Secu-Pass-Key, then taps "Auf diesem Gerät merken". */
  async function unlockAndRemember(page: Page, email: string, delivery: string, done: RegExp): Promise<void> {
    await page.goto(`${base}${delivery}`);
    await page.getByLabel("Secu-Pass-Key").fill(secuPass(email));
    await page.getByRole("button", { name: "Entsperren" }).click();
    await page.getByText("Fertig.").waitFor({ timeout: 60_000 });
    await page.getByRole("button", { name: "Auf diesem Gerät merken" }).click();
    await page.getByText(done).waitFor();
  }

  /** One tap on the login page of `next`. */
  async function tapPasskey(page: Page, next: string): Promise<void> {
    await page.goto(`${base}/login?next=${encodeURIComponent(next)}`);
    await page.getByRole("button", { name: "Mit Passkey anmelden" }).click();
  }

  const failedText = /Die Anmeldung mit dem Passkey hat nicht geklappt/;

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    const port = await freePort();
    base = `http://localhost:${port}`;
    await initHome(home, ["--recipient-type", "x25519", "--portal-url", base]);
    ctx = await openContext({ home }, "portal");
    app = await buildPortal(ctx, pino({ level: "info" }, { write: (s: string) => logLines.push(s) }));
    await app.listen({ host: "localhost", port });
    browser = await launch();
  });
  afterAll(async () => {
    await browser.close();
    await app.close();
    await ctx.store.close();
    await cleanup(dir);
  });

  it("with PRF: remembered after an unlock, one tap logs in on the delivery's page and opens U; neither U nor the PRF output is ever sent", async () => {
    const email = "lena.vogel@patient.example";
    const delivery = await patientWithDelivery(email);
    const t = await tab(true);
    await logIn(t.page, email);
    // Not offered before U is known in the page.
    expect(await t.page.locator("#passkey-offer").isHidden()).toBe(true);
    await unlockAndRemember(t.page, email, delivery, /Gemerkt\. Beim nächsten Besuch von diesem Gerät genügt ein Tippen\./);
    const [key] = await ctx.store.passkeys.passkeysOf(email);
    expect(key).toMatchObject({ email, label: "Chrome, Linux", lastUsed: null });
    expect(key!.sealed).toMatch(/^v1\./);
    expect(key!.userHandle).not.toContain(email);
    await logOut(t.page);

    t.prf.length = 0;
    await tapPasskey(t.page, delivery);
    await t.page.waitForURL(`${base}${delivery}`);
    await t.page.getByRole("heading", { name: /Nachricht von/ }).waitFor();
    expect(await t.page.locator("#passkey-offer").isHidden()).toBe(true);
    // Unlocked by the tap alone: Speichern saves the file, and nothing was typed.
    const [dl] = await Promise.all([t.page.waitForEvent("download"), t.page.getByRole("button", { name: "Speichern" }).first().click()]);
    expect(await readFile(await dl.path(), "utf8")).toBe(befund);
    expect(await t.page.locator("#unlock-form").isHidden()).toBe(true);
    expect(await t.page.locator("#unlock-key").inputValue()).toBe("");
    // The bytes: the sealed U opens with this login's PRF output to exactly U.
    const u = identities.get(email)!;
    const [prf] = t.prf;
    expect(prf).toBeDefined();
    const { u: opened, aes } = unsealInNode(key!.sealed!, prf!, key!.credentialId, email);
    expect(opened).toBe(u);
    expect((await ctx.store.passkeys.passkey(key!.credentialId))?.lastUsed).not.toBeNull();
    // No request and no log line carried U, any PRF output or the AES key.
    const secrets = [u, ...t.prf.flatMap((p) => [p, Buffer.from(p, "base64").toString("base64url"), Buffer.from(p, "base64").toString("hex")]), aes.toString("base64url"), aes.toString("hex")];
    const sent = t.requests.map((r) => `${r.url()}\n${JSON.stringify(r.headers())}\n${r.postData() ?? ""}`).join("\n");
    expect(t.requests.some((r) => r.url().endsWith("/passkeys/register"))).toBe(true);
    expect(t.requests.some((r) => r.url().endsWith("/passkeys/login"))).toBe(true);
    // The audit says what happened to which device, and holds nothing secret or sealed.
    const audit: { action: string; details: string }[] = [];
    for await (const r of ctx.store.auditRows()) if (r.subject === email && r.action.startsWith("patient.passkey")) audit.push(r);
    expect(audit.map((r) => [r.action, JSON.parse(r.details) as unknown])).toEqual([
      ["patient.passkey-add", { label: "Chrome, Linux", prf: true }],
      ["patient.passkey-login", { label: "Chrome, Linux" }],
    ]);
    for (const s of secrets) expect(sent).not.toContain(s);
    for (const s of [...secrets, key!.sealed!]) {
      expect(logLines.join("")).not.toContain(s);
      expect(JSON.stringify(audit)).not.toContain(s);
    }
    await t.context.close();
  }, 180_000);

  it("with PRF only on get(): registering asks the authenticator once more for it, and the sealed U opens at the next login", async () => {
    const email = "jana.roth@patient.example";
    const delivery = await patientWithDelivery(email);
    const t = await tab(true, false);
    await logIn(t.page, email);
    await unlockAndRemember(t.page, email, delivery, /Gemerkt\. Beim nächsten Besuch von diesem Gerät genügt ein Tippen\./);
    // The only PRF output while registering came from the one get() after create().
    expect(t.prf).toHaveLength(1);
    const [key] = await ctx.store.passkeys.passkeysOf(email);
    expect(key!.sealed).toMatch(/^v1\./);
    await logOut(t.page);
    t.prf.length = 0;
    await tapPasskey(t.page, delivery);
    await t.page.waitForURL(`${base}${delivery}`);
    expect(unsealInNode(key!.sealed!, t.prf[0]!, key!.credentialId, email).u).toBe(identities.get(email));
    await t.context.close();
  }, 180_000);

  it("without PRF: the passkey logs in and the key is asked once; the device list shows it, and once removed it logs nobody in", async () => {
    const email = "max.brandt@patient.example";
    const delivery = await patientWithDelivery(email);
    const t = await tab(false);
    await logIn(t.page, email);
    await unlockAndRemember(t.page, email, delivery, /Gemerkt\. Dieses Gerät meldet Sie künftig mit einem Tippen an/);
    const [key] = await ctx.store.passkeys.passkeysOf(email);
    expect(key?.sealed).toBeNull();
    await logOut(t.page);

    await tapPasskey(t.page, delivery);
    await t.page.waitForURL(`${base}${delivery}`);
    await t.page.getByLabel("Secu-Pass-Key").fill(secuPass(email));
    await t.page.getByRole("button", { name: "Entsperren" }).click();
    await t.page.getByText("Fertig.").waitFor({ timeout: 60_000 });

    await t.page.getByRole("link", { name: "Geräte" }).click();
    await t.page.getByRole("heading", { name: "Ihre Geräte" }).waitFor();
    const item = t.page.locator("#devices li");
    await expect.poll(() => item.count()).toBe(1);
    expect(await item.innerText()).toMatch(/Chrome, Linux[\s\S]*Gemerkt am \d{1,2}\.\d{1,2}\.\d{4} · Zuletzt benutzt am \d{1,2}\.\d{1,2}\.\d{4} · Meldet Sie an; den Secu-Pass-Key geben Sie einmal ein/);
    // Another patient's passkey cannot be removed from here.
    const [foreign] = await ctx.store.passkeys.passkeysOf("lena.vogel@patient.example");
    const csrf = await t.page.locator("#devices input[name=_csrf]").inputValue();
    expect((await t.page.request.post(`${base}/devices/remove`, { form: { _csrf: csrf, credentialId: foreign!.credentialId }, maxRedirects: 0 })).status()).toBe(404);
    expect(await ctx.store.passkeys.passkey(foreign!.credentialId)).toBeDefined();
    await t.page.getByRole("button", { name: "Entfernen: Chrome, Linux" }).click();
    await t.page.getByText("Das Gerät „Chrome, Linux“ ist entfernt. Mit ihm kann sich niemand mehr anmelden.").waitFor();
    expect(await t.page.locator("#devices-none").innerText()).toBe("Sie haben noch kein Gerät gemerkt.");
    expect(await ctx.store.passkeys.passkeysOf(email)).toEqual([]);
    await logOut(t.page);

    await tapPasskey(t.page, delivery);
    await t.page.getByText(failedText).waitFor();
    expect(new URL(t.page.url()).pathname).toBe("/login");
    await logIn(t.page, email);
    await t.context.close();
  }, 180_000);

  it("within a live session, a page that asks for the key offers the passkey instead: one tap opens U, without a new login; another patient's passkey is refused", async () => {
    const email = "eva.stein@patient.example";
    const delivery = await patientWithDelivery(email);
    const t = await tab(true);
    // Before a device is remembered, the delivery page offers no passkey.
    await logIn(t.page, email);
    await t.page.goto(`${base}${delivery}`);
    await t.page.getByLabel("Secu-Pass-Key").waitFor();
    expect(await t.page.locator("#passkey-unlock").count()).toBe(0);
    await unlockAndRemember(t.page, email, delivery, /Gemerkt\./);
    // A mail's link opens a new page in the same session: U is gone, the passkey brings it back.
    const session = (await t.context.cookies()).find((c) => c.name === "praxmail")?.value;
    await t.page.goto(`${base}${delivery}`);
    await t.page.getByRole("button", { name: "Mit Passkey entsperren" }).click();
    const [dl] = await Promise.all([t.page.waitForEvent("download"), t.page.getByRole("button", { name: "Speichern" }).first().click()]);
    expect(await readFile(await dl.path(), "utf8")).toBe(befund);
    expect(await t.page.locator("#unlock-form").isHidden()).toBe(true);
    expect(await t.page.locator("#unlock-key").inputValue()).toBe("");
    // No new session, no offer to remember the device again, and the audit says "unlock".
    expect((await t.context.cookies()).find((c) => c.name === "praxmail")?.value).toBe(session);
    expect(await t.page.locator("#passkey-offer").isHidden()).toBe(true);
    expect(t.requests.filter((r) => r.url().endsWith("/passkeys/login"))).toEqual([]);
    const actions: string[] = [];
    for await (const r of ctx.store.auditRows()) if (r.subject === email && r.action.startsWith("patient.passkey")) actions.push(r.action);
    expect(actions).toEqual(["patient.passkey-add", "patient.passkey-unlock"]);
    // The same answer for another patient's session is refused before the counter moves.
    let captured: { body: string; token: string } | null = null;
    await t.page.route("**/passkeys/unlock", async (route) => {
      captured = { body: route.request().postData() ?? "", token: route.request().headers()["x-csrf-token"] ?? "" };
      await route.abort();
    });
    await t.page.goto(`${base}${delivery}`);
    await t.page.getByRole("button", { name: "Mit Passkey entsperren" }).click();
    await t.page.getByText("Das Entsperren mit dem Passkey hat nicht geklappt. Bitte geben Sie Ihren Secu-Pass-Key ein.").waitFor();
    expect(await t.page.locator("#unlock-form").isVisible()).toBe(true);
    const got = captured as { body: string; token: string } | null;
    expect(got).not.toBeNull();
    const response = (JSON.parse(got!.body) as { response: Parameters<typeof authenticatePasskey>[2] }).response;
    const [before] = await ctx.store.passkeys.passkeysOf(email);
    await expect(authenticatePasskey(ctx, got!.token, response, "lena.vogel@patient.example")).rejects.toMatchObject({ code: "wrong-state" });
    expect(await ctx.store.passkeys.passkeysOf(email)).toEqual([before]);
    // Without a session there is nothing to unlock.
    expect((await fetch(`${base}/passkeys/unlock`, { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": got!.token, cookie: `praxmail-csrf=${got!.token}` }, body: got!.body })).status).toBe(401);
    await t.context.close();
  }, 180_000);

  it("a level-2 link's key survives the passkey login: one tap, then the file saves byte for byte", async () => {
    const email = "ida.berg@patient.example";
    const delivery = await patientWithDelivery(email);
    const t = await tab(true);
    await logIn(t.page, email);
    await unlockAndRemember(t.page, email, delivery, /Gemerkt\./);
    await logOut(t.page);
    const { link } = await send(email, 2);
    await t.page.goto(link);
    await t.page.getByRole("button", { name: "Mit Passkey anmelden" }).click();
    await t.page.getByRole("heading", { name: /Nachricht von/ }).waitFor();
    const [dl] = await Promise.all([t.page.waitForEvent("download"), t.page.getByRole("button", { name: "Speichern" }).first().click()]);
    expect(await readFile(await dl.path(), "utf8")).toBe(befund);
    expect(await t.page.evaluate("sessionStorage.getItem(\"praxmail-link-key\")")).toBeNull();
    expect(t.requests.some((r) => r.url().includes("AGE-SECRET-KEY") || (r.postData() ?? "").includes("AGE-SECRET-KEY"))).toBe(false);
    await t.context.close();
  }, 180_000);

  it("a revoked patient's passkey and a passkey from before a Secu-Pass reset log nobody in: both are deleted with the change", async () => {
    const revoked = "rita.kaya@patient.example";
    const reset = "paul.otto@patient.example";
    for (const [email, change] of [
      [revoked, async () => revokePatient(ctx, revoked)],
      [
        reset,
        async () => resetSecuPass(ctx, reset, await newKey(reset, "ein neuer Secu-Pass-Key 2026")),
      ],
    ] as const) {
      const delivery = await patientWithDelivery(email);
      const t = await tab(true);
      await logIn(t.page, email);
      await unlockAndRemember(t.page, email, delivery, /Gemerkt\./);
      expect(await ctx.store.passkeys.passkeysOf(email)).toHaveLength(1);
      await logOut(t.page);
      await change();
      expect(await ctx.store.passkeys.passkeysOf(email), email).toEqual([]);
      await tapPasskey(t.page, "/deliveries");
      await t.page.getByText(failedText).waitFor();
      expect(new URL(t.page.url()).pathname).toBe("/login");
      await t.context.close();
    }
    const actions: Record<string, unknown>[] = [];
    for await (const r of ctx.store.auditRows()) if (r.subject === revoked || r.subject === reset) actions.push({ action: r.action, ...(JSON.parse(r.details) as Record<string, unknown>) });
    expect(actions).toEqual(expect.arrayContaining([expect.objectContaining({ action: "patient.revoke", passkeys: 1 }), expect.objectContaining({ action: "patient.secupass-reset", passkeys: 1 })]));
  }, 240_000);

  it("refuses a replayed assertion, an assertion for another visitor's challenge, and one checked against another origin", async () => {
    const email = "nora.lind@patient.example";
    const delivery = await patientWithDelivery(email);
    const t = await tab(true);
    await logIn(t.page, email);
    await unlockAndRemember(t.page, email, delivery, /Gemerkt\./);
    await logOut(t.page);
    /** One real assertion of this tab, stopped before it reaches the server. */
    const capture = async (): Promise<{ body: string; token: string }> => {
      let got: { body: string; token: string } | null = null;
      await t.page.route("**/passkeys/login", async (route) => {
        got = { body: route.request().postData() ?? "", token: route.request().headers()["x-csrf-token"] ?? "" };
        await route.abort();
      });
      await tapPasskey(t.page, "/deliveries");
      await t.page.getByText(failedText).waitFor();
      await t.page.unroute("**/passkeys/login");
      return got!;
    };
    const post = (a: { body: string; token: string }, token = a.token): Promise<Response> =>
      fetch(`${base}/passkeys/login`, { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": token, cookie: `praxmail-csrf=${token}` }, body: a.body });

    const other = await capture();
    expect((await post(other, "x".repeat(43))).status).toBe(401);

    const foreign = await capture();
    const elsewhere = { ...ctx, config: { ...ctx.config, portalUrl: "http://localhost:1" } };
    const response = (JSON.parse(foreign.body) as { response: Parameters<typeof authenticatePasskey>[2] }).response;
    await expect(authenticatePasskey(elsewhere, foreign.token, response)).rejects.toMatchObject({ code: "invalid-input" });
    // Its challenge is used up by that check.
    await expect(authenticatePasskey(ctx, foreign.token, response)).rejects.toMatchObject({ code: "wrong-state" });

    const good = await capture();
    const first = await post(good);
    expect(first.status).toBe(200);
    expect(await first.json()).toMatchObject({ next: "/deliveries", address: email });
    expect((await post(good)).status).toBe(401);
    await t.context.close();
  }, 180_000);
});

// No dead end, and readable on a phone (issue 16, items 4 and 5). Against the real app over a
// real home and store: a waiting delivery says what happens and what to do, ended messages
// stay in the list with their state, a wrong or old link leads on; and in real Chromium at
// 390×844 and 360 px: the list's entries, the one-line header in every language, the order
// of the delivery page, the show toggles and the fields kept after an error.
import { randomBytes } from "node:crypto";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { collectGarbage, createDelivery, createInvite, markSent, revokeDelivery, type CreatedDelivery } from "../src/core/index.js";
import { LANGS, format, type Lang } from "../src/i18n/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { practiceIdentityOf } from "./helpers/cli.js";
import { approveWithTheirCodes, keyOf, newKey, registerThroughCore } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";
import { streamOf } from "./helpers/streams.js";

const A = "anna@patient.example"; // approved: ready, level-4, revoked and expired deliveries
const W = "walter@patient.example"; // waits for the practice's approval
const PRACTICE = "Praxis Dr. Weber";
const LEVEL4_SUBJECT = "Diagnose: streng vertraulich";

let ready: CreatedDelivery;
let sealed: CreatedDelivery;
let revoked: CreatedDelivery;
let expired: CreatedDelivery;
let waiting: CreatedDelivery;
let invite: string;

const portal = usePortal({
  beforeOpen: async (home) => {
    await registerThroughCore(home, A, "Annas Secu-Pass-Key");
    await registerThroughCore(home, W, "Walters Secu-Pass-Key");
  },
  afterOpen: async (ctx) => {
    const practice = await practiceIdentityOf(ctx.home);
    await approveWithTheirCodes(ctx, [A], practice);
    const day = 86_400_000;
    // Sent long ago, expired since, and collected by gc as `praxmail gc` does.
    const now = Date.now();
    const then = new Date(now - (ctx.config.deliveries.expiryDays + 2) * day);
    expired = await deliver({ ...ctx, now: () => then }, A, 3, "Röntgenbild");
    await collectGarbage({ ...ctx, now: () => new Date(now) }, 60 * 60_000);
    revoked = await deliver(ctx, A, 3, "Alter Befund");
    await revokeDelivery(ctx, revoked.id);
    sealed = await deliver(ctx, A, 4, LEVEL4_SUBJECT);
    ready = await deliver(ctx, A, 3, "Ihr Laborbefund");
    waiting = await deliver(ctx, W, 3, "Walters Befund");
    invite = (await createInvite(ctx, "eingeladen@patient.example", practice)).id;
  },
  listen: true,
});

async function deliver(ctx: typeof portal.ctx, to: string, level: number, subject: string): Promise<CreatedDelivery> {
  const files = [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4 befund")) }];
  const d = await createDelivery(ctx, { recipient: to, level, subject, message: level === 4 ? "Der Text." : null, files });
  await markSent(ctx, [d.id]);
  return d;
}

const tokenOf = (d: CreatedDelivery): string => /\/d\/([\w-]{43})/.exec(d.link)![1]!;
/** Text as eta writes it into a page. */
const html = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
const de = (key: Parameters<typeof format>[1], values?: Parameters<typeof format>[2]): string => html(format("de", key, values));
const numeric = (iso: string | Date): string => new Intl.DateTimeFormat("de-DE", { timeZone: "Europe/Berlin", day: "2-digit", month: "2-digit", year: "numeric" }).format(new Date(iso));

async function loggedIn(email: string): Promise<Client> {
  const c = new Client(portal.app);
  expect((await c.login(email)).statusCode).toBe(200);
  return c;
}

describe("no dead end", () => {
  it("the list shows each message's subject, at level 4 only „Vertrauliche Nachricht“, and keeps revoked and expired ones with their state", async () => {
    const body = (await (await loggedIn(A)).get("/deliveries")).body;
    expect(body).toContain('<span class="subject">Ihr Laborbefund</span>');
    expect(body).toContain('<span class="subject">Vertrauliche Nachricht</span>');
    expect(body).not.toContain("Diagnose");
    expect(body).toMatch(new RegExp(`href="/deliveries/${revoked.id}"><span class="subject">Alter Befund</span>[\\s\\S]*?von der Praxis zurückgezogen</span>`));
    expect(body).toMatch(new RegExp(`href="/deliveries/${expired.id}"><span class="subject">Röntgenbild</span>[\\s\\S]*?abgelaufen am ${numeric(expired.expiresAt).replace(/\./g, "\\.")}</span>`));
    // The open ones first, then the ended ones, newest first.
    const [r, s, v, x] = [ready.id, sealed.id, revoked.id, expired.id].map((id) => body.indexOf(`/deliveries/${id}"`));
    expect(Math.min(r!, s!)).toBeGreaterThan(0);
    expect([Math.max(r!, s!) < v!, v! < x!]).toEqual([true, true]);
  });

  it.each([
    ["revoked", () => revoked, "goneRevoked"],
    ["expired", () => expired, "goneExpired"],
  ] as const)("the page of a message that was %s says so with 410, leads back to the list and says whom to ask to send it again", async (_, d, text) => {
    const res = await (await loggedIn(A)).get(`/deliveries/${d().id}`);
    expect(res.statusCode).toBe(410);
    expect(res.body).toContain(`<h1>${de("goneTitle")}</h1>`);
    expect(res.body).toContain(de(text));
    expect(res.body).toContain(`<a class="button" href="/deliveries">Meine Nachrichten</a>`);
    expect(res.body).toContain(`<p id="way-practice">Brauchen Sie die Nachricht noch? Dann bitten Sie ${PRACTICE}, sie erneut zu senden.</p>`);
  });

  it("a delivery waiting for approval: the list and the waiting page say what happens, that nothing needs typing again, and whom to call", async () => {
    const c = await loggedIn(W);
    const list = (await c.get("/deliveries")).body;
    expect(list).toContain(`<p class="card" id="list-waiting">${de("listWaiting", { practice: PRACTICE })}</p>`);
    expect(list).toContain("„Wartet auf Freigabe“ heißt: Praxis Dr. Weber muss Ihren Zugang noch freigeben. Sie müssen nichts erneut eingeben.");
    expect(list).toContain("Walters Befund");
    // The link and the waiting page: the new title and what to do.
    for (const url of [`/d/${tokenOf(waiting)}`, "/waiting"]) {
      const page = await c.get(url);
      expect(page.statusCode, url).toBe(200);
      expect(page.body, url).toContain("<h1>Fast geschafft: Ihre Praxis schaltet Sie frei</h1>");
      expect(page.body, url).toContain(`<p id="waiting-what">Sie müssen nichts mehr eingeben. Wenn es eilt, rufen Sie bitte ${PRACTICE} an.</p>`);
    }
    // An approved patient with nothing waiting sees no such note.
    expect((await (await loggedIn(A)).get("/deliveries")).body).not.toContain('id="list-waiting"');
  });

  it("a mistyped or old link: 404 with the way on (log in, call the practice), the same page for a token of someone else's delivery", async () => {
    const visitor = new Client(portal.app);
    const unknown = `/d/${randomBytes(32).toString("base64url")}`;
    const bodies: string[] = [];
    for (const url of [unknown, "/d/abgeschnitten", "/d/", "/deliveries-alt/123", `/d/${tokenOf(ready).slice(0, 40)}`]) {
      const res = await visitor.get(url);
      expect(res.statusCode, url).toBe(404);
      expect(res.body, url).toContain(`<h1>${de("notFoundTitle")}</h1>`);
      expect(res.body, url).toContain('<a class="button" href="/login">Anmelden und alle Nachrichten sehen</a>');
      expect(res.body, url).toContain(`<p id="way-practice">Kommen Sie nicht weiter? Dann rufen Sie bitte ${PRACTICE} an.</p>`);
      bodies.push(res.body.replace(/<input type="hidden" name="back" value="[^"]*">/, ""));
    }
    expect(new Set(bodies).size).toBe(1);
    // Logged in: a delivery of another patient answers exactly as one that does not exist.
    const anna = await loggedIn(A);
    const theirs = await anna.get(`/deliveries/${waiting.id}`);
    const none = await anna.get(`/deliveries/d_${"0".repeat(12)}`);
    expect([theirs.statusCode, none.statusCode]).toEqual([404, 404]);
    expect(theirs.body).toContain('<a class="button" href="/deliveries">Meine Nachrichten</a>');
    const strip = (s: string): string => s.replace(/<input type="hidden" name="back" value="[^"]*">/, "");
    expect(strip(theirs.body)).toBe(strip(none.body));
  });
});

describe("forms on a phone", () => {
  it("the invite form takes the address from the link, explains the code, puts the focus on it, and an error answer carries no secret", async () => {
    const c = new Client(portal.app);
    const page = await c.get(`/invite/${invite}?email=eingeladen%40patient.example`);
    expect(page.body).toContain('autocomplete="username" required maxlength="254" value="eingeladen@patient.example">');
    expect(page.body).toContain(`aria-describedby="code-hint" autofocus>\n  <p class="hint" id="code-hint">${de("inviteCodeHint")}</p>`);
    const key = await newKey("eingeladen@patient.example", "ein Secu-Pass-Key zum Anlegen");
    const res = await c.json(`/invite/${invite}`, { email: "eingeladen@patient.example", code: "FALS-CHER-CODE", kdf: key.kdf, recipient: key.recipient, credential: key.credential });
    expect(res.statusCode).toBe(400);
    expect(JSON.parse(res.body)).toEqual({ error: format("de", "inviteMismatch") });
    for (const secret of ["FALS-CHER-CODE", key.credential, key.recipient]) expect(res.body).not.toContain(secret);
  });

  it("the reset form keeps the address when it refuses (too many requests)", async () => {
    const c = new Client(portal.app);
    await c.get("/reset");
    let res;
    for (let i = 0; i < 11; i++) res = await c.post("/reset", { email: "vergesslich@patient.example", _csrf: c.csrf });
    expect(res?.statusCode).toBe(429);
    expect(res?.body).toContain('autocomplete="username" required maxlength="254" value="vergesslich@patient.example">');
  });

  it("the Secu-Pass-Key fields, the login's too, tell password managers to keep out; there is no password field", async () => {
    const anna = await loggedIn(A);
    const delivery = (await anna.get(`/deliveries/${ready.id}`)).body;
    expect(delivery).toContain('<input id="unlock-key" type="password" autocomplete="off" data-1p-ignore data-bwignore required maxlength="1024">');
    const reset = (await anna.get("/secupass/reset")).body;
    expect(reset).toContain('<input id="secupass" type="password" autocomplete="off" data-1p-ignore data-bwignore required');
    // One field and a show toggle: no second field to repeat the key in.
    expect(reset).not.toContain('id="secupass2"');
    const login = (await new Client(portal.app).get("/login")).body;
    expect(login).toContain('type="email" autocomplete="username"');
    expect(login).toContain('<input id="login-key" type="password" autocomplete="off" data-1p-ignore data-bwignore required maxlength="1024"');
    for (const body of [delivery, reset, login]) expect(body).not.toMatch(/current-password|new-password/);
  });
});

describe.runIf(needChromium())("in Chromium on a phone", () => {
  let chromium: Browser;
  beforeAll(async () => {
    chromium = await launch();
  });
  afterAll(async () => {
    await chromium.close();
  });

  const base = (): string => `http://127.0.0.1:${String(portal.port)}`;
  async function open(width: number, height: number, locale = "de-DE"): Promise<Page> {
    return (await chromium.newContext({ viewport: { width, height }, locale })).newPage();
  }
  async function login(page: Page, email: string): Promise<void> {
    await page.goto(`${base()}/login`);
    await page.locator("#email").fill(email);
    await page.locator("#login-key").fill(keyOf(email));
    await page.locator("#login-form button[type=submit]").click();
    await page.waitForURL(/\/deliveries$/);
  }
  /** The boxes of the elements `selector` finds, as the screen shows them. */
  async function rect(page: Page, selector: string): Promise<{ top: number; bottom: number; left: number; right: number; width: number; height: number }[]> {
    const out = [];
    for (const l of await page.locator(selector).all()) {
      const b = (await l.boundingBox())!;
      out.push({ top: b.y, bottom: b.y + b.height, left: b.x, right: b.x + b.width, width: b.width, height: b.height });
    }
    return out;
  }

  it.each(LANGS)("%s: the header is one line at 360 px (brand, language menu, logout), every control at least 44 px high", async (lang: Lang) => {
    const page = await open(360, 740, lang);
    await login(page, A);
    expect(await page.locator("html").getAttribute("lang")).toBe(lang);
    const header = (await rect(page, "header.top"))[0]!;
    const parts = await rect(page, "header.top .brand, header.top select, header.top button");
    expect(parts).toHaveLength(3 + 1); // brand, select, apply, logout
    for (const p of parts) {
      // Each part within the header's one row, side by side, inside the screen.
      expect(p.top, lang).toBeGreaterThanOrEqual(header.top);
      expect(p.bottom, lang).toBeLessThanOrEqual(header.bottom);
      expect(p.height, lang).toBeGreaterThanOrEqual(44);
      expect(p.width, lang).toBeGreaterThanOrEqual(44);
      expect(p.left, lang).toBeGreaterThanOrEqual(0);
      expect(p.right, lang).toBeLessThanOrEqual(360);
    }
    const middles = parts.map((p) => (p.top + p.bottom) / 2);
    expect(Math.max(...middles) - Math.min(...middles), lang).toBeLessThan(4);
    expect(header.height, lang).toBeLessThan(2 * 44);
    expect(await page.locator("header.top").getByRole("button", { name: format(lang, "logout") }).isVisible()).toBe(true);
    await page.context().close();
  });

  it("390×844: each message in the list is one tap target of at least 44×44 px, subject first, level 4 neutral", async () => {
    const page = await open(390, 844);
    await login(page, A);
    const entries = await rect(page, "a.entry");
    expect(entries.length).toBe(4);
    for (const e of entries) {
      expect(e.height).toBeGreaterThanOrEqual(44);
      expect(e.width).toBeGreaterThanOrEqual(44);
      expect(e.right).toBeLessThanOrEqual(390);
    }
    const subjects = await page.locator("a.entry .subject").allTextContents();
    expect([subjects.slice(0, 2).sort(), subjects.slice(2)]).toEqual([["Ihr Laborbefund", "Vertrauliche Nachricht"], ["Alter Befund", "Röntgenbild"]]);
    // The footer's links are tap targets too.
    for (const l of await rect(page, "footer a")) expect(l.height).toBeGreaterThanOrEqual(44);
    await page.locator("a.entry", { hasText: "Vertrauliche Nachricht" }).click();
    await page.waitForURL(new RegExp(`/deliveries/${sealed.id}$`));
    expect(await page.locator("#unlock-lead").textContent()).toBe(format("de", "unlockLead4"));
    await page.context().close();
  });

  it("390×844: the delivery page puts the unlock form before „Sicher antworten“ and „vergessen“", async () => {
    const page = await open(390, 844);
    await login(page, A);
    await page.goto(`${base()}/deliveries/${ready.id}`);
    const [form] = await rect(page, "#unlock-form");
    const [answer] = await rect(page, `a[href="/reply?d=${ready.id}"]`);
    const [forgot] = await rect(page, 'main a[href="/secupass/reset"]');
    expect(form!.bottom).toBeLessThanOrEqual(answer!.top);
    expect(form!.bottom).toBeLessThanOrEqual(forgot!.top);
    expect(await page.locator("#unlock-lead").textContent()).toBe("Geben Sie Ihren Secu-Pass-Key ein. Dann können Sie die Dateien öffnen. Der Key bleibt auf Ihrem Gerät.");
    await page.context().close();
  });

  it("360 px: each secret field has a labelled show toggle that works from the keyboard and says its state with aria-pressed", async () => {
    const page = await open(360, 740);
    await page.goto(`${base()}/invite/${invite}`);
    // One secret field (the key is typed once, and the toggle lets the patient check it).
    const toggles = page.getByRole("button", { name: "Anzeigen" });
    expect(await toggles.count()).toBe(1);
    const field = page.locator("#secupass");
    await field.fill("mein geheimer Secu-Pass-Key");
    const toggle = toggles.first();
    expect([await toggle.getAttribute("aria-pressed"), await toggle.getAttribute("aria-controls"), await field.getAttribute("type")]).toEqual(["false", "secupass", "password"]);
    await field.focus();
    await page.keyboard.press("Tab");
    expect(await page.locator(":focus").getAttribute("aria-controls")).toBe("secupass");
    await page.keyboard.press("Space");
    expect([await toggle.getAttribute("aria-pressed"), await field.getAttribute("type")]).toEqual(["true", "text"]);
    expect(await field.inputValue()).toBe("mein geheimer Secu-Pass-Key");
    await page.keyboard.press("Enter");
    expect([await toggle.getAttribute("aria-pressed"), await field.getAttribute("type")]).toEqual(["false", "password"]);
    // Field and toggle share one row inside the screen.
    const [f] = await rect(page, "#secupass");
    const [t] = await rect(page, '#secupass + button');
    expect(Math.abs(f!.top - t!.top)).toBeLessThan(2);
    expect(t!.right).toBeLessThanOrEqual(360);
    expect(t!.height).toBeGreaterThanOrEqual(44);
    await page.context().close();
  });

  it("360 px: after a wrong invite code the page says so in place, and the address, the code and the key are still there to correct", async () => {
    const page = await open(360, 740);
    await page.goto(`${base()}/invite/${invite}?email=eingeladen%40patient.example`);
    expect(await page.locator("#email").inputValue()).toBe("eingeladen@patient.example");
    await page.locator("#code").fill("AAAA-BBBB-CCCC");
    await page.locator("#secupass").fill("ein Secu-Pass-Key zum Anlegen");
    await page.locator("#newkey-form button[type=submit]").click();
    await page.locator("#secupass-error:not([hidden])").waitFor({ timeout: 60_000 });
    expect(await page.locator("#secupass-error").textContent()).toBe(format("de", "inviteMismatch"));
    expect([await page.locator("#email").inputValue(), await page.locator("#code").inputValue(), await page.locator("#secupass").inputValue()]).toEqual([
      "eingeladen@patient.example",
      "AAAA-BBBB-CCCC",
      "ein Secu-Pass-Key zum Anlegen",
    ]);
    await page.context().close();
  });
});

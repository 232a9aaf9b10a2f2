// Accessibility (issue 16, "Prove it"): in real Chromium at 390×844, axe-core checks every page
// a patient can reach against WCAG 2.0/2.1 A and AA, once with Accept-Language de and once
// with ar (right to left), and every visible control is a tap target of at least 44×44 px.
// axe-core's source is injected with `page.addScriptTag` into a context opened with
// `bypassCSP: true`: the portal's CSP allows no inline script, and the app itself is unchanged.
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { collectGarbage, createDelivery, createInvite, markSent, requestKeyReset, revokeDelivery, type CreatedDelivery } from "../src/core/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { practiceIdentityOf } from "./helpers/cli.js";
import { approveWithTheirCodes, keyOf, registerThroughCore } from "./helpers/patient.js";
import { usePortal } from "./helpers/portal.js";
import { streamOf } from "./helpers/streams.js";

const A = "anna@patient.example"; // approved: ready, level 1, level 4, revoked and expired deliveries
const W = "walter@patient.example"; // waits for the practice's approval
const NEW = "neu@patient.example"; // no account: the link leads to the registration

const ids = {} as Record<"ready" | "sealed" | "revoked" | "expired", CreatedDelivery>;
let level1 = "";
let register = "";
let invite = "";
let reset = "";

const portal = usePortal({
  beforeOpen: async (home) => {
    await registerThroughCore(home, A, "Annas Secu-Pass-Key");
    await registerThroughCore(home, W, "Walters Secu-Pass-Key");
  },
  afterOpen: async (ctx) => {
    const practice = await practiceIdentityOf(ctx.home);
    await approveWithTheirCodes(ctx, [A], practice);
    const deliver = async (c: typeof ctx, to: string, level: number, subject: string): Promise<CreatedDelivery> => {
      const files = [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4 befund")) }];
      const d = await createDelivery(c, { recipient: to, level, subject, message: level === 4 ? "Der Text." : null, files });
      await markSent(c, [d.id]);
      return d;
    };
    const day = 86_400_000;
    const now = Date.now();
    ids.expired = await deliver({ ...ctx, now: () => new Date(now - (ctx.config.deliveries.expiryDays + 2) * day) }, A, 3, "Röntgenbild");
    await collectGarbage({ ...ctx, now: () => new Date(now) }, 60 * 60_000);
    ids.revoked = await deliver(ctx, A, 3, "Alter Befund");
    await revokeDelivery(ctx, ids.revoked.id);
    ids.sealed = await deliver(ctx, A, 4, "Diagnose");
    ids.ready = await deliver(ctx, A, 3, "Ihr Laborbefund");
    await deliver(ctx, W, 3, "Walters Befund");
    const link1 = new URL((await deliver(ctx, A, 1, "Rezept")).link);
    level1 = link1.pathname + link1.hash;
    register = new URL((await deliver(ctx, NEW, 3, "Willkommen")).link).pathname;
    invite = `/invite/${(await createInvite(ctx, "eingeladen@patient.example", practice)).id}?email=eingeladen%40patient.example`;
    // The devices page lists one passkey, with its button that removes it.
    await ctx.store.passkeys.insertPasskey({ credentialId: "a11y-1", email: A, userHandle: "uh", publicKey: new Uint8Array(8), counter: 0, transports: "[]", label: "Chrome, Android", createdAt: new Date(now).toISOString(), lastUsed: null, sealed: null });
    await requestKeyReset({ ...ctx, notifier: { send: (n) => Promise.resolve(void (reset = new URL((n as { link: string }).link).pathname)) } }, A);
  },
  listen: true,
});

/** Every page a patient can reach: who is logged in (if anyone), the address, and what the patient does there first. */
const PAGES: [name: string, user: string | null, url: () => string, act?: (page: Page) => Promise<void>][] = [
  ["landing", null, () => "/"],
  ["login", null, () => "/login"],
  ["login after a wrong Secu-Pass-Key", null, () => "/login", async (page) => {
    await page.locator("#email").fill(A);
    await page.locator("#login-key").fill("ein falscher Secu-Pass-Key");
    await page.locator("#login-form button[type=submit]").click();
    await page.locator("#login-error:not([hidden])").waitFor({ timeout: 60_000 });
  }],
  ["register (link for an address without account)", null, () => register],
  ["invite", null, () => invite],
  ["reset (request)", null, () => "/reset"],
  ["reset (new Secu-Pass-Key)", null, () => reset],
  ["reset (old link, 410)", null, () => "/reset/abgelaufen"],
  ["help", null, () => "/help"],
  ["unknown link (404)", null, () => "/d/abgeschnitten"],
  ["delivery, level 1 via link", null, () => level1],
  ["waiting", W, () => "/waiting"],
  ["message list with a waiting entry", W, () => "/deliveries"],
  ["message list (ready, level 4, revoked, expired)", A, () => "/deliveries"],
  ["delivery, level 3", A, () => `/deliveries/${ids.ready.id}`],
  ["delivery, level 3, after a wrong Secu-Pass-Key", A, () => `/deliveries/${ids.ready.id}`, unlock("falscher Key", "#status.error")],
  ["delivery, level 4", A, () => `/deliveries/${ids.sealed.id}`],
  ["delivery, level 4, unlocked", A, () => `/deliveries/${ids.sealed.id}`, unlock("Annas Secu-Pass-Key", "#message:not([hidden])")],
  ["delivery revoked (410)", A, () => `/deliveries/${ids.revoked.id}`],
  ["delivery expired (410)", A, () => `/deliveries/${ids.expired.id}`],
  ["reply", A, () => `/reply?d=${ids.ready.id}`],
  ["Secu-Pass reset", A, () => "/secupass/reset"],
  ["help, logged in", A, () => "/help"],
  ["devices", A, () => "/devices"],
];

/** Types a Secu-Pass-Key into the unlock form and waits for `shown`. */
function unlock(key: string, shown: string): (page: Page) => Promise<void> {
  return async (page) => {
    await page.locator("#unlock-key").fill(key);
    await page.locator("#unlock-form button[type=submit]").click();
    await page.locator(shown).waitFor({ timeout: 60_000 });
  };
}

/**
 * The screenshots of every page in docs/screenshots (README shows the journey from them):
 * `npm run screenshots` runs this file with PRAXMAIL_SCREENSHOTS set, and each page's capture,
 * taken before the checks touch the page, is written there as `<lang>-<page>.png`.
 */
const DOCS_SHOTS = resolve(import.meta.dirname, "../docs/screenshots");
const SHOTS_TO = process.env.PRAXMAIL_SCREENSHOTS ? resolve(process.env.PRAXMAIL_SCREENSHOTS) : null;
const LANGS = ["de", "ar"];
const shotName = (lang: string, page: string): string =>
  `${lang}-${page.toLowerCase().replace(/ä/g, "ae").replace(/ö/g, "oe").replace(/ü/g, "ue").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")}.png`;

interface Violation {
  id: string;
  help: string;
  nodes: { target: unknown[] }[];
}

describe.runIf(needChromium())("accessibility in Chromium at 390×844", () => {
  let chromium: Browser;
  let axe: string;
  const contexts = new Map<string, BrowserContext>();
  beforeAll(async () => {
    chromium = await launch();
    axe = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
  });
  afterAll(async () => {
    await chromium.close();
  });

  const base = (): string => `http://127.0.0.1:${String(portal.port)}`;

  /** One browser per language and patient, logged in once through the form. */
  async function contextFor(lang: string, user: string | null): Promise<BrowserContext> {
    const key = `${lang} ${user ?? ""}`;
    let c = contexts.get(key);
    if (c) return c;
    c = await chromium.newContext({ viewport: { width: 390, height: 844 }, locale: lang, extraHTTPHeaders: { "accept-language": lang }, bypassCSP: true });
    if (user) {
      const page = await c.newPage();
      await page.goto(`${base()}/login`);
      await page.locator("#email").fill(user);
      await page.locator("#login-key").fill(keyOf(user));
      await page.locator("#login-form button[type=submit]").click();
      await page.waitForURL((u) => u.pathname !== "/login");
      await page.close();
    }
    contexts.set(key, c);
    return c;
  }

  /** axe-core's WCAG 2.0/2.1 A and AA rules on the page as it stands: each violation's id, help and targets. */
  async function violations(page: Page): Promise<string[]> {
    await page.addScriptTag({ content: axe });
    const found = await page.evaluate<{ violations: Violation[] }>(`axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })`);
    return found.violations.map((v) => `${v.id}: ${v.help} at ${JSON.stringify(v.nodes.map((n) => n.target))}`);
  }

  /**
   * Every visible control smaller than 44×44 px. A control inside a label is measured as the
   * label. Exempt (WCAG 2.5.8, inline): a link whose computed display is `inline` inside a `p`,
   * i.e. a link within a sentence. Hidden ones (no box, or inside the 1 px `.sr-only`) are not
   * targets; the skip link is measured while it has the focus, as it only shows then.
   */
  async function smallTargets(page: Page): Promise<string[]> {
    await page.locator("a.skip").focus();
    return page.evaluate<string[]>(`(() => {
      const out = [];
      for (const el of document.querySelectorAll("a, button, input, select, summary, textarea, label")) {
        if (el.matches("input[type=hidden]")) continue;
        if (el.matches("label") ? !el.querySelector("input, select, textarea") : el.closest("label")) continue;
        const style = getComputedStyle(el);
        const box = el.getBoundingClientRect();
        if (box.width === 0 || box.height === 0 || style.visibility === "hidden" || el.closest(".sr-only")) continue;
        if (el.matches("a") && style.display === "inline" && el.closest("p")) continue;
        if (box.width < 44 || box.height < 44) out.push(el.outerHTML.slice(0, 80) + " " + Math.round(box.width) + "×" + Math.round(box.height));
      }
      return out;
    })()`);
  }

  it("the checks see what they look for: an image without text and a 30 px button fail them", async () => {
    const page = await (await contextFor("de", null)).newPage();
    await page.goto(`${base()}/help`);
    await page.evaluate(`document.querySelector("main").insertAdjacentHTML("beforeend", '<img src="/static/lock.svg"><button style="min-height:0;height:30px;padding:0">x</button>')`);
    expect((await violations(page)).map((v) => v.split(":")[0])).toEqual(["image-alt"]);
    expect(await smallTargets(page)).toEqual([expect.stringMatching(/^<button style=.*>x<\/button> \d+×30$/)]);
    await page.close();
  });

  for (const lang of LANGS) {
    it.each(PAGES)(`${lang}: %s has 0 WCAG 2.1 AA violations and no tap target under 44×44 px`, async (_name, user, url, act) => {
      const page = await (await contextFor(lang, user)).newPage();
      const res = await page.goto(`${base()}${url()}`);
      expect(res?.url()).toBe(`${base()}${url().replace(/#.*$/, "")}`);
      await act?.(page);
      await page.waitForLoadState("networkidle");
      expect([await page.locator("html").getAttribute("lang"), await page.locator("html").getAttribute("dir")]).toEqual([lang, lang === "ar" ? "rtl" : "ltr"]);
      if (SHOTS_TO) {
        await mkdir(SHOTS_TO, { recursive: true });
        await writeFile(join(SHOTS_TO, shotName(lang, _name)), await page.screenshot({ type: "png" }));
      }
      const found = await violations(page);
      expect(found, found.join("\n")).toEqual([]);
      const small = await smallTargets(page);
      expect(small, small.join("\n")).toEqual([]);
      await page.close();
    });
  }

  it("docs/screenshots holds a 390×844 capture of every page above in German and Arabic, and no other", async () => {
    const want = LANGS.flatMap((lang) => PAGES.map(([name]) => shotName(lang, name))).sort();
    expect(new Set(want).size).toBe(want.length);
    const have = (await readdir(DOCS_SHOTS)).filter((f) => f.endsWith(".png")).sort();
    expect(have, "run npm run screenshots").toEqual(want);
    for (const f of have) {
      // A PNG's IHDR: width and height, big-endian, at bytes 16 and 20.
      const png = await readFile(join(DOCS_SHOTS, f));
      expect([png.readUInt32BE(16), png.readUInt32BE(20)], f).toEqual([390, 844]);
    }
  });
});

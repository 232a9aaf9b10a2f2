// The portal in seven languages: every page renders in Arabic right to left and in Turkish
// and Russian chosen by Accept-Language; the language menu; the switch, remembered by a
// cookie before login and by the account after; mails in the patient's language. Against the
// real app over a real home and store.
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import type { Browser as Chromium, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDelivery, createInvite, markSent, requestKeyReset, type CreatedDelivery } from "../src/core/index.js";
import { format, type Lang, type MessageKey, type Values } from "../src/i18n/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { outbox, practiceIdentityOf } from "./helpers/cli.js";
import { approveWithTheirCodes, newKey, registerThroughCore } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";
import { readDb } from "./helpers/store.js";
import { streamOf } from "./helpers/streams.js";

const A = "anna@patient.example"; // approved, with a delivery of two files
const W = "walter@patient.example"; // waits for approval

let practice: string;
let delivery: CreatedDelivery;
let invite: string;
let reset: string;

const portal = usePortal({
  beforeOpen: async (home) => {
    await registerThroughCore(home, A, "Annas Secu-Pass-Key");
    await registerThroughCore(home, W, "Walters Secu-Pass-Key");
  },
  afterOpen: async (ctx) => {
    practice = await practiceIdentityOf(ctx.home);
    await approveWithTheirCodes(ctx, [A], practice);
    delivery = await deliver(ctx, A);
    invite = (await createInvite(ctx, "eingeladen@patient.example", practice)).id;
    await requestKeyReset(ctx, W);
    reset = /\/reset\/([\w-]{43})/.exec((await outbox(ctx.home)).at(-1)?.text ?? "")![1]!;
  },
  listen: true,
});

async function deliver(ctx: typeof portal.ctx, to: string): Promise<CreatedDelivery> {
  const files = ["befund.pdf", "roentgen.png"].map((name) => ({ name, open: () => streamOf(Buffer.from(`%PDF-1.4 ${name}`)) }));
  const d = await createDelivery(ctx, { recipient: to, level: 3, files });
  await markSent(ctx, [d.id]);
  return d;
}

const tokenOf = (d: CreatedDelivery): string => /\/d\/([\w-]{43})/.exec(d.link)![1]!;
const patientLang = (email: string): unknown => readDb(portal.home, (db) => (db.prepare("SELECT lang FROM patients WHERE email = ?").get(email) as { lang: unknown }).lang);
/** Text as eta writes it into a page. */
const html = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
const cookieOf = (res: LightMyRequestResponse, name: string): string | undefined =>
  [res.headers["set-cookie"] ?? []].flat().find((c) => c.startsWith(`${name}=`));

/** A browser whose Accept-Language is `accept`. */
class Browser extends Client {
  constructor(
    app: FastifyInstance,
    private readonly accept: string,
  ) {
    super(app);
  }

  override request(method: string, url: string, opts: { payload?: string | Buffer; headers?: Record<string, string> } = {}): Promise<LightMyRequestResponse> {
    return super.request(method, url, { ...opts, headers: { "accept-language": this.accept, ...opts.headers } });
  }
}

/** Every page the portal renders: who asks, the URL, the status and the key (and values) of its heading. */
function pages(): [who: string | null, url: string, status: number, h1: MessageKey, values?: Values][] {
  return [
    [null, "/", 200, "title"],
    [null, "/help", 200, "helpTitle"],
    [null, "/login", 200, "loginTitle"],
    [null, "/reset", 200, "resetTitle"],
    [null, `/reset/${reset}`, 200, "secupassResetTitle"],
    [null, `/invite/${invite}`, 200, "inviteTitle"],
    [null, "/gibt-es-nicht", 404, "notFoundTitle"],
    [A, "/deliveries", 200, "myMessages"],
    [A, `/deliveries/${delivery.id}`, 200, "deliveryTitle", { sender: "Praxis Dr. Weber" }],
    [A, "/reply", 200, "replyTitle"],
    [A, "/secupass/reset", 200, "secupassResetTitle"],
    [W, "/waiting", 200, "waitTitle"],
  ];
}

async function visit(accept: string, lang: Lang): Promise<Map<string, string>> {
  const bodies = new Map<string, string>();
  const browsers = new Map<string | null, Browser>();
  const fresh = await deliver(portal.ctx, `neu-${lang}@patient.example`);
  for (const [who, url, status, h1, values] of [...pages(), [null, `/d/${tokenOf(fresh)}`, 200, "registerTitle"] as const]) {
    let b = browsers.get(who);
    if (!b) {
      b = new Browser(portal.app, accept);
      if (who !== null) expect((await b.login(who)).statusCode).toBe(200);
      browsers.set(who, b);
    }
    const res = await b.get(url);
    expect(res.statusCode, `${lang} ${url}`).toBe(status);
    expect(res.body, `${lang} ${url}`).toContain(`<h1>${html(format(lang, h1, values))}</h1>`);
    bodies.set(url, res.body);
  }
  return bodies;
}

describe("every page in the visitor's language", () => {
  it("Arabic: every page is <html lang=ar dir=rtl> with its Arabic heading", async () => {
    for (const [url, body] of await visit("ar-SY,ar;q=0.9,en;q=0.5", "ar")) expect(body, url).toContain('<html lang="ar" dir="rtl">');
  });

  it("Turkish by a region tag: every page is in Turkish, left to right", async () => {
    const bodies = await visit("tr-TR", "tr");
    for (const [url, body] of bodies) expect(body, url).toContain('<html lang="tr" dir="ltr">');
    expect(bodies.get("/login")).toContain("<h1>Giriş yap</h1>");
    expect(bodies.get("/deliveries")).toContain("2 dosya");
  });

  it("Russian by q-value over English: every page is in Russian, with Russian plurals", async () => {
    const bodies = await visit("en;q=0.5, ru;q=0.9", "ru");
    for (const [url, body] of bodies) expect(body, url).toContain('<html lang="ru" dir="ltr">');
    expect(bodies.get("/")).toContain("<h1>Защищённые сообщения</h1>");
    expect(bodies.get("/deliveries")).toContain("2 файла");
  });

  it("German without Accept-Language, and for a language the portal does not speak", async () => {
    for (const accept of ["", "fr-FR,fr;q=0.9"]) {
      const res = await new Browser(portal.app, accept).get("/login");
      expect(res.body).toContain('<html lang="de" dir="ltr">');
      expect(res.body).toContain("<h1>Anmelden</h1>");
    }
  });
});

describe("the language menu", () => {
  it("is one labelled select with every language by its own name, the current one selected", async () => {
    const body = (await new Browser(portal.app, "uk").get("/")).body;
    const form = /<form method="get" action="\/lang"[\s\S]*?<\/form>/.exec(body)?.[0] ?? "";
    expect(form).toContain('<label for="lang-select" class="sr-only">Мова</label>');
    const options = [...form.matchAll(/<option value="(\w+)" lang="(\w+)"( selected)?>([^<]+)<\/option>/g)].map((m) => [m[1], m[2], m[3] !== undefined, m[4]]);
    expect(options).toEqual([
      ["de", "de", false, "Deutsch"],
      ["en", "en", false, "English"],
      ["tr", "tr", false, "Türkçe"],
      ["ru", "ru", false, "Русский"],
      ["uk", "uk", true, "Українська"],
      ["pl", "pl", false, "Polski"],
      ["ar", "ar", false, "العربية"],
    ]);
    expect(form).toContain('<button type="submit" class="small">Змінити</button>');
  });

  it("before login, it sets a cookie for a year and nothing else; an unknown language changes nothing", async () => {
    const b = new Browser(portal.app, "de-DE");
    const res = await b.get("/lang?code=pl&back=/help");
    expect([res.statusCode, res.headers.location]).toEqual([303, "/help"]);
    expect(cookieOf(res, "lang")).toMatch(/^lang=pl; Max-Age=31536000; Path=\/; HttpOnly; SameSite=Strict$/);
    expect((await b.get("/help")).body).toContain('<html lang="pl" dir="ltr">');
    const unknown = await b.get("/lang?code=xx&back=//evil.example");
    expect([unknown.statusCode, unknown.headers.location, cookieOf(unknown, "lang")]).toEqual([303, "/", undefined]);
  });
});

describe("the account remembers the language", () => {
  it("a choice made before login goes into the account at login; a later choice too, with the CSRF token; a new device gets it back", async () => {
    const b = new Browser(portal.app, "de-DE");
    await b.get("/lang?code=pl&back=/login");
    expect((await b.login(A)).statusCode).toBe(200);
    expect(patientLang(A)).toBe("pl");

    const page = await b.get("/deliveries");
    expect(page.body).toContain('<form method="post" action="/lang" class="lang" id="lang-form">');
    const forged = await b.post("/lang", { code: "ar", back: "/deliveries", _csrf: "falsch" });
    expect(forged.statusCode).toBe(403);
    expect(patientLang(A)).toBe("pl");
    const chosen = await b.post("/lang", { code: "uk", back: "/deliveries", _csrf: b.csrf });
    expect([chosen.statusCode, chosen.headers.location]).toEqual([303, "/deliveries"]);
    expect(patientLang(A)).toBe("uk");
    const audit = readDb(portal.home, (db) => db.prepare("SELECT action, subject, details FROM audit WHERE action = 'patient.language' ORDER BY seq").all());
    expect(audit).toEqual([
      { action: "patient.language", subject: A, details: JSON.stringify({ lang: "pl" }) },
      { action: "patient.language", subject: A, details: JSON.stringify({ lang: "uk" }) },
    ]);

    // Another device, whose browser asks for German: the account's language comes back at login.
    const other = new Browser(portal.app, "de-DE");
    const login = await other.login(A);
    expect(cookieOf(login, "lang")).toMatch(/^lang=uk;/);
    expect((await other.get("/deliveries")).body).toContain("<h1>Мої повідомлення</h1>");

    // The patient's mails follow: Ukrainian only.
    await requestKeyReset(portal.ctx, A);
    const mail = (await outbox(portal.home)).at(-1)!;
    expect(mail.subject).toBe("Задати новий Secu-Pass-Key – Praxis Dr. Weber");
    expect(mail.text).toContain("Добрий день!");
    for (const other of ["Guten Tag", "Hello", "In English"]) expect(mail.text).not.toContain(other);
  });

  it("registration keeps the language the browser asked for, and the first mail is in it", async () => {
    const d = await deliver(portal.ctx, "tuerkan@patient.example");
    const b = new Browser(portal.app, "tr-TR,tr;q=0.9");
    await b.get(`/d/${tokenOf(d)}`);
    const { kdf, recipient, credential } = await newKey("tuerkan@patient.example", "Türkans Secu-Pass-Key");
    const res = await b.json("/register", { token: tokenOf(d), kdf, recipient, credential });
    expect(res.statusCode).toBe(200);
    expect(patientLang("tuerkan@patient.example")).toBe("tr");
    const mail = (await outbox(portal.home)).filter((m) => m.subject?.startsWith("Hesap oluşturuldu")).at(-1)!;
    expect(mail.subject).toBe("Hesap oluşturuldu – Praxis Dr. Weber");
    expect(mail.text).toContain("Merhaba,");
    expect(mail.text).not.toContain("Guten Tag");
  });

  it("a browser in a language the portal does not speak leaves it unknown: German with one line of English", async () => {
    const d = await deliver(portal.ctx, "francoise@patient.example");
    const b = new Browser(portal.app, "fr-FR");
    await b.get(`/d/${tokenOf(d)}`);
    const { kdf, recipient, credential } = await newKey("francoise@patient.example", "Françoises Secu-Pass-Key");
    expect((await b.json("/register", { token: tokenOf(d), kdf, recipient, credential })).statusCode).toBe(200);
    expect(patientLang("francoise@patient.example")).toBeNull();
    const mail = (await outbox(portal.home)).filter((m) => m.subject?.startsWith("Konto angelegt")).at(-1)!;
    expect(mail.subject).toBe("Konto angelegt – Praxis Dr. Weber");
    const english = mail.text!.split("\n").filter((l) => /\b(the|is|and)\b/.test(l));
    expect(english).toEqual([
      "In English: Account created – Praxis Dr. Weber. The portal is also available in English, Türkçe, Русский, Українська, Polski and العربية.",
    ]);
  });
});

describe.runIf(needChromium())("in Chromium on a 360 px phone", () => {
  let chromium: Chromium;
  beforeAll(async () => {
    chromium = await launch();
  });
  afterAll(async () => {
    await chromium.close();
  });

  async function open(locale: string, path: string): Promise<Page> {
    const page = await (await chromium.newContext({ viewport: { width: 360, height: 740 }, locale })).newPage();
    await page.goto(`http://127.0.0.1:${String(portal.port)}${path}`);
    return page;
  }
  const htmlLangDir = async (page: Page): Promise<(string | null)[]> => [await page.locator("html").getAttribute("lang"), await page.locator("html").getAttribute("dir")];
  const box = async (page: Page, selector: string): Promise<{ x: number; y: number; width: number; height: number }> => (await page.locator(selector).boundingBox())!;

  it("Arabic mirrors the layout: the brand and the focused skip link sit on the right, German's on the left", async () => {
    for (const [locale, side] of [["ar", "right"], ["de-DE", "left"]] as const) {
      // The landing page: the login page puts the focus into its first empty field.
      const page = await open(locale, "/");
      expect(await htmlLangDir(page)).toEqual([locale.slice(0, 2), side === "right" ? "rtl" : "ltr"]);
      const brand = await box(page, ".brand");
      await page.keyboard.press("Tab");
      expect(await page.locator(":focus").getAttribute("class")).toBe("skip");
      const skip = await box(page, ".skip");
      for (const b of [brand, skip]) {
        if (side === "right") expect(360 - (b.x + b.width), locale).toBeLessThan(24);
        else expect(b.x, locale).toBeLessThan(24);
      }
      await page.context().close();
    }
  });

  it("the language menu fits one line, has its name for screen readers, and works from the keyboard", async () => {
    const page = await open("ar", "/help");
    const select = page.getByRole("combobox", { name: "اللغة" });
    const button = page.getByRole("button", { name: "تغيير" });
    const [s, b] = [(await select.boundingBox())!, (await button.boundingBox())!];
    expect(Math.abs(s.y - b.y)).toBeLessThan(2);
    expect(Math.max(s.x + s.width, b.x + b.width) - Math.min(s.x, b.x)).toBeLessThan(360);
    expect(Math.min(s.height, b.height)).toBeGreaterThanOrEqual(44);
    await select.focus();
    await select.selectOption("tr");
    await page.keyboard.press("Tab");
    expect(await page.locator(":focus").textContent()).toBe("تغيير");
    // The page is /help before and after: wait for the new page itself, not for the address.
    await page.keyboard.press("Enter");
    await page.waitForSelector('html[lang="tr"]');
    expect(page.url()).toMatch(/\/help$/);
    expect(await htmlLangDir(page)).toEqual(["tr", "ltr"]);
    expect(await page.locator("h1").textContent()).toBe("Yardım: Secu-Pass-Key'iniz");
    await page.context().close();
  });
});

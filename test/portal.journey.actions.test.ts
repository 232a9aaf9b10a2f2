// The patient's journeys counted as issue 16 counts them, in real Chromium at 390×844 against
// the real `praxmail serve` (relay and portal), the real `praxmail approve` and `invite`, and
// the mails in the outbox: each typed field, each tap and each opened mail is one action.
// Every step a patient takes goes through `Journey`, so nothing is done to the page without
// being counted. The counts go into BENCHMARKS.md: `npm run bench` runs this file with
// PRAXMAIL_JOURNEY_OUT set and writes its figures from that file.
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { simpleParser } from "mailparser";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, outbox, praxmail, tempDir } from "./helpers/cli.js";
import { submit } from "./helpers/relay.js";
import { freePort, startServe, type Served } from "./helpers/serve.js";

const FIXTURE = resolve(import.meta.dirname, "fixtures/mail/01-level3-subject-tag.eml");
const PHONE = { width: 390, height: 844 };
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** One journey's count, as BENCHMARKS.md shows it. */
export interface Counted {
  readonly journey: string;
  readonly actions: number;
  readonly typed: number;
  readonly waits: number;
  readonly target: number;
  readonly steps: readonly string[];
}

/** The patient's hands: every action goes through here and is counted. */
class Journey {
  actions = 0;
  typed = 0;
  waits = 0;
  readonly steps: string[] = [];
  constructor(
    readonly page: Page,
    private readonly home: string,
    private readonly to: string,
  ) {}

  private count(step: string): void {
    this.actions++;
    this.steps.push(step);
  }

  /** Opens the newest mail to the patient whose subject matches (`what` names it in the steps); @returns its first portal link. */
  async openMail(subject: RegExp, what: string): Promise<string> {
    this.count(`open ${what}`);
    const mine = (await outbox(this.home)).filter((m) => m.to && !Array.isArray(m.to) && m.to.value[0]?.address === this.to);
    const mail = mine.filter((m) => subject.test(m.subject ?? "")).at(-1);
    const link = /(http:\/\/localhost:\d+\/\S+)/.exec(mail?.text ?? "")?.[1];
    if (!link) throw new Error(`no portal link in a mail to ${this.to} matching ${String(subject)}; its mails: ${JSON.stringify(mine.map((m) => [m.subject, m.text?.slice(0, 300)]))}`);
    return link;
  }

  /** Scans a QR code with the phone's camera: the browser opens its link. */
  async scan(url: string): Promise<void> {
    this.count("scan QR code");
    await this.page.goto(url);
  }

  /** Taps a link in a mail: the browser opens it in a new page (nothing of an earlier page's memory survives). */
  async tapLink(url: string): Promise<void> {
    this.count(`tap link ${new URL(url).pathname.replace(/\/d\/[\w-]+/, "/d/…")}`);
    await this.page.goto(url);
  }

  async type(field: Locator, text: string, what: string): Promise<void> {
    this.count(`type ${what}`);
    this.typed++;
    await field.fill(text);
  }

  async tap(target: Locator, what: string): Promise<void> {
    this.count(`tap ${what}`);
    await target.click();
  }

  /** Taps Speichern on the first file. @returns The saved bytes. */
  async save(): Promise<Buffer> {
    this.count("tap Speichern");
    const [dl] = await Promise.all([this.page.waitForEvent("download", { timeout: 60_000 }), this.page.getByRole("button", { name: "Speichern" }).first().click()]);
    return readFile(await dl.path());
  }

  /** Waits for someone else (the practice); not an action of the patient's. */
  async waitFor(what: string, run: () => Promise<void>): Promise<void> {
    this.waits++;
    this.steps.push(`wait: ${what}`);
    await run();
  }

  result(journey: string, target: number): Counted {
    return { journey, actions: this.actions, typed: this.typed, waits: this.waits, target, steps: this.steps };
  }
}

describe.runIf(needChromium())("the patient's journeys, counted (Chromium, 390×844)", () => {
  let dir: string;
  let home: string;
  let served: Served;
  let browser: Browser;
  let base: string;
  let attachment: Buffer;
  let mailNo = 0;
  const counted: Counted[] = [];

  /** The fixture's level-3 mail through the relay to `to`, with a fresh Message-ID. */
  const relayLevel3 = async (to: string): Promise<void> => {
    // The fixture is to Anna; its To: names the patient it goes to.
    const raw = (await readFile(FIXTURE, "latin1")).replace("<lab-3@", `<lab-3-j${++mailNo}@`).replaceAll("anna.schaefer@patient.example", to);
    const r = await submit(served.smtpPort, "praxis@praxis-weber.example", [to], Buffer.from(raw, "latin1"));
    expect(r.code).toBe(250);
  };

  /** A phone: a fresh browser context at 390×844 in German, with a virtual platform authenticator with PRF (a phone's). */
  const phone = async (): Promise<{ context: BrowserContext; page: Page }> => {
    const context = await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true, locale: "de-DE", acceptDownloads: true });
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send("WebAuthn.enable", { enableUI: false });
    await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true, hasPrf: true },
    });
    return { context, page };
  };

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    const port = await freePort();
    // localhost, not 127.0.0.1: WebAuthn refuses an IP address as the relying party.
    base = `http://localhost:${port}`;
    await initHome(home, ["--portal-url", base]);
    served = await startServe(home, port);
    attachment = (await simpleParser(await readFile(FIXTURE))).attachments[0]!.content;
    browser = await launch();
  });
  afterAll(async () => {
    if (process.env.PRAXMAIL_JOURNEY_OUT) await writeFile(process.env.PRAXMAIL_JOURNEY_OUT, JSON.stringify(counted, null, 2));
    await browser.close();
    await served.stop();
    await cleanup(dir);
  });

  const ANNA = "anna.schaefer@patient.example";
  const ANNA_KEY = "Mein geheimer Secu-Pass-Key – Grüße";
  let annaPhone: { context: BrowserContext; page: Page };

  it("approval path, first delivery: ≤ 10 actions and one wait", async () => {
    annaPhone = await phone();
    const j = new Journey(annaPhone.page, home, ANNA);
    const page = annaPhone.page;
    await relayLevel3(ANNA);
    await j.tapLink(await j.openMail(/Laborbefund|Nachricht/, "the delivery mail"));
    await page.getByRole("heading", { name: "Konto anlegen" }).waitFor();
    await j.type(page.getByLabel("Secu-Pass-Key", { exact: true }), ANNA_KEY, "Secu-Pass-Key");
    await j.tap(page.getByRole("button", { name: "Konto anlegen" }), "Konto anlegen");
    await page.locator("#safety-code").waitFor({ timeout: 60_000 });
    await j.waitFor("the practice compares the safety code and approves", async () => {
      const r = await praxmail(["approve", ANNA, "--yes", "--home", home]);
      expect(r.code, r.stderr).toBe(0);
    });
    // Hours later (the session has ended): the release mail, in a new page.
    await annaPhone.context.clearCookies();
    await page.goto("about:blank");
    await j.tapLink(await j.openMail(/freigegeben/, "the release mail"));
    await j.type(page.getByLabel("Secu-Pass-Key"), ANNA_KEY, "Secu-Pass-Key");
    await j.tap(page.getByRole("button", { name: "Anmelden", exact: true }), "Anmelden");
    await page.getByRole("heading", { name: /Nachricht von/ }).waitFor({ timeout: 60_000 });
    expect(sha(await j.save())).toBe(sha(attachment));
    counted.push(j.result("approval path, first delivery", 10));
    expect(j.waits).toBe(1);
    expect(j.actions, j.steps.join("\n")).toBeLessThanOrEqual(10);
  }, 240_000);

  it("remembering the phone: one tap on „Auf diesem Gerät merken“ after an unlock", async () => {
    const page = annaPhone.page;
    const j = new Journey(page, home, ANNA);
    await j.tap(page.getByRole("button", { name: "Auf diesem Gerät merken" }), "Auf diesem Gerät merken");
    await page.getByText(/Gemerkt\. Beim nächsten Besuch/).waitFor({ timeout: 30_000 });
    counted.push(j.result("remember this phone (once, optional)", 1));
    expect(j.actions).toBe(1);
    await page.getByRole("button", { name: "Abmelden" }).click();
    await page.waitForURL(/\/login/);
  }, 120_000);

  it("later delivery on the known phone (passkey): ≤ 4 actions, nothing typed", async () => {
    const page = annaPhone.page;
    const j = new Journey(page, home, ANNA);
    await relayLevel3(ANNA);
    await page.goto("about:blank");
    await j.tapLink(await j.openMail(/Laborbefund|Nachricht/, "the delivery mail"));
    await j.tap(page.getByRole("button", { name: "Mit Passkey anmelden" }), "Mit Passkey anmelden");
    await page.getByRole("heading", { name: /Nachricht von/ }).waitFor({ timeout: 60_000 });
    expect(sha(await j.save())).toBe(sha(attachment));
    counted.push(j.result("later delivery, known phone (passkey)", 4));
    expect(j.typed).toBe(0);
    expect(j.actions, j.steps.join("\n")).toBeLessThanOrEqual(4);
    await annaPhone.context.close();
  }, 180_000);

  it("later delivery on a new device: ≤ 5 actions", async () => {
    const { context, page } = await phone();
    const j = new Journey(page, home, ANNA);
    await relayLevel3(ANNA);
    await j.tapLink(await j.openMail(/Laborbefund|Nachricht/, "the delivery mail"));
    // The link names its recipient: the address is filled in, only the key is typed.
    expect(await page.getByLabel("E-Mail-Adresse").inputValue()).toBe(ANNA);
    await j.type(page.getByLabel("Secu-Pass-Key"), ANNA_KEY, "Secu-Pass-Key");
    await j.tap(page.getByRole("button", { name: "Anmelden", exact: true }), "Anmelden");
    await page.getByRole("heading", { name: /Nachricht von/ }).waitFor({ timeout: 60_000 });
    expect(sha(await j.save())).toBe(sha(attachment));
    counted.push(j.result("later delivery, new device", 5));
    expect(j.actions, j.steps.join("\n")).toBeLessThanOrEqual(5);
    await context.close();
  }, 180_000);

  it("invite path, first delivery: ≤ 8 actions and no wait", async () => {
    const BEN = "ben.yilmaz@patient.example";
    const BEN_KEY = "Bens eigener Secu-Pass-Key 2026";
    // At the counter, after reception checked who Ben is: the QR code of `praxmail invite`.
    const inv = await praxmail(["invite", BEN, "--json", "--home", home]);
    expect(inv.code, inv.stderr).toBe(0);
    const { scanLink, code } = JSON.parse(inv.stdout) as { scanLink: string; code: string };
    expect(scanLink).toMatch(/\/invite\/i_\w+\?email=ben\.yilmaz%40patient\.example#code=\w{4}-\w{4}-\w{4}$/);
    const { context, page } = await phone();
    const j = new Journey(page, home, BEN);
    j.steps.push("(at the counter)");
    await j.scan(scanLink);
    await page.getByRole("heading", { name: /Einladung|Konto anlegen/ }).waitFor();
    // The address and the code come with the QR code: only the key is typed.
    expect([await page.getByLabel("E-Mail-Adresse").inputValue(), await page.locator("#code").inputValue()]).toEqual([BEN, code]);
    expect(page.url()).not.toContain("code=");
    await j.type(page.getByLabel("Secu-Pass-Key", { exact: true }), BEN_KEY, "Secu-Pass-Key");
    await j.tap(page.getByRole("button", { name: "Konto anlegen" }), "Konto anlegen");
    await page.getByRole("heading", { name: "Meine Nachrichten" }).waitFor({ timeout: 60_000 });
    // Days later (the session has ended): the practice sends the first delivery.
    await context.clearCookies();
    await page.goto("about:blank");
    j.steps.push("(days later)");
    await relayLevel3(BEN);
    await j.tapLink(await j.openMail(/Laborbefund|Nachricht/, "the delivery mail"));
    expect(await page.getByLabel("E-Mail-Adresse").inputValue()).toBe(BEN);
    await j.type(page.getByLabel("Secu-Pass-Key"), BEN_KEY, "Secu-Pass-Key");
    await j.tap(page.getByRole("button", { name: "Anmelden", exact: true }), "Anmelden");
    await page.getByRole("heading", { name: /Nachricht von/ }).waitFor({ timeout: 60_000 });
    expect(sha(await j.save())).toBe(sha(attachment));
    counted.push(j.result("invite path, first delivery", 8));
    expect(j.waits).toBe(0);
    expect(j.actions, j.steps.join("\n")).toBeLessThanOrEqual(8);
    await context.close();
  }, 180_000);
});

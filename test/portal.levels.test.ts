// Levels 1, 2 and 4 in real Chromium, opening a PDF in the browser, keyboard-only use and
// the narrowest phone layout.
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, praxmail, tempDir } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";
import { freePort, startServe, type Served } from "./helpers/serve.js";

const PATIENT = "erika.wolf@patient.example";
const SECU_PASS = "Erikas Secu-Pass-Key 2026";
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

describe.runIf(needChromium())("levels and access in the browser", () => {
  let dir: string;
  let home: string;
  let served: Served;
  let browser: Browser;
  let pdf: Buffer;
  let pdfPath: string;

  const send = async (level: number, extra: string[] = []): Promise<string> => {
    const r = await praxmail(["send", "--home", home, "--to", PATIENT, "--level", String(level), ...extra, pdfPath, "--json"]);
    expect(r.code).toBe(0);
    return (JSON.parse(r.stdout) as { deliveries: { link: string }[] }).deliveries[0]!.link;
  };

  const newPage = async (width = 1280, height = 900): Promise<Page> => {
    const context = await browser.newContext({ viewport: { width, height }, acceptDownloads: true, locale: "de-DE" });
    return context.newPage();
  };

  const save = async (page: Page): Promise<Buffer> => {
    const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Speichern" }).first().click()]);
    return readFile(await dl.path());
  };

  const login = async (page: Page): Promise<void> => {
    await page.getByLabel("E-Mail-Adresse").fill(PATIENT);
    await page.getByLabel("Secu-Pass-Key").fill(SECU_PASS);
    await page.getByRole("button", { name: "Anmelden", exact: true }).click();
  };

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    const port = await freePort();
    await initHome(home, ["--portal-url", `http://127.0.0.1:${port}`]);
    pdf = Buffer.concat([Buffer.from("%PDF-1.4\n"), Buffer.alloc(150_000, 0x41), Buffer.from("\n%%EOF\n")]);
    pdfPath = join(dir, "Befund.pdf");
    await writeFile(pdfPath, pdf);
    await registerThroughCore(home, PATIENT, SECU_PASS);
    expect((await praxmail(["approve", PATIENT, "--yes", "--home", home])).code).toBe(0);
    served = await startServe(home, port);
    browser = await launch();
  });
  afterAll(async () => {
    await browser.close();
    await served.stop();
    await cleanup(dir);
  });

  it("level 1: the link alone opens the file; the key rides in the #fragment", async () => {
    const link = await send(1);
    expect(link).toMatch(/#k=AGE-SECRET-KEY-PQ-1/);
    const page = await newPage();
    const seen: string[] = [];
    page.on("request", (r) => seen.push(r.url()));
    await page.goto(link);
    await page.getByRole("heading", { name: "Nachricht von Praxis Dr. Weber" }).waitFor();
    expect(sha(await save(page))).toBe(sha(pdf));
    expect(seen.some((u) => u.includes("AGE-SECRET-KEY"))).toBe(false);
  });

  it("level 1 without the fragment says the key is missing", async () => {
    const link = (await send(1)).replace(/#.*$/, "");
    const page = await newPage();
    await page.goto(link);
    await page.getByRole("button", { name: "Speichern" }).first().click();
    await page.getByText("Der Schlüssel fehlt. Bitte öffnen Sie den vollständigen Link aus Ihrer E-Mail.").waitFor();
  });

  it("level 2: login first, and the #fragment survives the way through the login", async () => {
    const link = await send(2);
    const page = await newPage();
    await page.goto(link);
    await page.getByRole("heading", { name: "Anmelden" }).waitFor();
    await login(page);
    await page.getByRole("heading", { name: "Nachricht von Praxis Dr. Weber" }).waitFor();
    expect(sha(await save(page))).toBe(sha(pdf));
    expect(await page.evaluate("sessionStorage.length")).toBe(0);
  });

  it("level 4: the message is shown as text, never as HTML, with the real file names below it", async () => {
    const message = "Liebe Frau Wolf,\n<b>nicht fett</b> <img src=x onerror=\"document.title='pwned'\">\nIhr Befund liegt bei.";
    const link = await send(4, ["--subject", "Befundbesprechung", "--message", message]);
    const page = await newPage();
    await page.goto(link);
    await login(page);
    await page.getByRole("heading", { name: "Nachricht von Praxis Dr. Weber" }).waitFor();
    // A reload forgets the login's U: the page shows neutral names until the key is typed.
    await page.reload();
    await expect.poll(() => page.locator(".files .name").first().textContent()).toBe("Anhang-1.pdf");
    await page.getByLabel("Secu-Pass-Key").fill(SECU_PASS);
    await page.getByRole("button", { name: "Entsperren" }).click();
    await page.locator("#message").waitFor({ state: "visible", timeout: 60_000 });
    expect(await page.locator("#message-subject").textContent()).toBe("Befundbesprechung");
    expect(await page.locator("#message-text").textContent()).toBe(message);
    expect(await page.locator("#message-text b").count()).toBe(0);
    expect(await page.locator("#message-text img").count()).toBe(0);
    expect(await page.title()).not.toBe("pwned");
    expect(await page.locator(".files .name").first().textContent()).toBe("Befund.pdf");
    const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Speichern" }).first().click()]);
    expect(dl.suggestedFilename()).toBe("Befund.pdf");
    expect(sha(await readFile(await dl.path()))).toBe(sha(pdf));
  });

  it("opens a PDF in a new tab of the browser's own viewer", async () => {
    const page = await newPage();
    await page.goto(await send(1));
    const [popup] = await Promise.all([page.context().waitForEvent("page"), page.getByRole("button", { name: "Öffnen" }).first().click()]);
    // The tab opens at the tap and shows the file once it is decrypted.
    await popup.waitForURL(/^blob:http:\/\/127\.0\.0\.1:\d+\//);
  });

  it("can be used with the keyboard alone, and fits a 360 px screen", async () => {
    const page = await newPage(360, 740);
    await page.goto(`http://127.0.0.1:${served.httpPort}/login`);
    expect(await page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(360);
    // The focus starts in the e-mail field (autofocus); Tab order: skip link, language, e-mail, Secu-Pass-Key, button.
    for (let i = 0; i < 10 && (await page.evaluate("document.activeElement?.id")) !== "email"; i++) await page.keyboard.press("Tab");
    expect(await page.evaluate("document.activeElement?.id")).toBe("email");
    const outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle");
    expect(outline).not.toBe("none");
    await page.keyboard.type(PATIENT);
    await page.keyboard.press("Tab");
    await page.keyboard.type(SECU_PASS);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Meine Nachrichten" }).waitFor();
    expect(await page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(360);
  });
});

// A hostile attachment name all the way to the patient: a level-3 mail through the relay of
// the real `praxmail serve`, opened in real Chromium. The page shows the cleaned name, the
// encrypted file is served without a name of its own, and the saved file gets the clean name.
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, outbox, praxmail, tempDir } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";
import { befundMail, submit } from "./helpers/relay.js";
import { freePort, startServe, type Served } from "./helpers/serve.js";

const PATIENT = "erika.wolf@patient.example";
const SECU_PASS = "Erikas Secu-Pass-Key 2026";
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

describe.runIf(needChromium())("a hostile attachment name in the portal", () => {
  let dir: string;
  let home: string;
  let served: Served;
  let browser: Browser;

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    const port = await freePort();
    await initHome(home, ["--portal-url", `http://127.0.0.1:${port}`]);
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

  it("level 3 through the relay: the page and the saved file carry the clean name, with .exe visible at the end", async () => {
    const pdf = randomBytes(4000);
    const raw = befundMail({ from: "praxis@praxis-weber.example", to: PATIENT, messageId: "fn1@praxis-weber.example", attachment: pdf, filename: "Be\u200Bfund\u200F\u202Efdp.exe" });
    expect((await submit(served.smtpPort, "praxis@praxis-weber.example", [PATIENT], raw)).text).toBe("250 2.0.0 accepted, 1 encrypted");
    const mail = (await outbox(home)).find((m) => m.to && JSON.stringify(m.to).includes(PATIENT) && /\/d\//.test(m.text ?? ""));
    expect(mail?.text).toContain("Befundfdp.exe (4 KB)");
    const link = /http:\/\/127\.0\.0\.1:\d+\/d\/[\w-]{43}/.exec(mail?.text ?? "")![0];

    const context = await browser.newContext({ acceptDownloads: true, locale: "de-DE" });
    const page = await context.newPage();
    const dispositions: string[] = [];
    page.on("response", (r) => {
      if (/\/files\//.test(r.url())) dispositions.push(r.headers()["content-disposition"] ?? "");
    });
    await page.goto(link);
    await page.getByLabel("E-Mail-Adresse").fill(PATIENT);
    await page.getByLabel("Secu-Pass-Key").fill(SECU_PASS);
    await page.getByRole("button", { name: "Anmelden", exact: true }).click();
    await page.getByRole("heading", { name: "Nachricht von Praxis Dr. Weber" }).waitFor();
    expect(await page.locator(".files .name").first().textContent()).toBe("Befundfdp.exe");
    // The login's key unlocks the page by itself: Speichern saves at once.
    const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Speichern" }).first().click()]);
    expect(dl.suggestedFilename()).toBe("Befundfdp.exe");
    expect(sha(await readFile(await dl.path()))).toBe(sha(pdf));
    expect(dispositions).toEqual(["attachment"]);
    await context.close();
  });
});

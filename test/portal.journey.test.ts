// The patient's whole first-time journey in real Chromium, against the real `praxmail serve`
// and the real `praxmail approve`: a level-3 mail through the relay, the link from the
// outbox, registration, the Secu-Pass-Key, the practice's approval, login and download.
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { simpleParser } from "mailparser";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deriveSecuPass, parseKdfParams } from "../src/crypto/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, outbox, praxmail, tempDir, walk } from "./helpers/cli.js";
import { submit } from "./helpers/relay.js";
import { freePort, startServe, type Served } from "./helpers/serve.js";

const PATIENT = "anna.schaefer@patient.example";
const SECU_PASS = "Mein geheimer Secu-Pass-Key – Grüße";
const SHOTS = resolve(import.meta.dirname, "../test-results");
const FIXTURE = resolve(import.meta.dirname, "fixtures/mail/01-level3-subject-tag.eml");

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

interface Recorded {
  url: string;
  headers: string;
  body: string;
}

describe.runIf(needChromium()).each([
  { name: "desktop", viewport: { width: 1280, height: 900 } },
  { name: "phone", viewport: { width: 390, height: 844 } },
])("first-time journey ($name)", ({ name, viewport }) => {
  let dir: string;
  let home: string;
  let served: Served;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let base: string;
  const requests: Recorded[] = [];
  let shot = 0;
  let attachment: Buffer;

  const screenshot = async (step: string): Promise<void> => {
    await page.screenshot({ path: join(SHOTS, `journey-${name}-${String(++shot).padStart(2, "0")}-${step}.png`), fullPage: true });
  };

  /** The link in the newest mail to the patient whose subject matches. */
  const links = new Set<string>();
  const linkFrom = async (subject: RegExp): Promise<string> => {
    const mail = (await outbox(home)).filter((m) => subject.test(m.subject ?? "")).at(-1);
    const link = /(http:\/\/127\.0\.0\.1:\d+\/(?:d\/[\w-]{43}|login\S*))/.exec(mail?.text ?? "")?.[1];
    if (!link) throw new Error(`no link in a mail matching ${String(subject)}`);
    links.add(link);
    return link;
  };

  /** Sends the fixture through the relay with a fresh Message-ID. */
  const relayLevel3 = async (id: string): Promise<void> => {
    const raw = (await readFile(FIXTURE, "latin1")).replace("<lab-3@", `<lab-3-${id}@`);
    const r = await submit(served.smtpPort, "praxis@praxis-weber.example", [PATIENT], Buffer.from(raw, "latin1"));
    expect(r.code).toBe(250);
  };

  /** On a delivery page: types the Secu-Pass-Key and taps Speichern, which unlocks and saves the file in the same tap. */
  const download = async (): Promise<Buffer> => {
    await page.getByLabel("Secu-Pass-Key").fill(SECU_PASS);
    const [dl] = await Promise.all([page.waitForEvent("download", { timeout: 60_000 }), page.getByRole("button", { name: "Speichern" }).first().click()]);
    expect(dl.suggestedFilename()).toBe("Laborbefund.pdf");
    return readFile(await dl.path());
  };

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true });
    dir = await tempDir();
    home = join(dir, "home");
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await initHome(home, ["--portal-url", base]);
    served = await startServe(home, port);
    attachment = (await simpleParser(await readFile(FIXTURE))).attachments[0]!.content;
    browser = await launch();
    context = await browser.newContext({ viewport, acceptDownloads: true, locale: "de-DE" });
    page = await context.newPage();
    page.on("request", (req) => {
      requests.push({ url: req.url(), headers: JSON.stringify(req.headers()), body: req.postData() ?? "" });
    });
  });
  afterAll(async () => {
    await browser.close();
    await served.stop();
    await cleanup(dir);
  });

  it("registers through the link with the Secu-Pass-Key in one step and sees the safety code", async () => {
    await relayLevel3("first");
    await page.goto(await linkFrom(/Laborbefund/));
    await page.getByRole("heading", { name: "Konto anlegen" }).waitFor();
    expect(await page.getByLabel("E-Mail-Adresse").inputValue()).toBe(PATIENT);
    // One field for the key, with a show toggle to check it.
    expect(await page.locator('input[type="password"]').count()).toBe(1);
    await page.getByLabel("Secu-Pass-Key", { exact: true }).fill("Probe");
    await page.getByRole("button", { name: "Anzeigen" }).click();
    expect(await page.locator("#secupass").getAttribute("type")).toBe("text");
    await page.getByRole("button", { name: "Anzeigen" }).click();
    await screenshot("register");
    // A key under 10 characters is refused in the browser, before any scrypt or request:
    // by the form's own validation, and by the page's script where that is switched off.
    const sentBefore = requests.length;
    await page.getByLabel("Secu-Pass-Key", { exact: true }).fill("kurz12345");
    await page.getByRole("button", { name: "Konto anlegen" }).click();
    expect(await page.locator("#secupass").evaluate((el) => (el as unknown as { validity: { tooShort: boolean } }).validity.tooShort)).toBe(true);
    await page.locator("#newkey-form").evaluate((el) => {
      (el as unknown as { noValidate: boolean }).noValidate = true;
    });
    await page.getByRole("button", { name: "Konto anlegen" }).click();
    await expect.poll(async () => page.locator("#secupass-error").textContent()).toBe("Der Secu-Pass-Key muss mindestens 10 Zeichen haben.");
    expect(await page.locator("#secupass-progress").isHidden()).toBe(true);
    expect(requests.slice(sentBefore)).toEqual([]);
    await page.getByLabel("Secu-Pass-Key", { exact: true }).fill(SECU_PASS);
    await page.getByRole("button", { name: "Konto anlegen" }).click();

    await page.getByRole("heading", { name: "Fast geschafft: Ihre Praxis schaltet Sie frei" }).waitFor({ timeout: 60_000 });
    const code = (await page.locator("#safety-code").textContent())?.trim() ?? "";
    expect(code).toMatch(/^\d{4} \d{4} \d{4}$/);
    await screenshot("waiting");

    await expect.poll(async () => (await outbox(home)).some((m) => m.subject === "Konto angelegt – Praxis Dr. Weber")).toBe(true);
    const mails = await outbox(home);
    const activated = mails.find((m) => m.subject === "Secu-Pass aktiviert – Praxis Dr. Weber");
    expect(activated?.text).toContain(code);
    const practice = mails.find((m) => m.subject === `Freigabe erforderlich: ${PATIENT}`);
    expect(practice?.to).toMatchObject({ value: [{ address: "praxis@praxis-weber.example" }] });
    expect(practice?.text).toContain(`Sicherheitscode: ${code}`);
    expect(practice?.text).toContain(`praxmail approve ${PATIENT}`);
  });

  it("after `praxmail approve --yes`, logs in from the release mail and downloads the file byte for byte", async () => {
    const approve = await praxmail(["approve", PATIENT, "--yes", "--home", home]);
    expect(approve.stderr).not.toContain("error");
    expect(approve.code).toBe(0);
    await page.getByRole("button", { name: "Abmelden" }).click();
    await page.getByText("Sie sind abgemeldet.").waitFor();

    await page.goto(await linkFrom(/^Zustellung freigegeben/));
    await page.getByLabel("E-Mail-Adresse").fill(PATIENT);
    await page.getByLabel("Secu-Pass-Key").fill(SECU_PASS);
    await screenshot("login");
    await page.getByRole("button", { name: "Anmelden", exact: true }).click();
    // The release mail names its one delivery: the login leads there, and its key unlocks it.
    await page.getByRole("heading", { name: "Nachricht von Praxis Dr. Weber" }).waitFor({ timeout: 60_000 });
    await expect.poll(() => page.getByText("Laborbefund.pdf").isVisible()).toBe(true);
    await screenshot("delivery");
    expect(await page.locator("#unlock-form").isHidden()).toBe(true);
    const [first] = await Promise.all([page.waitForEvent("download", { timeout: 60_000 }), page.getByRole("button", { name: "Speichern" }).first().click()]);
    expect(sha(await readFile(await first.path()))).toBe(sha(attachment));

    // A reload forgets U. A wrong key first: a clear message, and no lock-out.
    await page.reload();
    await page.getByLabel("Secu-Pass-Key").fill("falscher Schlüssel 123");
    await page.getByRole("button", { name: "Entsperren" }).click();
    await page.getByText(/Der Secu-Pass-Key ist falsch/).waitFor({ timeout: 60_000 });
    await screenshot("wrong-key");
    const bytes = await download();
    await screenshot("downloaded");
    expect(sha(bytes)).toBe(sha(attachment));

    const list = JSON.parse((await praxmail(["list", "deliveries", "--json", "--home", home])).stdout) as { status: string; downloadedAt: string | null }[];
    expect(list[0]).toMatchObject({ status: "downloaded" });
    expect(list[0]!.downloadedAt).not.toBeNull();
  });

  it("a second delivery to the same patient needs no approval", async () => {
    await relayLevel3("second");
    const list = JSON.parse((await praxmail(["list", "deliveries", "--json", "--home", home])).stdout) as { status: string }[];
    expect(list.at(-1)!.status).toBe("ready");
    await page.goto(await linkFrom(/Laborbefund/));
    await page.getByRole("heading", { name: "Nachricht von Praxis Dr. Weber" }).waitFor();
    expect(sha(await download())).toBe(sha(attachment));
  });

  it("never sent the Secu-Pass-Key or a secret key in any request, stored neither under home (nor the login credential, a token or a session id), and logged no secret, token or session", async () => {
    const db = new Database(join(home, "praxmail.db"), { readonly: true });
    const kdf = (db.prepare("SELECT kdf FROM patients WHERE email = ?").get(PATIENT) as { kdf: string }).kdf;
    db.close();
    const { identity, credential } = await deriveSecuPass(SECU_PASS, parseKdfParams(JSON.parse(kdf)), PATIENT);
    const needles = [SECU_PASS, encodeURIComponent(SECU_PASS), JSON.stringify(SECU_PASS).slice(1, -1), identity, "AGE-SECRET-KEY"];
    expect(requests.length).toBeGreaterThan(10);
    for (const r of requests) {
      for (const n of needles) {
        expect(r.url.includes(n), `${n.slice(0, 12)}… in ${r.url}`).toBe(false);
        expect(r.headers.includes(n), `${n.slice(0, 12)}… in headers of ${r.url}`).toBe(false);
        expect(r.body.includes(n), `${n.slice(0, 12)}… in the body to ${r.url}`).toBe(false);
      }
    }
    // The server's logs of the whole journey: JSON lines, and no secret in any of them.
    const logs = served.stdout() + served.stderr();
    const lines = served.stdout().split("\n").filter(Boolean);
    expect(lines.length).toBeGreaterThan(10);
    for (const line of lines) expect(() => JSON.parse(line) as unknown, line.slice(0, 80)).not.toThrow();
    const tokens = [...links].flatMap((l) => /\/d\/([\w-]{43})$/.exec(l)?.[1] ?? []);
    expect(tokens.length).toBeGreaterThan(0);
    const cookies = (await context.cookies()).map((c) => c.value).filter((v) => v.length >= 16);
    expect(cookies.length).toBeGreaterThan(0);
    for (const n of [SECU_PASS, identity, "AGE-SECRET-KEY", ...tokens, ...cookies]) {
      expect(logs.includes(n), `${n.slice(0, 12)}… in the server's logs`).toBe(false);
    }
    for (const f of await walk(home)) {
      const bytes = await readFile(f);
      for (const n of [Buffer.from(SECU_PASS), Buffer.from(identity), Buffer.from(credential), Buffer.from(credential, "base64url")]) {
        expect(bytes.includes(n), `${n.toString("hex").slice(0, 12)}… in ${f}`).toBe(false);
      }
      // Link tokens and session ids are stored only as hashes; the outbox holds the mails
      // that carry the links (outbox mode, see SECURITY.md).
      if (!f.startsWith(join(home, "outbox"))) for (const n of [...tokens, ...cookies]) expect(bytes.includes(Buffer.from(n)), `${n.slice(0, 12)}… in ${f}`).toBe(false);
      expect(bytes.includes(attachment.subarray(0, 64)), `attachment bytes in ${f}`).toBe(false);
    }
  });
});

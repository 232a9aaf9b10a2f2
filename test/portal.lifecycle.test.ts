// The way back, in real Chromium against the real `praxmail serve` and CLI: a forgotten
// Secu-Pass-Key replaced through a mailed link, a new Secu-Pass-Key while logged in, neither
// losing older deliveries, an invite from reception in one step, and a secure reply with a
// 5 MiB file read back with `praxmail receive`.
import { createHash, randomBytes } from "node:crypto";
import { readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, initHome, outbox, praxmail, tempDir, walk } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";
import { freePort, startServe, type Served } from "./helpers/serve.js";

const PATIENT = "jan.mueller@patient.example";
const OLD_KEY = "Jans alter Secu-Pass-Key";
const MAIL_KEY = "Jans Secu-Pass-Key aus dem Link";
const NEW_KEY = "Jans neuer Secu-Pass-Key";
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

describe.runIf(needChromium())("the way back", () => {
  let dir: string;
  let home: string;
  let served: Served;
  let browser: Browser;
  let base: string;
  let pdf: Buffer;
  let pdfPath: string;

  const page = async (): Promise<Page> => (await browser.newContext({ acceptDownloads: true, locale: "de-DE" })).newPage();
  const send = async (to: string): Promise<{ link: string; id: string; status: string }> => {
    const r = await praxmail(["send", "--home", home, "--to", to, pdfPath, "--json"]);
    expect(r.code).toBe(0);
    return (JSON.parse(r.stdout) as { deliveries: { link: string; id: string; status: string }[] }).deliveries[0]!;
  };
  const login = async (p: Page, email: string, key: string): Promise<void> => {
    await p.goto(`${base}/login`);
    await p.getByLabel("E-Mail-Adresse").fill(email);
    await p.getByLabel("Secu-Pass-Key").fill(key);
    await p.getByRole("button", { name: "Anmelden", exact: true }).click();
  };
  const unlockAndSave = async (p: Page, key: string): Promise<Buffer> => {
    await p.getByLabel("Secu-Pass-Key").fill(key);
    await p.getByRole("button", { name: "Entsperren" }).click();
    await p.getByText("Fertig.").waitFor({ timeout: 60_000 });
    const [dl] = await Promise.all([p.waitForEvent("download"), p.getByRole("button", { name: "Speichern" }).first().click()]);
    return readFile(await dl.path());
  };
  const setKey = async (p: Page, key: string, submit: string): Promise<void> => {
    await p.getByLabel("Secu-Pass-Key", { exact: true }).fill(key);
    await p.getByRole("button", { name: submit }).click();
  };

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await initHome(home, ["--portal-url", base]);
    pdf = Buffer.concat([Buffer.from("%PDF-1.4\n"), randomBytes(120_000)]);
    pdfPath = join(dir, "Befund.pdf");
    await writeFile(pdfPath, pdf);
    await registerThroughCore(home, PATIENT, OLD_KEY);
    expect((await praxmail(["approve", PATIENT, "--yes", "--home", home])).code).toBe(0);
    served = await startServe(home, port);
    browser = await launch();
  });
  afterAll(async () => {
    await browser.close();
    await served.stop();
    await cleanup(dir);
  });

  it("Secu-Pass-Key forgotten: a one-time link from the login page sets a new key; after approval a delivery sent before opens with it, byte for byte", async () => {
    const older = await send(PATIENT);
    expect(older.status).toBe("ready");
    const p = await page();
    await p.goto(`${base}/login`);
    await p.getByLabel("E-Mail-Adresse").fill(PATIENT);
    await p.getByRole("link", { name: "Secu-Pass-Key vergessen?" }).click();
    // The address typed on the login page comes along: it is not typed twice. (The login
    // page has an address field too: read the one on the page the link leads to.)
    await p.getByRole("heading", { name: "Secu-Pass-Key vergessen" }).waitFor();
    expect(await p.getByLabel("E-Mail-Adresse").inputValue()).toBe(PATIENT);
    await p.getByRole("button", { name: "Link senden" }).click();
    await p.getByText("Wenn es für diese Adresse ein Konto gibt, haben wir eine E-Mail mit einem Link geschickt.").waitFor();
    // The mail goes out from a queue after the answer.
    await expect.poll(async () => (await outbox(home)).filter((m) => m.subject?.startsWith("Neuen Secu-Pass-Key festlegen")).length, { timeout: 10_000 }).toBe(1);
    const mail = (await outbox(home)).find((m) => m.subject?.startsWith("Neuen Secu-Pass-Key festlegen"));
    expect(mail?.text).toContain("Es geht keine Nachricht verloren.");
    const link = /(http:\/\/127\.0\.0\.1:\d+\/reset\/[\w-]{43})/.exec(mail?.text ?? "")?.[1];
    expect(link).toBeDefined();
    await p.goto(link!);
    await p.getByText("Es geht nichts verloren.").waitFor();
    expect(await p.getByLabel("E-Mail-Adresse").inputValue()).toBe(PATIENT);
    await setKey(p, MAIL_KEY, "Neuen Secu-Pass-Key festlegen");
    await p.getByRole("heading", { name: "Fast geschafft: Ihre Praxis schaltet Sie frei" }).waitFor({ timeout: 60_000 });
    const code = (await p.locator("#safety-code").textContent())?.trim() ?? "";
    expect((await outbox(home)).filter((m) => m.subject === `Freigabe erforderlich: ${PATIENT}`).at(-1)?.text).toContain(`Sicherheitscode: ${code}`);
    expect((await outbox(home)).some((m) => m.subject?.startsWith("Secu-Pass-Key geändert") && m.text?.includes(code))).toBe(true);
    // The link works once, and the old key no longer logs in.
    const again = await fetch(link!);
    expect(again.status).toBe(410);
    expect(await again.text()).toContain("Dieser Link ist abgelaufen oder wurde schon benutzt.");
    const q = await page();
    await login(q, PATIENT, OLD_KEY);
    await q.getByText("E-Mail-Adresse oder Secu-Pass-Key ist falsch.").waitFor({ timeout: 60_000 });

    const approve = await praxmail(["approve", PATIENT, "--yes", "--json", "--home", home]);
    expect(approve.code).toBe(0);
    await login(q, PATIENT, MAIL_KEY);
    await q.getByRole("heading", { name: "Meine Nachrichten" }).waitFor({ timeout: 60_000 });
    await q.goto(`${base}/deliveries/${older.id}`);
    expect(sha(await unlockAndSave(q, MAIL_KEY))).toBe(sha(pdf));
  });

  it("Secu-Pass reset → approve → an older delivery opens with the new key, byte for byte", async () => {
    const older = await send(PATIENT);
    expect(older.status).toBe("ready");
    const p = await page();
    await login(p, PATIENT, MAIL_KEY);
    await p.getByRole("heading", { name: "Meine Nachrichten" }).waitFor({ timeout: 60_000 });
    await p.goto(`${base}/secupass/reset`);
    await p.getByText("Es geht nichts verloren.").waitFor();
    await setKey(p, NEW_KEY, "Neuen Secu-Pass-Key festlegen");
    await p.getByRole("heading", { name: "Fast geschafft: Ihre Praxis schaltet Sie frei" }).waitFor({ timeout: 60_000 });
    const code = (await p.locator("#safety-code").textContent())?.trim() ?? "";
    const practice = (await outbox(home)).filter((m) => m.subject === `Freigabe erforderlich: ${PATIENT}`).at(-1);
    expect(practice?.text).toContain(`Sicherheitscode: ${code}`);
    const list = JSON.parse((await praxmail(["list", "deliveries", "--json", "--home", home])).stdout) as { id: string; status: string }[];
    expect(list.find((d) => d.id === older.id)?.status).toBe("pending-approval");

    const approve = await praxmail(["approve", PATIENT, "--yes", "--json", "--home", home]);
    expect(approve.code).toBe(0);
    expect((JSON.parse(approve.stdout) as { approved: { deliveries: number }[] }).approved[0]!.deliveries).toBeGreaterThanOrEqual(1);
    await p.goto(`${base}/deliveries/${older.id}`);
    await p.getByLabel("Secu-Pass-Key").fill(MAIL_KEY);
    await p.getByRole("button", { name: "Entsperren" }).click();
    await p.getByText(/Der Secu-Pass-Key ist falsch/).waitFor({ timeout: 60_000 });
    expect(sha(await unlockAndSave(p, NEW_KEY))).toBe(sha(pdf));
  });

  it("invite code → register with the key in one step (address from the link) → a delivery sent afterwards is ready at once and opens", async () => {
    const invited = "erika.wolf@patient.example";
    const r = await praxmail(["invite", invited, "--json", "--home", home]);
    expect(r.code).toBe(0);
    const inv = JSON.parse(r.stdout) as { link: string; code: string };
    expect(inv.code).toMatch(/^[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}$/);
    const p = await page();
    await p.goto(inv.link);
    await p.getByRole("heading", { name: "Konto mit Einladung anlegen" }).waitFor();
    expect(await p.getByLabel("E-Mail-Adresse").inputValue()).toBe(invited);
    expect(await p.evaluate("document.activeElement?.id")).toBe("code");
    await p.getByLabel("Einladungscode").fill(inv.code.toLowerCase());
    await setKey(p, "Erikas Secu-Pass-Key", "Konto anlegen");
    await p.getByRole("heading", { name: "Meine Nachrichten" }).waitFor({ timeout: 60_000 });
    expect((await outbox(home)).some((m) => m.subject === `Freigabe erforderlich: ${invited}`)).toBe(false);

    const d = await send(invited);
    expect(d.status).toBe("ready");
    await p.goto(d.link);
    await p.getByRole("heading", { name: "Nachricht von Praxis Dr. Weber" }).waitFor();
    expect(sha(await unlockAndSave(p, "Erikas Secu-Pass-Key"))).toBe(sha(pdf));
  });

  it("a reply with a 5 MiB file reaches the practice encrypted, and `praxmail receive` restores it", async () => {
    const file = randomBytes(5 * 1024 * 1024);
    const p = await page();
    await login(p, PATIENT, NEW_KEY);
    await p.getByRole("link", { name: "Sicher antworten" }).click();
    await p.getByLabel("Ihre Nachricht").fill("Guten Tag,\nanbei mein Befund vom Kardiologen.");
    await p.getByLabel("Dateien (optional)").setInputFiles({ name: "Kardiologie.bin", mimeType: "application/octet-stream", buffer: file });
    await p.getByRole("button", { name: "Verschlüsselt senden" }).click();
    await p.getByText("Ihre Antwort wurde verschlüsselt an Ihre Praxis gesendet.").waitFor({ timeout: 60_000 });
    expect((await outbox(home)).some((m) => m.subject === "Neue sichere Antwort eines Patienten")).toBe(true);

    const inbox = JSON.parse((await praxmail(["inbox", "--json", "--home", home])).stdout) as { id: string; from: string; files: number; status: string }[];
    expect(inbox).toHaveLength(1);
    expect(inbox[0]).toMatchObject({ from: PATIENT, files: 1, status: "new" });
    for (const f of await walk(home)) {
      const bytes = await readFile(f);
      expect(bytes.includes(file.subarray(1_000_000, 1_000_064)), f).toBe(false);
      expect(bytes.includes(Buffer.from("anbei mein Befund")), f).toBe(false);
    }
    const out = join(dir, "received");
    const r = await praxmail(["receive", inbox[0]!.id, "--out", out, "--home", home]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect((await readdir(out)).sort()).toEqual(["Kardiologie.bin", "message.txt"]);
    expect(await readFile(join(out, "message.txt"), "utf8")).toBe("Guten Tag,\nanbei mein Befund vom Kardiologen.");
    expect(sha(await readFile(join(out, "Kardiologie.bin")))).toBe(sha(file));
    const after = JSON.parse((await praxmail(["inbox", "--json", "--home", home])).stdout) as { status: string }[];
    expect(after[0]!.status).toBe("received");
  });
});

// Notification mails as they leave (issue 16, item 6): multipart/alternative with a plain
// text and an HTML part that has one button, inline styles and no external images, every
// value escaped; in the patient's language once known, else German with one line of English;
// no diagnosis in any subject, in any language. Through the real notifier and outbox, parsed
// by mailparser.
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { simpleParser, type ParsedMail } from "mailparser";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Config, Notification } from "../src/core/index.js";
import { LANGS, type Lang } from "../src/i18n/index.js";
import { createNotifier, createTransport } from "../src/mail/index.js";
import { cleanup, tempDir } from "./helpers/cli.js";

const HOSTILE_PRACTICE = `Praxis O'Brien & Söhne <script>alert("p")</script>`;
const HOSTILE_SUBJECT = `<img src=x onerror=alert(1)> Befund & "Termin"`;
const HOSTILE_FILE = `<b onclick="x()">Histologie</b>.pdf`;
const LINK = `https://portal.example/d/abc?x="><script>alert(2)</script>`;

let home: string;
beforeEach(async () => {
  home = await tempDir("praxmail-mail-");
});
afterEach(async () => {
  await cleanup(home);
});

/** Sends one notification through the real notifier into the outbox; returns the raw mail and its parse. */
async function send(n: Notification, lang: Lang | null, practiceName = "Praxis Dr. Weber", accent: string | null = null): Promise<{ raw: string; mail: ParsedMail }> {
  const config = { practiceName, practiceEmail: "praxis@praxis-weber.example", portal: { accent } } as Config;
  await createNotifier(config, createTransport(home, null), () => Promise.resolve(lang)).send(n);
  const [name] = (await readdir(join(home, "outbox"))).filter((f) => f.endsWith(".eml"));
  const raw = await readFile(join(home, "outbox", name!), "utf8");
  return { raw, mail: await simpleParser(raw) };
}

const newDelivery = (level: number, subject: string | null): Notification => ({
  kind: "new-delivery",
  to: "p@patient.example",
  level,
  link: LINK,
  firstTime: true,
  files: [{ name: HOSTILE_FILE, size: 2048 }],
  expiresAt: new Date("2026-12-29T12:00:00Z"),
  subject,
  message: level === 4 ? null : "Bitte <u>rufen</u> Sie uns an.",
});

describe("a notification mail", () => {
  it("is multipart/alternative: a text/plain part and a text/html part, nothing else", async () => {
    const { raw, mail } = await send(newDelivery(3, "Ihre Unterlagen"), null);
    expect(mail.headers.get("content-type")).toMatchObject({ value: "multipart/alternative" });
    const boundary = (mail.headers.get("content-type") as { params: { boundary: string } }).params.boundary;
    const parts = raw.split(`--${boundary}`).slice(1, -1);
    expect(parts.map((p) => /^content-type: ([^;\r\n]+)/im.exec(p)?.[1])).toEqual(["text/plain", "text/html"]);
    expect(mail.attachments).toEqual([]);
    expect(mail.text).toContain(`Herunterladen: ${LINK}`);
  });

  it("escapes a hostile practice name, subject, file name, message and link in the HTML; one button, inline styles, no image", async () => {
    const { mail } = await send(newDelivery(3, HOSTILE_SUBJECT), null, HOSTILE_PRACTICE);
    const html = String(mail.html);
    expect(mail.subject).toBe(HOSTILE_SUBJECT);
    expect(html).not.toMatch(/<(script|img|b|u|style|link|iframe)\b/i);
    expect(html).toContain("Praxis O&#39;Brien &#38; Söhne &#60;script&#62;alert(&#34;p&#34;)&#60;/script&#62;");
    expect(html).toContain("&#60;b onclick=&#34;x()&#34;&#62;Histologie&#60;/b&#62;.pdf (2 KB)");
    expect(html).toContain(`<title>&#60;img src=x onerror=alert(1)&#62; Befund &#38; &#34;Termin&#34;</title>`);
    const anchors = [...html.matchAll(/<a\b([^>]*)>([^<]*)<\/a>/g)];
    expect(anchors.map((a) => a[2])).toEqual(["Herunterladen"]);
    expect(anchors[0]![1]).toContain(`href="https://portal.example/d/abc?x=&#34;&#62;&#60;script&#62;alert(2)&#60;/script&#62;"`);
    expect(anchors[0]![1]).toMatch(/ style="[^"]*background:#0b5cad/);
    // No external resource: no tag with src, no CSS url(), no address but the link's.
    expect(html).not.toMatch(/<[^>]*\bsrc=|url\(|https?:\/\/(?!portal\.example\/d\/abc)/);
  });

  it("gives its button the practice's accent colour when one is set (init --accent), and only the button", async () => {
    const { mail } = await send(newDelivery(3, null), "de", "Praxis Dr. Weber", "#0a6e5a");
    const html = String(mail.html);
    const anchors = [...html.matchAll(/<a\b([^>]*)>/g)];
    expect(anchors).toHaveLength(1);
    expect(anchors[0]![1]).toMatch(/ style="[^"]*background:#0a6e5a;/);
    expect(html).not.toContain("#0b5cad");
  });

  it("in a known language speaks that language only, with the page's direction", async () => {
    const tr = await send(newDelivery(3, null), "tr");
    expect(tr.mail.subject).toBe("Yeni güvenli mesaj – Praxis Dr. Weber");
    expect(tr.mail.text).toContain("İndir: ");
    expect(tr.mail.text).toContain("(Yukarıdaki mesaj, muayenehanenizin yazdığı dildedir.)");
    for (const other of ["Guten Tag", "Hello", "Herunterladen", "In English"]) expect(`${tr.mail.text ?? ""}${String(tr.mail.html)}`).not.toContain(other);
    expect(String(tr.mail.html)).toContain('<html lang="tr" dir="ltr">');
    await cleanup(join(home, "outbox"));
    const ar = await send({ kind: "released", to: "p@patient.example", loginUrl: "https://portal.example/login", deliveries: 2 }, "ar");
    expect(String(ar.mail.html)).toContain('<html lang="ar" dir="rtl">');
    expect(ar.mail.text).toContain("فعّلت Praxis Dr. Weber وصولكم. رسالتان بانتظاركم.");
  });

  it("while the language is unknown is German, with one line of English", async () => {
    const { mail } = await send({ kind: "released", to: "p@patient.example", loginUrl: "https://portal.example/login", deliveries: 3 }, null);
    expect(mail.subject).toBe("Zustellung freigegeben – Praxis Dr. Weber");
    expect(mail.text).toBe(
      [
        "Guten Tag,",
        "Praxis Dr. Weber hat Ihren Zugang freigegeben. 3 Nachrichten liegen für Sie bereit.",
        "Melden Sie sich mit Ihrer E-Mail-Adresse und Ihrem Secu-Pass-Key an; damit öffnen Sie auch die Dateien.",
        "Anmelden: https://portal.example/login",
        "Diese E-Mail wurde automatisch erzeugt. Bitte antworten Sie nicht darauf.",
        "In English: Access approved – Praxis Dr. Weber. The portal is also available in English, Türkçe, Русский, Українська, Polski and العربية.",
      ].join("\n\n") + "\n",
    );
    expect(String(mail.html)).toContain('<html lang="de" dir="ltr">');
    expect(String(mail.html)).toContain('<div lang="en" dir="ltr">');
  });

  it("a forgotten Secu-Pass-Key: the link mail and the mail after the change say plainly what happens, in German", async () => {
    const reset = await send({ kind: "key-reset", to: "p@patient.example", link: "https://portal.example/reset/abc", expiresAt: new Date("2026-05-04T10:30:00Z") }, "de");
    expect(reset.mail.subject).toBe("Neuen Secu-Pass-Key festlegen – Praxis Dr. Weber");
    expect(reset.mail.text).toContain("Sie haben einen Link angefordert, um einen neuen Secu-Pass-Key festzulegen. Der Link gilt 30 Minuten und nur einmal.");
    expect(reset.mail.text).toContain("Neuen Secu-Pass-Key festlegen: https://portal.example/reset/abc");
    expect(reset.mail.text).toContain("Es geht keine Nachricht verloren.");
    await cleanup(home);
    home = await tempDir("praxmail-mail-");
    const changed = await send({ kind: "key-changed", to: "p@patient.example", safetyCode: "0421 7735 9902" }, "de");
    expect(changed.mail.subject).toBe("Secu-Pass-Key geändert – Praxis Dr. Weber");
    expect(changed.mail.text).toContain("Ihre Praxis gibt Ihren Zugang erneut frei und vergleicht dazu Ihren Sicherheitscode");
    expect(changed.mail.text).toContain("0421 7735 9902");
    expect(changed.mail.text).toContain("Falls Sie das nicht waren, sagen Sie bitte sofort Ihrer Praxis Bescheid.");
    for (const m of [reset.mail, changed.mail]) expect(`${m.subject ?? ""}${m.text ?? ""}`).not.toMatch(/Passwort/);
  });

  it.each([...LANGS, null])("at level 4 names no subject, text or file, in its subject or anywhere (%s)", async (lang) => {
    const n = { ...newDelivery(4, null), files: [{ name: "Histologie Biopsie.pdf", size: 3 }] };
    const { mail } = await send(n, lang);
    expect(mail.subject).toContain("Praxis Dr. Weber");
    expect(`${mail.subject ?? ""}${mail.text ?? ""}${String(mail.html)}`).not.toMatch(/Histologie|Biopsie/);
  });

  it("to the practice stays German with English below, whatever the patient's language", async () => {
    const { mail } = await send({ kind: "approval-needed", to: "praxis@praxis-weber.example", patient: "p@patient.example", safetyCode: "1234 5678" }, "ar");
    expect(mail.subject).toBe("Freigabe erforderlich: p@patient.example");
    expect(mail.text).toContain("Sicherheitscode: 1234 5678");
    expect(mail.text).toContain("-- English --");
    expect(mail.text).toContain("Safety code: 1234 5678");
    expect(String(mail.html)).toContain('<html lang="de" dir="ltr">');
  });
});

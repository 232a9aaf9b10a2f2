// The relay writes to each patient in their language (issue 16, item 7): the block that
// replaces the attachments (level 3) and the neutral notice (level 4) follow the language
// the account remembers; a recipient without one gets German with one line of English.
// Through the real relay into a real SMTP sink.
import { randomBytes } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { registerPatient } from "../src/core/index.js";
import { newKey } from "./helpers/patient.js";
import { befundMail, submit, useRelayWithSink } from "./helpers/relay.js";

const FROM = "praxis@praxis-weber.example";
const RU = "olga@patient.example";
const AR = "samir@patient.example";
const NEW = "neu@patient.example";
let seq = 0;

const env = useRelayWithSink();
beforeAll(async () => {
  await registerPatient(env.relay.ctx, RU, await newKey(RU, "Olgas Secu-Pass-Key"), { lang: "ru" });
  await registerPatient(env.relay.ctx, AR, await newKey(AR, "Samirs Secu-Pass-Key"), { lang: "ar" });
});

async function relay(to: string, subject: string): Promise<{ text: string; html: string; subject: string }> {
  const raw = befundMail({ from: FROM, to, messageId: `l${++seq}@praxis-weber.example`, attachment: randomBytes(2000), subject, text: "Anbei Ihr Befund." });
  expect((await submit(env.relay.port, FROM, [to], raw)).text).toBe("250 2.0.0 accepted, 1 encrypted");
  const [m] = env.sink.messages;
  // html is false for a copy that has no HTML part (befundMail's level 3 is plain text).
  return { text: m!.mail.text ?? "", html: String(m!.mail.html), subject: m!.mail.subject ?? "" };
}

describe("the relay speaks the patient's language", () => {
  it("level 3: the block is in Russian only, the practice's own text stays as written", async () => {
    const m = await relay(RU, "[S3] Befund");
    expect(m.subject).toBe("Befund");
    expect(m.text).toContain("Anbei Ihr Befund.");
    expect(m.text).toContain("Praxis Dr. Weber предоставляет 1 файл этого сообщения в зашифрованном виде:");
    expect(m.text).toMatch(/Скачать: http:\/\/127\.0\.0\.1:8080\/d\/[\w-]{43}/);
    for (const other of ["Herunterladen", "Download", "In English"]) expect(m.text).not.toContain(other);
  });

  it("level 4: the neutral notice is in Arabic, right to left", async () => {
    const m = await relay(AR, "[S4] Befund Biopsie");
    expect(m.subject).toBe("رسالة آمنة جديدة من Praxis Dr. Weber");
    expect(m.html).toContain('<html lang="ar" dir="rtl">');
    expect(`${m.subject}${m.text}${m.html}`).not.toMatch(/Biopsie|Befund/);
  });

  it("a recipient without a language gets German with one line of English", async () => {
    const m = await relay(NEW, "[S3] Befund");
    expect(m.text).toContain("Praxis Dr. Weber hat die Datei dieser Nachricht verschlüsselt bereitgestellt:");
    expect(m.text).toContain("In English: New secure message from Praxis Dr. Weber. The portal is also available in English, Türkçe, Русский, Українська, Polski and العربية.");
    expect(m.text).not.toContain("Hello");
  });
});

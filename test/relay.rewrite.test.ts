// Shapes of mail beyond the sample set: HTML only, inline images, a message that is one
// attachment, only attachments, and the practice's minimum-level policy.
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { cleanup, tempDir } from "./helpers/cli.js";
import { patchConfig, startTestRelay, submit, type TestRelay } from "./helpers/relay.js";
import { startSink, type Sink } from "./helpers/sink.js";

const FROM = "praxis@praxis-weber.example";
const TO = "patient@patient.example";
let dir: string;
let sink: Sink;
let relay: TestRelay;
let seq = 0;

beforeAll(async () => {
  dir = await tempDir();
  sink = await startSink();
  relay = await startTestRelay(join(dir, "home"), { upstream: sink.url });
});
afterAll(async () => {
  await relay.close();
  await sink.close();
  await cleanup(dir);
});
beforeEach(() => {
  sink.messages.length = 0;
});

function mail(subject: string, contentType: string, body: string[]): Buffer {
  return Buffer.from(
    [`From: Praxis <${FROM}>`, `To: ${TO}`, `Subject: ${subject}`, `Message-ID: <m${++seq}@praxis-weber.example>`, "MIME-Version: 1.0", `Content-Type: ${contentType}`, ...body, ""].join("\r\n"),
  );
}

const b64 = (b: Buffer): string => b.toString("base64").replace(/.{76}/g, "$&\r\n");

describe("rewrite", () => {
  it("an HTML-only mail gets the block in its HTML, and a meta charset becomes UTF-8", async () => {
    const pdf = randomBytes(3000);
    const raw = mail("[S3] Befund", 'multipart/mixed; boundary="x"', [
      "",
      "--x",
      "Content-Type: text/html; charset=iso-8859-1",
      "Content-Transfer-Encoding: quoted-printable",
      "",
      '<html><head><meta http-equiv=3D"Content-Type" content=3D"text/html; charset=3Diso-8859-1"></head><body><p>Gr=FC=DFe</p></body></html>',
      "--x",
      "Content-Type: application/pdf",
      "Content-Transfer-Encoding: base64",
      'Content-Disposition: attachment; filename="a.pdf"',
      "",
      b64(pdf),
      "--x--",
    ]);
    expect((await submit(relay.port, FROM, [TO], raw)).code).toBe(250);
    const m = sink.messages[0]!;
    expect(m.mail.html).toContain(">Herunterladen</a>");
    expect(m.mail.html).toContain("<p>Grüße</p>");
    expect(m.mail.html).toContain('<meta charset="utf-8">');
    expect(m.raw.includes(pdf.subarray(0, 40))).toBe(false);
  });

  it("inline images with a file name inside multipart/related are attachments too", async () => {
    const png = randomBytes(2000);
    const raw = mail("[S3] Aufnahme", 'multipart/related; boundary="r"', [
      "",
      "--r",
      "Content-Type: text/html; charset=utf-8",
      "",
      '<html><body><img src="cid:img1"></body></html>',
      "--r",
      "Content-Type: image/png",
      "Content-ID: <img1>",
      "Content-Disposition: inline; filename=roentgen.png",
      "Content-Transfer-Encoding: base64",
      "",
      b64(png),
      "--r--",
    ]);
    expect((await submit(relay.port, FROM, [TO], raw)).code).toBe(250);
    const m = sink.messages[0]!;
    expect(m.mail.html).toContain("roentgen.png");
    expect(m.mail.attachments).toEqual([]);
    expect(m.raw.includes(Buffer.from(png.toString("base64").slice(0, 40)))).toBe(false);
  });

  it("a message that is one attachment becomes a text mail with the block", async () => {
    const pdf = randomBytes(1000);
    const raw = mail("[S3] Scan", "application/pdf", ["Content-Transfer-Encoding: base64", 'Content-Disposition: attachment; filename="scan.pdf"', "", b64(pdf)]);
    expect((await submit(relay.port, FROM, [TO], raw)).code).toBe(250);
    const m = sink.messages[0]!;
    expect(m.mail.text).toContain("scan.pdf (1 KB)");
    expect(m.mail.attachments).toEqual([]);
    expect(m.raw.toString()).not.toMatch(/Content-Disposition/i);
  });

  it("a multipart with only attachments gets a text part with the block", async () => {
    const raw = mail("[S3] Nur Anhänge", 'multipart/mixed; boundary="y"', [
      "",
      "--y",
      "Content-Type: application/pdf",
      'Content-Disposition: attachment; filename="eins.pdf"',
      "",
      "%PDF-1.4 eins",
      "--y",
      "Content-Type: application/pdf",
      'Content-Disposition: attachment; filename="zwei.pdf"',
      "",
      "%PDF-1.4 zwei",
      "--y--",
    ]);
    expect((await submit(relay.port, FROM, [TO], raw)).code).toBe(250);
    const m = sink.messages[0]!;
    expect(m.mail.text).toContain("eins.pdf");
    expect(m.mail.text).toContain("zwei.pdf");
    expect(m.raw.toString()).not.toContain("%PDF");
  });
});

describe("policy", () => {
  it("minLevelWithAttachments encrypts untagged external mail with attachments and leaves the rest alone", async () => {
    await relay.close();
    await patchConfig(relay.ctx.home, { policy: { minLevelWithAttachments: 3 } });
    relay = await startTestRelay(relay.ctx.home, { upstream: sink.url });
    const withFile = mail("Befund", 'multipart/mixed; boundary="z"', ["", "--z", "Content-Type: text/plain", "", "Anbei.", "--z", "Content-Type: application/pdf", 'Content-Disposition: attachment; filename="b.pdf"', "", "%PDF-1.4 geheim", "--z--"]);
    const without = mail("Termin", "text/plain; charset=utf-8", ["", "Ihr Termin ist am Montag."]);
    expect((await submit(relay.port, FROM, [TO], withFile)).code).toBe(250);
    expect((await submit(relay.port, FROM, [TO], without)).code).toBe(250);
    const [a, b] = sink.messages;
    expect(a!.raw.toString()).not.toContain("%PDF-1.4 geheim");
    expect(a!.mail.text).toContain("Herunterladen");
    expect(b!.raw.subarray(b!.raw.indexOf("\r\n") + 2).equals(without)).toBe(true);
  });
});

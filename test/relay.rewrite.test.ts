// Shapes of mail beyond the sample set: HTML only, inline images, a message that is one
// attachment, only attachments, and the practice's minimum-level policy.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { patchConfig, startTestRelay, submit, useRelayWithSink } from "./helpers/relay.js";

const FROM = "praxis@praxis-weber.example";
const TO = "patient@patient.example";
let seq = 0;

const env = useRelayWithSink();

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
    expect((await submit(env.relay.port, FROM, [TO], raw)).code).toBe(250);
    const m = env.sink.messages[0]!;
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
    expect((await submit(env.relay.port, FROM, [TO], raw)).code).toBe(250);
    const m = env.sink.messages[0]!;
    expect(m.mail.html).toContain("roentgen.png");
    expect(m.mail.attachments).toEqual([]);
    expect(m.raw.includes(Buffer.from(png.toString("base64").slice(0, 40)))).toBe(false);
  });

  it("a message that is one attachment becomes a text mail with the block", async () => {
    const pdf = randomBytes(1000);
    const raw = mail("[S3] Scan", "application/pdf", ["Content-Transfer-Encoding: base64", 'Content-Disposition: attachment; filename="scan.pdf"', "", b64(pdf)]);
    expect((await submit(env.relay.port, FROM, [TO], raw)).code).toBe(250);
    const m = env.sink.messages[0]!;
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
    expect((await submit(env.relay.port, FROM, [TO], raw)).code).toBe(250);
    const m = env.sink.messages[0]!;
    expect(m.mail.text).toContain("eins.pdf");
    expect(m.mail.text).toContain("zwei.pdf");
    expect(m.raw.toString()).not.toContain("%PDF");
  });
});

describe("policy", () => {
  it("minLevelWithAttachments encrypts untagged external mail with attachments and leaves the rest alone", async () => {
    await env.relay.close();
    await patchConfig(env.relay.ctx.home, { policy: { minLevelWithAttachments: 3 } });
    env.relay = await startTestRelay(env.relay.ctx.home, { upstream: env.sink.url });
    const withFile = mail("Befund", 'multipart/mixed; boundary="z"', ["", "--z", "Content-Type: text/plain", "", "Anbei.", "--z", "Content-Type: application/pdf", 'Content-Disposition: attachment; filename="b.pdf"', "", "%PDF-1.4 geheim", "--z--"]);
    const without = mail("Termin", "text/plain; charset=utf-8", ["", "Ihr Termin ist am Montag."]);
    expect((await submit(env.relay.port, FROM, [TO], withFile)).code).toBe(250);
    expect((await submit(env.relay.port, FROM, [TO], without)).code).toBe(250);
    const [a, b] = env.sink.messages;
    expect(a!.raw.toString()).not.toContain("%PDF-1.4 geheim");
    expect(a!.mail.text).toContain("Herunterladen");
    expect(b!.raw.subarray(b!.raw.indexOf("\r\n") + 2).equals(without)).toBe(true);
  });
});

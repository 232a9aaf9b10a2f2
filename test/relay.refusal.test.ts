// The splitter's refusal rules (src/mail/split.ts), one test each, through the real relay:
// a tagged mail whose MIME praxmail cannot read with certainty is answered 554 5.6.0 and
// nothing reaches the sink. The raw SMTP client sends the bytes as they are (bare CRs too).
import { describe, expect, it } from "vitest";
import { useRelayWithSink } from "./helpers/relay.js";
import { SmtpClient } from "./helpers/smtp.js";

const FROM = "praxis@praxis-weber.example";
const TO = "patient@patient.example";
const SECRET = "%PDF-1.4 Befund geheim";
let seq = 0;

const env = useRelayWithSink();

/** A level-3 mail: a text part, then an attachment part with the given header lines. */
function mail(opts: { text?: string; preamble?: string; partHeaders?: string[] }): Buffer {
  return Buffer.from(
    [
      `From: Praxis <${FROM}>`,
      `To: ${TO}`,
      "Subject: [S3] Befund",
      `Message-ID: <r${++seq}@praxis-weber.example>`,
      "MIME-Version: 1.0",
      'Content-Type: multipart/mixed; boundary="b1"',
      "",
      opts.preamble ?? "",
      "--b1",
      "Content-Type: text/plain; charset=utf-8",
      "",
      opts.text ?? "Anbei der Befund.",
      "--b1",
      ...(opts.partHeaders ?? ["Content-Type: application/pdf", 'Content-Disposition: attachment; filename="befund.pdf"']),
      "",
      SECRET,
      "--b1--",
      "",
    ].join("\r\n"),
    "latin1",
  );
}

const damaged = (what: string): string =>
  `554 5.6.0 MIME structure is damaged (${what}); the message was not sent, so that no attachment leaves unencrypted`;

/** Sends a message as it is and returns the final reply's text. */
async function send(raw: Buffer): Promise<string> {
  const client = await SmtpClient.open(env.relay.port);
  try {
    const r = await client.send(FROM, TO, raw);
    expect(r.stage).toBe("DATA");
    return r.text;
  } finally {
    client.close();
  }
}

async function expectRefused(raw: Buffer, reply: string): Promise<void> {
  const before = (await env.relay.ctx.store.records.deliveries()).length;
  expect(await send(raw)).toBe(reply);
  expect(env.sink.messages).toEqual([]);
  expect(await env.relay.ctx.store.records.deliveries()).toHaveLength(before);
}

describe("damaged MIME is refused with 554 5.6.0, never guessed at", () => {
  it("the same mail undamaged goes through encrypted (the baseline for the rules below)", async () => {
    expect(await send(mail({}))).toBe("250 2.0.0 accepted, 1 encrypted");
    expect(env.sink.messages[0]?.raw.includes(SECRET)).toBe(false);
  });

  it("a header line without a field name is refused", async () => {
    const raw = mail({ partHeaders: ["Content-Type application/pdf", 'Content-Disposition: attachment; filename="befund.pdf"'] });
    await expectRefused(raw, damaged("a header line without a field name"));
  });

  it("a bare CR in a header line is refused", async () => {
    const raw = mail({ partHeaders: ["Content-Type: application/pdf", 'Content-Disposition: attachment;\r filename="befund.pdf"'] });
    await expectRefused(raw, damaged("a bare CR in a header"));
  });

  it.each([
    ["Content-Type", ["Content-Type: text/plain", "Content-Type: application/pdf", 'Content-Disposition: attachment; filename="befund.pdf"']],
    ["Content-Transfer-Encoding", ["Content-Type: application/pdf", "Content-Transfer-Encoding: 7bit", "Content-Transfer-Encoding: base64", 'Content-Disposition: attachment; filename="befund.pdf"']],
    ["Content-Disposition", ["Content-Type: application/pdf", "Content-Disposition: inline", 'Content-Disposition: attachment; filename="befund.pdf"']],
  ])("a second %s header in one part is refused", async (name, partHeaders) => {
    await expectRefused(mail({ partHeaders }), damaged(`more than one ${name.toLowerCase()} header in a part`));
  });

  it.each([
    ["inside a text body", { text: `Anbei.\r\nContent-Type: application/pdf\r\n\r\n${SECRET}` }, "part headers inside a text body; is a boundary broken?"],
    ["in the text between parts", { preamble: `Content-Disposition: attachment; filename="x.pdf"\r\n\r\n${SECRET}` }, "part headers inside the text between parts; is a boundary broken?"],
  ])("part headers at the start of a line %s are refused", async (_where, opts, what) => {
    await expectRefused(mail(opts), damaged(what));
  });
});

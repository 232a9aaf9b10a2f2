// Classification through the real relay: tags however the client shows them, headers given
// twice, and recipients whose local part routes elsewhere. Each asserts the SMTP reply and
// that no attachment byte reached the sink in clear.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { befundMail, submit, useRelayWithSink } from "./helpers/relay.js";
import type { Received } from "./helpers/sink.js";

const FROM = "praxis@praxis-weber.example";
const TO = "patient@patient.example";
let seq = 0;

const env = useRelayWithSink();

/** A level-3-shaped mail whose subject and extra top-level header lines the test picks. */
function mail(subject: string, extra: string[] = [], to = TO): { raw: Buffer; pdf: Buffer } {
  const pdf = randomBytes(3000);
  const raw = befundMail({ from: FROM, to, messageId: `c${++seq}@praxis-weber.example`, attachment: pdf, subject });
  const at = raw.indexOf("MIME-Version:");
  return { raw: Buffer.concat([raw.subarray(0, at), Buffer.from(extra.map((l) => `${l}\r\n`).join("")), raw.subarray(at)]), pdf };
}

/** Whether any piece of the attachment shows in what the sink got, raw or base64. */
function leaked(m: Received, pdf: Buffer): boolean {
  return m.raw.includes(pdf.subarray(100, 140)) || m.raw.includes(Buffer.from(pdf.toString("base64").slice(0, 60))) || m.mail.attachments.length > 0;
}

describe("tags are read as the recipient's client shows them", () => {
  it.each([
    ["a fullwidth digit", "[S\uff13] Befund", []],
    ["fullwidth brackets and letters", "\uff3b\uff33\uff54\uff55\uff46\uff45 3\uff3d Befund", []],
    ["a zero-width space", "[S\u200b3] Befund", []],
    ["a soft hyphen and a word joiner", "[S\u00ad\u20603] Befund", []],
    ["a zero-width space in an RFC 2047 word", "=?utf-8?B?W1PigIszXSBCZWZ1bmQ=?=", []],
    ["a fullwidth digit in an RFC 2047 word", "=?utf-8?q?=5BS=EF=BC=93=5D_Befund?=", []],
    ["a fullwidth X-Praxmail-Level", "Befund", ["X-Praxmail-Level: \uff13"]],
    ["an X-Praxmail-Level with a zero-width space", "Befund", ["X-Praxmail-Level: 3\u200b"]],
  ])("%s: encrypted, and the subject leaves without the tag", async (_what, subject, extra) => {
    const { raw, pdf } = mail(subject, extra);
    const r = await submit(env.relay.port, FROM, [TO], raw);
    expect(r.text).toBe("250 2.0.0 accepted, 1 encrypted");
    const [m] = env.sink.messages;
    expect(env.sink.messages).toHaveLength(1);
    expect(leaked(m!, pdf)).toBe(false);
    expect(m!.mail.subject).toBe("Befund");
    expect(m!.mail.text).toContain("befund.pdf");
  });
});

describe("a header the message may have only once, given twice at the top", () => {
  it.each([
    ["Subject", "Befund", ["Subject: [S3] Befund"]],
    ["From", "[S3] Befund", ["From: Labor <labor@praxis-weber.example>"]],
    ["To", "[S3] Befund", ["To: other@patient.example"]],
    ["Content-Type", "[S3] Befund", ["Content-Type: text/plain"]],
  ])("%s: 554 5.6.0 and nothing leaves", async (name, subject, extra) => {
    const before = (await env.relay.ctx.store.records.deliveries()).length;
    const { raw } = mail(subject, extra);
    const r = await submit(env.relay.port, FROM, [TO], raw);
    expect(r.code).toBe(554);
    expect(r.text).toBe(`554 5.6.0 message has more than one ${name} header; praxmail cannot tell which one the recipient sees, so it was not sent`);
    expect(env.sink.messages).toEqual([]);
    expect(await env.relay.ctx.store.records.deliveries()).toHaveLength(before);
  });
});

describe("a recipient whose local part routes is external, even at the practice's domain", () => {
  it.each(["patient%patient.example@praxis-weber.example", "patient.example!patient@praxis-weber.example"])("%s gets an encrypted copy", async (rcpt) => {
    const { raw, pdf } = mail("[S3] Befund", [], rcpt);
    const r = await submit(env.relay.port, FROM, [rcpt], raw);
    expect(r.text).toBe("250 2.0.0 accepted, 1 encrypted");
    expect(env.sink.messages.map((m) => m.to)).toEqual([[rcpt]]);
    expect(leaked(env.sink.messages[0]!, pdf)).toBe(false);
    expect((await env.relay.ctx.store.records.deliveries()).at(-1)?.recipient).toBe(rcpt);
  });

});

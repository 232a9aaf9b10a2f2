// Retries through real Postfix with praxmail as its milter: the same message (same
// Message-ID, same bytes) sent again gets a new Received header from Postfix each time, and
// must still be the same delivery. The milter cannot know whether Postfix queued an earlier
// attempt it edited, so every retry carries the delivery again (a fresh link token, as the
// relay's announceAgain gives), and no second delivery is made. At level 2 the delivery's
// key rides in the link and only the first attempt held it: the retry replaces the delivery.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { praxmail } from "./helpers/cli.js";
import { openByToken, tokens } from "./helpers/deliveries.js";
import { usePostfixMilter } from "./helpers/postfix-fixture.js";
import { waitForSink, type TestPostfix } from "./helpers/postfix.js";
import { befundMail, submit } from "./helpers/relay.js";
import type { Received, Sink } from "./helpers/sink.js";
import { needRoot, needTool } from "./helpers/tools.js";

const FIXTURES = resolve(import.meta.dirname, "fixtures/mail");
const FROM = "praxis@praxis-weber.example";

/** Waits for n messages, then a moment more, so that a surplus copy would be seen too. */
async function waitFor(sink: Sink, n: number, pf: TestPostfix): Promise<Received[]> {
  await waitForSink(sink, n, pf);
  await new Promise((r) => setTimeout(r, 500));
  return [...sink.messages];
}

describe.runIf(needRoot("the Postfix test instance") && needTool("postfix"))("retries through Postfix with the praxmail milter", () => {
  let home: string;
  let sink: Sink;
  let pf: TestPostfix;

  const deliveries = async (): Promise<{ id: string; recipient: string; status: string }[]> => {
    const r = await praxmail(["list", "deliveries", "--home", home, "--json"]);
    expect(r.code).toBe(0);
    return JSON.parse(r.stdout) as { id: string; recipient: string; status: string }[];
  };

  usePostfixMilter((c) => {
    ({ home, sink, pf } = c);
  });

  it("one patient (edited in place): sent twice, one delivery; the second copy carries the same delivery with a working link", async () => {
    const raw = await readFile(join(FIXTURES, "01-level3-subject-tag.eml"));
    const to = "anna.schaefer@patient.example";
    expect((await submit(pf.smtpPort, FROM, [to], raw)).code).toBe(250);
    expect((await submit(pf.smtpPort, FROM, [to], raw)).code).toBe(250);
    const copies = await waitFor(sink, 2, pf);
    expect(copies).toHaveLength(2);
    // Postfix stamped each attempt with its own Received header.
    const received = copies.map((c) => c.mail.headers.get("received"));
    expect(received[0]).not.toEqual(received[1]);
    const [only, ...more] = await deliveries();
    expect(more).toEqual([]);
    expect(only?.recipient).toBe(to);
    for (const c of copies) {
      expect(c.to).toEqual([to]);
      expect(c.mail.headers.get("x-praxmail-delivery")).toBe(only?.id);
      expect(c.mail.attachments).toEqual([]);
      const [token] = tokens(c);
      const opened = await openByToken(home, token ?? "");
      expect(opened.email).toBe(to);
    }
  });

  it("the sender's own mail server retries: new Received and DKIM-Signature lines, still one delivery", async () => {
    const body = await readFile(join(FIXTURES, "03-level4-two-attachments.eml"));
    const to = "anna.schaefer@patient.example";
    // What a practice's outbound MTA puts on top of each attempt: its own trace and signature.
    const attempt = (id: string, t: number): Buffer =>
      Buffer.concat([
        Buffer.from(
          `DKIM-Signature: v=1; a=rsa-sha256; d=praxis-weber.example; s=mail; t=${t};\r\n\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=${id}\r\n` +
            `Received: from pc-empfang.praxis-weber.example (pc-empfang [192.0.2.7])\r\n\tby mail.praxis-weber.example (Postfix) with ESMTP id ${id}; Mon, 02 Nov 2026 09:3${t % 10}:00 +0000\r\n`,
        ),
        body,
      ]);
    const before = new Set((await deliveries()).map((d) => d.id));
    expect((await submit(pf.smtpPort, FROM, [to], attempt("4KxQ1", 1)))).toMatchObject({ code: 250 });
    expect((await submit(pf.smtpPort, FROM, [to], attempt("9TmZ7", 2)))).toMatchObject({ code: 250 });
    const copies = await waitFor(sink, 2, pf);
    expect(copies).toHaveLength(2);
    const made = (await deliveries()).filter((d) => !before.has(d.id));
    expect(made.map((d) => d.recipient)).toEqual([to]);
    for (const c of copies) {
      expect(c.mail.subject).toBe("Neue sichere Nachricht von Praxis Dr. Weber");
      expect(c.mail.headers.get("x-praxmail-delivery")).toBe(made[0]?.id);
      expect((await openByToken(home, tokens(c)[0] ?? "")).files.map((f) => f.kind)).toEqual(["attachment", "attachment", "message"]);
    }
  });

  it("a message without a Date: Postfix stamps one on each attempt, and it is still one delivery", async () => {
    const raw = befundMail({ from: FROM, to: "<jan.mueller@patient.example>", messageId: "nodate-1@praxis-weber.example", attachment: randomBytes(5000) });
    expect(raw.toString("latin1")).not.toMatch(/^Date:/im);
    const before = new Set((await deliveries()).map((d) => d.id));
    expect((await submit(pf.smtpPort, FROM, ["jan.mueller@patient.example"], raw)).code).toBe(250);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await submit(pf.smtpPort, FROM, ["jan.mueller@patient.example"], raw)).code).toBe(250);
    const copies = await waitFor(sink, 2, pf);
    expect(copies).toHaveLength(2);
    // Each copy carries the Date that Postfix gave its attempt.
    expect(copies[0]?.mail.date).not.toEqual(copies[1]?.mail.date);
    const made = (await deliveries()).filter((d) => !before.has(d.id));
    expect(made).toHaveLength(1);
    for (const c of copies) expect(c.mail.headers.get("x-praxmail-delivery")).toBe(made[0]?.id);
  });

  it("level 2 (the key rides in the link, so it cannot be carried again): the retry replaces the delivery, one stays", async () => {
    const raw = befundMail({ from: FROM, to: "<jan.mueller@patient.example>", messageId: "level2-1@praxis-weber.example", attachment: randomBytes(3000), subject: "[S2] Befund" });
    const before = new Set((await deliveries()).map((d) => d.id));
    expect((await submit(pf.smtpPort, FROM, ["jan.mueller@patient.example"], raw)).code).toBe(250);
    await waitFor(sink, 1, pf);
    expect((await submit(pf.smtpPort, FROM, ["jan.mueller@patient.example"], raw)).code).toBe(250);
    const copies = await waitFor(sink, 2, pf);
    const made = (await deliveries()).filter((d) => !before.has(d.id));
    expect(made).toHaveLength(1);
    const ids = copies.map((c) => c.mail.headers.get("x-praxmail-delivery"));
    expect(ids[1]).toBe(made[0]?.id);
    expect(ids[0]).not.toBe(ids[1]);
    // The first attempt's link is gone with its delivery; the retry's link works.
    await expect(openByToken(home, tokens(copies[0] as Received)[0] ?? "")).rejects.toThrow("unknown link token");
    expect((await openByToken(home, tokens(copies[1] as Received)[0] ?? "")).email).toBe("jan.mueller@patient.example");
  });

  it("a delivery the practice revoked is not sent again when the message is retried", async () => {
    const raw = befundMail({ from: FROM, to: "<jan.mueller@patient.example>", messageId: "revoked-1@praxis-weber.example", attachment: randomBytes(3000) });
    const before = new Set((await deliveries()).map((d) => d.id));
    expect((await submit(pf.smtpPort, FROM, ["jan.mueller@patient.example"], raw)).code).toBe(250);
    await waitFor(sink, 1, pf);
    const [made] = (await deliveries()).filter((d) => !before.has(d.id));
    const revoked = await praxmail(["revoke", made?.id ?? "", "--yes", "--home", home]);
    expect(revoked.code).toBe(0);
    expect((await submit(pf.smtpPort, FROM, ["jan.mueller@patient.example"], raw)).code).toBe(250);
    expect(await waitFor(sink, 1, pf)).toHaveLength(1);
    const after = (await deliveries()).filter((d) => !before.has(d.id));
    expect(after).toEqual([expect.objectContaining({ id: made?.id, status: "revoked" })]);
  });

  it("two patients (reinjection) and an internal Cc: sent twice, one delivery per patient, each carried again", async () => {
    const raw = await readFile(join(FIXTURES, "04-level3-several-recipients.eml"));
    const rcpts = ["anna.schaefer@patient.example", "jan.mueller@patient.example", "empfang@praxis-weber.example"];
    const before = new Set((await deliveries()).map((d) => d.id));
    expect((await submit(pf.smtpPort, FROM, rcpts, raw)).code).toBe(250);
    await waitFor(sink, 3, pf);
    expect((await submit(pf.smtpPort, FROM, rcpts, raw)).code).toBe(250);
    const all = await waitFor(sink, 6, pf);
    expect(all).toHaveLength(6);
    const made = (await deliveries()).filter((d) => !before.has(d.id));
    expect(made.map((d) => d.recipient).sort()).toEqual(rcpts.slice(0, 2));
    for (const d of made) {
      const copies = all.filter((m) => m.to.join() === d.recipient);
      expect(copies).toHaveLength(2);
      for (const c of copies) expect(c.mail.headers.get("x-praxmail-delivery")).toBe(d.id);
    }
    // The practice's own address gets the original each time: it is no delivery.
    expect(all.filter((m) => m.to.join() === rcpts[2])).toHaveLength(2);
  });
});

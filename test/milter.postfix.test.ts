// praxmail as a milter inside real Postfix (Debian's postfix as a test instance with our
// README's lines): swaks or nodemailer → Postfix smtpd → praxmail milter → relayhost → sink.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { simpleParser, type Attachment } from "mailparser";
import { describe, expect, it } from "vitest";
import { openByToken, tokens } from "./helpers/deliveries.js";
import { usePostfixMilter } from "./helpers/postfix-fixture.js";
import { waitForSink, type PostfixMilter, type TestPostfix } from "./helpers/postfix.js";
import { submit } from "./helpers/relay.js";
import { freePort } from "./helpers/serve.js";
import type { Received, Sink } from "./helpers/sink.js";
import { needRoot, needTool } from "./helpers/tools.js";

const execFileAsync = promisify(execFile);
const FIXTURES = resolve(import.meta.dirname, "fixtures/mail");
const FROM = "praxis@praxis-weber.example";

async function fixture(name: string): Promise<{ raw: Buffer; attachments: Attachment[]; rcpts: string[] }> {
  const raw = await readFile(join(FIXTURES, name));
  const p = await simpleParser(raw);
  const addrs = (v: typeof p.to): string[] => (v ? (Array.isArray(v) ? v : [v]).flatMap((a) => a.value.map((x) => x.address ?? "")) : []);
  return { raw, attachments: p.attachments, rcpts: [...addrs(p.to), ...addrs(p.cc)] };
}

function noClearBytes(m: Received, attachments: Attachment[]): void {
  for (const a of attachments) {
    const piece = a.content.subarray(Math.floor(a.content.length / 2), Math.floor(a.content.length / 2) + 40);
    expect(m.raw.includes(piece)).toBe(false);
    expect(m.raw.includes(Buffer.from(piece.toString("base64").slice(4, 36)))).toBe(false);
  }
}

describe.runIf(needRoot("the Postfix test instance") && needTool("postfix"))("praxmail as a Postfix milter", () => {
  let chain: PostfixMilter | undefined;
  let dir: string;
  let home: string;
  let sink: Sink;
  let pf: TestPostfix;

  usePostfixMilter((c) => {
    chain = c;
    ({ dir, home, sink, pf } = c);
  });

  it("01: rewrites a level-3 mail in place: no attachment bytes, a link that opens the file", async () => {
    const f = await fixture("01-level3-subject-tag.eml");
    expect((await submit(pf.smtpPort, FROM, f.rcpts, f.raw)).code).toBe(250);
    const [m] = await waitForSink(sink, 1, pf);
    expect(m!.to).toEqual(["anna.schaefer@patient.example"]);
    expect(m!.mail.subject).toBe("Ihr Laborbefund vom 28.10.");
    expect(m!.mail.attachments).toEqual([]);
    expect(m!.raw.toString()).not.toMatch(/X-Praxmail-Level/i);
    noClearBytes(m!, f.attachments);
    const [token] = tokens(m!);
    const opened = await openByToken(home, token!);
    expect(opened.email).toBe("anna.schaefer@patient.example");
    expect(opened.files[0]!.data.equals(f.attachments[0]!.content)).toBe(true);
  });

  it("03: level 4 leaves as a neutral notice; subject and text stay in the delivery", async () => {
    const f = await fixture("03-level4-two-attachments.eml");
    expect((await submit(pf.smtpPort, FROM, f.rcpts, f.raw)).code).toBe(250);
    const [m] = await waitForSink(sink, 1, pf);
    expect(m!.mail.subject).toBe("Neue sichere Nachricht von Praxis Dr. Weber");
    for (const secret of ["Biopsie", "histologische", "Histologie", "Aufnahme"]) expect(m!.raw.toString()).not.toContain(secret);
    noClearBytes(m!, f.attachments);
    const opened = await openByToken(home, tokens(m!)[0]!);
    expect(opened.files.map((x) => x.kind)).toEqual(["attachment", "attachment", "message"]);
    expect(opened.files[2]!.data.toString()).toContain("Befundbesprechung Biopsie");
  });

  it("04: two patients get their own copies through reinjection; the internal Cc the original", async () => {
    const f = await fixture("04-level3-several-recipients.eml");
    expect((await submit(pf.smtpPort, FROM, f.rcpts, f.raw)).code).toBe(250);
    const msgs = await waitForSink(sink, 3, pf);
    const by = new Map(msgs.map((m) => [m.to.join(","), m]));
    const anna = by.get("anna.schaefer@patient.example")!;
    const jan = by.get("jan.mueller@patient.example")!;
    const internal = by.get("empfang@praxis-weber.example")!;
    expect(tokens(anna)[0]).not.toBe(tokens(jan)[0]);
    for (const m of [anna, jan]) {
      noClearBytes(m, f.attachments);
      const opened = await openByToken(home, tokens(m)[0]!);
      expect(opened.email).toBe(m.to[0]);
      expect(opened.files[0]!.data.equals(f.attachments[0]!.content)).toBe(true);
    }
    expect(internal.mail.attachments[0]!.content.equals(f.attachments[0]!.content)).toBe(true);
    expect(internal.mail.subject).toBe("[S3] Impfbescheinigungen");
  });

  it("05: untagged mail passes unchanged (Postfix adds only its trace headers)", async () => {
    const f = await fixture("05-untagged-passthrough.eml");
    expect((await submit(pf.smtpPort, FROM, f.rcpts, f.raw)).code).toBe(250);
    const [m] = await waitForSink(sink, 1, pf);
    const body = (b: Buffer): Buffer => b.subarray(b.indexOf("\r\n\r\n"));
    expect(body(m!.raw).equals(body(f.raw))).toBe(true);
    const headers = (b: Buffer): string[] =>
      b.subarray(0, b.indexOf("\r\n\r\n")).toString().replace(/\r\n[ \t]/g, " ").split("\r\n").filter((h) => !/^Received:/i.test(h));
    expect(headers(m!.raw)).toEqual(headers(f.raw));
  });

  if (needTool("swaks")) {
    it("swaks as the client gets 250 for a level-3 mail", async () => {
      const file = join(dir, "01-swaks.eml");
      const { writeFile } = await import("node:fs/promises");
      await writeFile(file, (await readFile(join(FIXTURES, "01-level3-subject-tag.eml"), "latin1")).replace("<lab-3@", "<lab-3-swaks@"), "latin1");
      const { stdout } = await execFileAsync("swaks", ["--server", `127.0.0.1:${pf.smtpPort}`, "--from", FROM, "--to", "anna.schaefer@patient.example", "--data", file, "--suppress-data"], { timeout: 60_000 });
      expect(stdout).toMatch(/<- {2}250 2\.0\.0 Ok: queued as/);
      const [m] = await waitForSink(sink, 1, pf);
      expect(m!.mail.attachments).toEqual([]);
    });
  }

  it("with praxmail failing inside (reinjection down), Postfix defers and nothing leaves", async () => {
    // Stop the reinjection smtpd's port by pointing praxmail's upstream at a closed port.
    await chain?.stopPraxmail();
    const { patchConfig } = await import("./helpers/relay.js");
    await patchConfig(home, { upstream: `smtp://127.0.0.1:${await freePort()}` });
    await chain?.startPraxmail();
    const f = await fixture("04-level3-several-recipients.eml");
    const raw = Buffer.from(f.raw.toString("latin1").replace("<vacc-3@", "<vacc-3-fail@"), "latin1");
    const r = await submit(pf.smtpPort, FROM, f.rcpts, raw);
    expect(r.code).toBe(451);
    expect(r.text).toMatch(/^451 4\.4\.1 upstream did not accept the message/);
    await new Promise((res) => setTimeout(res, 1500));
    expect(sink.messages).toEqual([]);
  });

  it("with praxmail stopped, Postfix defers (milter_default_action = tempfail) and nothing leaves", async () => {
    await chain?.stopPraxmail();
    const f = await fixture("01-level3-subject-tag.eml");
    const r = await submit(pf.smtpPort, FROM, f.rcpts, Buffer.from(f.raw.toString("latin1").replace("<lab-3@", "<lab-3-down@"), "latin1"));
    expect(r.code).toBe(451);
    expect(r.text).toContain("4.7.1");
    await new Promise((res) => setTimeout(res, 1500));
    expect(sink.messages).toEqual([]);
  });
});

// Folded headers through the milter, at the bytes the next hop receives from real Postfix:
// no bare CR (CR CR LF was what a CRLF fold in a header edit became), and a strict parser
// (Python's email with the default policy) finds every part and the link.
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { encodeWords, foldLines } from "nodemailer/lib/mime-funcs";
import { describe, expect, it } from "vitest";
import { openByToken, tokens } from "./helpers/deliveries.js";
import { usePostfixMilter } from "./helpers/postfix-fixture.js";
import { waitForSink, type TestPostfix } from "./helpers/postfix.js";
import { submit } from "./helpers/relay.js";
import type { Received, Sink } from "./helpers/sink.js";
import { needRoot, needTool } from "./helpers/tools.js";

const FIXTURES = resolve(import.meta.dirname, "fixtures/mail");
const FROM = "praxis@praxis-weber.example";
// 200 characters with umlauts: RFC 2047 encoded words over several folded lines.
const LONG = "Ihr Befund über die Blutwerte, die Schilddrüse und die Leberwerte vom 28.10.: größtenteils unauffällig, Rückfragen gern – ".repeat(2).slice(0, 200);

/** What Python's email package (policy.default, the strict one) reads from a message. */
interface Strict {
  subject: string | null;
  defects: string[];
  parts: { type: string; boundary: string | null; text?: string }[];
}

const STRICT = `
import email, email.policy, json, sys
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
defects, parts = [], []
for part in msg.walk():
    defects += [type(d).__name__ for d in part.defects]
    for name, value in part.items():
        defects += [name + ": " + type(d).__name__ for d in getattr(value, "defects", ())]
    entry = {"type": part.get_content_type(), "boundary": part.get_boundary()}
    if part.get_content_maintype() == "text":
        entry["text"] = part.get_content()
    parts.append(entry)
subject = msg["subject"]
print(json.dumps({"subject": None if subject is None else str(subject), "defects": defects, "parts": parts}))
`;

function strict(raw: Buffer): Strict {
  return JSON.parse(execFileSync("python3", ["-c", STRICT], { input: raw }).toString()) as Strict;
}

/** No bare CR, no CR CR LF, no bare LF: every line of the message ends in CRLF. */
function cleanLines(m: Received): void {
  const s = m.raw.toString("latin1");
  expect(s).not.toContain("\r\r\n");
  expect(s.match(/\r(?!\n)/g) ?? []).toEqual([]);
  expect(s.match(/(?<!\r)\n/g) ?? []).toEqual([]);
}

/**
 * A level-3 fixture with another Message-ID, Subject and recipients (To folded as needed),
 * and its sender's name quoted: "Dr." unquoted is obsolete syntax, a defect of the sender's.
 */
async function level3(id: string, subject: string, to: string[], fixture = "01-level3-subject-tag.eml"): Promise<Buffer> {
  const raw = (await readFile(join(FIXTURES, fixture), "utf8"))
    .replace(/^From: Praxis Dr\. Weber /m, 'From: "Praxis Dr. Weber" ')
    .replace(/^Message-ID: .*$/m, `Message-ID: <${id}@praxis-weber.example>`)
    .replace(/^Subject: .*$/m, foldLines(`Subject: ${encodeWords(subject, "Q", 52)}`, 76).replace(/\r\n$/, ""))
    .replace(/^To: .*$/m, foldLines(`To: ${to.join(", ")}`, 76).replace(/\r\n$/, ""));
  return Buffer.from(raw);
}

describe.runIf(needRoot("the Postfix test instance") && needTool("postfix") && needTool("python3"))("folded headers through the milter in Postfix", () => {
  let home: string;
  let sink: Sink;
  let pf: TestPostfix;

  usePostfixMilter((c) => {
    ({ home, sink, pf } = c);
  });

  it("a level-4 notice (rewritten in place) keeps its multipart boundary and link for a strict parser", async () => {
    const raw = await readFile(join(FIXTURES, "03-level4-two-attachments.eml"));
    expect((await submit(pf.smtpPort, FROM, ["erika.wolf@patient.example"], raw)).code).toBe(250);
    const [m] = await waitForSink(sink, 1, pf);
    cleanLines(m!);
    const [token] = tokens(m!);
    const s = strict(m!.raw);
    expect(s.defects).toEqual([]);
    expect(s.subject).toBe("Neue sichere Nachricht von Praxis Dr. Weber");
    expect(s.parts.map((p) => p.type)).toEqual(["multipart/alternative", "text/plain", "text/html"]);
    expect(s.parts[0]!.boundary).toMatch(/\S/);
    expect(s.parts[1]!.text).toContain(`/d/${token!}`);
    expect(s.parts[2]!.text).toContain(`/d/${token!}`);
    expect((await openByToken(home, token!)).files.map((f) => f.kind)).toEqual(["attachment", "attachment", "message"]);
  });

  it("a level-3 mail with a 200-character subject with umlauts (in place) keeps its subject, parts and link", async () => {
    const raw = await level3("long-subject", `[S3] ${LONG}`, ["anna.schaefer@patient.example"]);
    expect((await submit(pf.smtpPort, FROM, ["anna.schaefer@patient.example"], raw)).code).toBe(250);
    const [m] = await waitForSink(sink, 1, pf);
    cleanLines(m!);
    const [token] = tokens(m!);
    const s = strict(m!.raw);
    expect(s.defects).toEqual([]);
    expect(s.subject).toBe(LONG.trim());
    expect(s.parts.map((p) => p.type)).toEqual(["multipart/mixed", "text/plain"]);
    expect(s.parts[0]!.boundary).toBe("===============5259865749446323156==");
    expect(s.parts[1]!.text).toContain(`/d/${token!}`);
    expect(s.parts[1]!.text).toContain("Ihr Laborbefund");
    expect((await openByToken(home, token!)).email).toBe("anna.schaefer@patient.example");
  });

  it("a tagged mail to 40 patients: each gets its own copy (reinjected), clean for a strict parser", async () => {
    const to = Array.from({ length: 40 }, (_, i) => `patient${String(i + 1).padStart(2, "0")}@patient.example`);
    const raw = await level3("forty", `[S3] ${LONG}`, to);
    expect((await submit(pf.smtpPort, FROM, to, raw)).code).toBe(250);
    const msgs = await waitForSink(sink, 40, pf);
    expect(msgs.flatMap((m) => m.to).sort()).toEqual(to);
    const links = new Set<string>();
    for (const m of msgs) {
      cleanLines(m);
      const [token] = tokens(m);
      const s = strict(m.raw);
      expect(s.defects).toEqual([]);
      expect(s.subject).toBe(LONG.trim());
      expect(s.parts.map((p) => p.type)).toEqual(["multipart/mixed", "text/plain"]);
      expect(s.parts[1]!.text).toContain(`/d/${token!}`);
      links.add(token!);
    }
    expect(links.size).toBe(40);
  });

  it("a tagged mail to 40 patients without attachments (one copy, edited in place) stays clean", async () => {
    const to = Array.from({ length: 40 }, (_, i) => `patient${String(i + 41)}@patient.example`);
    const raw = await level3("forty-plain", `[S3] ${LONG}`, to, "06-level3-no-attachment.eml");
    expect((await submit(pf.smtpPort, FROM, to, raw)).code).toBe(250);
    // One copy for all of them; Postfix hands it to the next hop in one transaction.
    const [m] = await waitForSink(sink, 1, pf);
    expect([...m!.to].sort()).toEqual([...to].sort());
    cleanLines(m!);
    const s = strict(m!.raw);
    expect(s.defects).toEqual([]);
    expect(s.subject).toBe(LONG.trim());
    expect(s.parts.map((p) => p.type)).toEqual(["text/plain"]);
    expect(s.parts[0]!.text).toContain("Bitte rufen Sie uns zurück.");
    expect(m!.raw.toString()).not.toMatch(/X-Praxmail-Level|\[S3\]/);
  });
});

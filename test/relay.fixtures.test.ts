// Every sample mail through a real relay, from a real SMTP client (nodemailer, and swaks),
// to a real smtp-server sink as upstream. Assertions are on what the sink received.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { readFile, readdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { simpleParser, type Attachment } from "mailparser";
import { describe, expect, it } from "vitest";
import { hashToken, type Context, type SealedMessage } from "../src/core/index.js";
import { decryptStream, unwrapIdentity } from "../src/crypto/index.js";
import { practiceIdentityOf, walk } from "./helpers/cli.js";
import { submit, useRelayWithSink } from "./helpers/relay.js";
import type { Received } from "./helpers/sink.js";
import { readAll } from "./helpers/streams.js";
import { needTool } from "./helpers/tools.js";

const execFileAsync = promisify(execFile);
const FIXTURES = resolve(import.meta.dirname, "fixtures/mail");
const PRACTICE = "praxis@praxis-weber.example";

const env = useRelayWithSink();

async function fixture(name: string): Promise<{ raw: Buffer; head: Buffer; attachments: Attachment[]; to: string[]; cc: string[] }> {
  const raw = await readFile(join(FIXTURES, name));
  const parsed = await simpleParser(raw);
  const addrs = (v: typeof parsed.to): string[] => (v ? (Array.isArray(v) ? v : [v]).flatMap((a) => a.value.map((x) => x.address ?? "")) : []);
  return { raw, head: raw.subarray(0, raw.indexOf("\r\n\r\n")), attachments: parsed.attachments, to: addrs(parsed.to), cc: addrs(parsed.cc) };
}

/** Every link token in a received copy. */
function tokens(m: Received): string[] {
  return [...new Set([...`${m.mail.text ?? ""}\n${m.mail.html || ""}`.matchAll(/\/d\/([A-Za-z0-9_-]{43})/g)].map((x) => x[1]!))];
}

/** Opens a delivery with the practice identity, as approve does, and decrypts its files. */
async function openDelivery(ctx: Context, deliveryId: string): Promise<{ files: { name: string; kind: string; data: Buffer }[] }> {
  const practice = await practiceIdentityOf(ctx.home);
  const d = await unwrapIdentity((await ctx.store.records.wrap(deliveryId, "practice"))!.ciphertext, practice);
  const files = [];
  for (const f of (await ctx.store.records.files(deliveryId))) {
    const blob = await readFile(join(ctx.home, f.blob!));
    files.push({ name: f.name, kind: f.kind, data: await readAll(await decryptStream(new Blob([blob]).stream(), [d])) });
  }
  return { files };
}

/** The delivery a copy's link leads to, checking that the link belongs to that recipient. */
async function deliveryOf(ctx: Context, m: Received): Promise<string> {
  const [token] = tokens(m);
  expect(token).toBeDefined();
  const row = await ctx.store.records.token(hashToken(token!));
  expect(row?.email).toBe(m.to[0]);
  return row!.deliveryId;
}

function expectNoClearBytes(m: Received, attachments: Attachment[], outer: Buffer): void {
  for (const a of attachments) {
    const content = a.content;
    for (const at of [0, Math.floor(content.length / 2), Math.max(0, content.length - 40)]) {
      const piece = content.subarray(at, at + 40);
      // A forwarded message starts with headers that the outer message has too.
      if (outer.includes(piece)) continue;
      expect(m.raw.includes(piece), `attachment bytes of ${a.filename ?? "?"} in clear`).toBe(false);
      expect(m.raw.includes(Buffer.from(piece.toString("base64").slice(4, 36))), "attachment base64 in clear").toBe(false);
    }
  }
}

describe.each(["01-level3-subject-tag.eml", "02-level3-header-html-umlaut-filename.eml", "07-level3-forwarded-rfc822.eml"])(
  "%s",
  (name) => {
    it("leaves without attachment bytes, with a working link, and the blob decrypts to the attachment", async () => {
      const f = await fixture(name);
      const reply = await submit(env.relay.port, PRACTICE, f.to, f.raw);
      expect(reply.code).toBe(250);
      expect(env.sink.messages).toHaveLength(1);
      const m = env.sink.messages[0]!;
      expect(m.to).toEqual(f.to);
      expect(m.mail.attachments).toEqual([]);
      expectNoClearBytes(m, f.attachments, f.head);
      expect(m.mail.subject).not.toMatch(/\[S\d\]/);
      expect(m.raw.toString()).not.toMatch(/X-Praxmail-Level/i);
      expect(m.mail.text).toContain("Herunterladen");
      expect(tokens(m)).toHaveLength(1);
      const id = await deliveryOf(env.relay.ctx, m);
      const { files } = await openDelivery(env.relay.ctx, id);
      expect(files).toHaveLength(f.attachments.length);
      for (const [i, a] of f.attachments.entries()) {
        expect(files[i]!.data.equals(a.content), `decrypted ${files[i]!.name}`).toBe(true);
        if (a.filename) expect(files[i]!.name).toBe(a.filename);
        expect(m.mail.text).toContain(files[i]!.name);
      }
    });
  },
);

describe("02: HTML alternative and an umlaut file name", () => {
  it("puts the block into the HTML body too, with the file name escaped correctly", async () => {
    const f = await fixture("02-level3-header-html-umlaut-filename.eml");
    // Another Message-ID: the same message again would count as a retry of the first.
    const raw = Buffer.from(f.raw.toString("latin1").replace("<letter-3@", "<letter-3-html@"), "latin1");
    expect((await submit(env.relay.port, PRACTICE, f.to, raw)).code).toBe(250);
    const m = env.sink.messages[0]!;
    expect(m.mail.html).toContain("Arztbrief_Müller_Überweisung.pdf");
    expect(m.mail.html).toContain(">Herunterladen</a>");
    expect(m.mail.html).toContain("anbei der <b>Arztbrief</b>");
    expect(m.mail.subject).toBe("Arztbrief");
  });
});

describe("03: level 4", () => {
  it("sends a neutral notice: neither subject nor text nor file names leave; all are in the delivery", async () => {
    const f = await fixture("03-level4-two-attachments.eml");
    expect((await submit(env.relay.port, PRACTICE, f.to, f.raw)).code).toBe(250);
    expect(env.sink.messages).toHaveLength(1);
    const m = env.sink.messages[0]!;
    expect(m.mail.subject).toBe("Neue sichere Nachricht von Praxis Dr. Weber");
    const raw = m.raw.toString();
    for (const secret of ["Biopsie", "histologische", "Histologie", "Aufnahme", "Termin"]) expect(raw).not.toContain(secret);
    expectNoClearBytes(m, f.attachments, f.head);
    expect(m.mail.attachments).toEqual([]);
    const id = await deliveryOf(env.relay.ctx, m);
    const { files } = await openDelivery(env.relay.ctx, id);
    expect(files.map((x) => [x.kind, x.name])).toEqual([
      ["attachment", "Anhang-1.pdf"],
      ["attachment", "Anhang-2.png"],
      ["message", "Nachricht"],
    ]);
    expect(files[0]!.data.equals(f.attachments[0]!.content)).toBe(true);
    expect(files[1]!.data.equals(f.attachments[1]!.content)).toBe(true);
    const sealed = JSON.parse(files[2]!.data.toString()) as SealedMessage;
    expect(sealed.subject).toBe("Befundbesprechung Biopsie");
    expect(sealed.text).toContain("der histologische Befund liegt vor");
    expect(sealed.files).toEqual(["Histologie.pdf", "Aufnahme.png"]);
  });
});

describe("04: two patients and an internal Cc", () => {
  it("gives each patient their own copy and link, and the internal Cc the original", async () => {
    const f = await fixture("04-level3-several-recipients.eml");
    const rcpts = [...f.to, ...f.cc];
    expect(rcpts).toEqual(["anna.schaefer@patient.example", "jan.mueller@patient.example", "empfang@praxis-weber.example"]);
    expect((await submit(env.relay.port, PRACTICE, rcpts, f.raw)).code).toBe(250);
    expect(env.sink.messages).toHaveLength(3);
    const byRcpt = new Map(env.sink.messages.map((m) => [m.to.join(","), m]));
    const anna = byRcpt.get("anna.schaefer@patient.example")!;
    const jan = byRcpt.get("jan.mueller@patient.example")!;
    const internal = byRcpt.get("empfang@praxis-weber.example")!;
    expect(tokens(anna)).toHaveLength(1);
    expect(tokens(jan)).toHaveLength(1);
    expect(tokens(anna)[0]).not.toBe(tokens(jan)[0]);
    for (const m of [anna, jan]) {
      expectNoClearBytes(m, f.attachments, f.head);
      const { files } = await openDelivery(env.relay.ctx, await deliveryOf(env.relay.ctx, m));
      expect(files[0]!.data.equals(f.attachments[0]!.content)).toBe(true);
    }
    // The original, byte for byte after our trace header.
    expect(internal.raw.toString().startsWith("Received: from ")).toBe(true);
    expect(internal.raw.subarray(internal.raw.indexOf("\r\n") + 2).equals(f.raw)).toBe(true);
  });
});

describe("05: untagged", () => {
  it("passes through unchanged apart from the trace header", async () => {
    const f = await fixture("05-untagged-passthrough.eml");
    const before = (await env.relay.ctx.store.records.deliveries()).length;
    expect((await submit(env.relay.port, PRACTICE, f.to, f.raw)).code).toBe(250);
    expect(env.sink.messages).toHaveLength(1);
    const raw = env.sink.messages[0]!.raw;
    const firstLine = raw.subarray(0, raw.indexOf("\r\n")).toString();
    expect(firstLine).toMatch(/^Received: from \S+ \(\[127\.0\.0\.1\]\) by \S+ \(praxmail\) with E?SMTP id \w+; /);
    expect(raw.subarray(raw.indexOf("\r\n") + 2).equals(f.raw)).toBe(true);
    expect(await env.relay.ctx.store.records.deliveries()).toHaveLength(before);
  });
});

describe("06: level 3 without attachments", () => {
  it("leaves as it came with the tag removed, and creates no delivery", async () => {
    const f = await fixture("06-level3-no-attachment.eml");
    const before = (await env.relay.ctx.store.records.deliveries()).length;
    expect((await submit(env.relay.port, PRACTICE, f.to, f.raw)).code).toBe(250);
    const m = env.sink.messages[0]!;
    expect(m.mail.subject).toBe("Rückruf");
    expect(m.mail.text).toBe("Bitte rufen Sie uns zurück.\n");
    expect(tokens(m)).toEqual([]);
    expect(await env.relay.ctx.store.records.deliveries()).toHaveLength(before);
  });
});

describe("08: malformed and truncated", () => {
  it("is either refused with a reason or delivered encrypted; never an attachment byte in clear", async () => {
    const f = await fixture("08-malformed-truncated.eml");
    const reply = await submit(env.relay.port, PRACTICE, ["anna.schaefer@patient.example"], f.raw);
    const head = "JVBERi0xLjQKMSAwIG9iago8PCAvVHlwZSAvQ2F0YWxvZyAvUGFnZXMg";
    if (reply.code === 250) {
      expect(env.sink.messages).toHaveLength(1);
      const m = env.sink.messages[0]!;
      expect(m.raw.toString()).not.toContain(head.slice(0, 24));
      expect(m.raw.includes(Buffer.from("%PDF-1.4"))).toBe(false);
      const { files } = await openDelivery(env.relay.ctx, await deliveryOf(env.relay.ctx, m));
      expect(files[0]!.data.subarray(0, 8).toString()).toBe("%PDF-1.4");
    } else {
      expect(reply.code).toBeGreaterThanOrEqual(500);
      expect(reply.text).toMatch(/^5\d\d 5\.\d\.\d .{10,}/);
      expect(env.sink.messages).toEqual([]);
    }
  });
});

if (needTool("swaks")) {
  describe("with swaks as the client", () => {
    it("relays 01 and answers 250 with the number of encrypted deliveries", async () => {
      const f = await fixture("01-level3-subject-tag.eml");
      const file = join(env.dir, "01-for-swaks.eml");
      await writeFile(file, f.raw.toString("latin1").replace("<lab-3@", "<lab-3-swaks@"), "latin1");
      const { stdout: out } = await execFileAsync("swaks", ["--server", `127.0.0.1:${env.relay.port}`, "--from", PRACTICE, "--to", "anna.schaefer@patient.example", "--data", file, "--suppress-data"], { encoding: "utf8", timeout: 60_000 });
      expect(out).toMatch(/<- {2}250 2\.0\.0 accepted, 1 encrypted/);
      expect(env.sink.messages).toHaveLength(1);
      expect(env.sink.messages[0]!.mail.attachments).toEqual([]);
    });
  });
}

describe("what stays under home", () => {
  it("holds no attachment byte in clear after all of the above", async () => {
    const names = (await readdir(FIXTURES)).filter((n) => /^0[1-47]/.test(n));
    const needles: Buffer[] = [];
    for (const n of names) for (const a of (await fixture(n)).attachments) needles.push(a.content.subarray(0, 64));
    for (const file of await walk(env.relay.ctx.home)) {
      const bytes = await readFile(file);
      for (const needle of needles) expect(bytes.includes(needle), file).toBe(false);
    }
    expect(needles.length).toBeGreaterThanOrEqual(5);
  });
});

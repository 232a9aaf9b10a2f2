// MIME fuzzing (issue 8): the sample mails, damaged by a seeded mutator (test/helpers/mutate.ts),
// sent through a real relay to a real smtp-server sink. Asserted for every message: no crash,
// a definite SMTP answer within a timeout, memory that stays bounded and does not grow with
// the count, and, for tagged mail, not one attachment byte in clear in anything the sink got.
//
//   PRAXMAIL_FUZZ_COUNT  messages (default: a CI-sized run; `npm run fuzz` sends 10,000)
//   PRAXMAIL_FUZZ_SEED   the seed (default below); a failure prints seed and index
//   PRAXMAIL_FUZZ_ONLY   comma-separated indices, to replay single messages
//
// The relay runs in this process, not as a `praxmail serve` child: an exception or rejection
// that escapes the relay's handlers then reaches this process's 'uncaughtException' and
// 'unhandledRejection' events while the messages in flight are known, so the test names
// them; a child would only die. The price is that the memory figures include the sink and
// the client, which makes them an upper bound for the relay.
//
// The client is a minimal SMTP client on a real socket rather than nodemailer, because
// nodemailer rewrites bare CR and LF into CRLF and refuses oversized mail itself, which would
// take two of the mutation families away before the relay ever saw them.
import { once } from "node:events";
import { readFile, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Splitter, type SplitterChunk } from "@zone-eu/mailsplit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, tempDir } from "./helpers/cli.js";
import { makeCase, SecretIndex, type FuzzCase, type Fixture } from "./helpers/mutate.js";
import { startTestRelay, type TestRelay } from "./helpers/relay.js";
import { startSink, type Received, type Sink } from "./helpers/sink.js";
import { SmtpClient, type SmtpReply } from "./helpers/smtp.js";

const COUNT = Number(process.env.PRAXMAIL_FUZZ_COUNT ?? 600);
const SEED = Number(process.env.PRAXMAIL_FUZZ_SEED ?? 20261102);
const ONLY = (process.env.PRAXMAIL_FUZZ_ONLY ?? "").split(",").filter(Boolean).map(Number);
const CLIENTS = 6;
const MAX_SIZE = 4 * 1024 * 1024;
const FROM = "praxis@praxis-weber.example";
const FIXTURES = resolve(import.meta.dirname, "fixtures/mail");

// ---- what the sink got ---------------------------------------------------------------------

/** Every leaf of a message with its transfer encoding removed, as a receiving client sees it. */
async function decodedLeaves(raw: Buffer): Promise<Buffer[]> {
  const leaves: Buffer[] = [];
  const splitter = new Splitter({ maxHeadSize: 4 * 1024 * 1024 });
  let decoder: NodeJS.ReadWriteStream | null = null;
  const close = async (): Promise<void> => {
    if (!decoder) return;
    const d = decoder;
    decoder = null;
    const out: Buffer[] = [];
    d.on("data", (c: Buffer) => out.push(c));
    const ended = once(d, "end");
    d.end();
    await ended;
    leaves.push(Buffer.concat(out));
  };
  splitter.end(raw);
  for await (const obj of splitter as AsyncIterable<SplitterChunk>) {
    if (obj.type === "body") decoder?.write(obj.value);
    else if (obj.type === "node") {
      await close();
      if (!obj.multipart) decoder = obj.getDecoder();
    }
  }
  await close();
  return leaves;
}

/** Where a secret shows in a received message, or null. */
async function leakIn(m: Received, index: SecretIndex): Promise<string | null> {
  const views: [string, Buffer][] = [
    ["raw", m.raw],
    ["text", Buffer.from(m.mail.text ?? "")],
    ["html", Buffer.from(m.mail.html || "")],
    ...m.mail.attachments.map((a, i): [string, Buffer] => [`attachment ${i}`, a.content]),
    ...(await decodedLeaves(m.raw).catch(() => [])).map((b, i): [string, Buffer] => [`leaf ${i}`, b]),
  ];
  for (const [where, bytes] of views) {
    const at = index.find(bytes);
    if (at !== -1) return `${where} at ${at}: ${JSON.stringify(bytes.subarray(Math.max(0, at - 20), at + 44).toString("latin1"))}`;
  }
  return null;
}

/**
 * An untagged message as the sink gets it: DATA ends it with CRLF, and the relay's own
 * client (nodemailer) turns every bare CR and LF into CRLF on the way upstream.
 */
function asForwarded(raw: Buffer): Buffer {
  const s = raw.toString("latin1");
  return Buffer.from((s.endsWith("\r\n") ? s : `${s}\r\n`).replace(/\r\n|\r|\n/g, "\r\n"), "latin1");
}

// ---- the run -------------------------------------------------------------------------------

interface Outcome {
  readonly c: Pick<FuzzCase, "index" | "fixture" | "operators" | "level">;
  readonly code: number;
  readonly stage: string;
  readonly text: string;
  readonly ms: number;
  readonly received: number;
  readonly problems: string[];
}

interface Sample {
  readonly done: number;
  readonly rss: number;
  readonly heap: number;
}

function caseName(c: Outcome["c"]): string {
  return `seed ${SEED} index ${c.index} (${c.fixture}, level ${c.level}, ${c.operators.join("+") || "no operator"})`;
}

async function check(c: FuzzCase, reply: SmtpReply & { stage: string }, received: Received[]): Promise<string[]> {
  const problems: string[] = [];
  if (!(reply.code >= 200 && reply.code < 600)) problems.push(`no definite answer: ${reply.text}`);
  if (c.level > 0) {
    const index = new SecretIndex(c.secrets);
    for (const m of received) {
      const leak = await leakIn(m, index);
      if (leak) problems.push(`attachment bytes in clear: ${leak}`);
    }
    if (reply.code !== 250 && received.length > 0) problems.push(`refused with ${reply.code}, but ${received.length} message(s) left`);
  } else if (reply.code === 250) {
    const expected = asForwarded(c.raw);
    const got = received[0]?.raw;
    const body = got?.subarray(got.indexOf("\r\n") + 2);
    if (received.length !== 1 || !body?.equals(expected)) problems.push("untagged message was not passed through unchanged");
  }
  return problems;
}

describe("MIME fuzzing through the relay", () => {
  let dir: string;
  let sink: Sink;
  let relay: TestRelay;
  let fixtures: Fixture[];

  beforeAll(async () => {
    dir = await tempDir("praxmail-fuzz-");
    sink = await startSink();
    relay = await startTestRelay(join(dir, "home"), { upstream: sink.url, relay: { maxSize: MAX_SIZE } });
    const names = (await readdir(FIXTURES)).filter((n) => n.endsWith(".eml")).sort();
    fixtures = await Promise.all(names.map(async (name) => ({ name, raw: await readFile(join(FIXTURES, name)) })));
  });

  afterAll(async () => {
    await relay.close();
    await sink.close();
    await cleanup(dir);
  });

  it(`answers ${ONLY.length ? ONLY.length : COUNT} mutated messages (seed ${SEED}) without a crash, a hang, growing memory or a leak`, async () => {
    const indices = ONLY.length ? ONLY : Array.from({ length: COUNT }, (_, i) => i);
    const inFlight = new Set<number>();
    const escaped: string[] = [];
    const onError = (e: unknown): void => {
      escaped.push(`${e instanceof Error ? (e.stack ?? e.message) : String(e)} (in flight: ${[...inFlight].map((i) => `seed ${SEED} index ${i}`).join(", ")})`);
    };
    process.on("uncaughtException", onError);
    process.on("unhandledRejection", onError);
    const outcomes: Outcome[] = [];
    const samples: Sample[] = [];
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      samples.push({ done: outcomes.length, rss: m.rss, heap: m.heapUsed });
    }, 100);
    const started = Date.now();
    let next = 0;

    async function worker(): Promise<void> {
      let client: SmtpClient | null = null;
      for (let k = next++; k < indices.length; k = next++) {
        const c = makeCase(fixtures, SEED, indices[k]!);
        const rcpt = `fz${c.index}@patient.example`;
        inFlight.add(c.index);
        const t0 = Date.now();
        let reply: SmtpReply & { stage: string };
        try {
          if (!client?.usable) client = await SmtpClient.open(relay.port);
          reply = await client.send(FROM, rcpt, c.raw, c.index % 2 === 0);
        } catch (e) {
          reply = { code: -1, text: (e as Error).message, stage: "socket" };
          client = null;
        }
        inFlight.delete(c.index);
        const received = sink.messages.filter((m) => m.to.includes(rcpt));
        sink.messages.splice(0, sink.messages.length, ...sink.messages.filter((m) => !m.to.includes(rcpt)));
        const problems = await check(c, reply, received);
        outcomes.push({ c: { index: c.index, fixture: c.fixture, operators: c.operators, level: c.level }, code: reply.code, stage: reply.stage, text: reply.text.slice(0, 120), ms: Date.now() - t0, received: received.length, problems });
      }
      client?.close();
    }

    await Promise.all(Array.from({ length: CLIENTS }, () => worker()));
    const seconds = (Date.now() - started) / 1000;
    clearInterval(sampler);
    process.off("uncaughtException", onError);
    process.off("unhandledRejection", onError);

    report(outcomes, samples, seconds);

    // Still answering after the run, with a clean tagged mail.
    const probe = await SmtpClient.open(relay.port);
    const after = await probe.send(FROM, "after-the-run@patient.example", Buffer.from(`X-Praxmail-Level: 3\r\nSubject: probe\r\n\r\nhello\r\n`), false);
    probe.close();
    expect(after.code, "the relay still answers after the run").toBe(250);

    expect(escaped, "exceptions or rejections escaped the relay").toEqual([]);
    const failed = outcomes.filter((o) => o.problems.length > 0);
    for (const o of failed.slice(0, 20)) console.error(`FAILED ${caseName(o.c)}: ${o.code} ${o.text}\n  ${o.problems.join("\n  ")}`);
    if (failed.length) console.error(`replay with: PRAXMAIL_FUZZ_SEED=${SEED} PRAXMAIL_FUZZ_ONLY=${failed.slice(0, 20).map((o) => o.c.index).join(",")} npx vitest run test/relay.fuzz.test.ts`);
    expect(failed.map((o) => `${caseName(o.c)}: ${o.problems[0] ?? ""}`)).toEqual([]);
    expect(sink.messages.filter((m) => !m.to.includes("after-the-run@patient.example")).map((m) => m.to.join(",")), "messages the sink got for no case").toEqual([]);
    expect(outcomes).toHaveLength(indices.length);
    if (ONLY.length) return;

    // A plausible distribution: the unmutated control cases all go through, most tagged
    // mail goes through, nothing is left to "try again later" for malformed input.
    const tagged = outcomes.filter((o) => o.c.level > 0);
    const controls = tagged.filter((o) => o.c.operators.length === 0);
    expect(controls.length).toBeGreaterThan(0);
    expect(controls.filter((o) => o.code !== 250).map((o) => `${caseName(o.c)}: ${o.text}`)).toEqual([]);
    expect(tagged.filter((o) => o.code === 250).length / tagged.length).toBeGreaterThan(0.4);
    expect(outcomes.filter((o) => o.code >= 400 && o.code < 500 && o.code !== 452).map((o) => `${caseName(o.c)}: ${o.text}`)).toEqual([]);

    // Memory: under a bound, and not growing with the count (median of each third).
    const peakRss = Math.max(...samples.map((s) => s.rss));
    expect(peakRss).toBeLessThan(1536 * 2 ** 20);
    const third = (k: number): number[] => samples.filter((s) => s.done >= (k * outcomes.length) / 3 && s.done < ((k + 1) * outcomes.length) / 3).map((s) => s.heap).sort((a, b) => a - b);
    const median = (xs: number[]): number => xs[Math.floor(xs.length / 2)] ?? 0;
    expect(median(third(2))).toBeLessThan(median(third(0)) * 1.5 + 64 * 2 ** 20);
  }, Math.max(300_000, (ONLY.length || COUNT) * 500));
});

function report(outcomes: Outcome[], samples: Sample[], seconds: number): void {
  const count = (xs: string[]): string =>
    Object.entries(xs.reduce<Record<string, number>>((acc, x) => ({ ...acc, [x]: (acc[x] ?? 0) + 1 }), {}))
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${String(v).padStart(6)}  ${k}`)
      .join("\n");
  const mib = (n: number): string => `${(n / 2 ** 20).toFixed(0)} MiB`;
  const slowest = [...outcomes].sort((a, b) => b.ms - a.ms)[0];
  console.log(
    [
      `fuzz: ${outcomes.length} messages, seed ${SEED}, ${seconds.toFixed(1)} s (${(outcomes.length / seconds).toFixed(1)}/s), ${CLIENTS} clients`,
      `peak rss ${mib(Math.max(...samples.map((s) => s.rss)))}, peak heap ${mib(Math.max(...samples.map((s) => s.heap)))}, slowest ${slowest?.ms ?? 0} ms (${slowest ? caseName(slowest.c) : "-"})`,
      "replies (level, stage, code):",
      count(outcomes.map((o) => `L${o.c.level} ${o.stage} ${o.code}`)),
      "reasons:",
      count(outcomes.map((o) => o.text.replace(/\d+/g, "N").slice(0, 90))),
    ].join("\n"),
  );
}

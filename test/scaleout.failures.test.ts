// A node on the shared backend when an engine fails under it, on real engines: PostgreSQL
// restarts (stopped and started again) while senders send, and the bucket refuses writes
// (a Swift container quota, as a full quota of a hosted object store). The relay answers 451
// while it cannot make a mail durable, never 250 and never 5xx, and takes mail again once the
// engine is back, without a restart of serve; nothing half-written stays after gc.
import { randomBytes } from "node:crypto";
import { ListMultipartUploadsCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, tempDir } from "./helpers/cli.js";
import { startCluster, type Cluster, type ClusterNode } from "./helpers/cluster.js";
import { sleep, startCrashSink, type Attempt, type CrashSink, type Upstreamed } from "./helpers/crash.js";

import { befundMail, submit } from "./helpers/relay.js";

import { sharedEnginesInstalled } from "./helpers/backends.js";

const ENGINES =
  sharedEnginesInstalled();
/** The SMTP client's waits: an answer later than this counts as a hang. */
const CLIENT = { ignoreTLS: true, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 };
/** The relay's reply when it cannot make a mail durable now. */
const TEMPORARY = "451 4.3.0 temporary failure, try again later";

interface Mail {
  readonly messageId: string;
  readonly from: string;
  readonly to: string;
  readonly raw: Buffer;
  readonly attempts: Attempt[];
}

function mail(to: string, n: number): Mail {
  const messageId = `<failures-${randomBytes(6).toString("hex")}@praxis-weber.example>`;
  const from = "mfa@praxis-weber.example";
  const raw = befundMail({ from, to: `<${to}>`, messageId: messageId.slice(1, -1), attachment: randomBytes(8192 + n * 512), subject: `[S3] Befund ${String(n)}` });
  return { messageId, from, to, raw, attempts: [] };
}

/** One SMTP attempt of a mail, recorded; the reply's code (-1: no reply: refused, reset or timed out). */
async function attempt(node: ClusterNode, m: Mail): Promise<number> {
  const start = performance.now();
  const r = await submit(node.smtpPort, m.from, [m.to], m.raw, CLIENT);
  m.attempts.push({ start, end: performance.now(), code: r.code, text: r.text });
  return r.code;
}

/** Polls until check() holds, or fails after timeoutMs. */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

async function readyz(node: ClusterNode): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`${node.portalUrl}/readyz`, { signal: AbortSignal.timeout(10_000) });
  return { status: r.status, body: await r.json() };
}

describe.runIf(ENGINES)("a node on the shared backend when PostgreSQL or the bucket fails", () => {
  let dir: string;
  let sink: CrashSink;
  let cluster: Cluster | undefined;
  let node: ClusterNode;

  beforeAll(async () => {
    dir = await tempDir("praxmail-failures-");
    sink = await startCrashSink();
    cluster = await startCluster(dir, { nodes: 1, upstream: sink.url });
    node = cluster.nodes[0]!;
  }, 240_000);
  afterAll(async () => {
    await cluster?.stop();
    await sink.close();
    await cleanup(dir);
  });

  /** Upstream copies by Message-ID. */
  const upstreamOf = (m: Mail): Upstreamed[] => sink.messages.filter((u) => u.messageId === m.messageId);

  /** Visible deliveries, as `praxmail list deliveries` on the node gives them. */
  async function visible(): Promise<{ id: string; recipient: string; files: { blob: string }[] }[]> {
    const r = await cluster!.praxmail(0, ["list", "deliveries", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { id: string; recipient: string; files: { blob: string }[] }[];
  }

  /** gc, then: the bucket holds exactly the blobs of visible deliveries (under blobs/), and no unfinished upload. */
  async function gcLeavesNothingHalf(): Promise<void> {
    const c = cluster!;
    const gc = await c.praxmail(0, ["gc", "--grace", "0", "--json"]);
    expect(gc.code, gc.stderr).toBe(0);
    const referenced = (await visible()).flatMap((d) => d.files.map((f) => c.prefix + f.blob)).sort();
    const s3 = c.s3.client();
    try {
      const objects = await s3.send(new ListObjectsV2Command({ Bucket: c.bucket, Prefix: `${c.prefix}blobs/` }));
      expect(objects.IsTruncated).toBe(false);
      expect((objects.Contents ?? []).map((o) => o.Key).sort()).toEqual(referenced);
      expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: c.bucket }))).Uploads ?? []).toEqual([]);
    } finally {
      s3.destroy();
    }
  }

  it("PostgreSQL restarts while 4 senders send: 451 within 5 s while it is down, /readyz unavailable then ok, and 250 within 5 s after, from the same serve", { timeout: 300_000 }, async ({ onTestFailed }) => {
    const c = cluster!;
    onTestFailed(() => {
      console.error(`--- node ---\n${node.output().slice(-6000)}`);
    });
    const pid = node.served?.child.pid;
    const sent: Mail[] = [];
    let done = false;
    const accepted = (after = 0): number => sent.filter((m) => m.attempts.some((a) => a.code === 250 && a.start >= after)).length;
    const senders = Array.from({ length: 4 }, async (_, s) => {
      for (let n = 0; !done; n++) {
        const m = mail(`db-restart-${String(s)}@patient.example`, n);
        sent.push(m);
        // A mail is sent again until it gets 250, as an MTA does after a 4xx.
        for (let code = await attempt(node, m); code !== 250 && code < 500; code = await attempt(node, m)) await sleep(50);
        if (m.attempts.at(-1)?.code !== 250) return;
      }
    });

    await until("5 mails got 250", () => accepted() >= 5);
    await c.pg.stop();
    const down = performance.now();
    await until("/readyz says the database is unavailable", async () => (await readyz(node)).status === 503);
    const notReady = await readyz(node);
    const refusedWhileDown = (): Attempt[] => sent.flatMap((m) => m.attempts).filter((a) => a.start >= down && a.end <= performance.now());
    // Long enough for the client's reconnects to back off: each refused attempt counts.
    await until("20 attempts were made while PostgreSQL was down", () => refusedWhileDown().length >= 20);
    const starting = performance.now();
    await c.pg.start();
    const up = performance.now();
    await until("/readyz says ok again", async () => (await readyz(node)).status === 200);
    const ready = await readyz(node);
    await until("5 mails got 250 after the restart", () => accepted(up) >= 5);
    done = true;
    await Promise.all(senders);

    expect(notReady).toEqual({ status: 503, body: { ready: false, database: "unavailable", blobs: "ok" } });
    expect(ready).toEqual({ status: 200, body: { ready: true, database: "ok", blobs: "ok" } });
    // The same serve process answered throughout.
    expect(node.served?.child.pid).toBe(pid);
    expect(node.served?.child.exitCode).toBeNull();
    const attempts = sent.flatMap((m) => m.attempts);
    // Never a 5xx and never a hang or a dropped connection: a reply to every attempt.
    expect(attempts.filter((a) => a.code === -1 || a.code >= 500)).toEqual([]);
    // While PostgreSQL was down (attempts that began after it had stopped and ended before it
    // started again): 451, never 250.
    const whileDown = attempts.filter((a) => a.start >= down && a.end <= starting);
    expect(whileDown.length).toBeGreaterThanOrEqual(20);
    expect(new Set(whileDown.map((a) => a.text))).toEqual(new Set([TEMPORARY]));
    // Promptly: a refusal within 5 s while it is down, and the first 250 within 5 s of its return.
    expect(whileDown.filter((a) => a.end - a.start > 5000)).toEqual([]);
    const firstAfter = Math.min(...attempts.filter((a) => a.code === 250 && a.end >= up).map((a) => a.end));
    expect(firstAfter - up).toBeLessThan(5000);
    // Before, around and after: every reply is 250 or that 451.
    expect(attempts.filter((a) => a.code !== 250 && a.text !== TEMPORARY)).toEqual([]);

    // Every mail got 250 in the end, as exactly one visible delivery, upstream as that delivery.
    const deliveries = (await visible()).filter((d) => d.recipient.startsWith("db-restart-"));
    expect(sent.filter((m) => m.attempts.at(-1)?.code !== 250).map((m) => m.messageId)).toEqual([]);
    expect(deliveries).toHaveLength(sent.length);
    const announced = sent.map((m) => [...new Set(upstreamOf(m).map((u) => u.deliveryId))]);
    expect(announced.filter((ids) => ids.length !== 1)).toEqual([]);
    expect(new Set(announced.flat())).toEqual(new Set(deliveries.map((d) => d.id)));
    await gcLeavesNothingHalf();
    console.log(`scaleout.failures: ${String(sent.length)} mails, ${String(attempts.length)} attempts, ${String(whileDown.length)} while PostgreSQL was down (${String(Math.round(starting - down))} ms)`);
  });

  it("a transaction open when PostgreSQL stops fails with CONNECTION_CLOSED and never ends the process; the same store works once PostgreSQL is back", { timeout: 120_000 }, async () => {
    const c = cluster!;
    // In this process, as a node has it: the store of openSharedStore.
    const store = await c.store();
    try {
      let resume = (): void => undefined;
      const paused = new Promise<void>((r) => (resume = r));
      let opened = (): void => undefined;
      const open = new Promise<void>((r) => (opened = r));
      const cut = store
        .transaction(async (tx) => {
          await tx.records.patients();
          opened();
          // PostgreSQL stops here; then the transaction queries on, and its rollback follows.
          await paused;
          return tx.records.patients();
        })
        .then(
          () => "committed",
          (e: unknown) => (e as { code?: string }).code ?? String(e),
        );
      await open;
      await c.pg.stop();
      resume();
      expect(await cut).toBe("CONNECTION_CLOSED");
      // A few turns of the event loop, where the client used to throw from a timer.
      for (let i = 0; i < 5; i++) await sleep(20);
      await expect(store.ping()).rejects.toMatchObject({ code: "ECONNREFUSED" });
      await c.pg.start();
      const back = performance.now();
      await until("the store answers again", () => store.ping().then(() => true, () => false), 5000);
      expect(performance.now() - back).toBeLessThan(5000);
      expect(await store.transaction((tx) => tx.records.patients())).toEqual(expect.any(Array));
    } finally {
      await store.close();
    }
  });

  it("the bucket refuses writes: 451, no delivery, nothing half-written after gc; the same mail is accepted once writes work again", { timeout: 120_000 }, async ({ onTestFailed }) => {
    const c = cluster!;
    onTestFailed(() => {
      console.error(`--- node ---\n${node.output().slice(-6000)}`);
    });
    const to = "bucket-full@patient.example";
    const m = mail(to, 1);
    await c.s3.quota(c.bucket, 0);
    try {
      for (let i = 0; i < 3; i++) expect(await attempt(node, m)).toBe(451);
      expect(new Set(m.attempts.map((a) => a.text))).toEqual(new Set([TEMPORARY]));
      expect((await visible()).filter((d) => d.recipient === to)).toEqual([]);
      expect(upstreamOf(m)).toEqual([]);
      // No row either, not even one never made visible.
      const store = await c.store();
      try {
        expect(await store.records.unsentBefore(new Date(Date.now() + 60_000).toISOString())).toEqual([]);
      } finally {
        await store.close();
      }
      await gcLeavesNothingHalf();
    } finally {
      await c.s3.quota(c.bucket, null);
    }
    expect(await attempt(node, m)).toBe(250);
    expect(m.attempts.at(-1)?.text).toContain("accepted, 1 encrypted");
    const [delivery, ...more] = (await visible()).filter((d) => d.recipient === to);
    expect(more).toEqual([]);
    expect(upstreamOf(m).map((u) => u.deliveryId)).toEqual([delivery?.id]);
    await gcLeavesNothingHalf();
  });
});

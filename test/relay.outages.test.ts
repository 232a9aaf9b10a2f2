// Outages the relay must survive without losing or leaking a mail: an upstream that drops
// the connection or refuses in the middle of DATA, a home that runs out of space (a real
// tmpfs, as root), and a database locked by another process. Each answers 451 with nothing
// visible, and the relay recovers once the outage is over.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Context } from "../src/core/index.js";
import { DB_FILE } from "../src/store/db.js";
import { cleanup, praxmail, tempDir, walk } from "./helpers/cli.js";
import { befundMail, startTestRelay, submit, type TestRelay } from "./helpers/relay.js";
import { startSink, type Sink } from "./helpers/sink.js";
import { needRoot } from "./helpers/tools.js";

const FROM = "praxis@praxis-weber.example";
const TO = "patient@patient.example";

const message = (id: string, attachment: Buffer): Buffer => befundMail({ from: FROM, to: TO, messageId: `${id}@praxis-weber.example`, attachment });

/** Recipients of deliveries whose mail went out (what a patient or admin can see). */
const visible = async (ctx: Context): Promise<string[]> => (await ctx.store.records.deliveries({})).filter((d) => d.sentAt !== null).map((d) => d.recipient);
const blobFiles = async (home: string): Promise<string[]> => (await walk(join(home, "blobs")).catch(() => [])).filter((f) => !f.endsWith("/"));

let dir: string;
let sink: Sink;
let relay: TestRelay | undefined;
let n = 0;
const home = (): string => join(dir, `home-${++n}`);

beforeAll(async () => {
  dir = await tempDir();
  sink = await startSink();
});
afterEach(async () => {
  await relay?.close();
  relay = undefined;
  sink.messages.length = 0;
});
afterAll(async () => {
  await sink.close();
  await cleanup(dir);
});

/**
 * An upstream that speaks just enough SMTP to take a message, then fails in DATA: it drops
 * the connection after some bytes, or answers the final dot with the given reply.
 */
async function brokenUpstream(mode: { drop: number } | { reply: string }): Promise<{ url: string; received: () => number; close: () => Promise<void> }> {
  let received = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => undefined);
    let inData = false;
    let buf = "";
    let got = 0;
    s.write("220 broken.test ESMTP\r\n");
    s.on("data", (chunk: Buffer) => {
      if (inData) {
        got += chunk.length;
        received += chunk.length;
        if ("drop" in mode && got >= mode.drop) s.destroy();
        else if ("reply" in mode && chunk.toString("latin1").endsWith("\r\n.\r\n")) {
          inData = false;
          s.write(`${mode.reply}\r\n`);
        }
        return;
      }
      buf += chunk.toString("latin1");
      let i;
      while ((i = buf.indexOf("\r\n")) !== -1) {
        const line = buf.slice(0, i).toUpperCase();
        buf = buf.slice(i + 2);
        if (line.startsWith("EHLO")) s.write("250-broken.test\r\n250 8BITMIME\r\n");
        else if (line.startsWith("DATA")) {
          inData = true;
          s.write("354 go ahead\r\n");
        } else if (line.startsWith("QUIT")) s.end("221 bye\r\n");
        else s.write("250 ok\r\n");
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `smtp://127.0.0.1:${port}`,
    received: () => received,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          r();
        });
      }),
  };
}

describe("upstream fails in the middle of DATA", () => {
  it.each([
    ["drops the connection after the first 512 bytes of DATA", { drop: 512 }],
    ["refuses the message for good at the final dot", { reply: "554 5.7.1 rejected by policy" }],
    ["refuses the message for now at the final dot", { reply: "452 4.3.1 insufficient system storage" }],
  ] as const)("%s: 451, nothing visible, and the retry to a healthy upstream goes out once", async (_name, mode) => {
    const broken = await brokenUpstream(mode);
    const h = home();
    const raw = message(`mid-data-${n}`, randomBytes(300_000));
    try {
      relay = await startTestRelay(h, { upstream: broken.url });
      const r = await submit(relay.port, FROM, [TO], raw);
      expect(r.code).toBe(451);
      expect(r.text).toMatch(/^451 4\.4\.1 upstream did not accept the message/);
      // It did get into DATA: the failure is mid-message, not at connect.
      expect(broken.received()).toBeGreaterThan(0);
      expect(await visible(relay.ctx)).toEqual([]);
      expect(await blobFiles(h)).toEqual([]);
    } finally {
      await relay?.close();
      relay = undefined;
      await broken.close();
    }
    // The outage ends: the same message, retried, goes out exactly once.
    relay = await startTestRelay(h, { upstream: sink.url });
    expect((await submit(relay.port, FROM, [TO], raw)).code).toBe(250);
    expect(sink.messages).toHaveLength(1);
    expect(await visible(relay.ctx)).toEqual([TO]);
  });
});

describe.runIf(needRoot("mounting a tmpfs"))("the home runs out of space (a real 12 MiB tmpfs)", () => {
  let mnt: string;
  beforeAll(async () => {
    mnt = join(dir, "tmpfs");
    await mkdir(mnt);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", mnt]);
  });
  afterAll(() => {
    execFileSync("umount", [mnt]);
  });

  it("a blob that does not fit: 451, no temp file or row is left, and the next mail that fits goes out", async () => {
    const h = join(mnt, "home-blob");
    relay = await startTestRelay(h, { upstream: sink.url });
    const r = await submit(relay.port, FROM, [TO], message("too-big-for-disk", randomBytes(16 * 1024 * 1024)));
    expect(r.code).toBe(451);
    expect(r.text).toMatch(/^451 4\.3\.0 /);
    expect(sink.messages).toEqual([]);
    expect(await visible(relay.ctx)).toEqual([]);
    expect(await blobFiles(h)).toEqual([]);

    expect((await submit(relay.port, FROM, [TO], message("fits", randomBytes(200_000)))).code).toBe(250);
    expect(sink.messages).toHaveLength(1);
    expect(await visible(relay.ctx)).toEqual([TO]);
    await relay.close();
    relay = undefined;
    expect((await praxmail(["audit", "--home", h, "--verify"])).code).toBe(0);
    await rm(h, { recursive: true });
  });

  it("a full disk (blobs and database): 451 while it is full, 250 once space is freed, gc leaves nothing, the audit chain intact", async () => {
    const h = join(mnt, "home-db");
    relay = await startTestRelay(h, { upstream: sink.url });
    expect((await submit(relay.port, FROM, [TO], message("before", randomBytes(1000)))).code).toBe(250);
    // Fill every byte that is left, so that SQLite cannot grow its WAL or the blob its file.
    const filler = join(mnt, "filler");
    await writeFile(filler, Buffer.alloc(0));
    try {
      execFileSync("dd", ["if=/dev/zero", `of=${filler}`, "bs=64k"], { stdio: "ignore" });
    } catch {
      // dd stops with ENOSPC: that is the point.
    }
    const whileFull = message("while-full", randomBytes(100_000));
    const r = await submit(relay.port, FROM, [TO], whileFull);
    expect(r.code).toBe(451);
    expect(sink.messages).toHaveLength(1);
    expect(await visible(relay.ctx)).toEqual([TO]);

    await rm(filler);
    expect((await submit(relay.port, FROM, [TO], whileFull)).code).toBe(250);
    expect(sink.messages).toHaveLength(2);
    expect(await visible(relay.ctx)).toEqual([TO, TO]);
    await relay.close();
    relay = undefined;
    expect((await praxmail(["gc", "--home", h])).code).toBe(0);
    expect((await readdir(join(h, "blobs", "tmp")).catch(() => [])).length).toBe(0);
    expect((await praxmail(["audit", "--home", h, "--verify"])).code).toBe(0);
  });
});

describe("the database is locked by another process", () => {
  /** A process that holds an exclusive write lock on the home's database for `ms`. */
  async function lockFor(h: string, ms: number): Promise<{ child: ChildProcess; exited: Promise<unknown> }> {
    const script = `
      const Database = require("better-sqlite3");
      const db = new Database(${JSON.stringify(join(h, DB_FILE))});
      db.exec("BEGIN EXCLUSIVE");
      process.stdout.write("locked\\n");
      setTimeout(() => { db.exec("COMMIT"); db.close(); }, ${ms});
    `;
    const child = spawn(process.execPath, ["-e", script], { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise((r) => child.once("exit", r));
    await new Promise<void>((res, rej) => {
      child.stdout.once("data", () => {
        res();
      });
      child.once("exit", (code) => {
        rej(new Error(`locker exited with ${String(code)}`));
      });
    });
    return { child, exited };
  }

  it("waits out a short lock and accepts; a long lock gets 451 within the bound, then it accepts again", async () => {
    const h = home();
    relay = await startTestRelay(h, { upstream: sink.url });

    const short = await lockFor(h, 1000);
    let t0 = performance.now();
    expect((await submit(relay.port, FROM, [TO], message("short-lock", randomBytes(2000)))).code).toBe(250);
    expect(performance.now() - t0).toBeGreaterThan(500);
    await short.exited;

    const long = await lockFor(h, 20_000);
    const raw = message("long-lock", randomBytes(2000));
    try {
      t0 = performance.now();
      const r = await submit(relay.port, FROM, [TO], raw);
      const waited = performance.now() - t0;
      expect(r.code).toBe(451);
      expect(r.text).toMatch(/^451 4\.3\.0 /);
      // The bound is SQLite's busy timeout (5 s): it waited, and not much longer.
      expect(waited).toBeGreaterThan(4000);
      expect(waited).toBeLessThan(15_000);
      expect(sink.messages).toHaveLength(1);
    } finally {
      long.child.kill();
      await long.exited;
    }
    expect((await submit(relay.port, FROM, [TO], raw)).code).toBe(250);
    expect(sink.messages).toHaveLength(2);
    expect(await visible(relay.ctx)).toEqual([TO, TO]);
  }, 120_000);
});

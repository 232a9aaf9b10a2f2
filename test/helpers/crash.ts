// Parts of the crash tests (relay and milter): a seeded random source, an upstream sink that
// can kill the relay at the moment it has taken a message (before its 250 reaches the
// relay), `praxmail serve` as a child process on fixed ports that can be SIGKILLed and
// started again, and the checks of what the store looks like afterwards.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { SMTPServer } from "smtp-server";
import { simpleParser, type ParsedMail } from "mailparser";
import { BIN, walk } from "./cli.js";
import { submit } from "./relay.js";
import { tokens } from "./deliveries.js";

/**
 * The kill plan's seed: PRAXMAIL_CRASH_SEED, or the test's own default.
 *
 * @param fallback - The default seed.
 * @returns A 32-bit seed.
 * @throws If the variable is not an integer 0..2^32-1.
 */
export function crashSeed(fallback: number): number {
  const v = process.env.PRAXMAIL_CRASH_SEED;
  if (v === undefined || v === "") return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`PRAXMAIL_CRASH_SEED must be an integer 0..2^32-1, not ${JSON.stringify(v)}`);
  return n;
}

/** @returns A promise that resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `fn` over `items` with at most `width` at a time.
 *
 * @param items - The work.
 * @param width - How many at once.
 * @param fn - One item's work.
 */
export async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

const execFileP = promisify(execFile);

/**
 * Decrypts a delivery's attachment with the Go age CLI only: wrap[P] with the practice
 * identity file gives D, and D opens the blob.
 *
 * @param home - The home (practice-identity.txt, praxmail.db, blobs).
 * @param deliveryId - The delivery.
 * @param scratch - A private folder for D's key file.
 * @returns The plaintext of its first attachment.
 */
export async function ageDecrypt(home: string, deliveryId: string, scratch: string): Promise<Buffer> {
  const db = new Database(join(home, "praxmail.db"), { readonly: true });
  let wrap: Buffer;
  let blob: string;
  try {
    wrap = db.prepare("SELECT ciphertext FROM wraps WHERE delivery_id = ? AND holder = 'practice'").pluck().get(deliveryId) as Buffer;
    blob = db.prepare("SELECT blob FROM files WHERE delivery_id = ? AND kind = 'attachment' ORDER BY position").pluck().get(deliveryId) as string;
  } finally {
    db.close();
  }
  const unwrap = execFileP("age", ["-d", "-i", join(home, "practice-identity.txt")], { encoding: "buffer" });
  unwrap.child.stdin?.end(wrap);
  const d = (await unwrap).stdout.toString("utf8").trim();
  const keyFile = join(scratch, `${randomBytes(6).toString("hex")}.key`);
  await writeFile(keyFile, `${d}\n`, { mode: 0o600 });
  const out = await execFileP("age", ["-d", "-i", keyFile, join(home, blob)], { encoding: "buffer", maxBuffer: 64 << 20 });
  return out.stdout;
}

/**
 * What must hold of a home after `praxmail gc --grace 0`, whatever crashed before: no temp
 * file, no unsent or half row, every referenced blob on disk and every blob referenced, and
 * an audit log in which every delivery created is visible or was discarded.
 *
 * @param home - The home.
 * @returns One line per violation; empty when all holds.
 */
export async function storeViolations(home: string): Promise<string[]> {
  const violations: string[] = [];
  const tmpLeft = await walk(join(home, "blobs", "tmp")).catch(() => []);
  if (tmpLeft.length) violations.push(`temp files left after gc: ${tmpLeft.join(", ")}`);
  const db = new Database(join(home, "praxmail.db"), { readonly: true });
  try {
    const q = (sql: string): unknown[] => db.prepare(sql).all();
    const unsent = q("SELECT id FROM deliveries WHERE sent_at IS NULL");
    if (unsent.length) violations.push(`deliveries never marked sent after gc: ${JSON.stringify(unsent)}`);
    for (const [t, col] of [["files", "delivery_id"], ["wraps", "delivery_id"], ["link_tokens", "delivery_id"]] as const) {
      const orphans = q(`SELECT ${col} FROM ${t} WHERE ${col} NOT IN (SELECT id FROM deliveries)`);
      if (orphans.length) violations.push(`${t} rows without a delivery: ${JSON.stringify(orphans)}`);
    }
    const noPracticeWrap = q("SELECT id FROM deliveries WHERE id NOT IN (SELECT delivery_id FROM wraps WHERE holder = 'practice')");
    if (noPracticeWrap.length) violations.push(`deliveries without wrap[P]: ${JSON.stringify(noPracticeWrap)}`);
    const missingBlob = q("SELECT f.id FROM files f JOIN deliveries d ON d.id = f.delivery_id WHERE f.blob IS NULL AND d.status IN ('pending-approval','ready','downloaded')");
    if (missingBlob.length) violations.push(`active files without a blob: ${JSON.stringify(missingBlob)}`);
    const referenced = new Set(db.prepare("SELECT blob FROM files WHERE blob IS NOT NULL").pluck().all() as string[]);
    const onDisk = new Set((await walk(join(home, "blobs")).catch(() => [])).map((p) => p.slice(home.length + 1).split("\\").join("/")));
    for (const b of referenced) if (!onDisk.has(b)) violations.push(`row points at a missing blob ${b}`);
    for (const b of onDisk) if (!referenced.has(b)) violations.push(`blob without a row: ${b}`);
    // The audit log tells the same story: every delivery created is visible or was discarded.
    const visible = new Set(db.prepare("SELECT id FROM deliveries WHERE sent_at IS NOT NULL").pluck().all() as string[]);
    const created = new Set(db.prepare("SELECT subject FROM audit WHERE action = 'delivery.create'").pluck().all() as string[]);
    const discarded = new Set(db.prepare("SELECT subject FROM audit WHERE action = 'delivery.discard'").pluck().all() as string[]);
    for (const id of created) if (!discarded.has(id) && !visible.has(id)) violations.push(`delivery ${id} was created, neither discarded nor visible`);
    for (const id of visible) if (!created.has(id) || discarded.has(id)) violations.push(`visible delivery ${id} has no clean create record`);
  } finally {
    db.close();
  }
  return violations;
}

/**
 * A small seeded PRNG (mulberry32): the same seed gives the same kill plan.
 *
 * @param seed - 32-bit seed.
 * @returns A function giving numbers in [0, 1).
 */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One SMTP attempt of a sender: when it started and ended, and the reply. */
export interface Attempt {
  readonly start: number;
  readonly end: number;
  readonly code: number;
  readonly text: string;
}

/** At most this many attempts per message in the crash tests. */
const MAX_ATTEMPTS = 40;

/**
 * Submits one message of a crash test until the relay (or Postfix) gives a final answer,
 * recording every attempt: 250 is accepted; a connection error (-1) or a 4xx means try
 * again after a short pause; a 5xx is final.
 *
 * @param port - Where to submit.
 * @param msg - The message; its attempts grow.
 * @param to - Its recipients.
 * @param broken - Set when the run broke: stop at once.
 * @returns True when it was accepted.
 */
export async function submitUntilAnswered(
  port: number,
  msg: { readonly from: string; readonly raw: Buffer | string; readonly attempts: Attempt[] },
  to: string[],
  broken: { readonly error: Error | null },
): Promise<boolean> {
  for (;;) {
    if (broken.error) return false;
    const start = performance.now();
    const r = await submit(port, msg.from, to, msg.raw, { ignoreTLS: true, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 60_000 });
    msg.attempts.push({ start, end: performance.now(), code: r.code, text: r.text });
    if (r.code === 250) return true;
    if (r.code >= 500 || msg.attempts.length >= MAX_ATTEMPTS) return false;
    await sleep(25 * Math.min(msg.attempts.length, 8));
  }
}

/** One message as the upstream received it. */
export interface Upstreamed {
  /** performance.now() when the whole message had arrived (its final dot), before parsing. */
  readonly at: number;
  readonly to: string[];
  readonly messageId: string;
  readonly deliveryId: string | null;
  readonly tokens: string[];
  readonly mail: ParsedMail;
  /** The bytes as they arrived. */
  readonly raw: Buffer;
}

/** The upstream SMTP server of the crash test. */
export interface CrashSink {
  readonly url: string;
  readonly messages: Upstreamed[];
  /**
   * Called once for the next message that arrives completely, after it was recorded and
   * before it is answered: the message counts as accepted upstream, but the relay has not
   * seen the 250 yet.
   */
  onNextMessage: ((m: Upstreamed) => Promise<void>) | null;
  close(): Promise<void>;
}

/** @returns A running sink on 127.0.0.1 and a free port. */
export async function startCrashSink(): Promise<CrashSink> {
  const sink: CrashSink = {
    url: "",
    messages: [],
    onNextMessage: null,
    close: () => Promise.resolve(),
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    onData(stream, session, callback) {
      const parts: Buffer[] = [];
      stream.on("data", (c: Buffer) => parts.push(c));
      stream.on("end", () => {
        // Only a message that arrived up to its final dot ends; a relay killed mid-DATA
        // destroys the stream instead, and that is no message.
        const raw = Buffer.concat(parts);
        const at = performance.now();
        void simpleParser(raw).then(async (mail) => {
          const delivery = mail.headers.get("x-praxmail-delivery");
          const m: Upstreamed = {
            at,
            to: session.envelope.rcptTo.map((r) => r.address),
            messageId: mail.messageId ?? "",
            deliveryId: typeof delivery === "string" ? delivery : null,
            tokens: tokens({ from: "", to: [], raw, mail }),
            mail,
            raw,
          };
          sink.messages.push(m);
          const hook = sink.onNextMessage;
          sink.onNextMessage = null;
          if (hook) await hook(m);
          callback();
        }, callback);
      });
    },
  });
  // The relay may be gone by the time we answer; that is the point of the test.
  server.on("error", () => undefined);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.server.address() as AddressInfo).port;
  return Object.assign(sink, {
    url: `smtp://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      }),
  });
}

/** `praxmail serve` on a fixed SMTP port (and milter port), restartable. */
export interface CrashServe {
  readonly port: number;
  /** Starts serve and waits until the relay (and the milter) listens. */
  start(): Promise<void>;
  /** SIGKILL, then waits until the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM, then waits until it exits. */
  stop(): Promise<number | null>;
  /** The last lines it wrote on stderr and stdout, for a failure message. */
  tail(): string;
}

/**
 * @param home - An initialised home.
 * @param port - The SMTP port, kept across restarts so that clients find it again.
 * @param milterPort - With a port, serve runs the milter there too (`--milter`).
 * @returns A handle; nothing runs until start().
 */
export function crashServe(home: string, port: number, milterPort?: number): CrashServe {
  let child: ChildProcess | null = null;
  let exited: Promise<number | null> = Promise.resolve(null);
  let log = "";
  const append = (d: string): void => {
    log = (log + d).slice(-20_000);
  };
  return {
    port,
    async start() {
      if (child) throw new Error("serve is already running");
      const c = spawn(process.execPath, [BIN, "serve", "--home", home, "--smtp", `127.0.0.1:${port}`, "--http", "127.0.0.1:0", ...(milterPort === undefined ? [] : ["--milter", `127.0.0.1:${milterPort}`])], {
        env: { PATH: process.env.PATH, NO_COLOR: "1" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child = c;
      let err = "";
      c.stdout.setEncoding("utf8").on("data", append);
      c.stderr.setEncoding("utf8").on("data", (d: string) => {
        err += d;
        append(d);
      });
      exited = new Promise((resolve) => c.on("exit", (code) => {
        resolve(code);
      }));
      await new Promise<void>((resolve, reject) => {
        const t = setInterval(() => {
          if (err.includes(`relay listening on 127.0.0.1:${port}`) && (milterPort === undefined || err.includes(`milter listening on inet:127.0.0.1:${milterPort}`))) {
            clearInterval(t);
            resolve();
          }
        }, 10);
        void exited.then(() => {
          clearInterval(t);
          reject(new Error(`serve exited while starting: ${err}`));
        });
      });
    },
    async kill() {
      const c = child;
      if (!c) return;
      child = null;
      c.kill("SIGKILL");
      await exited;
    },
    async stop() {
      const c = child;
      if (!c) return null;
      child = null;
      c.kill("SIGTERM");
      return exited;
    },
    tail: () => log.split("\n").slice(-30).join("\n"),
  };
}

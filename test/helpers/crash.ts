// Parts of the crash test: a seeded random source, an upstream sink that can kill the relay
// at the moment it has taken a message (before its 250 reaches the relay), and `praxmail
// serve` as a child process on a fixed port that can be SIGKILLed and started again.
import { spawn, type ChildProcess } from "node:child_process";
import type { AddressInfo } from "node:net";
import { SMTPServer } from "smtp-server";
import { simpleParser, type ParsedMail } from "mailparser";
import { BIN } from "./cli.js";
import { tokens } from "./deliveries.js";

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

/** One message as the upstream received it. */
export interface Upstreamed {
  /** performance.now() when the whole message had arrived (its final dot), before parsing. */
  readonly at: number;
  readonly to: string[];
  readonly messageId: string;
  readonly deliveryId: string | null;
  readonly tokens: string[];
  readonly mail: ParsedMail;
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

/** `praxmail serve` on a fixed SMTP port, restartable. */
export interface CrashServe {
  readonly port: number;
  /** Starts serve and waits until the relay listens. */
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
 * @returns A handle; nothing runs until start().
 */
export function crashServe(home: string, port: number): CrashServe {
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
      const c = spawn(process.execPath, [BIN, "serve", "--home", home, "--smtp", `127.0.0.1:${port}`, "--http", "127.0.0.1:0"], {
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
          if (err.includes(`relay listening on 127.0.0.1:${port}`)) {
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

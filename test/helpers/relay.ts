// A real relay (smtp-server) in this process, on a free port, over a temp home.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import nodemailer from "nodemailer";
import { pino, type Logger } from "pino";
import { openContext } from "../../src/commands/shared.js";
import type { Context } from "../../src/core/index.js";
import { createTransport } from "../../src/mail/index.js";
import { startRelay, type Relay } from "../../src/relay/server.js";
import { afterAll, beforeAll, beforeEach } from "vitest";
import { cleanup, initHome, tempDir } from "./cli.js";
import { startSink, type Sink } from "./sink.js";

/** A relay under test. */
export interface TestRelay {
  ctx: Context;
  relay: Relay;
  port: number;
  close(): Promise<void>;
}

/**
 * Merges settings into a home's config.json.
 *
 * @param home - An initialised home.
 * @param patch - Top-level keys to replace.
 */
export async function patchConfig(home: string, patch: Record<string, unknown>): Promise<void> {
  const path = join(home, "config.json");
  const config = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
  await writeFile(path, JSON.stringify({ ...config, ...patch }, null, 2));
}

/**
 * Initialises home (if needed) and starts a relay on it.
 *
 * @param home - The home folder.
 * @param patch - Config keys to set first (e.g. upstream, relay).
 * @param wrap - Changes the context before the relay starts (fault injection).
 * @param log - The relay's log (silent unless given).
 * @returns The relay.
 */
export async function startTestRelay(home: string, patch: Record<string, unknown> = {}, wrap?: (ctx: Context) => Context, log: Logger = pino({ level: "silent" })): Promise<TestRelay> {
  try {
    await readFile(join(home, "config.json"));
  } catch {
    await initHome(home, ["--recipient-type", "x25519"]);
  }
  await patchConfig(home, patch);
  const base = await openContext({ home }, "relay");
  const ctx = wrap ? wrap(base) : base;
  const relay = await startRelay(ctx, createTransport(home, ctx.config.upstream), { host: "127.0.0.1", port: 0 }, log);
  return {
    ctx,
    relay,
    port: relay.address.port,
    async close() {
      await relay.close();
      await base.store.close();
    },
  };
}

/** The reply of a submission: 250 text, or the error's code and text. */
export interface Reply {
  code: number;
  text: string;
  /** Recipients refused at RCPT TO. */
  rejected: string[];
}

/**
 * Submits a raw message over SMTP with nodemailer.
 *
 * @param port - The relay's port.
 * @param from - Envelope sender.
 * @param to - Envelope recipients.
 * @param raw - The message.
 * @returns The server's final reply.
 */
export async function submit(
  port: number,
  from: string,
  to: string[],
  raw: Buffer | string | Readable,
  options: Record<string, unknown> = { ignoreTLS: true },
): Promise<Reply> {
  const t = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ...options });
  try {
    const info = await t.sendMail({ envelope: { from, to }, raw });
    return { code: Number(info.response.slice(0, 3)), text: info.response, rejected: info.rejected.map(String) };
  } catch (e) {
    const err = e as { responseCode?: number; response?: string; message: string };
    return { code: err.responseCode ?? -1, text: err.response ?? err.message, rejected: [] };
  } finally {
    t.close();
  }
}

/** A relay over a temp home with a sink as its upstream, for one test file. */
export interface RelayEnv {
  dir: string;
  sink: Sink;
  relay: TestRelay;
}

/**
 * Registers hooks that start a sink and a relay before the file's tests, empty the sink
 * before each test, and stop both afterwards.
 *
 * @returns The environment; its fields are set once the tests run.
 */
export function useRelayWithSink(): RelayEnv {
  const env = {} as RelayEnv;
  beforeAll(async () => {
    env.dir = await tempDir();
    env.sink = await startSink();
    env.relay = await startTestRelay(join(env.dir, "home"), { upstream: env.sink.url });
  });
  afterAll(async () => {
    await env.relay.close();
    await env.sink.close();
    await cleanup(env.dir);
  });
  beforeEach(() => {
    env.sink.messages.length = 0;
  });
  return env;
}

/** What {@link befundMail} puts into its mail. */
export interface BefundMail {
  readonly from: string;
  readonly to: string;
  /** Without the angle brackets. */
  readonly messageId: string;
  readonly attachment: Buffer;
  readonly subject?: string;
  readonly text?: string;
  readonly filename?: string;
}

/**
 * A tagged practice mail: a short text and one PDF attachment, base64 in 76-column lines.
 *
 * @param m - Sender, recipient, Message-ID, attachment and optional parts.
 * @returns The raw message with CRLF line ends.
 */
export function befundMail(m: BefundMail): Buffer {
  const b64 = m.attachment.toString("base64").replace(/.{76}/g, "$&\r\n");
  return Buffer.from(
    [
      `From: Praxis <${m.from}>`,
      `To: ${m.to}`,
      `Subject: ${m.subject ?? "[S3] Befund"}`,
      `Message-ID: <${m.messageId}>`,
      "MIME-Version: 1.0",
      'Content-Type: multipart/mixed; boundary="b1"',
      "",
      "--b1",
      "Content-Type: text/plain; charset=utf-8",
      "",
      m.text ?? "Anbei der Befund.",
      "--b1",
      "Content-Type: application/pdf",
      "Content-Transfer-Encoding: base64",
      `Content-Disposition: attachment; filename="${m.filename ?? "befund.pdf"}"`,
      "",
      b64,
      "--b1--",
      "",
    ].join("\r\n"),
  );
}

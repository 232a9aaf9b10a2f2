// Outbound mail: to the configured upstream over SMTP, or, without one, as .eml files in
// <home>/outbox/ (written to a temp name, fsynced, renamed).
import { createWriteStream } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { randomBytes } from "node:crypto";
import { PassThrough } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Transporter } from "nodemailer";
import { renameDurably } from "../core/index.js";

/** A message ready to leave. */
export interface OutgoingMail {
  readonly from: { readonly name: string; readonly address: string };
  readonly to: string;
  readonly subject: string;
  readonly text: string;
  readonly html: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** SMTP envelope. */
export interface Envelope {
  readonly from: string;
  readonly to: readonly string[];
}

/** Where a sent mail went. */
export interface SentMail {
  /** The outbox file, when there is no upstream. */
  readonly file?: string;
  /** Upstream's reply, when there is one. */
  readonly response?: string;
}

/**
 * A message being streamed out whose acceptance waits for {@link RawSink.end}: until then
 * upstream has not seen the end of DATA (or the outbox file has not been renamed into place),
 * so {@link RawSink.abort} leaves nothing delivered.
 */
export interface RawSink {
  /** Writes the next chunk, waiting while the receiver is behind. */
  write(chunk: Uint8Array): Promise<void>;
  /** Finishes the message and waits until it was accepted. */
  end(): Promise<SentMail>;
  /** Drops the message. */
  abort(reason: Error): void;
}

/** Sends finished messages. */
export interface Transport {
  /**
   * @param mail - A message to compose and send.
   * @returns Where it went.
   * @throws If upstream did not accept it or the outbox file could not be written.
   */
  send(mail: OutgoingMail): Promise<SentMail>;
  /**
   * @param envelope - Sender and recipients.
   * @param raw - The whole message.
   * @returns Where it went.
   */
  sendRaw(envelope: Envelope, raw: Uint8Array): Promise<SentMail>;
  /**
   * @param envelope - Sender and recipients.
   * @returns A sink to stream the message into.
   */
  openRaw(envelope: Envelope): RawSink;
}

/**
 * Builds a message (multipart text + HTML) with nodemailer's composer.
 *
 * @param mail - The message.
 * @returns Its bytes.
 */
export async function compose(mail: OutgoingMail): Promise<Buffer> {
  // Loaded on first use: commands that never mail (praxmail list) do not pay for it.
  const { default: MailComposer } = await import("nodemailer/lib/mail-composer");
  const domain = mail.from.address.split("@")[1] ?? "praxmail.invalid";
  const composer = new MailComposer({
    from: mail.from,
    to: mail.to,
    subject: mail.subject,
    text: mail.text,
    html: mail.html,
    messageId: `<${randomBytes(12).toString("hex")}@${domain}>`,
    date: new Date(),
    headers: { "Auto-Submitted": "auto-generated", ...mail.headers },
  });
  return composer.compile().build();
}

let sequence = 0;

/** Outbox names sort in the order the mails were written (time, then a counter). */
function outboxName(d: Date): string {
  const time = d.toISOString().replace(/[-:]/g, "").replace(".", "");
  return `${time}-${String(++sequence % 1_000_000).padStart(6, "0")}-${randomBytes(4).toString("hex")}.eml`;
}

/**
 * A sink over a stream whose acceptance is `done`: it settles only after the stream ended
 * (or failed), so destroying the stream before end() delivers nothing.
 */
function streamSink(body: PassThrough, done: Promise<SentMail>, cleanup: () => Promise<unknown> = () => Promise.resolve()): RawSink {
  const failed = done.then(() => new Promise<never>(() => undefined));
  failed.catch(() => undefined);
  return {
    async write(chunk) {
      if (!body.write(chunk)) await Promise.race([new Promise<void>((resolve) => body.once("drain", resolve)), failed]);
    },
    end() {
      body.end();
      return done;
    },
    abort(reason) {
      body.destroy(reason);
      void done.catch(cleanup);
    },
  };
}

function outboxSink(home: string): RawSink {
  const dir = join(home, "outbox");
  const file = join(dir, outboxName(new Date()));
  const tmp = join(dir, `.${basename(file)}.tmp`);
  const body = new PassThrough();
  const done = mkdir(dir, { recursive: true, mode: 0o700 })
    .then(() => pipeline(body, createWriteStream(tmp, { flags: "wx", mode: 0o600 })))
    .then(() => renameDurably(tmp, file))
    .then(() => ({ file }));
  return streamSink(body, done, () => rm(tmp, { force: true }));
}

function smtpSink(smtp: Promise<Transporter>, envelope: Envelope): RawSink {
  const body = new PassThrough();
  // Destroying the stream makes nodemailer drop the connection before the final dot.
  const done = smtp.then((t) => t.sendMail({ envelope: { from: envelope.from, to: [...envelope.to] }, raw: body })).then((info) => ({ response: info.response }));
  return streamSink(body, done);
}

/** Bounded waits on upstream, so a hung server turns into a 451 instead of a stuck client. */
function withTimeouts(upstream: string): string {
  const u = new URL(upstream);
  const defaults = { connectionTimeout: "30000", greetingTimeout: "30000", socketTimeout: "120000" };
  for (const [k, v] of Object.entries(defaults)) if (!u.searchParams.has(k)) u.searchParams.set(k, v);
  return u.toString();
}

/**
 * Creates the transport for a home's configuration.
 *
 * @param home - The praxmail home (for the outbox).
 * @param upstream - An smtp(s):// URL, or null for the outbox.
 * @returns The transport.
 */
export function createTransport(home: string, upstream: string | null): Transport {
  // nodemailer's SMTP client is loaded only for an upstream, and only when the first mail goes.
  let smtp: Promise<Transporter> | null = null;
  const client = (url: string): Promise<Transporter> =>
    (smtp ??= import("nodemailer").then(({ default: nodemailer }) => nodemailer.createTransport(withTimeouts(url))));
  const openRaw = (envelope: Envelope): RawSink => (upstream === null ? outboxSink(home) : smtpSink(client(upstream), envelope));
  const sendRaw = async (envelope: Envelope, raw: Uint8Array): Promise<SentMail> => {
    const sink = openRaw(envelope);
    try {
      await sink.write(raw);
    } catch (e) {
      sink.abort(e as Error);
      throw e;
    }
    return sink.end();
  };
  return {
    openRaw,
    sendRaw,
    async send(mail) {
      return sendRaw({ from: mail.from.address, to: [mail.to] }, await compose(mail));
    },
  };
}

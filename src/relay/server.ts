// The SMTP relay: a thin adapter from smtp-server's hooks to prepareMessage/deliverPrepared.
// It answers 250 only after every copy was accepted upstream (or written to the outbox) and
// every blob and row is durable; 451 when the sender should retry; 5xx with a reason when not.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { BlockList, isIPv4, isIPv6, type AddressInfo } from "node:net";
import { PassThrough } from "node:stream";
import { SMTPServer, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from "smtp-server";
import type { Logger } from "pino";
import { cleanupFailures, errorFields, normaliseEmail, type Context } from "../core/index.js";
import { verifyPassword } from "../crypto/index.js";
import { MailRejection, deliverPrepared, loggableReason, prepareMessage, type Transport } from "../mail/index.js";

/** Where the relay listens. */
export interface Listen {
  readonly host: string;
  readonly port: number;
}

/** A running relay. */
export interface Relay {
  readonly address: Listen;
  close(): Promise<void>;
}

type SmtpError = Error & { responseCode: number };

function smtpError(code: number, text: string): SmtpError {
  return Object.assign(new Error(text), { responseCode: code });
}

function allowList(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const e of entries) {
    const [addr = "", bits] = e.split("/");
    const type = isIPv6(addr) ? "ipv6" : "ipv4";
    if (!isIPv4(addr) && !isIPv6(addr)) throw new Error(`relay.allow: not an IP address: ${e}`);
    if (bits === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(bits), type);
  }
  return list;
}

function allowed(list: BlockList, address: string): boolean {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (v4) return list.check(v4, "ipv4");
  return isIPv6(address) ? list.check(address, "ipv6") : list.check(address, "ipv4");
}

function printable(s: string | undefined): string {
  return (s ?? "").replace(/[^\x21-\x7e]/g, "").slice(0, 255) || "unknown";
}

type RelayConfig = Context["config"]["relay"];
type Outcome = { code: number; text: string };

/** The message as it arrives: copied into `input` up to the size limit, then only counted. */
function receive(stream: SMTPServerDataStream, input: PassThrough, maxSize: number): { ended: Promise<void>; tooLarge: () => boolean } {
  let size = 0;
  const ended = new Promise<void>((resolve) => stream.once("end", resolve));
  stream.on("data", (chunk: Buffer) => {
    size += chunk.length;
    if (size > maxSize) {
      if (!input.destroyed) input.destroy(new MailRejection(552, `message is larger than ${maxSize} bytes`, "5.3.4"));
      return;
    }
    if (input.destroyed) return;
    if (!input.write(chunk)) {
      stream.pause();
      input.once("drain", () => stream.resume());
    }
  });
  input.on("close", () => stream.resume());
  stream.once("end", () => {
    if (!input.destroyed) input.end();
  });
  return { ended, tooLarge: () => size > maxSize };
}

/**
 * One message through the relay: prepared, then delivered; the SMTP answer and its log.
 *
 * @returns The answer, and the fields for the message's log line.
 */
async function relayMessage(ctx: Context, transport: Transport, log: Logger, session: SMTPServerSession, input: PassThrough, name: string): Promise<{ outcome: Outcome; fields: Record<string, unknown> }> {
  const envelope = {
    from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
    to: session.envelope.rcptTo.map((r) => r.address),
  };
  const trace = `Received: from ${printable(session.clientHostname)} ([${printable(session.remoteAddress)}]) by ${name} (praxmail) with ${printable(session.transmissionType)} id ${session.id}; ${new Date().toUTCString()}`;
  let fields: Record<string, unknown> = {};
  try {
    const prepared = await prepareMessage(ctx, envelope, input, {
      policy: ctx.config.policy,
      trace,
      openOriginal: (recipients) => transport.openRaw({ from: envelope.from, to: recipients }),
    });
    fields = { level: prepared.level, attachments: prepared.attachments, deliveries: prepared.deliveries.length, copies: prepared.copies.length, again: prepared.announcedAgain.length, original: prepared.original?.recipients.length ?? 0, skipped: prepared.alreadyDelivered.length };
    for (const w of prepared.warnings) log.warn({ tx: session.id }, w);
    await deliverPrepared(ctx, transport, envelope, prepared);
    const encrypted = prepared.deliveries.length + prepared.announcedAgain.length;
    return { outcome: { code: 250, text: `2.0.0 accepted${encrypted ? `, ${encrypted} encrypted` : ""}` }, fields };
  } catch (e) {
    if (e instanceof MailRejection) {
      log.warn({ tx: session.id, outcome: e.responseCode, reason: loggableReason(e), ...cleanupFailures(e) }, "message refused");
      return { outcome: { code: e.responseCode, text: `${e.enhanced} ${e.message}` }, fields };
    }
    const err = errorFields(e);
    log.error({ tx: session.id, err, ...cleanupFailures(e) }, "message failed");
    ctx.meter?.failed("relay", err.code);
    return { outcome: { code: 451, text: "4.3.0 temporary failure, try again later" }, fields };
  }
}

/** The SMTP session hooks before DATA: the client allow-list, AUTH, and the recipients. */
function sessionHooks(cfg: RelayConfig, log: Logger): Pick<SMTPServerOptions, "onConnect" | "onAuth" | "onMailFrom" | "onRcptTo"> {
  const list = allowList(cfg.allow);
  const auth = cfg.users.length > 0;
  return {
    onConnect(session, cb) {
      if (allowed(list, session.remoteAddress)) {
        cb();
        return;
      }
      log.warn({ remote: session.remoteAddress }, "client not allowed");
      cb(smtpError(554, "5.7.1 client not allowed"));
    },
    onAuth(a, session, cb) {
      const user = cfg.users.find((u) => u.user === a.username);
      const check = user && typeof a.password === "string" ? verifyPassword(a.password, user.password) : Promise.resolve(false);
      void check.then((ok) => {
        if (ok) cb(null, { user: a.username });
        else {
          log.warn({ remote: session.remoteAddress }, "authentication failed");
          cb(smtpError(535, "5.7.8 authentication failed"));
        }
      });
    },
    onMailFrom(_address, session, cb) {
      if (auth && !session.user) {
        cb(smtpError(530, "5.7.0 authentication required"));
        return;
      }
      cb();
    },
    onRcptTo(address, session, cb) {
      if (session.envelope.rcptTo.length >= cfg.maxRecipients) {
        cb(smtpError(452, `4.5.3 more than ${cfg.maxRecipients} recipients`));
        return;
      }
      try {
        normaliseEmail(address.address);
      } catch {
        cb(smtpError(553, "5.1.3 recipient address is not a plain address"));
        return;
      }
      cb();
    },
  };
}

/** Listens, and gives the running relay. */
async function listenOn(server: SMTPServer, listen: Listen): Promise<Relay> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.server.address() as AddressInfo;
  return {
    address: { host: addr.address, port: addr.port },
    close: () =>
      new Promise((resolve) => {
        server.close(() => {
          resolve();
        });
      }),
  };
}

/**
 * Starts the relay.
 *
 * @param ctx - The core context (config, store).
 * @param transport - Where accepted mail goes (upstream or outbox).
 * @param listen - Address and port; port 0 picks a free one.
 * @param log - Structured log; never receives subjects, file names or keys.
 * @returns The running relay.
 */
export async function startRelay(ctx: Context, transport: Transport, listen: Listen, log: Logger): Promise<Relay> {
  const cfg = ctx.config.relay;
  const hooks = sessionHooks(cfg, log);
  const name = hostname();
  const tls = cfg.tls ? { key: readFileSync(cfg.tls.key), cert: readFileSync(cfg.tls.cert) } : {};
  const auth = cfg.users.length > 0;

  async function handle(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<Outcome> {
    const started = Date.now();
    const input = new PassThrough();
    const arrival = receive(stream, input, cfg.maxSize);
    let result: { outcome: Outcome; fields: Record<string, unknown> };
    try {
      result = await relayMessage(ctx, transport, log, session, input, name);
    } finally {
      input.destroy();
    }
    await arrival.ended;
    const outcome = arrival.tooLarge() ? { code: 552, text: `5.3.4 message is larger than ${cfg.maxSize} bytes` } : result.outcome;
    const ms = Date.now() - started;
    log.info({ tx: session.id, recipients: session.envelope.rcptTo.length, ...result.fields, outcome: outcome.code, ms }, "message");
    ctx.meter?.mail("relay", typeof result.fields.level === "number" ? result.fields.level : null, outcome.code, ms / 1000);
    return outcome;
  }

  const server = new SMTPServer({
    name,
    banner: "praxmail relay",
    size: cfg.maxSize,
    logger: false,
    ...tls,
    disabledCommands: [...(cfg.tls ? [] : ["STARTTLS"]), ...(auth ? [] : ["AUTH"])],
    authMethods: ["PLAIN", "LOGIN"],
    authOptional: !auth,
    allowInsecureAuth: false,
    maxClients: 100,
    socketTimeout: cfg.timeoutSeconds * 1000,
    closeTimeout: 30_000,
    ...hooks,
    onData(stream, session, cb) {
      void handle(stream, session).then(({ code, text }) => {
        if (code === 250) cb(null, text);
        else cb(smtpError(code, text));
      });
    },
  });
  server.on("error", (e) => {
    log.error({ err: { message: e.message } }, "smtp server error");
  });
  return listenOn(server, listen);
}

// The SMTP relay: a thin adapter from smtp-server's hooks to prepareMessage/deliverPrepared.
// It answers 250 only after every copy was accepted upstream (or written to the outbox) and
// every blob and row is durable; 451 when the sender should retry; 5xx with a reason when not.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { BlockList, isIPv4, isIPv6, type AddressInfo } from "node:net";
import { PassThrough } from "node:stream";
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";
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
  const list = allowList(cfg.allow);
  const name = hostname();
  const tls = cfg.tls ? { key: readFileSync(cfg.tls.key), cert: readFileSync(cfg.tls.cert) } : {};
  const auth = cfg.users.length > 0;

  async function handle(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<{ code: number; text: string }> {
    const started = Date.now();
    const envelope = {
      from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
      to: session.envelope.rcptTo.map((r) => r.address),
    };
    const input = new PassThrough();
    let size = 0;
    const ended = new Promise<void>((resolve) => stream.once("end", resolve));
    stream.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > cfg.maxSize) {
        if (!input.destroyed) input.destroy(new MailRejection(552, `message is larger than ${cfg.maxSize} bytes`, "5.3.4"));
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
    const trace = `Received: from ${printable(session.clientHostname)} ([${printable(session.remoteAddress)}]) by ${name} (praxmail) with ${printable(session.transmissionType)} id ${session.id}; ${new Date().toUTCString()}`;
    let outcome: { code: number; text: string };
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
      outcome = { code: 250, text: `2.0.0 accepted${encrypted ? `, ${encrypted} encrypted` : ""}` };
    } catch (e) {
      if (e instanceof MailRejection) {
        outcome = { code: e.responseCode, text: `${e.enhanced} ${e.message}` };
        log.warn({ tx: session.id, outcome: e.responseCode, reason: loggableReason(e), ...cleanupFailures(e) }, "message refused");
      } else {
        log.error({ tx: session.id, err: errorFields(e), ...cleanupFailures(e) }, "message failed");
        outcome = { code: 451, text: "4.3.0 temporary failure, try again later" };
      }
    } finally {
      input.destroy();
    }
    await ended;
    if (size > cfg.maxSize) outcome = { code: 552, text: `5.3.4 message is larger than ${cfg.maxSize} bytes` };
    log.info({ tx: session.id, recipients: envelope.to.length, ...fields, outcome: outcome.code, ms: Date.now() - started }, "message");
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

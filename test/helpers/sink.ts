// A real SMTP server on loopback that stores what it receives: the upstream in tests.
import type { AddressInfo } from "node:net";
import { SMTPServer } from "smtp-server";
import { simpleParser, type ParsedMail } from "mailparser";

/** One received message. */
export interface Received {
  from: string;
  to: string[];
  raw: Buffer;
  /** The parsed message; an empty one when mailparser could not parse it (see parseError). */
  mail: ParsedMail;
  /** Why mailparser refused the message; a real upstream would still accept it. */
  parseError?: string;
}

/** A running sink. */
export interface Sink {
  port: number;
  url: string;
  messages: Received[];
  /** Recipients refused with 550 at RCPT TO. */
  refuse: Set<string>;
  close(): Promise<void>;
}

/**
 * Starts a sink on 127.0.0.1 and a free port.
 *
 * @param opts - acceptDelayMs: how long the sink takes to answer DATA (a slow upstream).
 * @returns The sink.
 */
export async function startSink(opts: { acceptDelayMs?: number } = {}): Promise<Sink> {
  const messages: Received[] = [];
  const refuse = new Set<string>();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    onRcptTo(address, _session, cb) {
      if (refuse.has(address.address)) cb(Object.assign(new Error("5.1.1 no such user"), { responseCode: 550 }));
      else cb();
    },
    onData(stream, session, callback) {
      const parts: Buffer[] = [];
      stream.on("data", (c: Buffer) => parts.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(parts);
        const envelope = { from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "", to: session.envelope.rcptTo.map((r) => r.address), raw };
        simpleParser(raw)
          .then(
            (mail) => messages.push({ ...envelope, mail }),
            // Damaged mail (the fuzz test sends it) is still stored, as a real upstream would.
            async (e: unknown) => messages.push({ ...envelope, mail: await simpleParser(Buffer.alloc(0)), parseError: (e as Error).message }),
          )
          .then(() => new Promise((resolve) => setTimeout(resolve, opts.acceptDelayMs ?? 0)))
          .then(() => {
            callback();
          })
          .catch(callback);
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    messages,
    refuse,
    close: () => new Promise((resolve) => { server.close(() => { resolve(); }); }),
  };
}

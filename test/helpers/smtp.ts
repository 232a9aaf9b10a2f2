// A minimal SMTP client on a real socket. Unlike nodemailer it sends a message's bytes as
// they are: nodemailer rewrites bare CR and LF into CRLF and refuses oversized mail itself.
import { once } from "node:events";
import { connect, type Socket } from "node:net";

const REPLY_TIMEOUT_MS = 60_000;

/** A final SMTP reply: its code, and its lines joined with LF. */
export interface SmtpReply {
  code: number;
  text: string;
}

/** A client on one SMTP connection that sends the message bytes exactly as given. */
export class SmtpClient {
  private buffer = "";
  private waiter: { resolve: (r: SmtpReply) => void; reject: (e: Error) => void } | null = null;
  private closed: Error | null = null;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      this.buffer += d;
      this.pump();
    });
    socket.on("error", (e) => (this.closed ??= e));
    socket.on("close", () => {
      this.closed ??= new Error("connection closed");
      this.pump();
    });
  }

  /**
   * Connects and says EHLO.
   *
   * @param port - The server's port on 127.0.0.1.
   * @returns The client.
   */
  static async open(port: number): Promise<SmtpClient> {
    const socket = connect(port, "127.0.0.1");
    await once(socket, "connect");
    const c = new SmtpClient(socket);
    const greeting = await c.read();
    if (greeting.code !== 220) throw new Error(`greeting: ${greeting.text}`);
    const ehlo = await c.command("EHLO fuzz.example");
    if (ehlo.code !== 250) throw new Error(`EHLO: ${ehlo.text}`);
    return c;
  }

  get usable(): boolean {
    return this.closed === null;
  }

  private pump(): void {
    if (!this.waiter) return;
    const lines: string[] = [];
    let used = 0;
    for (let nl = this.buffer.indexOf("\n"); nl !== -1; nl = this.buffer.indexOf("\n", used)) {
      const line = this.buffer.slice(used, nl).replace(/\r$/, "");
      used = nl + 1;
      lines.push(line);
      if (/^\d{3}(?: |$)/.test(line)) {
        this.buffer = this.buffer.slice(used);
        const w = this.waiter;
        this.waiter = null;
        w.resolve({ code: Number(line.slice(0, 3)), text: lines.join("\n") });
        return;
      }
    }
    if (this.closed) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(this.closed);
    }
  }

  read(timeoutMs = REPLY_TIMEOUT_MS): Promise<SmtpReply> {
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        this.socket.destroy();
        reject(new Error(`no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = <T>(f: (v: T) => void) => (v: T): void => {
        clearTimeout(timer);
        f(v);
      };
      this.waiter = { resolve: done(resolvePromise), reject: done(reject) };
      this.pump();
    });
  }

  command(line: string): Promise<SmtpReply> {
    this.socket.write(`${line}\r\n`);
    return this.read();
  }

  /**
   * One transaction.
   *
   * @param from - Envelope sender.
   * @param rcpt - The one recipient.
   * @param raw - The message, sent as it is (dot-stuffed only).
   * @param declareSize - Whether MAIL FROM carries SIZE=.
   * @returns The reply that ended it and the stage that gave it.
   */
  async send(from: string, rcpt: string, raw: Buffer, declareSize = false): Promise<SmtpReply & { stage: string }> {
    const mail = await this.command(`MAIL FROM:<${from}>${declareSize ? ` SIZE=${raw.length}` : ""}`);
    if (mail.code !== 250) return { ...mail, stage: "MAIL" };
    const to = await this.command(`RCPT TO:<${rcpt}>`);
    if (to.code !== 250) {
      await this.command("RSET");
      return { ...to, stage: "RCPT" };
    }
    const data = await this.command("DATA");
    if (data.code !== 354) return { ...data, stage: "DATA" };
    this.socket.write(dotStuffed(raw));
    return { ...(await this.read()), stage: "DATA" };
  }

  close(): void {
    this.socket.end("QUIT\r\n");
  }
}

/** The message as DATA carries it: a dot at the start of a line doubled, then CRLF.CRLF. */
function dotStuffed(raw: Buffer): Buffer {
  const parts: Buffer[] = [];
  let from = 0;
  if (raw[0] === 0x2e) parts.push(Buffer.from("."));
  for (let nl = raw.indexOf(0x0a); nl !== -1; nl = raw.indexOf(0x0a, nl + 1)) {
    if (raw[nl + 1] === 0x2e) {
      parts.push(raw.subarray(from, nl + 1), Buffer.from("."));
      from = nl + 1;
    }
  }
  parts.push(raw.subarray(from), Buffer.from(raw.subarray(-2).equals(Buffer.from("\r\n")) ? ".\r\n" : "\r\n.\r\n"));
  return Buffer.concat(parts);
}

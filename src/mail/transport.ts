// Outbound mail: to the configured upstream over SMTP, or, without one, as .eml files in
// <home>/outbox/ (written to a temp name, fsynced, renamed).
import { join } from "node:path";
import { mkdir } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import nodemailer from "nodemailer";
import MailComposer from "nodemailer/lib/mail-composer";
import { writeSecretFile } from "../crypto/index.js";

/** A message ready to leave. */
export interface OutgoingMail {
  readonly from: { readonly name: string; readonly address: string };
  readonly to: string;
  readonly subject: string;
  readonly text: string;
  readonly html: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** Where a sent mail went. */
export interface SentMail {
  readonly messageId: string;
  /** The outbox file, when there is no upstream. */
  readonly file?: string;
}

/** Sends finished messages. */
export interface Transport {
  /**
   * @param mail - The message.
   * @returns Where it went.
   * @throws If upstream did not accept it or the outbox file could not be written.
   */
  send(mail: OutgoingMail): Promise<SentMail>;
}

async function build(mail: OutgoingMail, messageId: string): Promise<Buffer> {
  const composer = new MailComposer({
    from: mail.from,
    to: mail.to,
    subject: mail.subject,
    text: mail.text,
    html: mail.html,
    messageId,
    date: new Date(),
    headers: { "Auto-Submitted": "auto-generated", ...mail.headers },
  });
  return composer.compile().build();
}

function stamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/**
 * Creates the transport for a home's configuration.
 *
 * @param home - The praxmail home (for the outbox).
 * @param upstream - An smtp(s):// URL, or null for the outbox.
 * @returns The transport.
 */
export function createTransport(home: string, upstream: string | null): Transport {
  const smtp = upstream === null ? null : nodemailer.createTransport(upstream);
  return {
    async send(mail) {
      const domain = mail.from.address.split("@")[1] ?? "praxmail.invalid";
      const messageId = `<${randomBytes(12).toString("hex")}@${domain}>`;
      const raw = await build(mail, messageId);
      if (smtp) {
        await smtp.sendMail({ envelope: { from: mail.from.address, to: [mail.to] }, raw });
        return { messageId };
      }
      const dir = join(home, "outbox");
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const file = join(dir, `${stamp(new Date())}-${randomBytes(4).toString("hex")}.eml`);
      await writeSecretFile(file, raw);
      return { messageId, file };
    },
  };
}

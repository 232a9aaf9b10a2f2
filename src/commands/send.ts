import { open, readFile, type FileHandle } from "node:fs/promises";
import { basename } from "node:path";
import {
  PraxmailError,
  createDelivery,
  deliveryNotification,
  markSent,
  discardDelivery,
  levelRules,
  normaliseEmail,
  type Context,
  type CreatedDelivery,
} from "../core/index.js";
import { formatSize } from "../i18n/index.js";
import { fileStream } from "../store/index.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, printJson, printTable, progress, withContext } from "./shared.js";

export interface SendFlags extends HomeOptions, JsonOptions {
  to: string[];
  level: number;
  subject?: string;
  message?: string;
  messageFile?: string;
}

interface OpenedFile {
  readonly path: string;
  readonly handle: FileHandle;
  readonly size: number;
}

function why(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code ?? (e as Error).message;
}

// Every file is opened before anything is created, so a bad path fails with nothing written.
async function openAll(paths: readonly string[]): Promise<OpenedFile[]> {
  const opened: OpenedFile[] = [];
  try {
    for (const path of paths) {
      let handle: FileHandle;
      try {
        handle = await open(path, "r");
      } catch (e) {
        throw new PraxmailError("file", `cannot read ${JSON.stringify(path)}: ${why(e)}`, "check the path and its permissions");
      }
      opened.push({ path, handle, size: 0 });
      const st = await handle.stat();
      if (!st.isFile()) throw new PraxmailError("file", `${JSON.stringify(path)} is not a regular file`);
      opened[opened.length - 1] = { path, handle, size: st.size };
    }
    return opened;
  } catch (e) {
    await Promise.all(opened.map((f) => f.handle.close()));
    throw e;
  }
}

async function readMessage(flags: SendFlags): Promise<string | null> {
  if (flags.message !== undefined && flags.messageFile !== undefined) {
    throw new PraxmailError("usage", "--message and --message-file exclude each other");
  }
  if (flags.messageFile === undefined) return flags.message ?? null;
  let bytes: Buffer;
  try {
    bytes = await readFile(flags.messageFile);
  } catch (e) {
    throw new PraxmailError("file", `cannot read ${JSON.stringify(flags.messageFile)}: ${why(e)}`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new PraxmailError("invalid-input", `${JSON.stringify(flags.messageFile)} is not UTF-8 text`);
  }
}

/**
 * Creates one delivery per recipient, then mails the links. If any delivery cannot be
 * created, none is kept; if a mail fails, that delivery and the unsent ones are discarded.
 *
 * @param ctx - The core context.
 * @param io - The streams.
 * @param flags - Parsed options.
 * @param paths - Files to send.
 * @returns The deliveries that went out.
 */
export async function runSend(ctx: Context, io: Io, flags: SendFlags, paths: readonly string[]): Promise<CreatedDelivery[]> {
  const recipients = [...new Set(flags.to.map((t) => normaliseEmail(t)))];
  const message = await readMessage(flags);
  const files = await openAll(paths);
  const bar = progress(io);
  const created: CreatedDelivery[] = [];
  try {
    for (const to of recipients) {
      created.push(
        await createDelivery(ctx, {
          recipient: to,
          level: flags.level,
          subject: flags.subject ?? null,
          message,
          // Positioned reads from the handles opened above: every recipient gets the same bytes.
          files: files.map((f) => ({
            name: basename(f.path),
            open: () => fileStream(f.handle),
          })),
          onProgress: (i, bytes) => {
            const f = files[i];
            if (!f) return;
            const pct = f.size > 0 ? Math.floor((bytes / f.size) * 100) : 100;
            // Built only when shown: two Intl.NumberFormat per MiB read showed in the CPU profile.
            bar.update(() => `encrypting ${basename(f.path)} for ${to}: ${pct}% (${formatSize(bytes, "en")} of ${formatSize(f.size, "en")})`);
          },
        }),
      );
    }
  } catch (e) {
    bar.done();
    for (const d of created) await discardDelivery(ctx, d.id, "send failed");
    throw e;
  } finally {
    await Promise.all(files.map((f) => f.handle.close()));
  }
  bar.done();
  const sent: CreatedDelivery[] = [];
  for (const [i, d] of created.entries()) {
    try {
      await ctx.notifier.send(deliveryNotification(d));
      await markSent(ctx, [d.id]);
      sent.push(d);
    } catch (e) {
      for (const rest of created.slice(i)) await discardDelivery(ctx, rest.id, "notification failed");
      const done = sent.length ? `; already sent: ${sent.map((s) => `${s.id} to ${s.recipient}`).join(", ")}` : "";
      throw new PraxmailError("mail", `the mail to ${d.recipient} could not be sent: ${(e as Error).message}${done}`, "check upstream in config.json");
    }
  }
  return sent;
}

/**
 * Runs `praxmail send` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param paths - The arguments.
 * @param flags - The parsed options.
 */
export async function sendAction(io: Io, paths: string[], flags: SendFlags): Promise<void> {
  if (paths.length === 0 && !levelRules(flags.level).deliveryWithoutAttachments) {
    throw new PraxmailError("usage", "no files given", "praxmail send --to EMAIL FILE...; only level 4 may send a message alone");
  }
  const sent = await withContext(flags, (ctx) => runSend(ctx, io, flags, paths));
  if (flags.json) {
    printJson(io, {
      deliveries: sent.map((d) => ({
        id: d.id,
        recipient: d.recipient,
        level: d.level,
        status: d.status,
        link: d.link,
        expiresAt: d.expiresAt.toISOString(),
        files: d.files,
      })),
    });
    return;
  }
  printTable(
    io,
    ["ID", "RECIPIENT", "LEVEL", "STATUS", "LINK"],
    sent.map((d) => [d.id, d.recipient, String(d.level), d.status, d.link]),
  );
  if (sent.some((d) => d.status === "pending-approval")) {
    note(io, "praxmail: the recipient registers through the link; then run praxmail approve EMAIL");
  }
}

// Export: the practice opens one delivery with P (wrap[P] gives D, D opens the files) and
// writes its plain files, with their real names, into a new folder. RECOVERY.md does the
// same for a home of the embedded backend with sqlite3 and age alone.
import { constants } from "node:fs";
import { chmod, lstat, mkdir, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { decryptBytes, decryptStream, unwrapIdentity } from "../crypto/index.js";
import { isEmptyDir, renameDurably, writeStream, type DeliveryRow, type FileRow } from "../store/index.js";
import type { Context } from "./context.js";
import type { SealedMessage } from "./deliveries.js";
import { PraxmailError, cleanUpAfter } from "./errors.js";
import { levelRules } from "./levels.js";
import { practiceKey } from "./trust.js";
import { cleanFileName, uniqueFileName } from "./validate.js";

/** The file that holds a level-4 delivery's subject and text. */
export const MESSAGE_FILE = "message.txt";

/** One file written by an export. */
export interface ExportedFile {
  readonly name: string;
  readonly size: number;
  readonly kind: FileRow["kind"];
}

/** What an export wrote. */
export interface ExportResult {
  readonly id: string;
  readonly recipient: string;
  readonly level: number;
  /** The folder, absolute. */
  readonly dir: string;
  /** The subject, at level 4 from the sealed message part. */
  readonly subject: string | null;
  readonly files: readonly ExportedFile[];
}

/** A file to write: its real name and where its bytes come from. */
interface Planned {
  readonly name: string;
  readonly kind: FileRow["kind"];
  readonly bytes: Uint8Array | null;
  readonly blob: string | null;
}

/**
 * Reads a level-4 delivery's sealed message part (see {@link SealedMessage}).
 *
 * @param plain - The decrypted part.
 * @param attachments - How many attachments the delivery has.
 * @returns The subject, the text and one real name per attachment.
 * @throws If it is not a message part of this delivery.
 */
function parseSealed(plain: Uint8Array, attachments: number): SealedMessage {
  const raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain)) as Partial<Record<keyof SealedMessage, unknown>>;
  const text = (v: unknown): v is string | null => v === null || typeof v === "string";
  if (raw.v !== 1 || !text(raw.subject) || !text(raw.text) || !Array.isArray(raw.files) || raw.files.length !== attachments || !raw.files.every((n) => typeof n === "string")) {
    throw new Error("the sealed message part is malformed");
  }
  return { v: 1, subject: raw.subject, text: raw.text, files: raw.files };
}

/** Refuses a folder that holds anything: an export never overwrites or mixes files. */
async function mustBeEmpty(dir: string): Promise<void> {
  let empty: boolean;
  try {
    empty = await isEmptyDir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOTDIR") throw new PraxmailError("file", `${dir} is not a folder`, "give a new or empty folder");
    throw e;
  }
  if (!empty) {
    throw new PraxmailError("file", `${dir} is not empty`, "give a new or empty folder; existing files are never overwritten");
  }
}

/**
 * Makes the folder an export writes into: new, or an empty folder (not a link), mode 0700.
 *
 * @param dir - The folder.
 * @returns Whether it was created.
 */
async function prepareDir(dir: string): Promise<boolean> {
  await mustBeEmpty(dir);
  try {
    if (!(await lstat(dir)).isDirectory()) throw new PraxmailError("file", `${dir} is not a folder`, "give a new or empty folder");
    // An existing empty folder may have been made with the umask's mode.
    await chmod(dir, 0o700);
    return false;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return true;
}

/**
 * Plans the files of a delivery: their real names (at level 4 from the sealed message part,
 * which also gives the subject and the text for {@link MESSAGE_FILE}), cleaned and numbered.
 *
 * @param key - The delivery's identity D.
 * @returns The subject and the files to write, in order.
 */
async function planFiles(ctx: Context, d: DeliveryRow, key: string): Promise<{ subject: string | null; planned: Planned[] }> {
  const rows = await ctx.store.records.files(d.id);
  const attachments = rows.filter((f) => f.kind === "attachment");
  let subject = d.subject;
  let names = attachments.map((f) => f.name);
  const planned: Planned[] = [];
  const taken = new Set<string>();
  if (levelRules(d.level).encryptsContent) {
    const part = rows.find((f) => f.kind === "message");
    if (!part?.blob) throw new Error(`level 4 delivery ${d.id} has no message part`);
    const sealed = parseSealed(await decryptBytes(new Uint8Array(await new Response(ctx.store.blobs.read(part.blob)).arrayBuffer()), [key]), attachments.length);
    subject = sealed.subject;
    names = [...sealed.files];
    const text = `${sealed.subject === null ? "" : `Subject: ${sealed.subject}\n\n`}${sealed.text ?? ""}`;
    planned.push({ name: uniqueFileName(MESSAGE_FILE, taken), kind: "message", bytes: new TextEncoder().encode(text), blob: null });
  }
  for (const [i, f] of attachments.entries()) {
    planned.push({ name: uniqueFileName(cleanFileName(names[i] ?? f.name), taken), kind: "attachment", bytes: null, blob: f.blob });
  }
  return { subject, planned };
}

/**
 * Writes one planned file under a temp name and renames it into place when whole.
 *
 * @param written - Gets every path made, for the cleanup.
 * @returns The file written.
 */
async function writePlanned(ctx: Context, id: string, dir: string, key: string, i: number, p: Planned, written: string[]): Promise<ExportedFile> {
  // A temp name no cleaned name can have (they never start with a dot), renamed when whole.
  const tmp = join(dir, `.export-${i}.partial`);
  written.push(tmp);
  const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
  let size: number;
  try {
    if (p.bytes) {
      await fh.writeFile(p.bytes);
      size = p.bytes.byteLength;
    } else {
      if (!p.blob) throw new Error(`a file of delivery ${id} has no blob`);
      try {
        await writeStream(await decryptStream(ctx.store.blobs.read(p.blob), [key]), fh);
      } catch (e) {
        // System errors (a full disk) pass as they are; the others are about the blob.
        if ((e as NodeJS.ErrnoException).code !== undefined) throw e;
        throw new PraxmailError("file", `${p.blob} (${p.name}) does not decrypt: ${(e as Error).message}`, "the file was damaged or altered on disk; take it from a backup");
      }
      size = (await fh.stat()).size;
    }
  } finally {
    await fh.close();
  }
  const final = join(dir, p.name);
  written.push(final);
  await renameDurably(tmp, final);
  return { name: p.name, size, kind: p.kind };
}

/**
 * Writes the plain files of one delivery into a new or empty folder (mode 0700, files 0600):
 * the attachments under their real names (at level 4 from the sealed message part), cleaned
 * ({@link cleanFileName}) and numbered where two collide, and at level 4 the subject and
 * text as {@link MESSAGE_FILE}. The identity is asked for only after the delivery and the
 * folder were checked. The audit row is written before the first plaintext byte; on failure
 * every file written is removed (and the folder, if this created it).
 *
 * @param ctx - The core context.
 * @param id - The delivery.
 * @param loadIdentity - Gives P's secret.
 * @param dir - The folder, absolute.
 * @returns What was written.
 * @throws {@link PraxmailError} `no-such-delivery`, `wrong-state` (revoked or expired: its
 *   files are gone), `file` (folder not empty), `identity` (not this practice's identity).
 */
export async function exportDelivery(ctx: Context, id: string, loadIdentity: () => Promise<string>, dir: string): Promise<ExportResult> {
  const d = await ctx.store.records.delivery(id);
  if (d?.sentAt == null) throw new PraxmailError("no-such-delivery", `no such delivery ${JSON.stringify(id)}`, "run praxmail list deliveries");
  const ended = d.status === "revoked" || d.status === "expired" ? d.status : d.expiresAt <= ctx.now().toISOString() ? "expired" : null;
  if (ended) throw new PraxmailError("wrong-state", `delivery ${id} is ${ended}: its files are deleted`);
  await mustBeEmpty(dir);
  const identity = await loadIdentity();
  await practiceKey(ctx.config, identity);
  const wrap = await ctx.store.records.wrap(id, "practice");
  if (!wrap) throw new Error(`delivery ${id} has no practice wrap`);
  const key = await unwrapIdentity(wrap.ciphertext, identity);
  const { subject, planned } = await planFiles(ctx, d, key);

  const created = await prepareDir(dir);
  const written: string[] = [];
  try {
    const now = ctx.now();
    await ctx.store.transaction((tx) => tx.audit({ actor: ctx.actor, action: "delivery.export", subject: id, details: { dir, files: planned.length } }, now));
    const files: ExportedFile[] = [];
    for (const [i, p] of planned.entries()) files.push(await writePlanned(ctx, id, dir, key, i, p, written));
    return { id, recipient: d.recipient, level: d.level, dir, subject, files };
  } catch (e) {
    throw await cleanUpAfter(e, created ? [() => rm(dir, { recursive: true, force: true })] : written.map((p) => () => rm(p, { force: true })));
  }
}

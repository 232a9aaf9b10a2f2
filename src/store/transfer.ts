// Moving a practice's durable state from one store to another, whatever their backends
// (praxmail migrate: embedded to shared; backup and restore of the shared backend): rows
// column by column, and blobs under their keys, each checked by SHA-256 as read back from
// the target. The core decides when and what; this module only copies and checks.
import { createHash } from "node:crypto";
import { sha256Tap } from "./blobs.js";
import type { BlobStore, StoreTx, TableRow } from "./types.js";

/** Tables whose rows others reference, copied first (PostgreSQL checks foreign keys at once). */
const PARENTS = ["patients", "deliveries", "replies"];
/** Rows per insert. */
const BATCH = 500;

/** Why a transfer was refused or failed; callers branch on `code`. */
export class TransferError extends Error {
  /**
   * @param code - `schema`: the two stores' tables or columns differ; `mismatch`: a blob
   *   read back from the target differs from the source; `foreign`: the target holds a blob
   *   the source does not have, or another blob under one of the source's keys.
   * @param message - Lowercase, no trailing period.
   */
  constructor(
    readonly code: "schema" | "mismatch" | "foreign",
    message: string,
  ) {
    super(message);
    this.name = "TransferError";
  }
}

/**
 * @param tx - A handle of the store.
 * @returns The tables that hold at least one row, by name.
 */
export async function tablesWithRows(tx: StoreTx): Promise<string[]> {
  const out: string[] = [];
  for (const table of (await tx.tables()).keys()) {
    const rows = tx.tableRows(table)[Symbol.asyncIterator]();
    const first = await rows.next();
    // Closes a cursor over the rest.
    await rows.return?.();
    if (first.done !== true) out.push(table);
  }
  return out;
}

/**
 * Copies every row of every table, as it is, from one store into another. Both must have the
 * same tables with the same columns (the same praxmail schema).
 *
 * @param from - A read handle of the source (inside its snapshot).
 * @param to - A write handle of the target (inside its transaction).
 * @param skip - Tables whose rows are not copied.
 * @param progress - Called after each batch with the table and its rows so far.
 * @returns Rows copied, by table.
 * @throws {@link TransferError} `schema` if the tables or columns differ.
 */
export async function copyRows(from: StoreTx, to: StoreTx, skip: readonly string[] = [], progress?: (table: string, rows: number) => void | Promise<void>): Promise<Record<string, number>> {
  const [source, target] = await Promise.all([from.tables(), to.tables()]);
  const shape = (m: Map<string, string[]>): string[] => [...m].map(([t, cols]) => `${t}(${[...cols].sort().join(",")})`).sort();
  const [a, b] = [shape(source), shape(target)];
  const differ = [...a.filter((x) => !b.includes(x)), ...b.filter((x) => !a.includes(x))];
  if (differ.length > 0) {
    throw new TransferError("schema", `the two stores' schemas differ in ${[...new Set(differ.map((d) => d.slice(0, d.indexOf("("))))].sort().join(", ")}`);
  }
  const order = [...PARENTS.filter((t) => source.has(t)), ...[...source.keys()].filter((t) => !PARENTS.includes(t)).sort()];
  const counts: Record<string, number> = {};
  for (const table of order) {
    if (skip.includes(table)) continue;
    let n = 0;
    let batch: TableRow[] = [];
    const flush = async (): Promise<void> => {
      await to.insertRows(table, batch);
      n += batch.length;
      batch = [];
      await progress?.(table, n);
    };
    for await (const row of from.tableRows(table)) {
      batch.push(row);
      if (batch.length === BATCH) await flush();
    }
    if (batch.length > 0) await flush();
    counts[table] = n;
  }
  return counts;
}

/** A blob as copied: its size and SHA-256, and whether the target had it already. */
export interface CopiedBlob {
  readonly key: string;
  readonly size: number;
  readonly sha256: string;
  /** The target held the same bytes already (a resumed copy): nothing was written. */
  readonly present: boolean;
}

/**
 * Reads a stream to its end, hashing it; memory stays flat.
 *
 * @returns Size and SHA-256.
 */
export async function hashStream(data: ReadableStream<Uint8Array>): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of data as unknown as AsyncIterable<Uint8Array>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: hash.digest("hex") };
}

/**
 * Copies one blob under its key, streaming, hashing the source on the way; then reads it
 * back from the target and compares. A blob the target holds already is compared and, if
 * equal, not written again.
 *
 * @param from - The source's blobs.
 * @param to - The target's blobs.
 * @param key - The blob's key in both.
 * @param present - Whether the target holds an object of this key already.
 * @returns What was copied.
 * @throws {@link TransferError} `foreign` if the target holds other bytes under this key;
 *   `mismatch` if what the target holds after the copy differs from the source.
 */
export async function copyBlob(from: BlobStore, to: BlobStore, key: string, present: boolean): Promise<CopiedBlob> {
  let source: { size: number; sha256: string };
  if (present) {
    source = await hashStream(from.read(key));
  } else {
    const { tap, result } = sha256Tap();
    await to.put(key, from.read(key).pipeThrough(tap));
    source = result();
  }
  const back = await hashStream(to.read(key));
  if (back.size !== source.size || back.sha256 !== source.sha256) {
    throw present
      ? new TransferError("foreign", `the target holds other bytes under ${key} than the source`)
      : new TransferError("mismatch", `${key} reads back from the target with another size or SHA-256 than it was written with`);
  }
  return { key, ...source, present };
}

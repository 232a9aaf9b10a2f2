// What the running server counts for operators (Prometheus, in src/commands/metrics.ts). The
// core and the adapters report through this small interface and never see prom-client; a
// context without a meter (every CLI command, serve without --metrics) counts nothing.
// Arguments are levels, status codes, error codes and durations only: never an address, an
// id, a file name or a subject.
import { performance } from "node:perf_hooks";
import type { Context } from "./context.js";
import { errorFields } from "./errors.js";

/** Where a mail came in. */
export type MailDoor = "relay" | "milter";

/** Receives the server's events as numbers. */
export interface Meter {
  /**
   * A mail was answered.
   *
   * @param door - Relay or milter.
   * @param level - Its security level, or null when it was refused before it was classified.
   * @param answer - The SMTP reply code it got (250, 451, 554, …).
   * @param seconds - From the start of DATA (or end of message) to the answer.
   */
  mail(door: MailDoor, level: number | null, answer: number, seconds: number): void;
  /**
   * Deliveries were committed (one per recipient of a mail or a send).
   *
   * @param level - Their level.
   * @param count - How many.
   */
  deliveriesCreated(level: number, count: number): void;
  /** A file of a delivery was handed to a patient for download. */
  downloaded(): void;
  /** @param status - The HTTP status of a portal response. */
  response(status: number): void;
  /** @param seconds - How long a blob took to stream into the store, until durable. */
  blobWritten(seconds: number): void;
  /**
   * Something failed that the operator should see.
   *
   * @param source - Where: relay, milter, portal, blob.
   * @param code - The error's code (errno, SQLSTATE, PraxmailError code), or null.
   */
  failed(source: string, code: string | number | null): void;
  /**
   * @param name - A queue's name.
   * @param waiting - Reads how many items wait in it, when scraped.
   */
  queue(name: string, waiting: () => number): void;
}

/**
 * Streams a blob into the store, timing it for the meter; a failed write is counted by code.
 *
 * @param ctx - The core context.
 * @param data - The bytes (ciphertext).
 * @returns The blob's key, once durable.
 * @throws What the store's write throws.
 */
export async function writeBlob(ctx: Context, data: ReadableStream<Uint8Array>): Promise<string> {
  const started = performance.now();
  try {
    const key = await ctx.store.blobs.write(data);
    ctx.meter?.blobWritten((performance.now() - started) / 1000);
    return key;
  } catch (e) {
    ctx.meter?.failed("blob", errorFields(e).code);
    throw e;
  }
}

// writeStream (src/store/blobs.ts), the last step of every blob and output file: batches of
// about 1 MiB, in order, with the next batch pulled while one write is in flight.
import type { FileHandle } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { writeStream } from "../src/store/index.js";

const CHUNK = 64 * 1024;

/** A source of `count` 64 KiB chunks (chunk i filled with i) that counts its pulls. */
function counted(count: number): { stream: ReadableStream<Uint8Array>; pulled: () => number; cancelled: () => unknown } {
  let n = 0;
  let reason: unknown = null;
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(ctl) {
        if (n === count) {
          ctl.close();
          return;
        }
        ctl.enqueue(new Uint8Array(CHUNK).fill(n++));
      },
      cancel(r) {
        reason = r;
      },
    },
    { highWaterMark: 0 },
  );
  return { stream, pulled: () => n, cancelled: () => reason };
}

/** A file handle whose writes finish only when the test lets them, or fail at once with `failure`. */
function heldWrites(failure?: Error): { fh: FileHandle; writes: Uint8Array[][]; settle: (error?: Error) => void } {
  const writes: Uint8Array[][] = [];
  const pending: { resolve: () => void; reject: (e: Error) => void }[] = [];
  const fh = {
    writev(buffers: Uint8Array[]) {
      writes.push(buffers);
      if (failure) return Promise.reject(failure);
      return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }));
    },
  } as unknown as FileHandle;
  const settle = (error?: Error): void => {
    const p = pending.shift();
    if (error) p?.reject(error);
    else p?.resolve();
  };
  return { fh, writes, settle };
}

const turns = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

describe("writeStream", () => {
  it("pulls the next 1 MiB while a write is in flight, and writes every byte in order", async () => {
    const src = counted(40);
    const { fh, writes, settle } = heldWrites();
    const done = writeStream(src.stream, fh);
    await turns();
    // The first MiB (16 chunks) is being written, and the second is already read.
    expect(writes.map((w) => w.length)).toEqual([16]);
    expect(src.pulled()).toBe(32);
    settle();
    await turns();
    expect(writes.map((w) => w.length)).toEqual([16, 16]);
    expect(src.pulled()).toBe(40);
    settle();
    await turns();
    settle();
    await done;
    expect(writes.map((w) => w.length)).toEqual([16, 16, 8]);
    expect(writes.flat().map((c) => c[0])).toEqual([...Array(40).keys()]);
  });

  it("fails with the write's error and cancels the source, also when the write fails during the next read", async () => {
    const enospc = new Error("ENOSPC: no space left on device");
    for (const when of ["during the next read", "after it"]) {
      const src = counted(40);
      const { fh, writes, settle } = heldWrites(when === "after it" ? undefined : enospc);
      const done = writeStream(src.stream, fh);
      if (when === "after it") {
        await turns();
        settle(enospc);
      }
      await expect(done, when).rejects.toBe(enospc);
      expect(writes, when).toHaveLength(1);
      expect(src.cancelled(), when).toBe(enospc);
    }
  });
});

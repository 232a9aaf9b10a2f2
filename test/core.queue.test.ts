// WorkQueue: the bounded queue behind the password reset form.
import { describe, expect, it } from "vitest";
import { WorkQueue } from "../src/core/index.js";

describe("WorkQueue", () => {
  it("is bounded: a flood keeps at most `limit` items waiting and drops the rest; the rest is worked off in order, after the caller", async () => {
    const done: number[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const q = new WorkQueue<number>(async (n) => {
      await gate;
      done.push(n);
    }, { limit: 5, onError: () => undefined });
    const accepted = Array.from({ length: 10_000 }, (_, i) => q.push(i));
    // Nothing ran while the caller was still busy.
    expect(done).toEqual([]);
    expect(accepted.filter(Boolean)).toHaveLength(5);
    expect(accepted.slice(0, 5)).toEqual([true, true, true, true, true]);
    expect(q.waiting).toBe(5);
    await new Promise((r) => setImmediate(r));
    // One in hand, four wait: room for one more.
    expect(q.waiting).toBe(4);
    expect(q.push(99)).toBe(true);
    expect(q.push(100)).toBe(false);
    release();
    await q.idle();
    expect(done).toEqual([0, 1, 2, 3, 4, 99]);
  });

  it("reports a failing item and goes on with the next", async () => {
    const errors: unknown[] = [];
    const done: string[] = [];
    const q = new WorkQueue<string>((s) => (s === "kaputt" ? Promise.reject(new Error("upstream down")) : Promise.resolve(void done.push(s))), { limit: 10, onError: (e) => errors.push(e) });
    q.push("a");
    q.push("kaputt");
    q.push("b");
    await q.idle();
    expect(done).toEqual(["a", "b"]);
    expect(errors.map((e) => (e as Error).message)).toEqual(["upstream down"]);
  });

  it("close drops what waits, finishes the item in hand and takes nothing more", async () => {
    const done: number[] = [];
    const q = new WorkQueue<number>(async (n) => {
      await new Promise((r) => setTimeout(r, 20));
      done.push(n);
    }, { limit: 10, onError: () => undefined });
    q.push(1);
    q.push(2);
    await new Promise((r) => setImmediate(r));
    await q.close();
    expect(done).toEqual([1]);
    expect(q.push(3)).toBe(false);
    await q.idle();
    expect(done).toEqual([1]);
  });
});

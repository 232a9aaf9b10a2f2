/**
 * Splits one stream into n that all see every chunk. The source is read only when every
 * branch has asked for more, so memory is bounded by the slowest branch (unlike tee()).
 * Cancelling one branch cancels the source and errors the others.
 *
 * @param input - The source.
 * @param n - How many branches.
 * @returns n streams.
 */
export function fanOut(input: ReadableStream<Uint8Array>, n: number): ReadableStream<Uint8Array>[] {
  if (n === 1) return [input];
  const reader = input.getReader();
  const controllers: ReadableStreamDefaultController<Uint8Array>[] = [];
  let wanting = new Set<number>();
  let waiters: (() => void)[] = [];
  let finished = false;

  const failAll = (e: unknown): void => {
    if (finished) return;
    finished = true;
    for (const c of controllers) {
      try {
        c.error(e);
      } catch {
        // already closed
      }
    }
    for (const w of waiters) w();
  };

  const pump = async (): Promise<void> => {
    let r: Awaited<ReturnType<typeof reader.read>>;
    try {
      r = await reader.read();
    } catch (e) {
      failAll(e);
      return;
    }
    if (finished) return;
    const resolve = waiters;
    waiters = [];
    wanting = new Set();
    if (r.done) {
      finished = true;
      for (const c of controllers) c.close();
    } else {
      for (const c of controllers) c.enqueue(r.value);
    }
    for (const w of resolve) w();
  };

  return Array.from({ length: n }, (_, i) =>
    new ReadableStream<Uint8Array>(
      {
        start(c) {
          controllers[i] = c;
        },
        pull() {
          if (finished) return;
          return new Promise<void>((resolve) => {
            waiters.push(resolve);
            wanting.add(i);
            if (wanting.size === n) void pump();
          });
        },
        cancel(reason) {
          failAll(reason instanceof Error ? reason : new Error("a branch was cancelled"));
          return reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    ),
  );
}

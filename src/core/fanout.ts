/** What the branches of one {@link fanOut} share: the source, and who has asked for more. */
class Fan {
  private readonly controllers: ReadableStreamDefaultController<Uint8Array>[] = [];
  private wanting = new Set<number>();
  private waiters: (() => void)[] = [];
  private finished = false;

  constructor(
    private readonly reader: ReadableStreamDefaultReader<Uint8Array>,
    private readonly n: number,
  ) {}

  /** Errors every branch and releases every waiting pull. */
  private failAll(e: unknown): void {
    if (this.finished) return;
    this.finished = true;
    for (const c of this.controllers) {
      try {
        c.error(e);
      } catch {
        // already closed
      }
    }
    for (const w of this.waiters) w();
  }

  /** Reads one chunk of the source and gives it to every branch (or closes them all). */
  private async pump(): Promise<void> {
    let r: Awaited<ReturnType<typeof this.reader.read>>;
    try {
      r = await this.reader.read();
    } catch (e) {
      this.failAll(e);
      return;
    }
    if (this.finished) return;
    const resolve = this.waiters;
    this.waiters = [];
    this.wanting = new Set();
    if (r.done) {
      this.finished = true;
      for (const c of this.controllers) c.close();
    } else {
      for (const c of this.controllers) c.enqueue(r.value);
    }
    for (const w of resolve) w();
  }

  /** Branch i: its pull waits until every branch has asked, then the source is read once. */
  branch(i: number): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controllers[i] = c;
        },
        pull: () => {
          if (this.finished) return;
          return new Promise<void>((resolve) => {
            this.waiters.push(resolve);
            this.wanting.add(i);
            if (this.wanting.size === this.n) void this.pump();
          });
        },
        cancel: (reason) => {
          this.failAll(reason instanceof Error ? reason : new Error("a branch was cancelled"));
          return this.reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
  }
}

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
  const fan = new Fan(input.getReader(), n);
  return Array.from({ length: n }, (_, i) => fan.branch(i));
}

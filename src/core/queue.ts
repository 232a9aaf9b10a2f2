// Work done after the answer: a form answers at once, and the slow part (looking up,
// writing, mailing) runs here, one item at a time, from a queue of bounded length.

/** What a {@link WorkQueue} does with failures. */
export interface WorkQueueOptions {
  /** Most items waiting; further pushes are dropped, so a flood cannot grow memory. */
  readonly limit: number;
  /** Called with what one item's work threw; the queue goes on with the next. */
  readonly onError: (e: unknown) => void;
}

/** A bounded in-memory queue worked off one item at a time, after the current request. */
export class WorkQueue<T> {
  private readonly items: T[] = [];
  private running: Promise<void> | null = null;
  private closed = false;

  /**
   * @param work - What to do with one item.
   * @param opts - Bound and error handler.
   */
  constructor(
    private readonly work: (item: T) => Promise<void>,
    private readonly opts: WorkQueueOptions,
  ) {}

  /**
   * Queues an item. Costs the same whatever the item is: no lookup, no I/O.
   *
   * @param item - The item.
   * @returns False when the queue is full or closed (the item is dropped).
   */
  push(item: T): boolean {
    if (this.closed || this.items.length >= this.opts.limit) return false;
    this.items.push(item);
    this.running ??= this.drain();
    return true;
  }

  /** @returns How many items wait (the one being worked on not counted). */
  get waiting(): number {
    return this.items.length;
  }

  private async drain(): Promise<void> {
    // Begin only after the request that pushed has answered.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.items.length > 0 && !this.closed) {
      const item = this.items.shift() as T;
      try {
        await this.work(item);
      } catch (e) {
        this.opts.onError(e);
      }
    }
    this.running = null;
  }

  /** @returns A promise that resolves when every queued item was worked off. */
  idle(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  /**
   * Stops: drops what waits and resolves when the item in hand is done.
   *
   * @returns When the queue is quiet.
   */
  close(): Promise<void> {
    this.closed = true;
    this.items.length = 0;
    return this.idle();
  }
}

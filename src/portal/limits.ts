// Fixed-window counters in memory, for login and registration attempts per IP and account.
// They reset when the portal restarts; that costs an attacker a restart, not a bypass.

/** Counts attempts per key within a window. */
export class Limiter {
  private readonly hits = new Map<string, { count: number; until: number }>();

  /**
   * @param max - Attempts allowed per window.
   * @param windowMs - The window.
   * @param now - The clock.
   */
  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * @param key - e.g. `ip:127.0.0.1` or `account:a@b.example`.
   * @returns Whether the key is over its limit now.
   */
  blocked(key: string): boolean {
    const h = this.hits.get(key);
    if (!h) return false;
    if (h.until <= this.now()) {
      this.hits.delete(key);
      return false;
    }
    return h.count >= this.max;
  }

  /**
   * Counts one attempt.
   *
   * @param key - The key.
   */
  hit(key: string): void {
    const now = this.now();
    const h = this.hits.get(key);
    if (!h || h.until <= now) this.hits.set(key, { count: 1, until: now + this.windowMs });
    else h.count++;
    if (this.hits.size > 100_000) this.sweep(now);
  }

  /**
   * Forgets a key (after a successful login).
   *
   * @param key - The key.
   */
  reset(key: string): void {
    this.hits.delete(key);
  }

  private sweep(now: number): void {
    for (const [k, h] of this.hits) if (h.until <= now) this.hits.delete(k);
  }
}

// Attempt counters of the portal's limits (login, registration, reset, invite), in the
// database so that they hold across a restart and across processes sharing one home.
import type { Database } from "better-sqlite3";
import { StatementCache } from "./records.js";

/** One counter to reserve an attempt under. */
export interface AttemptClaim {
  /** Opaque key, e.g. a hash of the limit's name and the IP or address. */
  readonly key: string;
  /** Attempts allowed per window. */
  readonly max: number;
  /** Length of the fixed window in milliseconds. */
  readonly windowMs: number;
}

/** An attempt held under one counter: the key and the end of the window it counts in. */
export interface HeldAttempt {
  readonly key: string;
  readonly until: number;
}

/** Row access for attempt counters. */
export class AttemptRecords {
  private readonly sql: StatementCache;

  constructor(private readonly db: Database) {
    this.sql = new StatementCache(db);
  }

  /**
   * Counts one attempt under every claim, or under none when any of them is used up. One
   * IMMEDIATE transaction: two requests (or two processes on one database) never both take
   * the last attempt.
   *
   * @param claims - The counters.
   * @param now - The time in milliseconds.
   * @returns The held attempts, or null when a limit is reached (nothing was counted).
   */
  reserve(claims: readonly AttemptClaim[], now: number): HeldAttempt[] | null {
    // A window that has ended starts again at 1; otherwise the count grows while below max.
    const take = this.sql.get(`
INSERT INTO attempts (key, count, until) VALUES (@key, 1, @fresh)
ON CONFLICT (key) DO UPDATE SET
  count = CASE WHEN until <= @now THEN 1 ELSE count + 1 END,
  until = CASE WHEN until <= @now THEN @fresh ELSE until END
WHERE until <= @now OR count < @max
RETURNING until`);
    const full = new Error("limit");
    try {
      return this.db
        .transaction(() =>
          claims.map((c) => {
            const row = take.get({ key: c.key, now, fresh: now + c.windowMs, max: c.max }) as { until: number } | undefined;
            if (!row) throw full;
            return { key: c.key, until: row.until };
          }),
        )
        .immediate();
    } catch (e) {
      if (e === full) return null;
      throw e;
    }
  }

  /**
   * Gives held attempts back (the attempt turned out not to count, e.g. a correct login
   * for a limit on failures). An attempt of a window that has ended is not given back.
   *
   * @param held - From {@link reserve}.
   */
  release(held: readonly HeldAttempt[]): void {
    const give = this.sql.get("UPDATE attempts SET count = count - 1 WHERE key = ? AND until = ? AND count > 0");
    this.db.transaction(() => {
      for (const h of held) give.run(h.key, h.until);
    })();
  }

  /** @param key - A counter to forget (after a successful login). */
  clear(key: string): void {
    this.sql.get("DELETE FROM attempts WHERE key = ?").run(key);
  }

  /**
   * Deletes counters whose window has ended.
   *
   * @param now - The time in milliseconds.
   * @returns How many were deleted.
   */
  purge(now: number): number {
    return this.sql.get("DELETE FROM attempts WHERE until <= ?").run(now).changes;
  }
}

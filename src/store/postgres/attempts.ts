// The portal's attempt counters in the shared backend, shared by every node.
import type { AttemptClaim, HeldAttempt } from "../attempts.js";
import type { AttemptStore } from "../types.js";
import type { Query } from "./connect.js";

/** Attempt counters; `atomically` runs work in a transaction (or a savepoint inside one). */
export class PgAttempts implements AttemptStore {
  constructor(
    private readonly q: Query,
    private readonly atomically: <T>(fn: (q: Query) => Promise<T>) => Promise<T>,
  ) {}

  async reserve(claims: readonly AttemptClaim[], now: number): Promise<HeldAttempt[] | null> {
    const full = new Error("limit");
    try {
      return await this.atomically(async (q) => {
        const held: HeldAttempt[] = [];
        for (const c of claims) {
          // A window that has ended starts again at 1; otherwise the count grows while below max.
          const [row] = await q<{ until: number }[]>`INSERT INTO attempts AS a (key, count, until) VALUES (${c.key}, 1, ${now + c.windowMs})
            ON CONFLICT (key) DO UPDATE SET
              count = CASE WHEN a.until <= ${now} THEN 1 ELSE a.count + 1 END,
              until = CASE WHEN a.until <= ${now} THEN ${now + c.windowMs} ELSE a.until END
            WHERE a.until <= ${now} OR a.count < ${c.max}
            RETURNING until`;
          if (!row) throw full;
          held.push({ key: c.key, until: row.until });
        }
        return held;
      });
    } catch (e) {
      if (e === full) return null;
      throw e;
    }
  }

  async release(held: readonly HeldAttempt[]): Promise<void> {
    await this.atomically(async (q) => {
      for (const h of held) await q`UPDATE attempts SET count = count - 1 WHERE key = ${h.key} AND until = ${h.until} AND count > 0`;
    });
  }

  async clear(key: string): Promise<void> {
    await this.q`DELETE FROM attempts WHERE key = ${key}`;
  }

  async purge(now: number): Promise<number> {
    return (await this.q`DELETE FROM attempts WHERE until <= ${now}`).count;
  }
}

// Connections of the shared backend to PostgreSQL.
import postgres from "postgres";

/** What runs a query: the pool, or one transaction's connection. */
export type Query = postgres.Sql | postgres.TransactionSql;

/** A pool of connections. */
export type Pool = postgres.Sql;

/**
 * BIGINT columns (sizes, audit sequence numbers, limiter windows, counts) as JavaScript
 * numbers; a value past 2^53 would lose digits, so it is refused instead.
 */
const bigint = {
  to: 20,
  from: [20],
  serialize: (n: number) => String(n),
  parse: (s: string) => {
    const n = Number(s);
    if (!Number.isSafeInteger(n)) throw new Error(`BIGINT ${s} does not fit a JavaScript number`);
    return n;
  },
};

/**
 * Opens a pool to a PostgreSQL database.
 *
 * @param url - `postgres://user:password@host:port/database`.
 * @param max - At most this many connections.
 * @returns The pool; end it with `end()`.
 */
export function connectPostgres(url: string, max = 10): Pool {
  return postgres(url, {
    max,
    // Reconnecting after PostgreSQL went away: 50 ms, doubling, at most 1 s apart. The client's
    // own backoff grows to 10-20 s after a few refused attempts, and a node that had been
    // refused for a few seconds then kept every request waiting that long once PostgreSQL was
    // back (test/scaleout.failures.test.ts).
    backoff: (attempts: number) => Math.min(0.05 * 2 ** attempts, 1),
    onnotice: () => undefined,
    types: { bigint },
    connection: { application_name: "praxmail" },
  });
}

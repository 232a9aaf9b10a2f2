// What `praxmail doctor` asks of the shared database, read only: the server's version, the
// schema version against this praxmail's, and the round trip of a trivial query. It never
// migrates (opening the store does that) and never writes.
import { performance } from "node:perf_hooks";
import postgres from "postgres";
import { PG_MIGRATIONS } from "./schema.js";

/** The oldest PostgreSQL the shared backend supports (its schema and tests use 15). */
export const MIN_POSTGRES = 15;
/** Round trips timed for the latency figure; the median is reported. */
const PINGS = 5;

/** What the database says about itself. */
export interface DatabaseFacts {
  /** The server's major version (15, 16, …). */
  readonly major: number;
  /** As the server names it, e.g. "15.8 (Debian 15.8-0+deb12u1)". */
  readonly version: string;
  /** The newest migration recorded in schema_migrations; 0 when the table is missing. */
  readonly applied: number;
  /** The newest migration this praxmail has. */
  readonly expected: number;
  /** Median round trip of `SELECT 1`, in milliseconds, on an open connection. */
  readonly latencyMs: number;
}

/**
 * Connects once and reads the facts.
 *
 * @param url - `postgres://user:password@host:port/database`.
 * @param timeoutSeconds - How long to wait for the connection and for each query.
 * @returns The facts.
 * @throws The driver's error (its `code` is an errno like ECONNREFUSED or a SQLSTATE) when the
 *   server cannot be reached or refuses the login.
 */
export async function inspectPostgres(url: string, timeoutSeconds: number): Promise<DatabaseFacts> {
  const sql = postgres(url, {
    max: 1,
    connect_timeout: timeoutSeconds,
    idle_timeout: 1,
    onnotice: () => undefined,
    connection: { application_name: "praxmail-doctor", statement_timeout: timeoutSeconds * 1000 },
  });
  try {
    const [server] = await sql<{ num: string; version: string }[]>`SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS version`;
    const [table] = await sql<{ t: string | null }[]>`SELECT to_regclass('schema_migrations')::text AS t`;
    const [row] = table?.t ? await sql<{ v: number | null }[]>`SELECT max(version) AS v FROM schema_migrations` : [];
    const times: number[] = [];
    for (let i = 0; i < PINGS; i++) {
      const started = performance.now();
      await sql`SELECT 1`;
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return {
      major: Math.floor(Number(server?.num ?? 0) / 10000),
      version: server?.version ?? "unknown",
      applied: row?.v ?? 0,
      expected: PG_MIGRATIONS.at(-1)?.version ?? 0,
      latencyMs: times[Math.floor(PINGS / 2)] ?? 0,
    };
  } finally {
    await sql.end({ timeout: 1 });
  }
}

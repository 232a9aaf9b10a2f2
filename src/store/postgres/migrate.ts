// Brings a shared database up to the schema of this praxmail. Several nodes may start at
// once: the whole run holds a transaction-scoped advisory lock, so one node migrates and
// the others wait and then find nothing left to do. PostgreSQL's DDL is transactional, so a
// failed step leaves the database as it was.
import type { Sql } from "postgres";
import { PG_MIGRATIONS, type PgMigration } from "./schema.js";

/** The advisory lock key of schema migration (an arbitrary constant, "prax" "migr" in ASCII). */
const MIGRATION_LOCK = 0x70726178_6d696772n;

/**
 * Applies the migrations the database lacks, in order, in one transaction.
 *
 * @param sql - A connection pool to the database.
 * @param migrations - The migrations (the shared backend's by default).
 * @param now - The time recorded with each applied migration.
 * @returns The schema version before and after.
 * @throws If the database was migrated by a newer praxmail.
 */
export async function migratePostgres(sql: Sql, migrations: readonly PgMigration[] = PG_MIGRATIONS, now = new Date()): Promise<{ from: number; to: number }> {
  const latest = migrations.at(-1)?.version ?? 0;
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK.toString()}::bigint)`;
    await tx`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`;
    const [row] = await tx<{ v: number | null }[]>`SELECT max(version) AS v FROM schema_migrations`;
    const from = row?.v ?? 0;
    if (from > latest) throw new Error(`database schema ${from} is newer than this praxmail (${latest})`);
    for (const m of migrations) {
      if (m.version <= from) continue;
      await tx.unsafe(m.sql);
      await tx`INSERT INTO schema_migrations (version, applied_at) VALUES (${m.version}, ${now.toISOString()})`;
    }
    return { from, to: Math.max(from, latest) };
  });
}

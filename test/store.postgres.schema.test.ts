// The shared backend's schema (src/store/postgres/) on a real PostgreSQL: the same tables and
// columns as the embedded SQLite schema, migrations that several nodes can run at once, and
// an audit log that refuses to be changed.
import { mkdir } from "node:fs/promises";
import postgres, { type Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../src/store/db.js";
import { migratePostgres } from "../src/store/postgres/migrate.js";
import { PG_MIGRATIONS } from "../src/store/postgres/schema.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { postgresBin, startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { needInstalled } from "./helpers/tools.js";

const connect = (url: string): Sql => postgres(url, { max: 4, onnotice: () => undefined });

describe.runIf(needInstalled("PostgreSQL 15+", postgresBin() !== null, "apt-get install postgresql"))("the shared backend's schema", () => {
  let dir: string;
  let pg: TestPostgres;
  beforeAll(async () => {
    dir = await tempDir("praxmail-pgs-");
    pg = await startPostgres(`${dir}/pg`);
  });
  afterAll(async () => {
    await pg.stop();
    await cleanup(dir);
  });

  it("has every table and column of the embedded schema, and no other", async () => {
    const home = `${dir}/home`;
    await mkdir(home);
    const db = openDatabase(home);
    const embedded: Record<string, string[]> = {};
    for (const { name } of db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[]) {
      embedded[name] = (db.pragma(`table_info(${name})`) as { name: string }[]).map((c) => c.name).sort();
    }
    db.close();
    const sql = connect(await pg.database("parity"));
    try {
      await migratePostgres(sql);
      const shared: Record<string, string[]> = {};
      for (const c of await sql<{ table_name: string; column_name: string }[]>`
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name <> 'schema_migrations'`) {
        (shared[c.table_name] ??= []).push(c.column_name);
      }
      for (const cols of Object.values(shared)) cols.sort();
      expect(Object.keys(embedded).length).toBeGreaterThanOrEqual(13);
      expect(shared).toEqual(embedded);
    } finally {
      await sql.end();
    }
  });

  it("three nodes migrating at once apply each migration once, and a second run applies nothing", async () => {
    const url = await pg.database("race");
    const nodes = [connect(url), connect(url), connect(url)];
    try {
      const runs = await Promise.all(nodes.map((sql) => migratePostgres(sql)));
      const latest = PG_MIGRATIONS.at(-1)!.version;
      expect(runs.map((r) => r.to)).toEqual([latest, latest, latest]);
      expect(runs.filter((r) => r.from === 0)).toHaveLength(1);
      expect(await nodes[0]!`SELECT version FROM schema_migrations ORDER BY version`).toEqual(PG_MIGRATIONS.map((m) => ({ version: m.version })));
      expect(await migratePostgres(nodes[1]!)).toEqual({ from: latest, to: latest });
    } finally {
      await Promise.all(nodes.map((sql) => sql.end()));
    }
  });

  it("refuses a database that a newer praxmail migrated, and changes nothing", async () => {
    const sql = connect(await pg.database("newer"));
    try {
      await migratePostgres(sql);
      await sql`INSERT INTO schema_migrations (version, applied_at) VALUES (99, 'later')`;
      await expect(migratePostgres(sql)).rejects.toThrow(`database schema 99 is newer than this praxmail (${PG_MIGRATIONS.at(-1)!.version})`);
      expect(await sql`SELECT count(*)::int AS n FROM schema_migrations`).toEqual([{ n: PG_MIGRATIONS.length + 1 }]);
    } finally {
      await sql.end();
    }
  });

  it("a failing migration leaves the database as it was", async () => {
    const sql = connect(await pg.database("broken"));
    try {
      const broken = [...PG_MIGRATIONS, { version: 1000, sql: "CREATE TABLE half (x int); SELECT no_such_function();" }];
      await expect(migratePostgres(sql, broken)).rejects.toMatchObject({ code: "42883" });
      expect(await sql`SELECT to_regclass('half') AS t, to_regclass('schema_migrations') AS m`).toEqual([{ t: null, m: null }]);
    } finally {
      await sql.end();
    }
  });

  it("the audit log and its checkpoints refuse UPDATE, DELETE and TRUNCATE", async () => {
    const sql = connect(await pg.database("audit"));
    try {
      await migratePostgres(sql);
      await sql`INSERT INTO audit VALUES (1, 'now', 'cli', 'x', NULL, '{}', '', 'h1')`;
      await sql`INSERT INTO audit_checkpoints VALUES (1, 'h1', 'now', 'sig')`;
      for (const table of ["audit", "audit_checkpoints"]) {
        await expect(sql.unsafe(`UPDATE ${table} SET hash = 'forged'`)).rejects.toThrow(`${table} is append-only`);
        await expect(sql.unsafe(`DELETE FROM ${table}`)).rejects.toThrow(`${table} is append-only`);
        await expect(sql.unsafe(`TRUNCATE ${table}`)).rejects.toThrow(`${table} is append-only`);
      }
      expect(await sql`SELECT hash FROM audit`).toEqual([{ hash: "h1" }]);
      expect(await sql`SELECT hash FROM audit_checkpoints`).toEqual([{ hash: "h1" }]);
    } finally {
      await sql.end();
    }
  });
});

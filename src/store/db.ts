import { join } from "node:path";
import Database from "better-sqlite3";
import { MIGRATIONS } from "./migrations.js";

/** The database file's name under home. */
export const DB_FILE = "praxmail.db";

/**
 * Opens (and creates or migrates) the database of a home.
 *
 * @param home - The praxmail home folder; it must exist.
 * @returns The open connection, in WAL mode with full fsync.
 * @throws If the database was written by a newer praxmail.
 */
export function openDatabase(home: string): Database.Database {
  const db = new Database(join(home, DB_FILE));
  try {
    db.pragma("journal_mode = WAL");
    // FULL: a commit is on disk before we answer 250 or print success.
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    db.pragma("busy_timeout = 5000");
    migrate(db);
  } catch (e) {
    db.close();
    throw e;
  }
  return db;
}

function migrate(db: Database.Database): void {
  const current = db.pragma("user_version", { simple: true }) as number;
  const latest = MIGRATIONS.at(-1)?.version ?? 0;
  if (current > latest) {
    throw new Error(`database schema ${current} is newer than this praxmail (${latest})`);
  }
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    }).immediate();
  }
}

import { chmodSync, closeSync, constants, fchmodSync, openSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { MIGRATIONS } from "./migrations.js";

/** The database file's name under home. */
export const DB_FILE = "praxmail.db";

/** The files SQLite keeps beside the database in WAL mode. */
const WAL_FILES = ["-wal", "-shm"] as const;

/**
 * Sets a file's mode to 0600 if it exists.
 *
 * @param path - The file.
 */
function tighten(path: string): void {
  try {
    chmodSync(path, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

/**
 * Opens (and creates or migrates) the database of a home. The database, its -wal and its
 * -shm file are mode 0600 whatever the umask and whatever mode they had before.
 *
 * @param home - The praxmail home folder; it must exist.
 * @returns The open connection, in WAL mode with full fsync.
 * @throws If the database was written by a newer praxmail.
 */
export function openDatabase(home: string): Database.Database {
  // Processes opening a new database at once can get SQLITE_BUSY from SQLite without its
  // busy handler being asked (switching to WAL, or a read that must become a write): open
  // afresh after a short random pause, for up to about five seconds.
  for (let attempt = 1; ; attempt++) {
    try {
      return openOnce(home);
    } catch (e) {
      if ((e as { code?: unknown }).code !== "SQLITE_BUSY" || attempt === 100) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10 + Math.random() * 80);
    }
  }
}

function openOnce(home: string): Database.Database {
  const file = join(home, DB_FILE);
  // SQLite would create the file 0644 under umask 0022 (it asks for 0644); create it 0600
  // first, and tighten one that exists. SQLite gives a -wal or -shm it creates (also later,
  // after the last connection deleted them) the database file's mode, so 0600 too.
  const fd = openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
  const db = new Database(file);
  try {
    db.pragma("journal_mode = WAL");
    // Left by a praxmail that did not set modes (or copied in by hand).
    for (const suffix of WAL_FILES) tighten(file + suffix);
    // FULL: a commit is on disk before we answer 250 or print success.
    db.pragma("synchronous = FULL");
    // Deleted rows are overwritten with zeros, not left in free pages: a revoked or expired
    // delivery's wraps are gone from the file, not only from the tables (crypto-shred). And
    // the -wal is cut back after each checkpoint, so its old frames do not linger either.
    db.pragma("secure_delete = ON");
    db.pragma("journal_size_limit = 0");
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
      // Another process opening the same new database may have applied it while this one
      // waited for the write lock.
      if ((db.pragma("user_version", { simple: true }) as number) >= m.version) return;
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    }).immediate();
  }
}

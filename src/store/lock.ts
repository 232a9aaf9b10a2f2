// Named locks of the embedded backend, held across processes on one home: `gc` run by a
// timer while another `gc` (or `serve`'s hourly reminders) is still at work. Each lock is an
// empty SQLite file under home held by an EXCLUSIVE transaction: SQLite's own file locks,
// which the kernel drops when the process dies (no stale lock file to clean up), and which
// two connections of one process also respect.
import { closeSync, constants, fchmodSync, openSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";

/** A lock's name: a few lowercase letters (it becomes a file name). */
const LOCK_NAME = /^[a-z]{1,32}$/;

/**
 * Takes a named lock of a home if nobody holds it, without waiting.
 *
 * @param home - The home.
 * @param name - The lock's name.
 * @returns A function that releases it, or null while another process or connection holds it.
 * @throws If the name is not a lock name or the lock file cannot be opened.
 */
export function tryLock(home: string, name: string): (() => void) | null {
  if (!LOCK_NAME.test(name)) throw new Error(`invalid lock name ${JSON.stringify(name)}`);
  const file = join(home, `${name}.lock`);
  const fd = openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
  const db = new Database(file, { timeout: 0 });
  try {
    db.exec("BEGIN EXCLUSIVE");
  } catch (e) {
    db.close();
    if ((e as { code?: unknown }).code === "SQLITE_BUSY") return null;
    throw e;
  }
  return () => {
    db.exec("ROLLBACK");
    db.close();
  };
}

import { join } from "node:path";
import Database from "better-sqlite3";

/**
 * Collects an AsyncIterable, such as a store's audit rows (Array.fromAsync is Node 22).
 *
 * @param it - The iterable.
 * @returns Its items in order.
 */
export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/**
 * Reads a home's SQLite database directly, on a read-only connection of its own, for tests
 * that look at rows the store interface does not hand out (the embedded backend's tables).
 *
 * @param home - The praxmail home.
 * @param read - Reads from the connection.
 * @returns What read returns.
 */
export function readDb<T>(home: string, read: (db: Database.Database) => T): T {
  const db = new Database(join(home, "praxmail.db"), { readonly: true });
  try {
    return read(db);
  } finally {
    db.close();
  }
}

// Whole tables of the embedded database, column by column, for moving a practice between
// backends (praxmail migrate, backup and restore of the shared backend). The shared
// backend's counterpart is postgres/tables.ts; both name the same tables and columns.
import type { Database } from "better-sqlite3";
import type { TableRow } from "./types.js";

/** A table or column name as the schemas write them; anything else is refused, never quoted blindly. */
export const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * @param name - A table or column name.
 * @returns It, double-quoted.
 * @throws If it is not a plain lowercase identifier.
 */
export function quoted(name: string): string {
  if (!IDENTIFIER.test(name)) throw new Error(`not a table or column name: ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/**
 * @param db - The database.
 * @returns Every table (SQLite's own excepted) with its columns in order.
 */
export function tableColumns(db: Database): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const names = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[];
  for (const name of names) {
    out.set(name, (db.prepare(`SELECT name FROM pragma_table_info(?) ORDER BY cid`).pluck().all(name) as string[]));
  }
  return out;
}

/**
 * @param db - The database.
 * @param table - A table of {@link tableColumns}.
 * @param after - The rowid of the last row of the page before (0: from the start).
 * @param limit - Rows per page.
 * @returns The page's rows in rowid order (insertion order), and the last rowid.
 */
export function tablePage(db: Database, table: string, after: number, limit: number): { rows: TableRow[]; last: number } {
  const rows = db.prepare(`SELECT rowid AS "rowid:", * FROM ${quoted(table)} WHERE rowid > ? ORDER BY rowid LIMIT ?`).all(after, limit) as Record<string, unknown>[];
  let last = after;
  for (const r of rows) {
    last = r["rowid:"] as number;
    delete r["rowid:"];
  }
  return { rows, last };
}

/**
 * Inserts rows as they are.
 *
 * @param db - The database, inside the caller's transaction.
 * @param table - A table name.
 * @param rows - Rows by column name.
 */
export function insertTableRows(db: Database, table: string, rows: readonly TableRow[]): void {
  const statements = new Map<string, ReturnType<Database["prepare"]>>();
  for (const row of rows) {
    const columns = Object.keys(row);
    const sig = columns.join(",");
    let st = statements.get(sig);
    if (!st) {
      st = db.prepare(`INSERT INTO ${quoted(table)} (${columns.map(quoted).join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`);
      statements.set(sig, st);
    }
    // better-sqlite3 binds a Buffer as a BLOB, not any Uint8Array.
    st.run(columns.map((c) => (row[c] instanceof Uint8Array && !Buffer.isBuffer(row[c]) ? Buffer.from(row[c]) : row[c])));
  }
}

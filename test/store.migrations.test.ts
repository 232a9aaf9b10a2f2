// The embedded schema's migrations (src/store/migrations.ts) on a database that an older
// praxmail wrote: opening it applies the steps it lacks, and keeps its rows.
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DB_FILE } from "../src/store/db.js";
import { MIGRATIONS } from "../src/store/migrations.js";
import { openStore } from "../src/store/index.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { readDb } from "./helpers/store.js";

let home: string;
beforeEach(async () => {
  home = await tempDir();
});
afterEach(async () => {
  await cleanup(home);
});

/** A database as the praxmail of schema `version` left it. */
function databaseAt(version: number, fill: (db: Database.Database) => void): void {
  const db = new Database(join(home, DB_FILE));
  try {
    for (const m of MIGRATIONS.filter((x) => x.version <= version)) db.exec(m.sql);
    db.pragma(`user_version = ${String(version)}`);
    fill(db);
  } finally {
    db.close();
  }
}

const columns = (table: string): string[] => readDb(home, (db) => (db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name));

describe("an embedded database from before", () => {
  it("schema 11, in the middle of a reset from before one secret: pending_kdf goes, the patient stays as it was", async () => {
    const kdf = JSON.stringify({ v: 3, alg: "scrypt", n: 131072, r: 8, p: 1, salt: "c2FsdA" });
    databaseAt(11, (db) =>
      db
        .prepare("INSERT INTO patients (email, status, credential_hash, kdf, recipient, safety_code, registered_at, secupass_at, approved_at, pending_kdf, lang) VALUES (?, 'approved', ?, ?, ?, ?, ?, ?, ?, ?, 'tr')")
        .run("anna@patient.example", "a".repeat(64), kdf, "age1recipient", "123-456", "2026-01-02T03:04:05.000Z", "2026-01-02T03:05:00.000Z", "2026-01-03T09:00:00.000Z", '{"v":2}'),
    );
    expect(columns("patients")).toContain("pending_kdf");
    const store = openStore(home);
    try {
      expect(await store.records.patient("anna@patient.example")).toMatchObject({
        status: "approved",
        credentialHash: "a".repeat(64),
        kdf,
        recipient: "age1recipient",
        safetyCode: "123-456",
        registeredAt: "2026-01-02T03:04:05.000Z",
        approvedAt: "2026-01-03T09:00:00.000Z",
        lang: "tr",
      });
    } finally {
      await store.close();
    }
    expect(columns("patients")).not.toContain("pending_kdf");
    expect(readDb(home, (db) => db.pragma("user_version", { simple: true }))).toBe(MIGRATIONS.at(-1)?.version);
  });
});

// What ending a delivery deletes, through the real binary: after `praxmail gc` expires a
// delivery (its expiry moved into the past in the database, as the core tests move time)
// and after `praxmail revoke`, both wraps (practice and patient) and every blob are gone
// from the database, its file on disk and the blob folder, while the link token's hash
// stays so that the link answers 410 on `praxmail serve`.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashToken } from "../src/core/index.js";
import { cleanup, initHome, outbox, praxmail, tempDir } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";
import { startServe } from "./helpers/serve.js";

const PATIENT = "anna@patient.example";

interface Sent {
  id: string;
  token: string;
  wraps: { holder: string; ciphertext: Buffer }[];
  blobs: string[];
}

describe("the end of a delivery (expiry by gc, revoke)", () => {
  let dir: string;
  let home: string;
  const sent: Sent[] = [];

  const query = <T>(sql: string, ...args: unknown[]): T[] => {
    const db = new Database(join(home, "praxmail.db"), { readonly: true });
    try {
      return db.prepare(sql).all(...args) as T[];
    } finally {
      db.close();
    }
  };

  async function send(name: string): Promise<Sent> {
    const file = join(dir, name);
    await writeFile(file, `%PDF-1.4 ${name}\n${"x".repeat(5000)}`);
    const r = await praxmail(["send", "--home", home, "--to", PATIENT, "--level", "3", file, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const id = (JSON.parse(r.stdout) as { deliveries: { id: string }[] }).deliveries[0]!.id;
    const mail = (await outbox(home)).at(-1)!;
    const token = /\/d\/([A-Za-z0-9_-]{43})/.exec(mail.text ?? "")![1]!;
    const wraps = query<{ holder: string; ciphertext: Buffer }>("SELECT holder, ciphertext FROM wraps WHERE delivery_id = ? ORDER BY holder", id);
    const blobs = query<{ blob: string }>("SELECT blob FROM files WHERE delivery_id = ? AND blob IS NOT NULL", id).map((f) => f.blob);
    return { id, token, wraps, blobs };
  }

  /** Every byte praxmail keeps of its database: the file, and a -wal if one is left. */
  async function databaseBytes(): Promise<Buffer> {
    const parts = [await readFile(join(home, "praxmail.db"))];
    for (const suffix of ["-wal", "-shm"]) {
      try {
        parts.push(await readFile(join(home, `praxmail.db${suffix}`)));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
    return Buffer.concat(parts);
  }

  async function expectShredded(s: Sent, status: "expired" | "revoked"): Promise<void> {
    expect(query("SELECT holder FROM wraps WHERE delivery_id = ?", s.id)).toEqual([]);
    expect(query("SELECT blob FROM files WHERE delivery_id = ? AND blob IS NOT NULL", s.id)).toEqual([]);
    for (const b of s.blobs) await expect(readFile(join(home, b))).rejects.toMatchObject({ code: "ENOENT" });
    // Not only unreachable by SQL: the wraps' bytes are in no page of the database file.
    const bytes = await databaseBytes();
    for (const w of s.wraps) expect(bytes.includes(w.ciphertext), `wrap[${w.holder}] of ${s.id} still on disk`).toBe(false);
    // What stays: the delivery row with its status, and the link token's hash.
    expect(query("SELECT status FROM deliveries WHERE id = ?", s.id)).toEqual([{ status }]);
    expect(query("SELECT delivery_id AS id FROM link_tokens WHERE hash = ?", hashToken(s.token))).toEqual([{ id: s.id }]);
  }

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, PATIENT, "Leuchtturm-Kaffee-7-Sonnenblume");
    const approved = await praxmail(["approve", PATIENT, "--yes", "--home", home]);
    expect(approved.code, approved.stderr).toBe(0);
    sent.push(await send("expires.pdf"), await send("revoked.pdf"), await send("stays.pdf"));
    for (const s of sent) {
      expect(s.wraps.map((w) => w.holder)).toEqual(["patient", "practice"]);
      expect(s.blobs.length).toBe(1);
      const bytes = await databaseBytes();
      for (const w of s.wraps) expect(bytes.includes(w.ciphertext)).toBe(true);
    }
  });
  afterAll(async () => {
    await cleanup(dir);
  });

  it("gc past a delivery's expiry deletes both wraps (from the tables and the file) and its blobs, and keeps the token hash", async () => {
    const [expiring, , stays] = sent as [Sent, Sent, Sent];
    const db = new Database(join(home, "praxmail.db"));
    db.prepare("UPDATE deliveries SET expires_at = ? WHERE id = ?").run(new Date(Date.now() - 60_000).toISOString(), expiring.id);
    db.close();
    const r = await praxmail(["gc", "--home", home, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ expired: [expiring.id] });
    await expectShredded(expiring, "expired");
    // The other deliveries keep theirs.
    expect(query<{ holder: string }>("SELECT holder FROM wraps WHERE delivery_id = ? ORDER BY holder", stays.id).map((w) => w.holder)).toEqual(["patient", "practice"]);
    expect((await readFile(join(home, stays.blobs[0]!))).length).toBeGreaterThan(5000);
  });

  it("revoke deletes both wraps (from the tables and the file) and its blobs, and keeps the token hash", async () => {
    const revoked = sent[1]!;
    const r = await praxmail(["revoke", revoked.id, "--yes", "--home", home]);
    expect(r.code, r.stderr).toBe(0);
    await expectShredded(revoked, "revoked");
  });

  it("praxmail serve answers 410 on the expired and the revoked link, and a login on the delivery that stays", async () => {
    const [expiring, revoked, stays] = sent as [Sent, Sent, Sent];
    const served = await startServe(home);
    try {
      const get = (token: string): Promise<Response> => fetch(`http://127.0.0.1:${served.httpPort}/d/${token}`, { redirect: "manual" });
      const e = await get(expiring.token);
      expect(e.status).toBe(410);
      expect(await e.text()).toContain("Die Abrufzeit für diese Nachricht ist abgelaufen, und die Dateien wurden gelöscht.");
      const v = await get(revoked.token);
      expect(v.status).toBe(410);
      expect(await v.text()).toContain("Ihre Praxis hat diese Nachricht zurückgezogen. Die Dateien wurden gelöscht.");
      // Not logged in: the live delivery asks for a login instead.
      expect((await get(stays.token)).status).toBe(303);
    } finally {
      expect(await served.stop()).toBe(0);
    }
  });
});

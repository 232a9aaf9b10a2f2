// The contract of the store interface (src/store/types.ts), written against the interface
// only: every backend runs this same suite through describeStore.
import { randomBytes } from "node:crypto";
import { readdir, readlink } from "node:fs/promises";
import { basename, join } from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { copyRows, openStore, tablesWithRows, type PatientRow, type Store } from "../src/store/index.js";
import { PostgresStore } from "../src/store/postgres/store.js";
import { S3Blobs } from "../src/store/s3/blobs.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { sleep } from "./helpers/crash.js";
import { collect } from "./helpers/store.js";
import { readAll, sha256, streamOf } from "./helpers/streams.js";
import { postgresBin, startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { hasSwift, startS3, type TestS3 } from "./helpers/s3.js";
import { needInstalled } from "./helpers/tools.js";

const AT = new Date("2026-05-04T10:00:00Z");

const patientRow = (email: string, safetyCode: string | null = null): PatientRow => ({
  email,
  status: "pending-secupass",
  passwordHash: null,
  kdf: null,
  recipient: null,
  safetyCode,
  registeredAt: AT.toISOString(),
  secupassAt: null,
  approvedAt: null,
  revokedAt: null,
  pendingKdf: null,
  invitedAt: null,
  approval: null,
  inviteId: null,
  inviteSession: null,
  alarmedAt: null,
});

/** A stream that yields `good` bytes and then fails, as a client that hangs up mid-upload. */
function failingStream(good: Uint8Array): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (sent) ctl.error(new Error("client went away"));
      else ctl.enqueue(good);
      sent = true;
    },
  });
}

/**
 * The contract suite.
 *
 * @param name - The backend's name.
 * @param open - Opens the store at a location (a fresh, empty folder for each test); opened
 *   twice with one location, it gives two independent handles on the same data (as two
 *   processes would have).
 */
export function describeStore(name: string, open: (where: string) => Promise<Store>): void {
  describe(`store contract: ${name}`, () => {
    let where: string;
    let store: Store;
    const others: Store[] = [];

    beforeEach(async () => {
      where = await tempDir();
      store = await open(where);
    });
    afterEach(async () => {
      for (const s of others.splice(0)) await s.close();
      await store.close();
      await cleanup(where);
    });

    it("commits a transaction's rows and audit row together", async () => {
      const row = await store.transaction(async (tx) => {
        await tx.records.insertPatient(patientRow("a@example.org"));
        return tx.audit({ actor: "test", action: "patient.register", subject: "a@example.org" }, AT);
      });
      expect(row.seq).toBe(1);
      expect((await store.records.patient("a@example.org"))?.email).toBe("a@example.org");
      expect((await collect(store.auditRows())).map((r) => r.action)).toEqual(["patient.register"]);
      expect(await store.verifyAudit()).toMatchObject({ ok: true, rows: 1 });
    });

    it("rolls back every write and the audit row when the body throws", async () => {
      await store.transaction(async (tx) => {
        await tx.records.insertPatient(patientRow("keep@example.org"));
        await tx.audit({ actor: "test", action: "patient.register", subject: "keep@example.org" }, AT);
      });
      const boom = new Error("boom");
      await expect(
        store.transaction(async (tx) => {
          await tx.records.insertPatient(patientRow("gone@example.org"));
          await tx.records.updatePatient({ ...patientRow("keep@example.org"), status: "revoked" });
          await tx.audit({ actor: "test", action: "patient.register", subject: "gone@example.org" }, AT);
          await sleep(5);
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await store.records.patient("gone@example.org")).toBeUndefined();
      expect((await store.records.patient("keep@example.org"))?.status).toBe("pending-secupass");
      expect((await collect(store.auditRows())).map((r) => r.subject)).toEqual(["keep@example.org"]);
      // The store is usable afterwards, and the chain goes on from the committed row.
      await store.transaction((tx) => tx.audit({ actor: "test", action: "after" }, AT));
      expect(await store.verifyAudit()).toMatchObject({ ok: true, rows: 2 });
    });

    it("runs transactions of two tasks one after the other: no lost update, each one's audit rows together", async () => {
      await store.transaction((tx) => tx.records.insertPatient(patientRow("count@example.org", "0")));
      const bump = (who: string): Promise<void> =>
        store.transaction(async (tx) => {
          const p = await tx.records.patient("count@example.org");
          await tx.audit({ actor: who, action: "first" }, AT);
          await sleep(20);
          await tx.records.updatePatient({ ...patientRow("count@example.org"), safetyCode: String(Number(p?.safetyCode) + 1) });
          await tx.audit({ actor: who, action: "second" }, AT);
        });
      await Promise.all([bump("a"), bump("b"), bump("c")]);
      expect((await store.records.patient("count@example.org"))?.safetyCode).toBe("3");
      const rows = await collect(store.auditRows());
      expect(rows.map((r) => r.action)).toEqual(["first", "second", "first", "second", "first", "second"]);
      for (let i = 0; i < rows.length; i += 2) expect(rows[i]?.actor).toBe(rows[i + 1]?.actor);
      expect(await store.verifyAudit()).toMatchObject({ ok: true, rows: 6 });
    });

    it("gives a call that arrives while another task's transaction is open the state before or after it, never half of it", async () => {
      let inBody = (): void => undefined;
      const entered = new Promise<void>((resolve) => (inBody = resolve));
      const tx = store.transaction(async (t) => {
        await t.records.insertPatient(patientRow("late@example.org"));
        inBody();
        await sleep(30);
        await t.records.updatePatient({ ...patientRow("late@example.org"), status: "approved" });
      });
      await entered;
      // Outside the transaction: nothing of it, or its whole effect; never the half-done
      // state (the embedded backend, on one connection, waits for the commit to ensure it).
      expect([undefined, "approved"]).toContain((await store.records.patient("late@example.org"))?.status);
      await tx;
    });

    it("refuses a call on the store itself from inside a transaction body, and rolls the transaction back", async () => {
      const outer = store.transaction(async (tx) => {
        await tx.records.insertPatient(patientRow("inner@example.org"));
        await store.records.patient("inner@example.org");
      });
      await expect(outer).rejects.toThrow(/inside a transaction.*\(tx\)/);
      await expect(store.transaction(() => store.transaction((tx) => tx.records.patient("x@example.org")))).rejects.toThrow(/inside another/);
      expect(await store.records.patient("inner@example.org")).toBeUndefined();
    });

    it("refuses a transaction's handle once the transaction has ended", async () => {
      const kept = await store.transaction((tx) => Promise.resolve(tx));
      await expect(kept.records.insertPatient(patientRow("leak@example.org"))).rejects.toThrow(/transaction has ended/);
      expect(await store.records.patient("leak@example.org")).toBeUndefined();
    });

    it("gives a snapshot the same state for all of its reads while another handle writes", async () => {
      const other = await open(where);
      others.push(other);
      await store.transaction((tx) => tx.records.insertPatient(patientRow("one@example.org")));
      const seen = await store.snapshot(async (tx) => {
        const before = (await tx.records.patients()).map((p) => p.email);
        await other.transaction(async (otx) => {
          await otx.records.insertPatient(patientRow("two@example.org"));
          await otx.audit({ actor: "other", action: "patient.register" }, AT);
        });
        const after = (await tx.records.patients()).map((p) => p.email);
        const audit = (await collect(tx.auditRows())).length;
        return { before, after, audit };
      });
      expect(seen).toEqual({ before: ["one@example.org"], after: ["one@example.org"], audit: 0 });
      expect((await store.records.patients()).map((p) => p.email)).toEqual(["one@example.org", "two@example.org"]);
    });

    it("hands out audit rows in order, however many", async () => {
      await store.transaction(async (tx) => {
        for (let i = 0; i < 1234; i++) await tx.audit({ actor: "test", action: `a${i}` }, AT);
      });
      const rows = await collect(store.auditRows());
      expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 1234 }, (_, i) => i + 1));
      expect((await collect(store.auditRows(1200))).map((r) => r.action)).toEqual(Array.from({ length: 34 }, (_, i) => `a${1200 + i}`));
      expect(await store.verifyAudit()).toMatchObject({ ok: true, rows: 1234 });
    });

    it("gives a blob back byte for byte, with its size", async () => {
      const data = new Uint8Array(randomBytes(3 * 1024 * 1024 + 17));
      const key = await store.blobs.write(streamOf(data, 100_000));
      expect(await store.blobs.size(key)).toBe(data.length);
      expect(sha256(await readAll(store.blobs.read(key)))).toBe(sha256(data));
      expect((await store.blobs.scan()).map((b) => [b.key, b.temp])).toEqual([[key, false]]);
    });

    it("forgets a removed blob", async () => {
      const keep = await store.blobs.write(streamOf(new Uint8Array([1, 2, 3])));
      const gone = await store.blobs.write(streamOf(new Uint8Array([4, 5, 6])));
      await store.blobs.remove([gone]);
      await expect(store.blobs.size(gone)).rejects.toThrow();
      await expect(readAll(store.blobs.read(gone))).rejects.toThrow();
      expect((await store.blobs.scan()).map((b) => b.key)).toEqual([keep]);
      await store.blobs.remove([gone]);
      expect([...(await readAll(store.blobs.read(keep)))]).toEqual([1, 2, 3]);
    });

    it("leaves nothing of a write whose stream fails", async () => {
      await expect(store.blobs.write(failingStream(new Uint8Array(randomBytes(2 * 1024 * 1024))))).rejects.toThrow("client went away");
      expect(await store.blobs.scan()).toEqual([]);
    });

    it("puts a blob under a key another store gave it, replacing a blob there whole; a failed put leaves the old one", async () => {
      const key = await store.blobs.write(streamOf(new Uint8Array([1, 2, 3])));
      const given = `blobs/ab/${"ab".repeat(16)}.age`;
      await expect(store.blobs.size(given)).rejects.toMatchObject({ code: "ENOENT" });
      await store.blobs.put(given, streamOf(new Uint8Array([7, 8])));
      await store.blobs.put(key, streamOf(new Uint8Array([9])));
      expect([...(await readAll(store.blobs.read(key)))]).toEqual([9]);
      expect([...(await readAll(store.blobs.read(given)))]).toEqual([7, 8]);
      await expect(store.blobs.put(given, failingStream(new Uint8Array(randomBytes(1024))))).rejects.toThrow("client went away");
      expect([...(await readAll(store.blobs.read(given)))]).toEqual([7, 8]);
      await expect(store.blobs.put("blobs/../config.json", streamOf(new Uint8Array([1])))).rejects.toThrow("invalid blob key");
      expect((await store.blobs.scan()).map((b) => [b.key, b.temp]).sort()).toEqual([[given, false], [key, false]].sort());
    });

    it("hands out every table's rows as stored, and another store takes them as they were", async () => {
      const wrap = new Uint8Array(randomBytes(300));
      await store.transaction(async (tx) => {
        await tx.records.insertPatient(patientRow("a@example.org", "1234"));
        await tx.records.insertDelivery(
          { id: "d_1", recipient: "a@example.org", level: 3, status: "ready", subject: "Befund", sender: null, createdAt: AT.toISOString(), expiresAt: AT.toISOString(), downloadedAt: null, endedAt: null, sourceKey: null, sentAt: AT.toISOString(), remindedAt: null },
          [{ id: "f_1", deliveryId: "d_1", position: 0, kind: "attachment", name: "a.pdf", size: 3 * 2 ** 31, blob: `blobs/cd/${"cd".repeat(16)}.age` }],
          [{ deliveryId: "d_1", holder: "practice", recipient: "age1x", ciphertext: wrap, createdAt: AT.toISOString() }],
          { hash: "h".repeat(64), deliveryId: "d_1", email: "a@example.org", createdAt: AT.toISOString() },
        );
        await tx.audit({ actor: "test", action: "delivery.create", subject: "d_1" }, AT);
      });
      expect(await store.snapshot(tablesWithRows)).toEqual(expect.arrayContaining(["audit", "deliveries", "files", "link_tokens", "patients", "wraps"]));
      const at = await tempDir();
      const copy = await open(at);
      try {
        expect(await copy.snapshot(tablesWithRows)).toEqual([]);
        await store.snapshot((from) => copy.transaction((to) => copyRows(from, to)));
        for (const t of (await store.tables()).keys()) expect(await collect(copy.tableRows(t)), t).toEqual(await collect(store.tableRows(t)));
        expect((await copy.records.wrap("d_1", "practice"))?.ciphertext).toEqual(wrap);
        expect((await copy.records.files("d_1"))[0]?.size).toBe(3 * 2 ** 31);
        expect(await copy.verifyAudit()).toMatchObject({ ok: true, rows: 1 });
      } finally {
        await copy.close();
        await cleanup(at);
      }
    });
  });
}

describeStore("embedded", (home) => Promise.resolve(openStore(home)));

// Facts of the embedded backend alone: its blobs are files under home.
describe("embedded store: blob files", () => {
  let home: string;
  let store: Store;
  beforeEach(async () => {
    home = await tempDir();
    store = openStore(home);
  });
  afterEach(async () => {
    await store.close();
    await cleanup(home);
  });

  /** How many of this process's descriptors are open on the file. */
  const openOn = async (file: string): Promise<number> => {
    const fds = await readdir("/proc/self/fd");
    const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
    return targets.filter((t) => t === file).length;
  };

  it("keys a blob by its path under home, and a read cancelled at once (a HEAD request) leaves the file closed", async () => {
    const key = await store.blobs.write(streamOf(new Uint8Array(randomBytes(4 * 1024 * 1024))));
    expect(key).toMatch(/^blobs\/[0-9a-f]{2}\/[0-9a-f]{32}\.age$/);
    const file = join(home, key);
    for (let i = 0; i < 5; i++) await store.blobs.read(key).cancel();
    await sleep(50);
    expect(await openOn(file)).toBe(0);
    // Read ahead stops before the end of a larger blob: the file stays open until cancel.
    const reading = store.blobs.read(key);
    await sleep(50);
    expect(await openOn(file)).toBe(1);
    await reading.cancel();
    expect(await openOn(file)).toBe(0);
  });
});

const ENGINES =
  needInstalled("PostgreSQL 15+", postgresBin() !== null, "apt-get install postgresql") &&
  needInstalled("OpenStack Swift", hasSwift(), "apt-get install swift-proxy swift-object swift-container swift-account python3-swift memcached");

describe.runIf(ENGINES)("the shared backend on real engines", () => {
  let engines: string;
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  let client: S3Client | undefined;
  const bucket = "contract";
  const databases = new Map<string, string>();
  beforeAll(async () => {
    engines = await tempDir("praxmail-engines-");
    [pg, s3] = await Promise.all([startPostgres(`${engines}/pg`), startS3(`${engines}/s3`)]);
    client = s3.client();
    await s3.bucket(bucket);
  });
  afterAll(async () => {
    client?.destroy();
    await Promise.all([pg?.stop(), s3?.stop()]);
    await cleanup(engines);
  });

  // A location is a database and a prefix of its own; opened twice, it is the same data.
  describeStore("shared (PostgreSQL + S3)", async (where) => {
    if (!pg || !client) throw new Error("the engines did not start");
    let url = databases.get(where);
    if (url === undefined) {
      url = await pg.database(`contract${databases.size}`);
      databases.set(where, url);
    }
    return PostgresStore.open(url, new S3Blobs(client, { bucket, prefix: `${basename(where)}/` }));
  });
});

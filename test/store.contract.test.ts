// The contract of the store interface (src/store/types.ts), written against the interface
// only: every backend runs this same suite (helpers/backends.ts).
import { randomBytes } from "node:crypto";
import { readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { copyRows, openStore, tablesWithRows, type DeliveryRow, type FileRow, type PatientRow, type Store, type WrapRow } from "../src/store/index.js";
import { describeBackends } from "./helpers/backends.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { sleep } from "./helpers/crash.js";
import { collect } from "./helpers/store.js";
import { readAll, sha256, streamOf } from "./helpers/streams.js";

const AT = new Date("2026-05-04T10:00:00Z");

const patientRow = (email: string, safetyCode: string | null = null): PatientRow => ({
  email,
  status: "pending-secupass",
  passwordHash: null,
  credentialHash: null,
  kdf: null,
  recipient: null,
  safetyCode,
  registeredAt: AT.toISOString(),
  secupassAt: null,
  approvedAt: null,
  revokedAt: null,
  invitedAt: null,
  approval: null,
  inviteId: null,
  inviteSession: null,
  alarmedAt: null,
  lang: null,
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

// open(where) gives a store at a fresh, empty folder for each test; opened twice with one
// location, it gives two independent handles on the same data (as two processes would have).
describeBackends("store contract", ({ open }) => {
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

  it("writes every field of a patient and reads it back, the language and the credential hash included", async () => {
    const row = { ...patientRow("lang@example.org", "1234"), lang: "tr", credentialHash: "c".repeat(64), passwordHash: "scrypt$15$8$1$s$h" };
    await store.transaction((tx) => tx.records.insertPatient(row));
    expect(await store.records.patient("lang@example.org")).toEqual(row);
    await store.transaction((tx) => tx.records.updatePatient({ ...row, lang: "ar" }));
    expect((await store.records.patient("lang@example.org"))?.lang).toBe("ar");
    expect((await store.records.patients()).map((p) => p.lang)).toEqual(["ar"]);
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

  it("counts attempts under every claim or none, up to each limit; gives back only within the window", async () => {
    const t = AT.getTime();
    const W = 60_000;
    const ip = { key: "ip", max: 3, windowMs: W };
    const user = { key: "user", max: 1, windowMs: W };
    const { attempts } = store;
    expect(await attempts.reserve([ip, user], t)).toEqual([{ key: "ip", until: t + W }, { key: "user", until: t + W }]);
    // user is used up: nothing is counted, under ip neither, so ip has two attempts left.
    expect(await attempts.reserve([ip, user], t + 1)).toBeNull();
    expect(await attempts.reserve([ip], t + 2)).toEqual([{ key: "ip", until: t + W }]);
    const third = await attempts.reserve([ip], t + 3);
    expect(third).toEqual([{ key: "ip", until: t + W }]);
    expect(await attempts.reserve([ip], t + 4)).toBeNull();
    await attempts.release(third!);
    expect(await attempts.reserve([ip], t + 5)).toEqual([{ key: "ip", until: t + W }]);
    expect(await attempts.reserve([ip], t + 6)).toBeNull();
    // The window has ended: counting starts again, and an attempt of the old window is not given back.
    expect(await attempts.reserve([user], t + W)).toEqual([{ key: "user", until: t + 2 * W }]);
    await attempts.release([{ key: "user", until: t + W }]);
    expect(await attempts.reserve([user], t + W + 1)).toBeNull();
    expect(await attempts.purge(t + W)).toBe(1);
    expect(await attempts.reserve([ip], t + W + 2)).toEqual([{ key: "ip", until: t + 2 * W + 2 }]);
    await attempts.clear("user");
    expect(await attempts.reserve([user], t + W + 3)).toEqual([{ key: "user", until: t + 2 * W + 3 }]);
    // Inside a transaction too: a refused claim counts nothing, and the transaction goes on.
    const fresh = { key: "fresh", max: 1, windowMs: W };
    const refused = await store.transaction(async (tx) => {
      const r = await tx.attempts.reserve([fresh, user], t + W + 4);
      await tx.records.insertPatient(patientRow("a@example.org"));
      return r;
    });
    expect(refused).toBeNull();
    expect((await store.records.patient("a@example.org"))?.email).toBe("a@example.org");
    expect(await attempts.reserve([fresh], t + W + 5)).toEqual([{ key: "fresh", until: t + 2 * W + 5 }]);
  });

  it("gives a login challenge to one caller of its own address, only before it expires, and drops expired ones when a new one comes", async () => {
    const other = await open(where);
    others.push(other);
    const at = AT.toISOString();
    const later = "2026-05-04T10:05:00.000Z";
    await store.accounts.insertChallenge({ hash: "c1", email: "a@example.org", expiresAt: later, usedAt: null }, at);
    await store.accounts.insertChallenge({ hash: "c2", email: "a@example.org", expiresAt: later, usedAt: null }, at);
    expect(await store.accounts.useChallenge("c1", "b@example.org", at)).toBe(false);
    const used = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).accounts.useChallenge("c1", "a@example.org", at)));
    expect(used.filter(Boolean)).toHaveLength(1);
    expect(await store.accounts.useChallenge("c2", "a@example.org", later)).toBe(false);
    // A challenge inserted after c2 expired removes it: c2 can no longer be used, even with an earlier clock.
    await store.accounts.insertChallenge({ hash: "c3", email: "a@example.org", expiresAt: "2026-05-04T10:10:00.000Z", usedAt: null }, later);
    expect(await store.accounts.useChallenge("c2", "a@example.org", at)).toBe(false);
    expect(await store.accounts.useChallenge("c3", "a@example.org", later)).toBe(true);
  });

  it("gives each attempt, reset link and first download to one caller, however many handles race for it", async () => {
    const other = await open(where);
    others.push(other);
    const t = AT.getTime();
    const claim = [{ key: "login", max: 5, windowMs: 60_000 }];
    const taken = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? store : other).attempts.reserve(claim, t)));
    expect(taken.filter((h) => h !== null)).toHaveLength(5);
    await store.accounts.insertReset({ hash: "r1", email: "a@example.org", createdAt: AT.toISOString(), expiresAt: "2026-05-04T11:00:00.000Z", usedAt: null });
    const used = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).accounts.useReset("r1", AT.toISOString())));
    expect(used.filter(Boolean)).toHaveLength(1);
    expect(await store.accounts.reset("r1")).toMatchObject({ usedAt: AT.toISOString() });
    const delivery: DeliveryRow = {
      id: "d1",
      recipient: "a@example.org",
      level: 3,
      status: "ready",
      subject: null,
      sender: null,
      createdAt: AT.toISOString(),
      expiresAt: "2026-06-03T10:00:00.000Z",
      downloadedAt: null,
      endedAt: null,
      sourceKey: null,
      sentAt: AT.toISOString(),
      remindedAt: null,
    };
    await store.transaction((tx) => tx.records.insertDelivery(delivery, [], [], { hash: "t1", deliveryId: "d1", email: "a@example.org", createdAt: AT.toISOString() }));
    const first = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).records.markDownloaded("d1", new Date(AT.getTime() + i).toISOString())));
    expect(first.filter(Boolean)).toHaveLength(1);
    expect(await store.records.delivery("d1")).toMatchObject({ status: "downloaded", downloadedAt: new Date(AT.getTime() + first.indexOf(true)).toISOString() });
  });

  it("writes a session only for a patient who exists and is not revoked, and ends every session of a patient", async () => {
    const session = (idHash: string, email: string) => ({ idHash, email, csrf: "c", createdAt: AT.toISOString(), lastSeen: AT.toISOString() });
    await store.transaction((tx) => tx.records.insertPatient(patientRow("a@example.org")));
    expect(await store.records.insertSession(session("s1", "a@example.org"))).toBe(true);
    expect(await store.records.insertSession(session("s2", "a@example.org"))).toBe(true);
    expect(await store.records.insertSession(session("s3", "nobody@example.org"))).toBe(false);
    expect(await store.records.session("s3")).toBeUndefined();
    expect(await store.records.session("s1")).toMatchObject({ email: "a@example.org", csrf: "c" });
    await store.transaction((tx) => tx.records.updatePatient({ ...patientRow("a@example.org"), status: "revoked", revokedAt: AT.toISOString() }));
    expect(await store.records.insertSession(session("s4", "a@example.org"))).toBe(false);
    expect(await store.records.deleteSessionsOf("a@example.org")).toBe(2);
    expect(await store.records.session("s1")).toBeUndefined();
  });

  it("keeps a patient's passkeys byte for byte, moves a counter once, and removes one or all of them", async () => {
    const key = new Uint8Array(randomBytes(77));
    const pk = (credentialId: string, email: string, sealed: string | null) => ({
      credentialId,
      email,
      userHandle: "uh-1",
      publicKey: key,
      counter: 3,
      transports: '["internal"]',
      label: "Chrome auf Linux",
      createdAt: AT.toISOString(),
      lastUsed: null,
      sealed,
    });
    await store.transaction(async (tx) => {
      await tx.passkeys.insertPasskey(pk("c1", "a@example.org", "v1.s.i.c"));
      await tx.passkeys.insertPasskey(pk("c2", "a@example.org", null));
      await tx.passkeys.insertPasskey(pk("c3", "b@example.org", null));
    });
    expect(await store.passkeys.passkey("c1")).toEqual(pk("c1", "a@example.org", "v1.s.i.c"));
    expect((await store.passkeys.passkeysOf("a@example.org")).map((p) => [p.credentialId, p.sealed])).toEqual([["c1", "v1.s.i.c"], ["c2", null]]);
    const other = await open(where);
    others.push(other);
    const moved = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? store : other).passkeys.usePasskey("c1", 3, 4, AT.toISOString())));
    expect(moved.filter(Boolean)).toHaveLength(1);
    expect(await store.passkeys.passkey("c1")).toMatchObject({ counter: 4, lastUsed: AT.toISOString() });
    expect(await store.passkeys.deletePasskey("b@example.org", "c1")).toBe(false);
    expect(await store.passkeys.deletePasskey("a@example.org", "c1")).toBe(true);
    expect(await store.passkeys.passkey("c1")).toBeUndefined();
    expect(await store.passkeys.deletePasskeysOf("a@example.org")).toBe(1);
    expect((await store.passkeys.passkeysOf("a@example.org"))).toEqual([]);
    expect((await store.passkeys.passkey("c3"))?.email).toBe("b@example.org");
  });

  it("gives a passkey challenge to one taker across handles, never after it ended, and forgets ended ones", async () => {
    const other = await open(where);
    others.push(other);
    const later = (ms: number): string => new Date(AT.getTime() + ms).toISOString();
    const challenge = (c: string, expiresAt: string) => ({ challenge: c, kind: "login" as const, binding: "b", email: null, userHandle: null, expiresAt });
    await store.passkeys.insertChallenge(challenge("ch1", later(60_000)), AT.toISOString());
    const taken = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? store : other).passkeys.takeChallenge("ch1", AT.toISOString())));
    expect(taken.filter((t) => t !== undefined)).toEqual([challenge("ch1", later(60_000))]);
    await store.passkeys.insertChallenge({ ...challenge("ch2", later(60_000)), kind: "register", email: "a@example.org", userHandle: "uh-1" }, AT.toISOString());
    expect(await other.passkeys.takeChallenge("ch2", later(60_000))).toBeUndefined();
    expect(await other.passkeys.takeChallenge("ch2", AT.toISOString())).toBeUndefined();
    await store.passkeys.insertChallenge(challenge("ch3", later(1000)), AT.toISOString());
    await store.passkeys.insertChallenge(challenge("ch4", later(90_000)), later(2000));
    expect(await collect(store.tableRows("passkey_challenges"))).toEqual([expect.objectContaining({ challenge: "ch4" })]);
  });

  it("gives a wrap's ciphertext back byte for byte", async () => {
    const ciphertext = new Uint8Array(randomBytes(4096));
    ciphertext.set([0, 0, 39, 92, 0], 0);
    const delivery: DeliveryRow = {
      id: "d1",
      recipient: "a@example.org",
      level: 3,
      status: "pending-approval",
      subject: "Befund",
      sender: null,
      createdAt: AT.toISOString(),
      expiresAt: "2026-06-03T10:00:00.000Z",
      downloadedAt: null,
      endedAt: null,
      sourceKey: "msg-1/a",
      sentAt: null,
      remindedAt: null,
    };
    const wrap = { deliveryId: "d1", holder: "practice" as const, recipient: "age1practice", ciphertext, createdAt: AT.toISOString() };
    await store.transaction((tx) => tx.records.insertDelivery(delivery, [], [wrap], { hash: "t1", deliveryId: "d1", email: "a@example.org", createdAt: AT.toISOString() }));
    const got = await store.records.wrap("d1", "practice");
    expect(Buffer.from(got!.ciphertext).equals(Buffer.from(ciphertext))).toBe(true);
    expect(await store.records.deliveryBySource("msg-1/a")).toEqual(delivery);
    // Not yet sent: invisible to the lists, due for gc's unsent check.
    expect(await store.records.deliveries()).toEqual([]);
    expect(await store.records.unsentBefore("2026-05-04T10:00:00.001Z")).toEqual(["d1"]);
  });

  it("reads the files and the wraps of many deliveries at once, each delivery's own, files in order, inside a snapshot too", async () => {
    const ids = Array.from({ length: 120 }, (_, i) => `d${String(i).padStart(3, "0")}`);
    const fileRow = (d: string, position: number): FileRow => ({ id: `${d}-f${position}`, deliveryId: d, position, kind: position === 0 ? "message" : "attachment", name: `${d}-${position}.pdf`, size: 100 + position, blob: `blobs/${d}/${position}` });
    const wrapRow = (d: string, holder: "practice" | "patient"): WrapRow => ({ deliveryId: d, holder, recipient: `age1${holder}`, ciphertext: new Uint8Array(randomBytes(64)), createdAt: AT.toISOString() });
    // Delivery i has i % 3 files (inserted last first) and a practice wrap; every other one also a patient wrap.
    const rows = ids.map((id, i) => ({
      d: { id, recipient: "a@example.org", level: 3, status: "ready", subject: null, sender: null, createdAt: AT.toISOString(), expiresAt: "2026-06-03T10:00:00.000Z", downloadedAt: null, endedAt: null, sourceKey: null, sentAt: AT.toISOString(), remindedAt: null } satisfies DeliveryRow,
      files: Array.from({ length: i % 3 }, (_, p) => fileRow(id, p)).reverse(),
      wraps: [wrapRow(id, "practice"), ...(i % 2 === 0 ? [wrapRow(id, "patient")] : [])],
    }));
    await store.transaction(async (tx) => {
      for (const r of rows) await tx.records.insertDelivery(r.d, r.files, r.wraps, { hash: `t-${r.d.id}`, deliveryId: r.d.id, email: "a@example.org", createdAt: AT.toISOString() });
    });
    const asked = [...ids.slice(60), "d_none", ...ids.slice(0, 60)];
    const files = await store.records.filesOf(asked);
    expect([...files.keys()]).toEqual(expect.arrayContaining(asked));
    expect(files.size).toBe(asked.length);
    expect(files.get("d_none")).toEqual([]);
    for (const r of rows) expect(files.get(r.d.id)).toEqual([...r.files].sort((a, b) => a.position - b.position));
    const practice = await store.records.wraps(asked, "practice");
    const patient = await store.records.wraps(asked, "patient");
    expect([...practice.keys()].sort()).toEqual(ids);
    expect([...patient.keys()].sort()).toEqual(ids.filter((_, i) => i % 2 === 0));
    for (const r of rows) {
      for (const w of r.wraps) {
        const got = (w.holder === "practice" ? practice : patient).get(r.d.id);
        expect({ ...got, ciphertext: Buffer.from(got!.ciphertext).toString("hex") }).toEqual({ ...w, ciphertext: Buffer.from(w.ciphertext).toString("hex") });
      }
    }
    // The same inside a snapshot, and nothing asked, nothing found.
    const inSnapshot = await store.snapshot(async (tx) => [await tx.records.filesOf(ids.slice(0, 5)), await tx.records.wraps(ids.slice(0, 5), "patient"), await tx.records.filesOf([]), await tx.records.wraps([], "practice")] as const);
    expect([...inSnapshot[0].values()].map((f) => f.length)).toEqual([0, 1, 2, 0, 1]);
    expect([...inSnapshot[1].keys()].sort()).toEqual(["d000", "d002", "d004"]);
    expect(inSnapshot[2].size).toBe(0);
    expect(inSnapshot[3].size).toBe(0);
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

  it("creates a marker once for every handle on the store, beside the blobs and never among them", async () => {
    const other = await open(where);
    others.push(other);
    const name = "invite-approvals/i_abcdefghijk1";
    expect(await store.blobs.mark(name)).toBe(true);
    expect(await store.blobs.mark(name)).toBe(false);
    expect(await other.blobs.mark(name)).toBe(false);
    expect(await other.blobs.mark("invite-approvals/i_abcdefghijk2")).toBe(true);
    expect(await store.blobs.scan()).toEqual([]);
    for (const bad of ["blobs/00/x", "invite-approvals/../x", "invite-approvals/a/b", "../invite-approvals/x", "Invite/x", "invite-approvals/"]) {
      await expect(store.blobs.mark(bad), bad).rejects.toThrow("invalid marker name");
    }
  });

  it("runs one holder of a named lock at a time across handles, and frees it after a return or a throw", async () => {
    const other = await open(where);
    others.push(other);
    const inside = await store.exclusive("gc", async () => ({
      sameName: await other.exclusive("gc", () => Promise.resolve("ran")),
      otherName: await other.exclusive("reminders", () => Promise.resolve("ran")),
    }));
    expect(inside).toEqual({ sameName: null, otherName: "ran" });
    expect(await other.exclusive("gc", () => Promise.resolve("after"))).toBe("after");
    const boom = new Error("boom");
    await expect(other.exclusive("gc", () => Promise.reject(boom))).rejects.toBe(boom);
    expect(await store.exclusive("gc", () => Promise.resolve("after a throw"))).toBe("after a throw");
    await expect(store.exclusive("../gc", () => Promise.resolve(1))).rejects.toThrow("invalid lock name");
  });

  it("pins one practice: the first pin holds for every handle, the same practice may change its address, another one is not pinned", async () => {
    const other = await open(where);
    others.push(other);
    const weber = { practiceEmail: "praxis@weber.example", practiceRecipient: "age1weber", approvalKey: "ed25519:A", portalKey: "ed25519:B", pinnedAt: AT.toISOString() };
    expect(await store.practice()).toBeUndefined();
    expect(await store.pinPractice(weber)).toEqual(weber);
    expect(await other.practice()).toEqual(weber);
    const intruder = { ...weber, practiceEmail: "praxis@other.example", portalKey: "ed25519:C", pinnedAt: "2026-06-01T00:00:00.000Z" };
    expect(await other.pinPractice(intruder)).toEqual(weber);
    const moved = { ...weber, practiceEmail: "empfang@weber.example", pinnedAt: "2026-06-01T00:00:00.000Z" };
    expect(await other.pinPractice(moved)).toEqual({ ...weber, practiceEmail: "empfang@weber.example" });
    expect(await store.practice()).toEqual({ ...weber, practiceEmail: "empfang@weber.example" });
  });
});

// Facts of the embedded backend alone: its blobs are files under home.
describe("embedded store only: blob files", () => {
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

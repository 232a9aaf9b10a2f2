// src/core with a real store in a temp home and a recording notifier, on both backends
// (helpers/backends.ts); what needs no store runs once.
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  PraxmailError,
  addReplyPart,
  approvePatients,
  checkKeyReset,
  completeKeyReset,
  DEFAULTS,
  checkPracticeIdentity,
  Intake,
  collectGarbage,
  createDelivery,
  deliveriesForPatient,
  fileForDownload,
  finishReply,
  getDelivery,
  initPractice,
  markSent,
  listDeliveries,
  listReplies,
  patientWrap,
  loadConfig,
  loadPracticeIdentity,
  readPracticeIdentity,
  receiveReply,
  registerPatient,
  requestKeyReset,
  resetSecuPass,
  resolveLink,
  revokeDelivery,
  revokePatient,
  setSecuPassRecipient,
  startReply,
  type Context,
  type DeliveryInput,
  type Notification,
  type SealedMessage,
} from "../src/core/index.js";
import {
  decryptBytes,
  decryptStream,
  encryptBytes,
  generateIdentity,
  newKdfParams,
  practiceSigningKey,
  recipientOf,
  safetyCode,
  unwrapIdentity,
  writeIdentityFile,
} from "../src/crypto/index.js";
import { renderNotification } from "../src/mail/index.js";
import { fanOut } from "../src/core/fanout.js";
import { openStore, type Store } from "../src/store/index.js";
import { describeBackends } from "./helpers/backends.js";
import { cleanup, practiceIdentityOf, tempDir } from "./helpers/cli.js";
import { readAll, streamOf } from "./helpers/streams.js";
import { collect } from "./helpers/store.js";

let home: string;
let ctx: Context;
let sent: Notification[];
let clock: Date;
let practiceIdentity: string;

const file = (name: string, data: Uint8Array) => ({ name, open: () => streamOf(data) });

/** Creates a delivery and marks it sent, as the CLI does after mailing the link. */
async function send(input: DeliveryInput) {
  const d = await createDelivery(ctx, input);
  await markSent(ctx, [d.id]);
  return d;
}

// The core never sees a Secu-Pass-Key: it stores U's recipient and wraps to it. So a random
// identity stands for U here (no scrypt at all); the derivation itself, at the production
// cost, is tested in crypto.secupass.test.ts and in the browser tests.
async function patient(email: string): Promise<string> {
  const u = generateIdentity(ctx.config.crypto.recipientType);
  const key = await keyOf(u);
  await registerPatient(ctx, email, key);
  await setSecuPassRecipient(ctx, email, key.recipient);
  return u;
}

/** A new key as the browser posts it, for U (the credential is random: core only hashes it). */
async function keyOf(u: string): Promise<{ kdf: ReturnType<typeof newKdfParams>; recipient: string; credential: string }> {
  return { kdf: newKdfParams(ctx.config.crypto.recipientType), recipient: await recipientOf(u), credential: randomBytes(32).toString("base64url") };
}

/** A patient to approve, with the safety code the admin compared: the current one. */
const target = async (email: string) => ({ email, safetyCode: (await ctx.store.records.patient(email))?.safetyCode ?? "" });

/**
 * Runs work on a context whose store counts the calls of each records method outside a
 * transaction: on the shared backend, each call is one round trip to PostgreSQL.
 *
 * @returns The calls by method, and what work returned.
 */
async function countingReads<T>(work: (counted: Context) => Promise<T>): Promise<{ calls: Record<string, number>; result: T }> {
  const calls: Record<string, number> = {};
  const records = new Proxy(ctx.store.records, {
    get(target, name, receiver) {
      const v: unknown = Reflect.get(target, name, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]): unknown => {
        calls[String(name)] = (calls[String(name)] ?? 0) + 1;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const store = Object.create(ctx.store, { records: { value: records } }) as Store;
  return { calls, result: await work({ ...ctx, store }) };
}

/** A blob's bytes, read through the store. */
async function blobBytes(key: string): Promise<Buffer> {
  return readAll(ctx.store.blobs.read(key));
}

/**
 * Makes a fresh home and the context on it.
 *
 * @param open - Opens the store for the home.
 */
async function setUp(open: (home: string) => Promise<Store>): Promise<void> {
  home = await tempDir();
  await initPractice(home, { practiceName: "Praxis Dr. Weber", practiceEmail: "praxis@praxis-weber.example", recipientType: "x25519", keyring: false });
  const config = loadConfig(home);
  practiceIdentity = await practiceIdentityOf(home);
  sent = [];
  clock = new Date("2026-11-29T09:00:00Z");
  ctx = {
    home,
    config,
    store: await open(home),
    notifier: { send: (n) => Promise.resolve(void sent.push(n)) },
    actor: "test",
    now: () => clock,
  };
}

async function tearDown(): Promise<void> {
  await ctx.store.close();
  await cleanup(home);
}

describeBackends("core", (backend) => {
  beforeEach(() => setUp(backend.open));
  afterEach(tearDown);

  describe("Secu-Pass parameters", () => {
    it("are version 3 for every new key, at registration and at a reset; older or cheaper ones are refused and nothing is written", async () => {
      const u = generateIdentity("x25519");
      const key = await keyOf(u);
      const unversioned: Record<string, unknown> = { ...key.kdf };
      delete unversioned.v;
      for (const kdf of [{ ...key.kdf, v: 2 }, unversioned, { ...key.kdf, logN: 16 }]) {
        const refused = await registerPatient(ctx, "neu@example.org", { ...key, kdf }).catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(PraxmailError);
        expect(refused).toMatchObject({ code: "invalid-input" });
      }
      expect(await ctx.store.records.patient("neu@example.org")).toBeUndefined();
      const wrongType = await registerPatient(ctx, "neu@example.org", { ...key, kdf: { ...key.kdf, type: "mlkem768x25519" } }).catch((e: unknown) => e);
      expect(wrongType).toMatchObject({ code: "invalid-input", message: "recipient is not an mlkem768x25519 age recipient" });
      const badCredential = await registerPatient(ctx, "neu@example.org", { ...key, credential: "zu kurz" }).catch((e: unknown) => e);
      expect(badCredential).toMatchObject({ code: "invalid-input", message: "the login credential must be 32 bytes, base64url" });
      expect(await ctx.store.records.patient("neu@example.org")).toBeUndefined();
      await registerPatient(ctx, "neu@example.org", key);
      await setSecuPassRecipient(ctx, "neu@example.org", key.recipient);
      expect(JSON.parse((await ctx.store.records.patient("neu@example.org"))!.kdf!)).toMatchObject({ v: 3, logN: 17, r: 8, p: 1 });
      const next = await keyOf(generateIdentity("x25519"));
      await expect(resetSecuPass(ctx, "neu@example.org", { ...next, kdf: { ...next.kdf, v: 2 } })).rejects.toMatchObject({ code: "invalid-input" });
      expect((await ctx.store.records.patient("neu@example.org"))?.recipient).toBe(key.recipient);
    });
  });

  describe("levels 1 and 2", () => {
    it.each([1, 2])("level %i puts D in the link fragment, needs no approval, and D opens the file", async (level) => {
      const data = randomBytes(70_000);
      const d = await send({ recipient: "p@example.org", level, files: [file("a.pdf", data)] });
      expect(d.status).toBe("ready");
      const m = /^http:\/\/127\.0\.0\.1:8080\/d\/[A-Za-z0-9_-]{43}#k=(AGE-SECRET-KEY-1[0-9A-Z]+)$/.exec(d.link);
      expect(m).not.toBeNull();
      expect(await ctx.store.records.wrap(d.id, "patient")).toBeUndefined();
      const [f] = await ctx.store.records.files(d.id);
      const plain = await readAll(await decryptStream(new Blob([await blobBytes(f!.blob!)]).stream(), [m![1]!]));
      expect(plain.equals(data)).toBe(true);
      // The practice can always open it too.
      const viaP = await unwrapIdentity((await ctx.store.records.wrap(d.id, "practice"))!.ciphertext, practiceIdentity);
      expect(viaP).toBe(m![1]);
    });
  });

  describe("level 3 for an approved patient", () => {
    it("is ready at once with a wrap for the patient; no second approval", async () => {
      const u = await patient("p@example.org");
      await approvePatients(ctx, [await target("p@example.org")], practiceIdentity);
      const data = Buffer.from("zweiter Befund");
      const d = await send({ recipient: "P@Example.org", level: 3, files: [file("b.pdf", data)] });
      expect(d).toMatchObject({ recipient: "p@example.org", status: "ready", firstTime: false });
      expect(d.link).not.toContain("#");
      const dk = await unwrapIdentity((await ctx.store.records.wrap(d.id, "patient"))!.ciphertext, u);
      const [f] = await ctx.store.records.files(d.id);
      expect((await readAll(await decryptStream(new Blob([await blobBytes(f!.blob!)]).stream(), [dk]))).equals(data)).toBe(true);
    });
  });

  describe("level 4", () => {
    it("stores neither subject, text nor file names in clear; the sealed message holds them", async () => {
      const u = await patient("p@example.org");
      await approvePatients(ctx, [await target("p@example.org")], practiceIdentity);
      const d = await send({
        recipient: "p@example.org",
        level: 4,
        subject: "Befundbesprechung Biopsie",
        message: "Der histologische Befund liegt vor.",
        files: [file("Histologie Wolf.pdf", Buffer.from("pdf")), file("Aufnahme.PNG", Buffer.from("png"))],
      });
      expect(d.files.map((f) => f.name)).toEqual(["Histologie Wolf.pdf", "Aufnahme.PNG"]);
      expect(d.subject).toBeNull();
      expect(d.message).toBeNull();
      const rows = await ctx.store.records.files(d.id);
      expect(rows.map((f) => [f.kind, f.name])).toEqual([
        ["attachment", "Anhang-1.pdf"],
        ["attachment", "Anhang-2.png"],
        ["message", "Nachricht"],
      ]);
      expect((await ctx.store.records.delivery(d.id))!.subject).toBeNull();
      const dk = await unwrapIdentity((await ctx.store.records.wrap(d.id, "patient"))!.ciphertext, u);
      const sealed = JSON.parse(new TextDecoder().decode(await decryptBytes(await blobBytes(rows[2]!.blob!), [dk]))) as SealedMessage;
      expect(sealed).toEqual({ v: 1, subject: "Befundbesprechung Biopsie", text: "Der histologische Befund liegt vor.", files: ["Histologie Wolf.pdf", "Aufnahme.PNG"] });
      // Nowhere at rest: not in home, nor in the database or the bucket of the shared backend.
      const pieces = await backend.atRest(home);
      for (const f of rows) expect(pieces.some((x) => x.name.endsWith(f.blob!)), `${f.blob} at rest`).toBe(true);
      for (const { name, bytes } of pieces) {
        for (const secret of ["Biopsie", "histologische", "Histologie Wolf"]) expect(bytes.includes(secret), `${secret} in ${name}`).toBe(false);
      }
    });
  });

  describe("approve", () => {
    it("is all or nothing across the given patients", async () => {
      await patient("a@example.org");
      await expect(approvePatients(ctx, [await target("a@example.org"), await target("nobody@example.org")], practiceIdentity)).rejects.toMatchObject({ code: "no-such-patient" });
      expect((await ctx.store.records.patient("a@example.org"))!.status).toBe("pending-approval");
      expect(sent.filter((n) => n.kind === "released")).toEqual([]);
    });

    it("refuses an identity that is not the practice's", async () => {
      await patient("a@example.org");
      const err = await approvePatients(ctx, [await target("a@example.org")], generateIdentity("x25519")).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PraxmailError);
      expect(err).toMatchObject({ code: "identity" });
    });

    it("rewraps only deliveries that have not expired, and touches no payload", async () => {
      const old = await send({ recipient: "a@example.org", level: 3, files: [file("alt.pdf", Buffer.from("alt"))] });
      clock = new Date(clock.getTime() + 31 * 86_400_000);
      const fresh = await send({ recipient: "a@example.org", level: 3, files: [file("neu.pdf", Buffer.from("neu"))] });
      const blob = (await ctx.store.records.files(fresh.id))[0]!.blob!;
      const before = await blobBytes(blob);
      await patient("a@example.org");
      const [a] = await approvePatients(ctx, [await target("a@example.org")], practiceIdentity);
      expect(a).toEqual({ email: "a@example.org", deliveries: 1 });
      expect(await ctx.store.records.wrap(old.id, "patient")).toBeUndefined();
      expect(await ctx.store.records.wrap(fresh.id, "patient")).toBeDefined();
      expect((await blobBytes(blob)).equals(before)).toBe(true);
      // The one released delivery opens from the mail's link, with the address filled in.
      expect(sent.at(-1)).toEqual({ kind: "released", to: "a@example.org", loginUrl: `http://127.0.0.1:8080/login?email=a%40example.org&next=%2Fdeliveries%2F${fresh.id}`, deliveries: 1 });
    });
  });

  describe("reads of many deliveries", () => {
    it("approve reads every practice wrap in one call, and the patient's list every delivery's files in one, however many deliveries", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 25; i++) {
        clock = new Date(clock.getTime() + 1000);
        ids.push((await send({ recipient: "a@example.org", level: 3, files: [file(`befund-${String(i)}.pdf`, Buffer.from(`befund ${String(i)}`))] })).id);
      }
      await patient("a@example.org");
      const approve = await countingReads(async (c) => approvePatients(c, [await target("a@example.org")], practiceIdentity));
      expect(approve.result).toEqual([{ email: "a@example.org", deliveries: 25 }]);
      expect(approve.calls).toMatchObject({ wraps: 1 });
      expect(approve.calls.wrap).toBeUndefined();
      for (const id of ids) expect((await ctx.store.records.wrap(id, "patient"))?.recipient).toBe((await ctx.store.records.patient("a@example.org"))!.recipient);

      const list = await countingReads((c) => deliveriesForPatient(c, "a@example.org"));
      expect(list.result.map((d) => d.id)).toEqual([...ids].reverse());
      expect(list.result.map((d) => d.files.map((f) => f.name))).toEqual(ids.map((_, i) => [`befund-${String(i)}.pdf`]).reverse());
      expect(list.calls).toEqual({ patient: 1, deliveries: 1, filesOf: 1 });

      const all = await countingReads((c) => listDeliveries(c));
      expect(all.result.map((d) => d.id)).toEqual(ids);
      expect(all.calls).toEqual({ deliveries: 1, filesOf: 1 });
    });
  });

  describe("checkPracticeIdentity", () => {
    it("makes approve refuse P when config.json pins an approval key P does not derive, and write nothing", async () => {
      await patient("a@example.org");
      ctx = { ...ctx, config: { ...ctx.config, approvalKey: practiceSigningKey(generateIdentity("x25519")).publicKey } };
      const err = await approvePatients(ctx, [await target("a@example.org")], practiceIdentity).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "identity", message: "the practice identity does not derive the approval key pinned in config.json" });
      expect((await ctx.store.records.patient("a@example.org"))!.status).toBe("pending-approval");
      expect(sent.filter((n) => n.kind === "released")).toEqual([]);
    });
  });

  describe("approve is bound to the safety code that was compared", () => {
    it("refuses when the patient posted a new key after the code was shown, and writes nothing", async () => {
      const d = await send({ recipient: "a@example.org", level: 3, files: [file("a.pdf", Buffer.from("a"))] });
      await patient("a@example.org");
      const shown = await target("a@example.org");
      const now = await resetSecuPass(ctx, "a@example.org", await keyOf(generateIdentity("x25519")));
      const err = await approvePatients(ctx, [shown], practiceIdentity).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PraxmailError);
      expect(err).toMatchObject({ code: "wrong-state", message: `the safety code of a@example.org is now ${now.safetyCode}, not the ${shown.safetyCode} that was compared; nothing was approved` });
      expect(await ctx.store.records.wrap(d.id, "patient")).toBeUndefined();
      expect((await ctx.store.records.delivery(d.id))!.status).toBe("pending-approval");
      expect(await ctx.store.records.patient("a@example.org")).toMatchObject({ status: "pending-approval", approval: null });
      expect((await collect(ctx.store.auditRows())).filter((r) => r.action === "patient.approve")).toEqual([]);
      expect(sent.filter((n) => n.kind === "released")).toEqual([]);
    });

    it("refuses a key posted while it rewraps, inside the commit", async () => {
      const d = await send({ recipient: "a@example.org", level: 3, files: [file("a.pdf", Buffer.from("a"))] });
      await patient("a@example.org");
      const nextKey = await keyOf(generateIdentity("x25519"));
      const next = nextKey.recipient;
      const err = await approvePatients(ctx, [await target("a@example.org")], practiceIdentity, async () => {
        await resetSecuPass(ctx, "a@example.org", nextKey);
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "wrong-state", message: "the Secu-Pass-Key of a@example.org changed while approving; nothing was approved" });
      expect(await ctx.store.records.wrap(d.id, "patient")).toBeUndefined();
      expect(await ctx.store.records.patient("a@example.org")).toMatchObject({ status: "pending-approval", recipient: next, approval: null });
    });
  });

  describe("signed approvals in the intake", () => {
    it("an approved row whose key was replaced gets no wrap; the practice is mailed once an hour, and a future time does not silence it", async () => {
      await patient("a@example.org");
      await approvePatients(ctx, [await target("a@example.org")], practiceIdentity);
      const attacker = await recipientOf(generateIdentity("x25519"));
      const row = (await ctx.store.records.patient("a@example.org"))!;
      await ctx.store.transaction(async (tx) => { await tx.records.updatePatient({ ...row, recipient: attacker, safetyCode: safetyCode(attacker) }); });
      const alarms = (): Notification[] => sent.filter((n) => n.kind === "approval-invalid");
      const level3 = () => send({ recipient: "a@example.org", level: 3, files: [file("a.pdf", Buffer.from("a"))] });
      const first = await level3();
      await level3();
      expect(first.status).toBe("pending-approval");
      expect(await ctx.store.records.wrap(first.id, "patient")).toBeUndefined();
      expect(alarms()).toEqual([{ kind: "approval-invalid", to: "praxis@praxis-weber.example", patient: "a@example.org", reason: "the approval signature does not verify", deliveries: 1 }]);
      clock = new Date(clock.getTime() + 61 * 60_000);
      await level3();
      expect(alarms()).toHaveLength(2);
      await ctx.store.transaction(async (tx) => { await tx.records.updatePatient({ ...(await tx.records.patient("a@example.org"))!, alarmedAt: "2999-01-01T00:00:00.000Z" }); });
      await level3();
      expect(alarms()).toHaveLength(3);
    });
  });

  describe("revoke, expiry and gc", () => {
    it("revoking a delivery deletes its blobs, wraps and link; a second revoke is refused", async () => {
      const d = await send({ recipient: "p@example.org", level: 3, files: [file("a.pdf", Buffer.from("a"))] });
      const blob = (await ctx.store.records.files(d.id))[0]!.blob!;
      const after = await revokeDelivery(ctx, d.id);
      expect(after.status).toBe("revoked");
      expect(after.files).toEqual([{ name: "a.pdf", size: 1, blob: null }]);
      await expect(ctx.store.blobs.size(blob)).rejects.toThrow();
      expect(await ctx.store.blobs.scan()).toEqual([]);
      expect(await ctx.store.records.wrap(d.id, "practice")).toBeUndefined();
      await expect(revokeDelivery(ctx, d.id)).rejects.toMatchObject({ code: "wrong-state", message: `delivery ${d.id} is already revoked` });
    });

    it("revoking a patient revokes every active delivery to them", async () => {
      await patient("p@example.org");
      const d1 = await send({ recipient: "p@example.org", level: 3, files: [file("1.pdf", Buffer.from("1"))] });
      const d2 = await send({ recipient: "p@example.org", level: 1, files: [file("2.pdf", Buffer.from("2"))] });
      const other = await send({ recipient: "q@example.org", level: 3, files: [file("3.pdf", Buffer.from("3"))] });
      expect((await revokePatient(ctx, "p@example.org")).sort()).toEqual([d1.id, d2.id].sort());
      const status = Object.fromEntries((await listDeliveries(ctx)).map((d) => [d.id, d.status]));
      expect(status).toEqual({ [d1.id]: "revoked", [d2.id]: "revoked", [other.id]: "pending-approval" });
      expect((await ctx.store.records.patient("p@example.org"))!.status).toBe("revoked");
    });

    it("gc expires what is due and removes orphaned blobs and temp files past the grace time (an unfinished upload, on S3)", async () => {
      // Blobs get the machine's time, so the clock is set around it: d expires 90 minutes
      // from now, keep in expiryDays; the orphan and the unfinished write are made now.
      const start = Date.now();
      clock = new Date(start - ctx.config.deliveries.expiryDays * 86_400_000 + 90 * 60_000);
      const d = await send({ recipient: "p@example.org", level: 3, files: [file("a.pdf", Buffer.from("a"))] });
      clock = new Date(start);
      const keep = await send({ recipient: "p@example.org", level: 3, files: [file("b.pdf", Buffer.from("b"))] });
      const orphan = await ctx.store.blobs.write(streamOf(Buffer.from("x")));
      await backend.abandonWrite(home);
      expect((await ctx.store.blobs.scan()).filter((b) => b.temp)).toHaveLength(1);
      clock = new Date(start + 30 * 60_000);
      const young = await collectGarbage(ctx, 60 * 60_000);
      expect(young).toEqual({ expired: [], reminded: 0, sessions: 0, unsent: 0, unfinishedReplies: 0, orphanBlobs: 0, tempFiles: 0 });
      expect((await ctx.store.blobs.scan()).map((b) => b.key)).toContain(orphan);
      expect((await ctx.store.blobs.scan()).filter((b) => b.temp)).toHaveLength(1);
      clock = new Date(start + 2 * 60 * 60_000);
      const r = await collectGarbage(ctx, 60 * 60_000);
      expect(r).toEqual({ expired: [d.id], reminded: 0, sessions: 0, unsent: 0, unfinishedReplies: 0, orphanBlobs: 1, tempFiles: 1 });
      const status = Object.fromEntries((await listDeliveries(ctx)).map((x) => [x.id, x.status]));
      expect(status).toEqual({ [d.id]: "expired", [keep.id]: "pending-approval" });
      expect((await ctx.store.blobs.scan()).map((b) => b.key)).toEqual([(await ctx.store.records.files(keep.id))[0]!.blob]);
    });
  });

  describe("bad input", () => {
    it.each([
      [{ level: 0 }, "usage"],
      [{ level: 5 }, "usage"],
      [{ recipient: "kein-name" }, "invalid-input"],
      [{ subject: "a\r\nBcc: x@y.org" }, "invalid-input"],
      [{ files: [] }, "invalid-input"],
    ])("%j is refused with %s and leaves no blob", async (patch, code) => {
      const input = { recipient: "p@example.org", level: 3, files: [file("a.pdf", Buffer.from("a"))], ...patch };
      await expect(createDelivery(ctx, input)).rejects.toMatchObject({ code });
      expect(await ctx.store.blobs.scan()).toEqual([]);
    });

    it("a file stream that fails midway leaves no blob and no row", async () => {
      let n = 0;
      const failing = new ReadableStream<Uint8Array>({
        pull(c) {
          if (n++ < 3) c.enqueue(randomBytes(65_536));
          else c.error(new Error("disk read error"));
        },
      });
      await expect(
        send({ recipient: "p@example.org", level: 3, files: [file("ok.pdf", Buffer.from("ok")), { name: "bad.pdf", open: () => failing }] }),
      ).rejects.toThrow("disk read error");
      expect(await listDeliveries(ctx)).toEqual([]);
      // Neither a blob nor an unfinished write.
      expect(await ctx.store.blobs.scan()).toEqual([]);
    });
  });

  describe("an intake for several recipients", () => {
    it("reads each file once and gives every recipient their own D, blob and link", async () => {
      const data = randomBytes(300_000);
      let reads = 0;
      const source = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < data.length; i += 65_536) c.enqueue(data.subarray(i, i + 65_536));
          c.close();
        },
      }).pipeThrough(
        new TransformStream({
          transform(chunk, c) {
            reads++;
            c.enqueue(chunk);
          },
        }),
      );
      const intake = await Intake.open(ctx, ["a@example.org", "B@example.org", "c@example.org"]);
      expect(await intake.addFile("../../etc/Befund.pdf", source)).toEqual({ name: "Befund.pdf", size: data.length });
      expect(reads).toBe(5);
      const created = await intake.commit({ level: 1 });
      expect(created.map((d) => d.recipient)).toEqual(["a@example.org", "b@example.org", "c@example.org"]);
      expect(new Set(created.map((d) => d.link)).size).toBe(3);
      const keys = created.map((d) => /#k=(.+)$/.exec(d.link)![1]!);
      for (const [i, d] of created.entries()) {
        const blob = await blobBytes((await ctx.store.records.files(d.id))[0]!.blob!);
        expect((await readAll(await decryptStream(new Blob([blob]).stream(), [keys[i]!]))).equals(data)).toBe(true);
        await expect(decryptStream(new Blob([blob]).stream(), [keys[(i + 1) % 3]!])).rejects.toThrow(/no identity matched/);
      }
    });

    it("stays invisible until marked sent, and gc discards an interrupted send", async () => {
      const intake = await Intake.open(ctx, ["a@example.org"]);
      await intake.addFile("a.pdf", streamOf(Buffer.from("a")));
      const [d] = await intake.commit({ level: 3, sourceKeys: ["msg-1/a"] });
      expect(await listDeliveries(ctx)).toEqual([]);
      await expect(getDelivery(ctx, d!.id)).rejects.toThrow(/no such delivery/);
      expect((await ctx.store.records.deliveryBySource("msg-1/a"))?.id).toBe(d!.id);
      clock = new Date(clock.getTime() + 2 * 60 * 60_000);
      const r = await collectGarbage(ctx, 60 * 60_000);
      expect(r.unsent).toBe(1);
      expect(await ctx.store.records.delivery(d!.id)).toBeUndefined();
      expect(await ctx.store.blobs.scan()).toEqual([]);
    });

    it("abort removes the blobs of every recipient", async () => {
      const intake = await Intake.open(ctx, ["a@example.org", "b@example.org"]);
      await intake.addFile("a.pdf", streamOf(randomBytes(1000)));
      expect((await ctx.store.blobs.scan()).filter((b) => !b.temp)).toHaveLength(2);
      await intake.abort();
      expect(await ctx.store.blobs.scan()).toEqual([]);
    });
  });

  describe("patient access", () => {
    const token = (link: string): string => link.slice(link.lastIndexOf("/") + 1);

    it("a level-3 link leads from register to login to the delivery; the first download is recorded once, and the patient's wrap opens the file", async () => {
      const data = randomBytes(100_000);
      const d = await send({ recipient: "p@example.org", level: 3, files: [file("Befund.pdf", data)] });
      expect(await resolveLink(ctx, token(d.link), null)).toEqual({ kind: "register", email: "p@example.org" });
      const u = await patient("p@example.org");
      expect(await resolveLink(ctx, token(d.link), null)).toEqual({ kind: "login", email: "p@example.org" });
      expect(await resolveLink(ctx, token(d.link), "q@example.org")).toEqual({ kind: "other-account" });
      expect(await resolveLink(ctx, token(d.link), "p@example.org")).toMatchObject({ kind: "wait", email: "p@example.org" });
      await approvePatients(ctx, [await target("p@example.org")], practiceIdentity);
      const access = await resolveLink(ctx, token(d.link), "p@example.org");
      expect(access).toMatchObject({ kind: "deliver", delivery: { id: d.id, status: "ready", files: [{ name: "Befund.pdf", size: data.length }] } });
      const view = (await deliveriesForPatient(ctx, "p@example.org"))[0]!;
      ctx = { ...ctx, config: { ...ctx.config, notifyOnDownload: true } };
      const keys = await Promise.all([1, 2, 3].map(() => fileForDownload(ctx, view, view.files[0]!.id)));
      expect(new Set(keys).size).toBe(1);
      expect((await collect(ctx.store.auditRows())).filter((r) => r.action === "delivery.download").map((r) => r.subject)).toEqual([d.id]);
      expect(sent.filter((n) => n.kind === "downloaded")).toHaveLength(1);
      expect(await ctx.store.records.delivery(d.id)).toMatchObject({ status: "downloaded", downloadedAt: clock.toISOString() });
      const dk = await unwrapIdentity(await patientWrap(ctx, view), u);
      expect((await readAll(await decryptStream(ctx.store.blobs.read(keys[0]!), [dk]))).equals(data)).toBe(true);
      await revokeDelivery(ctx, d.id);
      expect(await resolveLink(ctx, token(d.link), "p@example.org")).toEqual({ kind: "gone", status: "revoked" });
      expect(await deliveriesForPatient(ctx, "p@example.org")).toEqual([]);
    });

    it("a Secu-Pass reset link works once, replaces the key and ends every session; a second use is refused", async () => {
      await patient("p@example.org");
      const session = (idHash: string) => ({ idHash, email: "p@example.org", csrf: "c", createdAt: clock.toISOString(), lastSeen: clock.toISOString() });
      expect(await ctx.store.records.insertSession(session("s1"))).toBe(true);
      expect(await ctx.store.records.insertSession(session("s2"))).toBe(true);
      await requestKeyReset(ctx, "P@Example.org");
      const mail = sent.find((n): n is Extract<Notification, { kind: "key-reset" }> => n.kind === "key-reset");
      expect(mail).toMatchObject({ to: "p@example.org" });
      const t = token(mail!.link);
      expect(await checkKeyReset(ctx, t)).toBe("p@example.org");
      const before = (await ctx.store.records.patient("p@example.org"))!;
      const [k1, k2] = [await keyOf(generateIdentity("x25519")), await keyOf(generateIdentity("x25519"))];
      const results = await Promise.allSettled([completeKeyReset(ctx, t, k1), completeKeyReset(ctx, t, k2)]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expect(results.find((r) => r.status === "rejected")).toMatchObject({ reason: { code: "wrong-state", message: "the reset link is unknown, used or expired" } });
      const after = (await ctx.store.records.patient("p@example.org"))!;
      expect([k1.recipient, k2.recipient]).toContain(after.recipient);
      expect(after.credentialHash).not.toBe(before.credentialHash);
      expect(after.status).toBe("pending-approval");
      expect(await ctx.store.records.session("s1")).toBeUndefined();
      expect(await ctx.store.records.session("s2")).toBeUndefined();
      expect((await collect(ctx.store.auditRows())).filter((r) => r.action === "patient.secupass-reset")).toHaveLength(1);
      expect(sent.filter((n) => n.kind === "key-changed")).toEqual([{ kind: "key-changed", to: "p@example.org", safetyCode: after.safetyCode }]);
      await expect(checkKeyReset(ctx, t)).rejects.toMatchObject({ code: "wrong-state" });
    });
  });

  describe("replies", () => {
    const email = "p@example.org";
    /** An upload as the portal gets it: a part encrypted to the practice in the browser. */
    const sealed = async (data: Uint8Array | string): Promise<Buffer> => Buffer.from(await encryptBytes(data, [ctx.config.practiceRecipient]));
    const approved = async (): Promise<void> => {
      await patient(email);
      await approvePatients(ctx, [await target(email)], practiceIdentity);
    };
    const message = (text: string, files: string[]) => sealed(JSON.stringify({ v: 1, text, files }));

    it("an approved patient's reply is stored part by part, and the practice receives it byte for byte", async () => {
      await approved();
      const id = await startReply(ctx, email, null);
      const attachment = randomBytes(300_000);
      await addReplyPart(ctx, email, id, "message", Readable.from([await message("Guten Tag, anbei der Befund.", ["Befund.pdf"])]));
      await addReplyPart(ctx, email, id, "file", Readable.from([await sealed(attachment)]));
      expect(await listReplies(ctx)).toEqual([]);
      await finishReply(ctx, email, id);
      expect(sent.at(-1)).toEqual({ kind: "reply", to: "praxis@praxis-weber.example", replyId: id });
      expect(await listReplies(ctx)).toMatchObject([{ id, from: email, status: "new", files: 1 }]);
      const out = join(home, "eingang");
      const written = await receiveReply(ctx, id, practiceIdentity, out);
      expect(written.map((p) => p.slice(p.lastIndexOf("/") + 1))).toEqual(["message.txt", "Befund.pdf"]);
      expect(await readFile(join(out, "message.txt"), "utf8")).toBe("Guten Tag, anbei der Befund.");
      expect((await readFile(join(out, "Befund.pdf"))).equals(attachment)).toBe(true);
      expect(await listReplies(ctx)).toMatchObject([{ id, status: "received" }]);
    });

    it("a part that is not an age file, or that arrives while the patient is revoked, leaves no blob", async () => {
      await approved();
      const id = await startReply(ctx, email, null);
      const notAge = Readable.from([Buffer.from("kein age\n".repeat(10_000))]);
      await expect(addReplyPart(ctx, email, id, "message", notAge)).rejects.toMatchObject({ code: "invalid-input", message: "upload is not an age file" });
      expect(await ctx.store.blobs.scan()).toEqual([]);
      // The practice revokes the patient while the part streams in: it is stored, then refused
      // where it would be recorded, and its blob goes again.
      const part = await message("Hallo", []);
      const revoking = Readable.from(
        (async function* () {
          yield part.subarray(0, 100);
          await revokePatient(ctx, email);
          yield part.subarray(100);
        })(),
      );
      await expect(addReplyPart(ctx, email, id, "message", revoking)).rejects.toMatchObject({ name: "ReplyRefusedError", status: "revoked" });
      expect(await ctx.store.accounts.reply(id)).toBeUndefined();
      expect(await ctx.store.blobs.scan()).toEqual([]);
    });

    it("gc drops a reply whose upload never finished, and its parts' blobs, after an hour", async () => {
      await approved();
      const id = await startReply(ctx, email, null);
      await addReplyPart(ctx, email, id, "message", Readable.from([await message("Hallo", ["a.pdf"])]));
      expect(await ctx.store.blobs.scan()).toHaveLength(1);
      clock = new Date(clock.getTime() + 59 * 60_000);
      expect((await collectGarbage(ctx, 0)).unfinishedReplies).toBe(0);
      expect(await ctx.store.blobs.scan()).toHaveLength(1);
      clock = new Date(clock.getTime() + 2 * 60_000);
      expect((await collectGarbage(ctx, 0)).unfinishedReplies).toBe(1);
      expect(await ctx.store.accounts.reply(id)).toBeUndefined();
      expect(await ctx.store.blobs.scan()).toEqual([]);
    });
  });

  describe("expiry reminders", () => {
    it("remind once of a delivery never collected, a few days before it expires; off by default", async () => {
      const d = await send({ recipient: "p@example.org", level: 3, files: [file("a.pdf", Buffer.from("a"))] });
      clock = new Date(clock.getTime() + 28 * 86_400_000);
      expect((await collectGarbage(ctx, 0)).reminded).toBe(0);
      ctx = { ...ctx, config: { ...ctx.config, deliveries: { expiryDays: 30, remindBeforeDays: 3 } } };
      // Not yet collected, but pending approval: nothing the patient could open.
      expect((await collectGarbage(ctx, 0)).reminded).toBe(0);
      await patient("p@example.org");
      await approvePatients(ctx, [await target("p@example.org")], practiceIdentity);
      expect((await collectGarbage(ctx, 0)).reminded).toBe(1);
      expect(sent.at(-1)).toEqual({ kind: "reminder", to: "p@example.org", loginUrl: `http://127.0.0.1:8080/login?email=p%40example.org&next=%2Fdeliveries%2F${d.id}`, expiresAt: new Date((await ctx.store.records.delivery(d.id))!.expiresAt) });
      expect((await collectGarbage(ctx, 0)).reminded).toBe(0);
    });
  });
});

// What needs a home but not the store runs once.
describe("core apart from the store", () => {
  beforeEach(() => setUp((h) => Promise.resolve(openStore(h))));
  afterEach(tearDown);

  describe("level 4", () => {
    it("its notification names no subject, text or file", () => {
      const r = renderNotification(
        {
          kind: "new-delivery",
          to: "p@example.org",
          level: 4,
          link: "https://portal.example/d/x",
          firstTime: false,
          files: [{ name: "Histologie.pdf", size: 3 }],
          expiresAt: new Date("2026-12-29T00:00:00Z"),
          subject: null,
          message: null,
        },
        "Praxis Dr. Weber",
      );
      expect(r.subject).toBe("Neue sichere Nachricht von Praxis Dr. Weber");
      expect(r.text + r.html).not.toContain("Histologie");
    });
  });

  describe("checkPracticeIdentity", () => {
    it("knows P, another identity, and a pinned approval key that P does not derive", async () => {
      const pinned = ctx.config.approvalKey;
      expect(pinned).toBe(practiceSigningKey(practiceIdentity).publicKey);
      expect(await checkPracticeIdentity(ctx.config, practiceIdentity)).toEqual({ kind: "practice", key: practiceSigningKey(practiceIdentity) });
      expect(await checkPracticeIdentity({ ...ctx.config, approvalKey: null }, practiceIdentity)).toMatchObject({ kind: "practice" });
      expect(await checkPracticeIdentity(ctx.config, generateIdentity("x25519"))).toEqual({ kind: "other-identity" });
      const otherKey = practiceSigningKey(generateIdentity("x25519")).publicKey;
      expect(await checkPracticeIdentity({ ...ctx.config, approvalKey: otherKey }, practiceIdentity)).toMatchObject({ kind: "other-approval-key" });
    });

    it("reads P from where init stored it or from a named file, and says why it cannot", async () => {
      const none = () => Promise.resolve(undefined);
      expect(await readPracticeIdentity(home, ctx.config, undefined, none)).toEqual({ kind: "loaded", identity: practiceIdentity });
      const locked = join(home, "locked.age");
      await writeIdentityFile(locked, practiceIdentity, "ein langes Passwort", clock);
      expect(await readPracticeIdentity(home, ctx.config, locked, none)).toEqual({ kind: "passphrase-required" });
      expect(await readPracticeIdentity(home, ctx.config, locked, () => Promise.resolve("ein langes Passwort"))).toEqual({ kind: "loaded", identity: practiceIdentity });
      const missing = join(home, "missing.txt");
      expect(await readPracticeIdentity(home, ctx.config, missing, none)).toMatchObject({ kind: "unreadable", path: missing, error: { code: "ENOENT" } });
      await expect(loadPracticeIdentity(home, ctx.config, missing, none)).rejects.toMatchObject({ code: "identity", message: `cannot load the practice identity: ENOENT reading ${missing}` });
      await expect(loadPracticeIdentity(home, ctx.config, locked, none)).rejects.toMatchObject({ code: "identity", message: "the identity file is passphrase-protected" });
    });
  });

  describe("loadConfig", () => {
    const patched = async (patch: Record<string, unknown>) => {
      const path = join(home, "config.json");
      const raw = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
      await writeFile(path, JSON.stringify({ ...raw, ...patch }));
      return () => loadConfig(home);
    };
    const otherKey = `ed25519:${"A".repeat(43)}=`;

    it.each([
      [{ crypto: { recipientType: "rsa" } }, "config.json: crypto.recipientType must be x25519 or mlkem768x25519"],
      [{ deliveries: { expiryDays: 0 } }, "config.json: deliveries.expiryDays must be a whole number of days from 1 to 3650"],
      [{ deliveries: { expiryDays: 7, remindBeforeDays: 7 } }, "config.json: deliveries.remindBeforeDays must be from 0 to expiryDays - 1"],
      [{ identity: { kind: "file" } }, "config.json: identity must name a keyring account or an identity file"],
      [{ practiceRecipient: "" }, "config.json: practiceRecipient must be a non-empty string"],
      [{ practiceRecipient: "age1nicht" }, "config.json: practiceRecipient is not an age recipient"],
      [{ approvalKey: "ed25519:kurz" }, "config.json: approvalKey must be an ed25519:<base64> public key, as praxmail init writes it"],
      [{ portalKey: 7 }, "config.json: portalKey must be an ed25519:<base64> public key, as praxmail init writes it"],
      [{ internalDomains: "praxis.example" }, "config.json: internalDomains must be a list of domain names"],
      [{ upstream: 25 }, "config.json: upstream must be an smtp:// URL or null"],
      [{ upstream: "http://mail.example" }, 'config.json:  unsupported URL scheme http: in "http://mail.example"'],
      [{ practiceName: "" }, "config.json: practiceName must be a non-empty string"],
      [{ relay: { maxSize: 10 } }, "config.json: relay.maxSize must be a number of bytes from 1024"],
      [{ policy: { minLevel: 9 } }, "config.json: policy.minLevel must be a level from 0 to 4"],
      [{ portal: { idleMinutes: 0 } }, "config.json: portal.idleMinutes must be from 1 to 1440"],
      // Several faults: the first in the order loadConfig checks them is named.
      [{ portal: { idleMinutes: 0 }, identity: null, crypto: { recipientType: "rsa" } }, "config.json: crypto.recipientType must be x25519 or mlkem768x25519"],
      [{ upstream: 25, approvalKey: 1, identity: null }, "config.json: identity must name a keyring account or an identity file"],
    ])("%j is refused: %s", async (patch, message) => {
      const load = await patched(patch);
      expect(load).toThrow(expect.objectContaining({ code: "invalid-config", message }) as Error);
    });

    it.each([
      ["{\"practiceName\": ", "config.json:  cannot be read: "],
      ["[]", "config.json:  must hold a JSON object"],
      ["null", "config.json:  must hold a JSON object"],
    ])("a file of %j is refused: %s…", async (text, message) => {
      await writeFile(join(home, "config.json"), text);
      expect(() => loadConfig(home)).toThrow(expect.objectContaining({ code: "invalid-config", message: expect.stringContaining(message) as string }) as Error);
    });

    it("fills what is left out with the defaults, and keeps what is set", async () => {
      const config = await patched({ crypto: undefined, deliveries: { expiryDays: 30, remindBeforeDays: 3 }, portalKey: otherKey, internalDomains: ["Praxis.Example"], upstream: "" });
      expect(config()).toMatchObject({
        crypto: { recipientType: DEFAULTS.recipientType },
        deliveries: { expiryDays: 30, remindBeforeDays: 3 },
        identity: { kind: "file", file: "practice-identity.txt", protected: false },
        approvalKey: ctx.config.approvalKey,
        portalKey: otherKey,
        internalDomains: ["praxis.example"],
        upstream: null,
      });
    });
  });
});

describe("fanOut", () => {
  it("reads the source only as fast as the slowest branch", async () => {
    let pulled = 0;
    const source = new ReadableStream<Uint8Array>(
      {
        pull(c) {
          if (pulled++ < 100) c.enqueue(new Uint8Array(1024));
          else c.close();
        },
      },
      { highWaterMark: 0 },
    );
    const [fast, slow] = fanOut(source, 2);
    const fastReader = fast!.getReader();
    const first = fastReader.read();
    await new Promise((r) => setTimeout(r, 50));
    // Only the fast branch asked: the source must not run ahead of the slow one.
    expect(pulled).toBeLessThanOrEqual(1);
    const drainFast = async (): Promise<number> => {
      let n = (await first).value?.length ?? 0;
      for (let r = await fastReader.read(); !r.done; r = await fastReader.read()) n += r.value.length;
      return n;
    };
    const [a, b] = await Promise.all([drainFast(), readAll(slow!)]);
    expect([a, b.length]).toEqual([100 * 1024, 100 * 1024]);
  });

  it("an error in the source reaches every branch", async () => {
    const source = new ReadableStream<Uint8Array>({
      pull(c) {
        c.error(new Error("boom"));
      },
    });
    const results = await Promise.allSettled(fanOut(source, 3).map((b) => readAll(b)));
    expect(results.map((r) => (r.status === "rejected" ? (r.reason as Error).message : "ok"))).toEqual(["boom", "boom", "boom"]);
  });

  it("cancelling one branch cancels the source and errors the others", async () => {
    const cancelled: unknown[] = [];
    const source = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(new Uint8Array(8));
      },
      cancel(reason) {
        cancelled.push(reason);
      },
    });
    const [a, b, c] = fanOut(source, 3);
    const reason = new Error("der Empfänger ist weg");
    await a!.cancel(reason);
    const results = await Promise.allSettled([readAll(b!), readAll(c!)]);
    expect(results.map((r) => (r.status === "rejected" ? (r.reason as Error).message : "ok"))).toEqual([reason.message, reason.message]);
    expect(cancelled).toEqual([reason]);
  });
});

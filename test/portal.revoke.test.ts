// A revoked patient is out (security review item 6): `revokePatient` ends every session of
// the patient and every flow begun before it (a Secu-Pass reset, reset links, invites for the
// address, reply uploads, setting a Secu-Pass-Key), and each of those flows refuses a revoked
// patient when it finishes. Against the real app and core over a real home and store.
import { join } from "node:path";
import { Readable } from "node:stream";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import {
  PraxmailError,
  addReplyPart,
  approvePatients,
  beginSecuPassReset,
  completePasswordReset,
  createDelivery,
  createInvite,
  deliveriesForPatient,
  deliveryForPatient,
  finishReply,
  finishSecuPassReset,
  getPatient,
  listInvites,
  markSent,
  requestPasswordReset,
  revokePatient,
  setSecuPassRecipient,
  startReply,
  type Context,
} from "../src/core/index.js";
import { encryptBytes, generateIdentity, recipientOf } from "../src/crypto/index.js";
import { buildPortal } from "../src/portal/index.js";
import { cleanup, initHome, outbox, practiceIdentityOf, tempDir } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";
import { Client, PASSWORD } from "./helpers/portal.js";
import { streamOf } from "./helpers/streams.js";

let dir: string;
let home: string;
let ctx: Context;
let app: FastifyInstance;
let clock: Date;
let n = 0;

/** A new approved-or-waiting patient with a Secu-Pass-Key, and a browser logged in as them. */
async function patient(opts: { secuPass?: boolean } = {}): Promise<{ email: string; c: Client }> {
  const email = `patient${String(++n)}@patient.example`;
  await registerThroughCore(home, email, opts.secuPass === false ? undefined : "ein Secu-Pass-Key", PASSWORD);
  const c = new Client(app);
  expect((await c.login(email, PASSWORD)).statusCode).toBe(303);
  return { email, c };
}

/** The error code a core call refuses with. */
async function refusal(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (e instanceof PraxmailError) return e.code;
    throw e;
  }
  return "accepted";
}

const newRecipient = (): Promise<string> => recipientOf(generateIdentity("x25519"));
const row = (email: string): Record<string, unknown> => ctx.store.records.db.prepare("SELECT status, pending_kdf, recipient FROM patients WHERE email = ?").get(email) as Record<string, unknown>;
const sessionsOf = (email: string): number => ctx.store.records.db.prepare("SELECT count(*) FROM sessions WHERE email = ?").pluck().get(email) as number;

beforeAll(async () => {
  dir = await tempDir();
  home = join(dir, "home");
  await initHome(home, ["--recipient-type", "x25519"]);
  const base = await openContext({ home }, "portal");
  clock = new Date();
  ctx = { ...base, now: () => clock };
  app = await buildPortal(ctx, pino({ level: "silent" }));
});
afterAll(async () => {
  await app.close();
  ctx.store.close();
  await cleanup(dir);
});
beforeEach(() => {
  clock = new Date();
});

describe("revoking a patient", () => {
  it("refuses a Secu-Pass reset begun before the revoke and posted after it: the patient stays revoked", async () => {
    const { email, c } = await patient();
    await c.get("/deliveries");
    const page = await c.get("/secupass/reset");
    expect(page.statusCode).toBe(200);
    expect(row(email).pending_kdf).not.toBeNull();
    const before = row(email).recipient;
    await revokePatient(ctx, email);
    expect(row(email)).toEqual({ status: "revoked", pending_kdf: null, recipient: before });
    // The browser posts the new recipient: its session is gone.
    const posted = await c.json("/secupass/reset", { recipient: await newRecipient() });
    expect(posted.statusCode).toBe(401);
    // Core refuses it too, whoever calls.
    expect(await refusal(async () => finishSecuPassReset(ctx, email, await newRecipient()))).toBe("wrong-state");
    expect(await refusal(() => beginSecuPassReset(ctx, email))).toBe("wrong-state");
    expect(row(email)).toEqual({ status: "revoked", pending_kdf: null, recipient: before });
    expect([...ctx.store.auditRows()].filter((a) => a.subject === email).map((a) => a.action)).not.toContain("patient.secupass-reset");
  });

  it("ends every session of the patient: a logged-in browser gets the login page, its JSON posts 401", async () => {
    const { email, c } = await patient();
    const other = await patient();
    const second = new Client(app);
    expect((await second.login(email, PASSWORD)).statusCode).toBe(303);
    expect((await c.get("/deliveries")).statusCode).toBe(200);
    expect(sessionsOf(email)).toBe(2);
    await revokePatient(ctx, email);
    expect(sessionsOf(email)).toBe(0);
    for (const browser of [c, second]) {
      const res = await browser.get("/deliveries");
      expect(res.statusCode).toBe(303);
      expect(res.headers.location).toBe("/login?next=%2Fdeliveries");
      expect((await browser.json("/reply", { deliveryId: "" })).statusCode).toBe(401);
    }
    // Logging in again is refused with the usual answer; another patient is untouched.
    expect((await new Client(app).login(email, PASSWORD)).statusCode).toBe(401);
    expect((await other.c.get("/deliveries")).statusCode).toBe(200);
  });

  it("uses up reset links sent before: the page and the form answer 410, core refuses, the password stays", async () => {
    const { email } = await patient();
    await requestPasswordReset(ctx, email);
    const token = /\/reset\/([\w-]{43})/.exec((await outbox(home)).at(-1)?.text ?? "")![1]!;
    const hash = (): unknown => ctx.store.records.patient(email)?.passwordHash;
    const password = hash();
    await revokePatient(ctx, email);
    const c = new Client(app);
    expect((await c.get(`/reset/${token}`)).statusCode).toBe(410);
    await c.get("/reset");
    expect((await c.post(`/reset/${token}`, { password: "ein neues Passwort", password2: "ein neues Passwort", _csrf: c.csrf })).statusCode).toBe(410);
    expect(await refusal(() => completePasswordReset(ctx, token, "ein neues Passwort"))).toBe("wrong-state");
    expect(hash()).toBe(password);
    // No new link is sent either.
    const mails = (await outbox(home)).length;
    await requestPasswordReset(ctx, email);
    expect((await outbox(home)).length).toBe(mails);
  });

  it("revokes open invites for the address: the invite page answers 410", async () => {
    const email = `eingeladen${String(++n)}@patient.example`;
    const invite = await createInvite(ctx, email, await practiceIdentityOf(home));
    // The patient registered through a delivery link meanwhile, and is then revoked.
    await registerThroughCore(home, email, undefined, PASSWORD);
    await revokePatient(ctx, email);
    expect(listInvites(ctx).find((i) => i.id === invite.id)?.status).toBe("revoked");
    const c = new Client(app);
    expect((await c.get(`/invite/${invite.id}`)).statusCode).toBe(410);
  });

  it("deletes a reply still being uploaded; its next part and its finish are refused", async () => {
    const { email } = await patient();
    // Only approved patients may reply.
    await approvePatients(ctx, [{ email, safetyCode: getPatient(ctx, email).safetyCode ?? "" }], await practiceIdentityOf(home));
    const reply = startReply(ctx, email, null);
    const age = await encryptBytes(new TextEncoder().encode(JSON.stringify({ v: 1, text: "Hallo", files: [] })), [ctx.config.practiceRecipient]);
    await addReplyPart(ctx, email, reply, "message", Readable.from([Buffer.from(age)]));
    const blob = ctx.store.accounts.replyParts(reply)[0]!.blob;
    await revokePatient(ctx, email);
    expect(ctx.store.accounts.reply(reply)).toBeUndefined();
    expect(ctx.store.accounts.replyParts(reply)).toEqual([]);
    expect((await ctx.store.blobs.scan()).map((f) => f.rel)).not.toContain(blob);
    expect(await refusal(() => addReplyPart(ctx, email, reply, "file", Readable.from([Buffer.from(age)])))).not.toBe("accepted");
    expect(await refusal(() => finishReply(ctx, email, reply))).not.toBe("accepted");
    expect(await refusal(() => startReply(ctx, email, null))).toBe("wrong-state");
  });

  it("refuses a Secu-Pass-Key set after the revoke, for a patient who had none", async () => {
    const { email } = await patient({ secuPass: false });
    expect(getPatient(ctx, email).status).toBe("pending-secupass");
    await revokePatient(ctx, email);
    expect(await refusal(async () => setSecuPassRecipient(ctx, email, await newRecipient()))).toBe("wrong-state");
    expect(row(email)).toEqual({ status: "revoked", pending_kdf: null, recipient: null });
  });

  it("hides the patient's deliveries from core, and a session is never written for a revoked account", async () => {
    const { email } = await patient();
    const d = await createDelivery(ctx, { recipient: email, level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4")) }] });
    markSent(ctx, [d.id]);
    expect(deliveriesForPatient(ctx, email).map((x) => x.id)).toEqual([d.id]);
    await revokePatient(ctx, email);
    expect(deliveriesForPatient(ctx, email)).toEqual([]);
    expect(await refusal(() => deliveryForPatient(ctx, d.id, email))).toBe("wrong-state");
    const now = clock.toISOString();
    expect(ctx.store.records.insertSession({ idHash: "f".repeat(64), email, csrf: "x", createdAt: now, lastSeen: now })).toBe(false);
    expect(sessionsOf(email)).toBe(0);
  });
});

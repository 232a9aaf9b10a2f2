// A revoked patient is out (security review item 6): `revokePatient` ends every session of
// the patient and every flow begun before it (a Secu-Pass reset, reset links, invites for the
// address, reply uploads, setting a Secu-Pass-Key), and each of those flows refuses a revoked
// patient when it finishes. Against the real app and core over a real home and store.
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  PraxmailError,
  addReplyPart,
  completeKeyReset,
  createDelivery,
  createInvite,
  deliveriesForPatient,
  deliveryForPatient,
  finishReply,
  getPatient,
  listInvites,
  markSent,
  requestKeyReset,
  resetSecuPass,
  revokePatient,
  setSecuPassRecipient,
  startReply,
} from "../src/core/index.js";
import { encryptBytes, generateIdentity, recipientOf } from "../src/crypto/index.js";
import { outbox, practiceIdentityOf } from "./helpers/cli.js";
import { approveWithTheirCodes, legacyPatient, newKey, registerThroughCore } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";
import { streamOf } from "./helpers/streams.js";
import { collect } from "./helpers/store.js";
import { readDb } from "./helpers/store.js";

const portal = usePortal();
let n = 0;

/** A new patient waiting for approval with a Secu-Pass-Key, and a browser logged in as them. */
async function patient(): Promise<{ email: string; c: Client }> {
  const email = `patient${String(++n)}@patient.example`;
  await registerThroughCore(portal.home, email, "ein Secu-Pass-Key");
  const c = new Client(portal.app);
  expect((await c.login(email)).statusCode).toBe(200);
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
const row = (email: string): Record<string, unknown> => readDb(portal.home, (db) => db.prepare("SELECT status, recipient FROM patients WHERE email = ?").get(email) as Record<string, unknown>);
const sessionsOf = (email: string): number => readDb(portal.home, (db) => db.prepare("SELECT count(*) FROM sessions WHERE email = ?").pluck().get(email) as number);

describe("revoking a patient", () => {
  it("refuses a Secu-Pass reset begun before the revoke and posted after it: the patient stays revoked", async () => {
    const { email, c } = await patient();
    await c.get("/deliveries");
    const page = await c.get("/secupass/reset");
    expect(page.statusCode).toBe(200);
    const before = row(email).recipient;
    await revokePatient(portal.ctx, email);
    expect(row(email)).toEqual({ status: "revoked", recipient: before });
    // The browser posts the new key: its session is gone.
    const { kdf, recipient, credential } = await newKey(email, "ein neuer Secu-Pass-Key");
    const posted = await c.json("/secupass/reset", { kdf, recipient, credential });
    expect(posted.statusCode).toBe(401);
    // Core refuses it too, whoever calls.
    expect(await refusal(async () => resetSecuPass(portal.ctx, email, { kdf, recipient, credential }))).toBe("wrong-state");
    expect(row(email)).toEqual({ status: "revoked", recipient: before });
    expect((await collect(portal.ctx.store.auditRows())).filter((a) => a.subject === email).map((a) => a.action)).not.toContain("patient.secupass-reset");
  });

  it("ends every session of the patient: a logged-in browser gets the login page, its JSON posts 401", async () => {
    const { email, c } = await patient();
    const other = await patient();
    const second = new Client(portal.app);
    expect((await second.login(email)).statusCode).toBe(200);
    expect((await c.get("/deliveries")).statusCode).toBe(200);
    expect(sessionsOf(email)).toBe(2);
    await revokePatient(portal.ctx, email);
    expect(sessionsOf(email)).toBe(0);
    for (const browser of [c, second]) {
      const res = await browser.get("/deliveries");
      expect(res.statusCode).toBe(303);
      expect(res.headers.location).toBe("/login?next=%2Fdeliveries");
      expect((await browser.json("/reply", { deliveryId: "" })).statusCode).toBe(401);
    }
    // Logging in again is refused with the usual answer; another patient is untouched.
    expect((await new Client(portal.app).login(email)).statusCode).toBe(401);
    expect((await other.c.get("/deliveries")).statusCode).toBe(200);
  });

  it("uses up reset links sent before: the page and the form answer 410, core refuses, the key stays", async () => {
    const { email } = await patient();
    await requestKeyReset(portal.ctx, email);
    const token = /\/reset\/([\w-]{43})/.exec((await outbox(portal.home)).at(-1)?.text ?? "")![1]!;
    const keyed = async (): Promise<unknown> => {
      const p = await portal.ctx.store.records.patient(email);
      return [p?.credentialHash, p?.recipient];
    };
    const before = await keyed();
    await revokePatient(portal.ctx, email);
    const c = new Client(portal.app);
    expect((await c.get(`/reset/${token}`)).statusCode).toBe(410);
    await c.get("/reset");
    const { kdf, recipient, credential } = await newKey(email, "ein neuer Secu-Pass-Key");
    expect((await c.json(`/reset/${token}`, { kdf, recipient, credential })).statusCode).toBe(410);
    expect(await refusal(() => completeKeyReset(portal.ctx, token, { kdf, recipient, credential }))).toBe("wrong-state");
    expect(await keyed()).toEqual(before);
    // No new link is sent either.
    const mails = (await outbox(portal.home)).length;
    await requestKeyReset(portal.ctx, email);
    expect((await outbox(portal.home)).length).toBe(mails);
  });

  it("revokes open invites for the address: the invite page answers 410", async () => {
    const email = `eingeladen${String(++n)}@patient.example`;
    const invite = await createInvite(portal.ctx, email, await practiceIdentityOf(portal.home));
    // The patient registered through a delivery link meanwhile, and is then revoked.
    await registerThroughCore(portal.home, email, "ein Secu-Pass-Key");
    await revokePatient(portal.ctx, email);
    expect((await listInvites(portal.ctx)).find((i) => i.id === invite.id)?.status).toBe("revoked");
    const c = new Client(portal.app);
    expect((await c.get(`/invite/${invite.id}`)).statusCode).toBe(410);
  });

  it("deletes a reply still being uploaded; its next part and its finish are refused", async () => {
    const { email } = await patient();
    // Only approved patients may reply.
    await approveWithTheirCodes(portal.ctx, [email], await practiceIdentityOf(portal.home));
    const reply = await startReply(portal.ctx, email, null);
    const age = await encryptBytes(new TextEncoder().encode(JSON.stringify({ v: 1, text: "Hallo", files: [] })), [portal.ctx.config.practiceRecipient]);
    await addReplyPart(portal.ctx, email, reply, "message", Readable.from([Buffer.from(age)]));
    const blob = (await portal.ctx.store.accounts.replyParts(reply))[0]!.blob;
    await revokePatient(portal.ctx, email);
    expect(await portal.ctx.store.accounts.reply(reply)).toBeUndefined();
    expect(await portal.ctx.store.accounts.replyParts(reply)).toEqual([]);
    expect((await portal.ctx.store.blobs.scan()).map((f) => f.key)).not.toContain(blob);
    expect(await refusal(() => addReplyPart(portal.ctx, email, reply, "file", Readable.from([Buffer.from(age)])))).not.toBe("accepted");
    expect(await refusal(() => finishReply(portal.ctx, email, reply))).not.toBe("accepted");
    expect(await refusal(() => startReply(portal.ctx, email, null))).toBe("wrong-state");
  });

  it("refuses a Secu-Pass-Key set after the revoke, for a patient from before who had none", async () => {
    const email = `patient${String(++n)}@patient.example`;
    await legacyPatient(portal.ctx, email, "ein altes Passwort");
    expect((await getPatient(portal.ctx, email)).status).toBe("pending-secupass");
    await revokePatient(portal.ctx, email);
    expect(await refusal(async () => setSecuPassRecipient(portal.ctx, email, await newRecipient()))).toBe("wrong-state");
    expect(row(email)).toEqual({ status: "revoked", recipient: null });
  });

  it("hides the patient's deliveries from core, and a session is never written for a revoked account", async () => {
    const { email } = await patient();
    const d = await createDelivery(portal.ctx, { recipient: email, level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4")) }] });
    await markSent(portal.ctx, [d.id]);
    expect((await deliveriesForPatient(portal.ctx, email)).map((x) => x.id)).toEqual([d.id]);
    await revokePatient(portal.ctx, email);
    expect(await deliveriesForPatient(portal.ctx, email)).toEqual([]);
    expect(await refusal(() => deliveryForPatient(portal.ctx, d.id, email))).toBe("wrong-state");
    const now = portal.clock.toISOString();
    expect(await portal.ctx.store.records.insertSession({ idHash: "f".repeat(64), email, csrf: "x", createdAt: now, lastSeen: now })).toBe(false);
    expect(sessionsOf(email)).toBe(0);
  });
});

// The way back: password reset links, a new Secu-Pass-Key without losing deliveries, and
// invite codes that reception hands out so a patient need not wait for approval.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { hashPassword, newKdfParams, recipientType, safetyCode, signStatement, type KdfParams } from "../crypto/index.js";
import type { Lang } from "../i18n/index.js";
import type { InviteRow, PatientRow } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { PATIENT_KEY_FROM } from "./levels.js";
import { WorkQueue } from "./queue.js";
import { checkPassword, mustGetActivePatient, mustGetPatient, newKeyKdf, registerPatient, type PatientView } from "./patients.js";
import { hashToken, newId, newToken } from "./tokens.js";
import { inviteStatement, loadPortalKey, practiceKey, signInviteSession } from "./trust.js";
import { normaliseEmail } from "./validate.js";

const RESET_MINUTES = 30;
// 1,000 addresses of at most 254 characters: a quarter of a megabyte at worst.
const RESET_QUEUE_LIMIT = 1000;
const INVITE_DAYS = 14;
// 32 symbols without look-alikes (no 0/O, 1/I/L): 12 of them are 60 bits.
const CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/**
 * Sends a one-time link to set a new password, if the address has an account. This is the
 * worker's step of {@link passwordResetQueue}: a form must never wait for it, since a known
 * address costs a transaction and a mail and an unknown one costs nothing.
 *
 * @param ctx - The core context.
 * @param email - The address as typed.
 * @throws If the mail was not accepted (the link stays unusable: nobody has its token).
 */
export async function requestPasswordReset(ctx: Context, email: string): Promise<void> {
  let addr: string;
  try {
    addr = normaliseEmail(email);
  } catch {
    return;
  }
  const p = await ctx.store.records.patient(addr);
  if (!p || p.status === "revoked") return;
  const token = newToken();
  const now = ctx.now();
  const expiresAt = new Date(now.getTime() + RESET_MINUTES * 60_000);
  const issued = await ctx.store.transaction(async (tx) => {
    if ((await tx.records.patient(addr))?.status === "revoked") return false;
    await tx.accounts.insertReset({ hash: hashToken(token), email: addr, createdAt: now.toISOString(), expiresAt: expiresAt.toISOString(), usedAt: null });
    await tx.audit({ actor: ctx.actor, action: "patient.password-reset-requested", subject: addr }, now);
    return true;
  });
  if (!issued) return;
  await ctx.notifier.send({ kind: "password-reset", to: addr, link: `${ctx.config.portalUrl}/reset/${token}`, expiresAt });
}

/**
 * The queue behind the password reset form: the form only pushes the address as typed (the
 * same work for every address) and answers; the worker then looks it up, creates the link
 * and mails it (see {@link requestPasswordReset}). Known and unknown addresses thus get the
 * same answer in the same time, however slow the mail server is.
 *
 * @param ctx - The core context.
 * @param onError - Told when a reset mail failed; it gets no token (the token is only in the mail).
 * @param limit - Most addresses waiting; more are dropped.
 * @returns The queue; close it when the portal stops.
 */
export function passwordResetQueue(ctx: Context, onError: (e: unknown) => void, limit = RESET_QUEUE_LIMIT): WorkQueue<string> {
  return new WorkQueue((email) => requestPasswordReset(ctx, email), { limit, onError });
}

/**
 * @param ctx - The core context.
 * @param token - The token from `/reset/<token>`.
 * @returns The address it resets.
 * @throws {@link PraxmailError} `wrong-state` for an unknown, used or expired link.
 */
export async function checkPasswordReset(ctx: Context, token: string): Promise<string> {
  const r = /^[A-Za-z0-9_-]{43}$/.test(token) ? await ctx.store.accounts.reset(hashToken(token)) : undefined;
  if (!r || r.usedAt !== null || r.expiresAt <= ctx.now().toISOString()) {
    throw new PraxmailError("wrong-state", "the reset link is unknown, used or expired");
  }
  return r.email;
}

/**
 * Sets a new password through a reset link: once, ending every session of the patient.
 * No key is touched.
 *
 * @param ctx - The core context.
 * @param token - The reset token.
 * @param password - The new password.
 * @returns The patient's address.
 * @throws {@link PraxmailError} `wrong-state` for an unusable link, `invalid-input` for a bad password.
 */
export async function completePasswordReset(ctx: Context, token: string, password: string): Promise<string> {
  const email = await checkPasswordReset(ctx, token);
  checkPassword(password);
  const hash = await hashPassword(password);
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    if (!(await tx.accounts.useReset(hashToken(token), now.toISOString()))) {
      throw new PraxmailError("wrong-state", "the reset link is unknown, used or expired");
    }
    const p = await mustGetActivePatient(tx, email);
    // Whoever reset the password did not necessarily type the invite code.
    await tx.records.updatePatient({ ...p, passwordHash: hash, inviteSession: null });
    await tx.records.deleteSessionsOf(email);
    await tx.audit({ actor: ctx.actor, action: "patient.password-reset", subject: email, details: { inviteDropped: p.inviteSession !== null } }, now);
  });
  await ctx.notifier.send({ kind: "password-changed", to: email });
  return email;
}

/**
 * Starts a Secu-Pass reset: fresh KDF parameters (version 2, a new salt), kept until the
 * browser sends the new recipient.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @returns The parameters to derive the new key with.
 * @throws {@link PraxmailError} `wrong-state` for a patient without a key yet, or revoked.
 */
export async function beginSecuPassReset(ctx: Context, email: string): Promise<KdfParams> {
  const p = await mustGetPatient(ctx.store, email);
  if (p.status !== "approved" && p.status !== "pending-approval") {
    throw new PraxmailError("wrong-state", `patient ${p.email} is ${p.status}`);
  }
  const kdf = newKdfParams(ctx.config.crypto.recipientType);
  await ctx.store.transaction(async (tx) => {
    const current = await mustGetActivePatient(tx, p.email);
    await tx.records.updatePatient({ ...current, pendingKdf: JSON.stringify(kdf) });
  });
  return kdf;
}

/**
 * Finishes a Secu-Pass reset: the new recipient replaces the old one, every wrap for the
 * old key and every passkey (it seals the old key) is deleted, and the patient waits for approval again. `praxmail approve` then
 * rewraps every delivery that has not expired, so nothing sent earlier is lost.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @param recipient - The new key's recipient, derived with the pending parameters.
 * @returns The patient with the new safety code.
 * @throws {@link PraxmailError} `wrong-state` without a begun reset, `invalid-input` for a bad recipient.
 */
export async function finishSecuPassReset(ctx: Context, email: string, recipient: string): Promise<PatientView> {
  const p = await mustGetPatient(ctx.store, email);
  if (p.pendingKdf === null) throw new PraxmailError("wrong-state", "no secu-pass reset was started");
  const kdf = newKeyKdf(p.pendingKdf);
  if (recipientType(recipient) !== kdf.type) throw new PraxmailError("invalid-input", `recipient is not an ${kdf.type} age recipient`);
  const now = ctx.now();
  const next = await ctx.store.transaction(async (tx) => {
    // A reset begun before a revocation (which clears it) must not finish after it.
    const current = await mustGetActivePatient(tx, p.email);
    if (current.pendingKdf !== p.pendingKdf) throw new PraxmailError("wrong-state", "the secu-pass reset was cancelled or started again");
    const next: PatientRow = {
      ...current,
      status: "pending-approval",
      kdf: p.pendingKdf,
      pendingKdf: null,
      recipient,
      safetyCode: safetyCode(recipient),
      secupassAt: now.toISOString(),
      approvedAt: null,
      approval: null,
    };
    const n = await tx.records.unwrapPatient(p.email, PATIENT_KEY_FROM);
    await tx.records.updatePatient(next);
    // Their sealed U is the old key's: a passkey would log in and unlock nothing, or worse, the old key.
    const passkeys = await tx.passkeys.deletePasskeysOf(p.email);
    await tx.audit({ actor: ctx.actor, action: "patient.secupass-reset", subject: p.email, details: { safetyCode: next.safetyCode, deliveries: n, passkeys } }, now);
    return next;
  });
  const code = next.safetyCode ?? "";
  await ctx.notifier.send({ kind: "secupass-activated", to: p.email, safetyCode: code, approved: false });
  await ctx.notifier.send({ kind: "approval-needed", to: ctx.config.practiceEmail, patient: p.email, safetyCode: code });
  return { email: next.email, status: next.status, registeredAt: next.registeredAt, approvedAt: null, safetyCode: next.safetyCode };
}

function codeHash(code: string): string {
  return createHash("sha256").update(`praxmail invite\n${code.toUpperCase().replace(/[^A-Z0-9]/g, "")}`).digest("hex");
}

/** An invite as `praxmail invite` prints it. The code exists only here, once. */
export interface CreatedInvite {
  readonly id: string;
  readonly email: string;
  readonly link: string;
  readonly code: string;
  readonly expiresAt: Date;
}

/** An invite as `praxmail invite --list` shows it. */
export interface InviteView {
  readonly id: string;
  readonly email: string;
  readonly status: "open" | "used" | "expired" | "revoked";
  readonly createdAt: string;
  readonly expiresAt: string;
}

/**
 * Creates an invite for a patient at the counter: a link and a one-time code, 14 days. The
 * practice signs it (with the key derived from P), so that an invite written into the
 * database by anyone else approves nobody.
 *
 * @param ctx - The core context.
 * @param email - The patient's address.
 * @param practiceIdentity - P's secret.
 * @returns The invite with its code (only its hash is stored).
 * @throws {@link PraxmailError} `wrong-state` when the address has an account already,
 *   `identity` for a wrong identity or a home without a pinned approval key.
 */
export async function createInvite(ctx: Context, email: string, practiceIdentity: string): Promise<CreatedInvite> {
  const addr = normaliseEmail(email);
  if (await ctx.store.records.patient(addr)) {
    throw new PraxmailError("wrong-state", `${addr} has an account already`, "for a waiting patient, compare the safety code and run praxmail approve");
  }
  const key = await practiceKey(ctx.config, practiceIdentity);
  if (ctx.config.approvalKey === null || ctx.config.portalKey === null) {
    throw new PraxmailError("identity", "this home has no pinned approval or portal key yet", "run praxmail init and then praxmail approve once to pin them");
  }
  let raw = "";
  for (const b of randomBytes(12)) raw += CODE_ALPHABET.charAt(b % CODE_ALPHABET.length);
  const code = `${raw.slice(0, 4)}-${raw.slice(4, 8)}-${raw.slice(8)}`;
  const id = newId("i");
  const now = ctx.now();
  const expiresAt = new Date(now.getTime() + INVITE_DAYS * 86_400_000);
  const row = { id, email: addr, codeHash: codeHash(code), createdAt: now.toISOString(), expiresAt: expiresAt.toISOString(), usedAt: null, revokedAt: null };
  await ctx.store.transaction(async (tx) => {
    await tx.accounts.insertInvite({ ...row, sig: signStatement(key, inviteStatement(row)) });
    await tx.audit({ actor: ctx.actor, action: "invite.create", subject: id, details: { email: addr } }, now);
  });
  return { id, email: addr, link: `${ctx.config.portalUrl}/invite/${id}`, code, expiresAt };
}

function inviteView(ctx: Context, i: InviteRow): InviteView {
  const status = i.usedAt ? "used" : i.revokedAt ? "revoked" : i.expiresAt <= ctx.now().toISOString() ? "expired" : "open";
  return { id: i.id, email: i.email, status, createdAt: i.createdAt, expiresAt: i.expiresAt };
}

/**
 * @param ctx - The core context.
 * @returns Every invite, newest first.
 */
export async function listInvites(ctx: Context): Promise<InviteView[]> {
  return (await ctx.store.accounts.invites()).map((i) => inviteView(ctx, i));
}

/**
 * Revokes an open invite.
 *
 * @param ctx - The core context.
 * @param id - The invite.
 * @throws {@link PraxmailError} `no-such-delivery` (unknown) or `wrong-state` (not open).
 */
export async function revokeInvite(ctx: Context, id: string): Promise<InviteView> {
  const i = await ctx.store.accounts.invite(id);
  if (!i) throw new PraxmailError("invalid-input", `no such invite ${JSON.stringify(id)}`, "run praxmail invite --list");
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    if (!(await tx.accounts.revokeInvite(id, now.toISOString()))) {
      throw new PraxmailError("wrong-state", `invite ${id} is ${inviteView(ctx, i).status}`);
    }
    await tx.audit({ actor: ctx.actor, action: "invite.revoke", subject: id }, now);
  });
  return inviteView(ctx, { ...i, revokedAt: now.toISOString() });
}

/**
 * @param ctx - The core context.
 * @param id - From `/invite/<id>`.
 * @returns Whether the invite can still be used.
 */
export async function inviteOpen(ctx: Context, id: string): Promise<boolean> {
  const i = /^i_[a-z0-9]{12}$/.test(id) ? await ctx.store.accounts.invite(id) : undefined;
  return i !== undefined && inviteView(ctx, i).status === "open";
}

/**
 * Registers a patient with an invite: the address and the code must both match, once.
 * The account is approved when the Secu-Pass-Key is set in the session that redeemed the
 * invite (see {@link bindInviteSession}); otherwise it waits for the ordinary approval.
 *
 * @param ctx - The core context.
 * @param id - The invite.
 * @param email - The address the patient typed.
 * @param code - The code from reception.
 * @param password - The new portal password.
 * @param lang - The language the patient used, if known.
 * @returns The new patient.
 * @throws {@link PraxmailError} `wrong-state` for an unusable invite, `invalid-input` when
 *   address or code do not match (one answer for both).
 */
export async function redeemInvite(ctx: Context, id: string, email: string, code: string, password: string, lang: Lang | null = null): Promise<PatientView> {
  const i = /^i_[a-z0-9]{12}$/.test(id) ? await ctx.store.accounts.invite(id) : undefined;
  if (!i || inviteView(ctx, i).status !== "open") throw new PraxmailError("wrong-state", "the invite is unknown, used, revoked or expired");
  let addr = "";
  try {
    addr = normaliseEmail(email);
  } catch {
    // Compared below, and refused with the same answer.
  }
  const given = Buffer.from(codeHash(code));
  const codeOk = given.length === i.codeHash.length && timingSafeEqual(given, Buffer.from(i.codeHash));
  if (!codeOk || addr !== i.email) throw new PraxmailError("invalid-input", "address or code do not match the invite");
  checkPassword(password);
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    if (!(await tx.accounts.useInvite(id, now.toISOString()))) throw new PraxmailError("wrong-state", "the invite is unknown, used, revoked or expired");
    await tx.audit({ actor: ctx.actor, action: "invite.use", subject: id, details: { email: addr } }, now);
  });
  return registerPatient(ctx, addr, password, { inviteId: id, lang });
}

/**
 * Binds an invite's privilege to the portal session that redeemed it, signed by the portal:
 * only that session can set the Secu-Pass-Key without the ordinary approval. Without the
 * portal key nothing is bound, and the account needs the ordinary approval.
 *
 * @param ctx - The core context.
 * @param email - The patient who just redeemed an invite.
 * @param session - SHA-256 of the new session's id.
 */
export async function bindInviteSession(ctx: Context, email: string, session: string): Promise<void> {
  const key = loadPortalKey(ctx.home, ctx.config.portalKey);
  if (!key) return;
  await ctx.store.transaction(async (tx) => {
    const p = await mustGetPatient(tx, email);
    if (p.inviteId === null || p.status !== "pending-secupass") return;
    await tx.records.updatePatient({ ...p, inviteSession: signInviteSession(key, p.inviteId, p.email, session) });
  });
}

/**
 * Drops an invite's privilege before the key is set, e.g. at a later login: the account then
 * needs the ordinary approval with the safety code.
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @param why - For the audit log, e.g. `login`.
 */
export async function dropInviteSession(ctx: Context, email: string, why: string): Promise<void> {
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    const p = await tx.records.patient(email);
    if (p?.inviteSession == null) return;
    await tx.records.updatePatient({ ...p, inviteSession: null });
    await tx.audit({ actor: ctx.actor, action: "invite.privilege-dropped", subject: email, details: { why } }, now);
  });
}

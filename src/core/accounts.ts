// The way back: password reset links, a new Secu-Pass-Key without losing deliveries, and
// invite codes that reception hands out so a patient need not wait for approval.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { hashPassword, newKdfParams, parseKdfParams, recipientType, safetyCode, type KdfParams } from "../crypto/index.js";
import type { InviteRow, PatientRow } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { checkPassword, mustGetActivePatient, mustGetPatient, registerPatient, type PatientView } from "./patients.js";
import { hashToken, newId, newToken } from "./tokens.js";
import { normaliseEmail } from "./validate.js";

const RESET_MINUTES = 30;
const INVITE_DAYS = 14;
// 32 symbols without look-alikes (no 0/O, 1/I/L): 12 of them are 60 bits.
const CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/**
 * Sends a one-time link to set a new password, if the address has an account. The caller
 * answers the same either way, so nobody learns which addresses have accounts.
 *
 * @param ctx - The core context.
 * @param email - The address as typed.
 */
export async function requestPasswordReset(ctx: Context, email: string): Promise<void> {
  let addr: string;
  try {
    addr = normaliseEmail(email);
  } catch {
    return;
  }
  const p = ctx.store.records.patient(addr);
  if (!p || p.status === "revoked") return;
  const token = newToken();
  const now = ctx.now();
  const expiresAt = new Date(now.getTime() + RESET_MINUTES * 60_000);
  const issued = ctx.store.transaction(() => {
    if (ctx.store.records.patient(addr)?.status === "revoked") return false;
    ctx.store.accounts.insertReset({ hash: hashToken(token), email: addr, createdAt: now.toISOString(), expiresAt: expiresAt.toISOString(), usedAt: null });
    ctx.store.audit({ actor: ctx.actor, action: "patient.password-reset-requested", subject: addr }, now);
    return true;
  });
  if (!issued) return;
  await ctx.notifier.send({ kind: "password-reset", to: addr, link: `${ctx.config.portalUrl}/reset/${token}`, expiresAt });
}

/**
 * @param ctx - The core context.
 * @param token - The token from `/reset/<token>`.
 * @returns The address it resets.
 * @throws {@link PraxmailError} `wrong-state` for an unknown, used or expired link.
 */
export function checkPasswordReset(ctx: Context, token: string): string {
  const r = /^[A-Za-z0-9_-]{43}$/.test(token) ? ctx.store.accounts.reset(hashToken(token)) : undefined;
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
  const email = checkPasswordReset(ctx, token);
  checkPassword(password);
  const hash = await hashPassword(password);
  const now = ctx.now();
  ctx.store.transaction(() => {
    if (!ctx.store.accounts.useReset(hashToken(token), now.toISOString())) {
      throw new PraxmailError("wrong-state", "the reset link is unknown, used or expired");
    }
    const p = mustGetActivePatient(ctx, email);
    ctx.store.records.updatePatient({ ...p, passwordHash: hash });
    ctx.store.records.deleteSessionsOf(email);
    ctx.store.audit({ actor: ctx.actor, action: "patient.password-reset", subject: email }, now);
  });
  await ctx.notifier.send({ kind: "password-changed", to: email });
  return email;
}

/**
 * Starts a Secu-Pass reset: fresh KDF parameters (a new salt), kept until the browser
 * sends the new recipient.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @returns The parameters to derive the new key with.
 * @throws {@link PraxmailError} `wrong-state` for a patient without a key yet, or revoked.
 */
export function beginSecuPassReset(ctx: Context, email: string): KdfParams {
  const p = mustGetPatient(ctx, email);
  if (p.status !== "approved" && p.status !== "pending-approval") {
    throw new PraxmailError("wrong-state", `patient ${p.email} is ${p.status}`);
  }
  const kdf = newKdfParams(ctx.config.crypto.recipientType);
  ctx.store.transaction(() => {
    const current = mustGetActivePatient(ctx, p.email);
    ctx.store.records.updatePatient({ ...current, pendingKdf: JSON.stringify(kdf) });
  });
  return kdf;
}

/**
 * Finishes a Secu-Pass reset: the new recipient replaces the old one, every wrap for the
 * old key is deleted, and the patient waits for approval again. `praxmail approve` then
 * rewraps every delivery that has not expired, so nothing sent earlier is lost.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @param recipient - The new key's recipient, derived with the pending parameters.
 * @returns The patient with the new safety code.
 * @throws {@link PraxmailError} `wrong-state` without a begun reset, `invalid-input` for a bad recipient.
 */
export async function finishSecuPassReset(ctx: Context, email: string, recipient: string): Promise<PatientView> {
  const p = mustGetPatient(ctx, email);
  if (p.pendingKdf === null) throw new PraxmailError("wrong-state", "no secu-pass reset was started");
  const kdf = parseKdfParams(JSON.parse(p.pendingKdf));
  if (recipientType(recipient) !== kdf.type) throw new PraxmailError("invalid-input", `recipient is not an ${kdf.type} age recipient`);
  const now = ctx.now();
  const next = ctx.store.transaction(() => {
    // A reset begun before a revocation (which clears it) must not finish after it.
    const current = mustGetActivePatient(ctx, p.email);
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
    };
    const n = ctx.store.records.unwrapPatient(p.email);
    ctx.store.records.updatePatient(next);
    ctx.store.audit({ actor: ctx.actor, action: "patient.secupass-reset", subject: p.email, details: { safetyCode: next.safetyCode, deliveries: n } }, now);
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
 * Creates an invite for a patient at the counter: a link and a one-time code, 14 days.
 *
 * @param ctx - The core context.
 * @param email - The patient's address.
 * @returns The invite with its code (only its hash is stored).
 * @throws {@link PraxmailError} `wrong-state` when the address has an account already.
 */
export function createInvite(ctx: Context, email: string): CreatedInvite {
  const addr = normaliseEmail(email);
  if (ctx.store.records.patient(addr)) {
    throw new PraxmailError("wrong-state", `${addr} has an account already`, "for a waiting patient, compare the safety code and run praxmail approve");
  }
  let raw = "";
  for (const b of randomBytes(12)) raw += CODE_ALPHABET.charAt(b % CODE_ALPHABET.length);
  const code = `${raw.slice(0, 4)}-${raw.slice(4, 8)}-${raw.slice(8)}`;
  const id = newId("i");
  const now = ctx.now();
  const expiresAt = new Date(now.getTime() + INVITE_DAYS * 86_400_000);
  ctx.store.transaction(() => {
    ctx.store.accounts.insertInvite({ id, email: addr, codeHash: codeHash(code), createdAt: now.toISOString(), expiresAt: expiresAt.toISOString(), usedAt: null, revokedAt: null });
    ctx.store.audit({ actor: ctx.actor, action: "invite.create", subject: id, details: { email: addr } }, now);
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
export function listInvites(ctx: Context): InviteView[] {
  return ctx.store.accounts.invites().map((i) => inviteView(ctx, i));
}

/**
 * Revokes an open invite.
 *
 * @param ctx - The core context.
 * @param id - The invite.
 * @throws {@link PraxmailError} `no-such-delivery` (unknown) or `wrong-state` (not open).
 */
export function revokeInvite(ctx: Context, id: string): InviteView {
  const i = ctx.store.accounts.invite(id);
  if (!i) throw new PraxmailError("invalid-input", `no such invite ${JSON.stringify(id)}`, "run praxmail invite --list");
  const now = ctx.now();
  ctx.store.transaction(() => {
    if (!ctx.store.accounts.revokeInvite(id, now.toISOString())) {
      throw new PraxmailError("wrong-state", `invite ${id} is ${inviteView(ctx, i).status}`);
    }
    ctx.store.audit({ actor: ctx.actor, action: "invite.revoke", subject: id }, now);
  });
  return inviteView(ctx, { ...i, revokedAt: now.toISOString() });
}

/**
 * @param ctx - The core context.
 * @param id - From `/invite/<id>`.
 * @returns Whether the invite can still be used.
 */
export function inviteOpen(ctx: Context, id: string): boolean {
  const i = /^i_[a-z0-9]{12}$/.test(id) ? ctx.store.accounts.invite(id) : undefined;
  return i !== undefined && inviteView(ctx, i).status === "open";
}

/**
 * Registers a patient with an invite: the address and the code must both match, once.
 * The account is approved as soon as the Secu-Pass-Key is set.
 *
 * @param ctx - The core context.
 * @param id - The invite.
 * @param email - The address the patient typed.
 * @param code - The code from reception.
 * @param password - The new portal password.
 * @returns The new patient.
 * @throws {@link PraxmailError} `wrong-state` for an unusable invite, `invalid-input` when
 *   address or code do not match (one answer for both).
 */
export async function redeemInvite(ctx: Context, id: string, email: string, code: string, password: string): Promise<PatientView> {
  const i = /^i_[a-z0-9]{12}$/.test(id) ? ctx.store.accounts.invite(id) : undefined;
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
  ctx.store.transaction(() => {
    if (!ctx.store.accounts.useInvite(id, now.toISOString())) throw new PraxmailError("wrong-state", "the invite is unknown, used, revoked or expired");
    ctx.store.audit({ actor: ctx.actor, action: "invite.use", subject: id, details: { email: addr } }, now);
  });
  return registerPatient(ctx, addr, password, { invited: true });
}

// The way back: a new Secu-Pass-Key by a mailed link or while logged in, without losing
// deliveries, and invite codes that reception hands out so a patient need not wait for
// approval.
import { createHash, randomBytes } from "node:crypto";
import { safetyCode, signStatement } from "../crypto/index.js";
import type { Lang } from "../i18n/index.js";
import type { InviteRow, PatientRow } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { PATIENT_KEY_FROM } from "./levels.js";
import { WorkQueue } from "./queue.js";
import { checkNewKey, type NewKey } from "./keys.js";
import { mustGetActivePatient, mustGetPatient, patientView, registerPatient, type PatientView } from "./patients.js";
import { hashToken, newId, newToken, sameSecret } from "./tokens.js";
import { inviteStatement, loadPortalKey, practiceKey, signInviteSession } from "./trust.js";
import { normaliseEmail } from "./validate.js";

const RESET_MINUTES = 30;
// 1,000 addresses of at most 254 characters: a quarter of a megabyte at worst.
const RESET_QUEUE_LIMIT = 1000;
const INVITE_DAYS = 14;
// 32 symbols without look-alikes (no 0/O, 1/I/L): 12 of them are 60 bits.
const CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/**
 * Sends a one-time link to set a new Secu-Pass-Key, if the address has an account. This is
 * the worker's step of {@link keyResetQueue}: a form must never wait for it, since a known
 * address costs a transaction and a mail and an unknown one costs nothing.
 *
 * @param ctx - The core context.
 * @param email - The address as typed.
 * @throws If the mail was not accepted (the link stays unusable: nobody has its token).
 */
export async function requestKeyReset(ctx: Context, email: string): Promise<void> {
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
    await tx.audit({ actor: ctx.actor, action: "patient.key-reset-requested", subject: addr }, now);
    return true;
  });
  if (!issued) return;
  await ctx.notifier.send({ kind: "key-reset", to: addr, link: `${ctx.config.portalUrl}/reset/${token}`, expiresAt });
}

/**
 * The queue behind the "Secu-Pass-Key forgotten" form: the form only pushes the address as
 * typed (the same work for every address) and answers; the worker then looks it up, creates
 * the link and mails it (see {@link requestKeyReset}). Known and unknown addresses thus get
 * the same answer in the same time, however slow the mail server is.
 *
 * @param ctx - The core context.
 * @param onError - Told when a reset mail failed; it gets no token (the token is only in the mail).
 * @param limit - Most addresses waiting; more are dropped.
 * @returns The queue; close it when the portal stops.
 */
export function keyResetQueue(ctx: Context, onError: (e: unknown) => void, limit = RESET_QUEUE_LIMIT): WorkQueue<string> {
  return new WorkQueue((email) => requestKeyReset(ctx, email), { limit, onError });
}

/**
 * @param ctx - The core context.
 * @param token - The token from `/reset/<token>`.
 * @returns The address it resets.
 * @throws {@link PraxmailError} `wrong-state` for an unknown, used or expired link.
 */
export async function checkKeyReset(ctx: Context, token: string): Promise<string> {
  const r = /^[A-Za-z0-9_-]{43}$/.test(token) ? await ctx.store.accounts.reset(hashToken(token)) : undefined;
  if (!r || r.usedAt !== null || r.expiresAt <= ctx.now().toISOString()) {
    throw new PraxmailError("wrong-state", "the reset link is unknown, used or expired");
  }
  return r.email;
}

/**
 * Replaces a patient's Secu-Pass-Key, in one transaction: the new parameters, recipient and
 * credential hash (a password's hash goes), every wrap for the old key and every passkey (it
 * seals the old key) is deleted, every session ends, and the patient waits for approval again. `praxmail approve` then rewraps
 * every delivery that has not expired, so nothing sent earlier is lost.
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @param key - The new key, checked.
 * @param how - For the audit log: `mail` (a reset link) or `session` (logged in).
 * @param token - The reset link's token, used up in the same transaction.
 * @returns The patient with the new safety code.
 * @throws {@link PraxmailError} `wrong-state` for a revoked account or an unusable link.
 */
async function replaceKey(ctx: Context, email: string, key: NewKey, how: "mail" | "session", token?: string): Promise<PatientView> {
  const checked = checkNewKey(key);
  const now = ctx.now();
  const next = await ctx.store.transaction(async (tx) => {
    if (token !== undefined && !(await tx.accounts.useReset(hashToken(token), now.toISOString()))) {
      throw new PraxmailError("wrong-state", "the reset link is unknown, used or expired");
    }
    const current = await mustGetActivePatient(tx, email);
    const next: PatientRow = {
      ...current,
      status: "pending-approval",
      kdf: JSON.stringify(checked.kdf),
      recipient: checked.recipient,
      safetyCode: safetyCode(checked.recipient),
      credentialHash: checked.credentialHash,
      passwordHash: null,
      secupassAt: now.toISOString(),
      approvedAt: null,
      approval: null,
      // Whoever set the new key did not necessarily type the invite code.
      inviteSession: null,
    };
    const n = await tx.records.unwrapPatient(current.email, PATIENT_KEY_FROM);
    await tx.records.updatePatient(next);
    await tx.records.deleteSessionsOf(current.email);
    // Their sealed U is the old key's: a passkey would log in and unlock nothing, or worse, the old key.
    const passkeys = await tx.passkeys.deletePasskeysOf(current.email);
    await tx.audit({ actor: ctx.actor, action: "patient.secupass-reset", subject: current.email, details: { safetyCode: next.safetyCode, deliveries: n, how, passkeys } }, now);
    return next;
  });
  const code = next.safetyCode ?? "";
  await ctx.notifier.send({ kind: "key-changed", to: next.email, safetyCode: code });
  await ctx.notifier.send({ kind: "approval-needed", to: ctx.config.practiceEmail, patient: next.email, safetyCode: code });
  return patientView(next);
}

/**
 * Sets a new Secu-Pass-Key through a mailed reset link, once (see {@link replaceKey}). An
 * account that never had a key gets its first one this way.
 *
 * @param ctx - The core context.
 * @param token - The reset token.
 * @param key - The new key from the browser.
 * @returns The patient, waiting for approval.
 * @throws {@link PraxmailError} `wrong-state` for an unusable link or a revoked account, `invalid-input` for a bad key.
 */
export async function completeKeyReset(ctx: Context, token: string, key: NewKey): Promise<PatientView> {
  const email = await checkKeyReset(ctx, token);
  return replaceKey(ctx, email, key, "mail", token);
}

/**
 * Sets a new Secu-Pass-Key for a logged-in patient (see {@link replaceKey}).
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @param key - The new key from the browser.
 * @returns The patient with the new safety code.
 * @throws {@link PraxmailError} `wrong-state` for a revoked account, `invalid-input` for a bad key.
 */
export async function resetSecuPass(ctx: Context, email: string, key: NewKey): Promise<PatientView> {
  return replaceKey(ctx, email, key, "session");
}

/** The message of {@link redeemInvite}'s refusal of a wrong address or code (the only one that counts against the limit). */
export const INVITE_MISMATCH = "address or code do not match the invite";

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
  return { id, email: addr, link: `${ctx.config.portalUrl}/invite/${id}?email=${encodeURIComponent(addr)}`, code, expiresAt };
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
 * @param key - The new Secu-Pass-Key from the browser.
 * @param lang - The language the patient used, if known.
 * @returns The new patient.
 * @throws {@link PraxmailError} `wrong-state` for an unusable invite, `invalid-input` when
 *   address or code do not match (one answer for both), or for a bad key.
 */
export async function redeemInvite(ctx: Context, id: string, email: string, code: string, key: NewKey, lang: Lang | null = null): Promise<PatientView> {
  const i = /^i_[a-z0-9]{12}$/.test(id) ? await ctx.store.accounts.invite(id) : undefined;
  if (!i || inviteView(ctx, i).status !== "open") throw new PraxmailError("wrong-state", "the invite is unknown, used, revoked or expired");
  let addr = "";
  try {
    addr = normaliseEmail(email);
  } catch {
    // Compared below, and refused with the same answer.
  }
  if (!sameSecret(codeHash(code), i.codeHash) || addr !== i.email) throw new PraxmailError("invalid-input", INVITE_MISMATCH);
  // A bad key uses up nothing.
  checkNewKey(key);
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    if (!(await tx.accounts.useInvite(id, now.toISOString()))) throw new PraxmailError("wrong-state", "the invite is unknown, used, revoked or expired");
    await tx.audit({ actor: ctx.actor, action: "invite.use", subject: id, details: { email: addr } }, now);
  });
  return registerPatient(ctx, addr, key, { inviteId: id, lang });
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

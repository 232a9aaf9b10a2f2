// Patient accounts: registration, the Secu-Pass recipient, listing. The portal calls these.
import { parseNewKeyKdfParams, recipientType, safetyCode, type KdfParams } from "../crypto/index.js";
import { isLang, type Lang } from "../i18n/index.js";
import type { PatientRow, PatientStatus, StoreTx } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { checkNewKey, type NewKey } from "./keys.js";
import { levelRules } from "./levels.js";
import { consumeInvite, inviteSessionKey, signInviteApproval, trustedRecipient } from "./trust.js";
import { normaliseEmail } from "./validate.js";

/** A patient as the CLI and the portal show it (DESIGN.md §5). */
export interface PatientView {
  readonly email: string;
  readonly status: PatientStatus;
  readonly registeredAt: string;
  readonly approvedAt: string | null;
  readonly safetyCode: string | null;
}

/**
 * @param p - A stored patient.
 * @returns The public view of it.
 */
export function patientView(p: PatientRow): PatientView {
  return { email: p.email, status: p.status, registeredAt: p.registeredAt, approvedAt: p.approvedAt, safetyCode: p.safetyCode };
}

async function mustGet(rows: StoreTx, email: string): Promise<PatientRow> {
  const p = await rows.records.patient(normaliseEmail(email));
  if (!p) throw new PraxmailError("no-such-patient", `no such patient ${JSON.stringify(email)}`, "run praxmail list patients");
  return p;
}

/**
 * Reads a patient who may still act: call inside the transaction of the change, so that a
 * revocation committed meanwhile is seen.
 *
 * @param tx - The transaction.
 * @param email - The patient.
 * @returns The patient's row as it is now.
 * @throws {@link PraxmailError} `no-such-patient`, or `wrong-state` for a revoked account.
 */
export async function mustGetActivePatient(tx: StoreTx, email: string): Promise<PatientRow> {
  const p = await mustGet(tx, email);
  if (p.status === "revoked") throw new PraxmailError("wrong-state", `patient ${p.email} is revoked`, "run praxmail list patients");
  return p;
}

/**
 * Creates a patient account with the Secu-Pass-Key the browser made: its parameters and the
 * hash of its login credential are stored now; its recipient follows with
 * {@link setSecuPassRecipient} once the portal session exists (an invite's privilege is bound
 * to that session), in the same request.
 *
 * @param ctx - The core context.
 * @param email - The address the link or the invite was sent to.
 * @param key - The new key (checked here: nothing is written for a bad one).
 * @param opts - The invite it was registered with, and the language the patient used.
 * @returns The new patient, status `pending-secupass` until the recipient is set.
 * @throws {@link PraxmailError} `wrong-state` if the address already has an account, `invalid-input` for a bad key.
 */
export async function registerPatient(ctx: Context, email: string, key: NewKey, opts: { inviteId?: string; lang?: Lang | null } = {}): Promise<PatientView> {
  const addr = normaliseEmail(email);
  const checked = checkNewKey(key);
  const now = ctx.now();
  const row: PatientRow = {
    email: addr,
    status: "pending-secupass",
    passwordHash: null,
    credentialHash: checked.credentialHash,
    kdf: JSON.stringify(checked.kdf),
    recipient: null,
    safetyCode: null,
    registeredAt: now.toISOString(),
    secupassAt: null,
    approvedAt: null,
    revokedAt: null,
    invitedAt: opts.inviteId !== undefined ? now.toISOString() : null,
    approval: null,
    inviteId: opts.inviteId ?? null,
    inviteSession: null,
    alarmedAt: null,
    lang: opts.lang ?? null,
  };
  await ctx.store.transaction(async (tx) => {
    if (await tx.records.patient(addr)) {
      throw new PraxmailError("wrong-state", `an account for ${addr} exists already`, "log in instead");
    }
    await tx.records.insertPatient(row);
    await tx.audit({ actor: ctx.actor, action: "patient.register", subject: addr }, now);
  });
  await ctx.notifier.send({ kind: "account-created", to: addr, loginUrl: `${ctx.config.portalUrl}/login?email=${encodeURIComponent(addr)}` });
  return patientView(row);
}

/**
 * Remembers the language a patient chose in the portal; their mails follow it.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @param lang - The language.
 * @throws {@link PraxmailError} `no-such-patient`, or `wrong-state` for a revoked account.
 */
export async function setPatientLanguage(ctx: Context, email: string, lang: Lang): Promise<void> {
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    const p = await mustGetActivePatient(tx, email);
    if (p.lang === lang) return;
    await tx.records.updatePatient({ ...p, lang });
    await tx.audit({ actor: ctx.actor, action: "patient.language", subject: p.email, details: { lang } }, now);
  });
}

/**
 * @param rows - The store, or a transaction.
 * @param email - A patient's address (lowercased).
 * @returns The patient's language, or null when unknown (no account, never chosen, or a value
 *   this version does not speak).
 */
export async function patientLanguage(rows: Pick<StoreTx, "records">, email: string): Promise<Lang | null> {
  const lang = (await rows.records.patient(email))?.lang;
  return isLang(lang) ? lang : null;
}

/**
 * Checks stored parameters for a new key: full cost, the current version 3.
 *
 * @param stored - The JSON from the patient row.
 * @returns The parameters.
 * @throws {@link PraxmailError} `wrong-state` for parameters from before version 3.
 */
function newKeyKdf(stored: string | null): KdfParams {
  try {
    return parseNewKeyKdfParams(JSON.parse(stored ?? "null"));
  } catch (e) {
    if ((e as { reason?: unknown }).reason === "legacy") {
      throw new PraxmailError("wrong-state", "the key parameters are not the current version (v3)", "reload the page to get new ones");
    }
    throw e;
  }
}

/**
 * Records the patient's Secu-Pass recipient U (derived in the browser). The patient then
 * waits for the practice to approve, comparing the safety code; unless the key is set in the
 * very session that redeemed a practice-signed invite, which the portal then approves with
 * its signing key. Deliveries sent before the invite still wait for `praxmail approve`
 * (only P opens them), and the practice is told.
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @param recipient - U's age recipient; its type must match the patient's KDF parameters.
 * @param session - SHA-256 of the portal session that posts it.
 * @returns The patient, with the safety code and the number of deliveries still waiting.
 * @throws {@link PraxmailError} `invalid-input` or `wrong-state`.
 */
export async function setSecuPassRecipient(ctx: Context, email: string, recipient: string, session?: string): Promise<PatientView & { waiting: number }> {
  const p = await mustGet(ctx.store, email);
  const kdf = newKeyKdf(p.kdf);
  if (recipientType(recipient) !== kdf.type) {
    throw new PraxmailError("invalid-input", `recipient is not an ${kdf.type} age recipient`);
  }
  if (p.status !== "pending-secupass") {
    throw new PraxmailError("wrong-state", `patient ${p.email} is ${p.status}, not waiting for a secu-pass-key`);
  }
  const now = ctx.now();
  const at = now.toISOString();
  const keyed: PatientRow = { ...p, status: "pending-approval", recipient, safetyCode: safetyCode(recipient), secupassAt: at, approvedAt: null, approval: null, inviteSession: null };
  // Reception checked whoever typed the invite code: only that session inherits the check.
  const portalKey = session === undefined ? null : inviteSessionKey(ctx, p, session);
  const candidate: PatientRow | null =
    portalKey && p.inviteId !== null ? { ...keyed, status: "approved", approvedAt: at, approval: signInviteApproval(portalKey, p.inviteId, keyed, at) } : null;
  const invited = candidate !== null && (await trustedRecipient(ctx, ctx.store, candidate)).kind === "trusted" && (await consumeInvite(ctx.store.blobs, p.inviteId ?? ""));
  const next = invited ? candidate : keyed;
  const waiting = invited
    ? (await ctx.store.records.deliveries({ recipient: p.email, statuses: ["pending-approval"] })).filter((d) => levelRules(d.level).patientKey && d.expiresAt > at).length
    : 0;
  await ctx.store.transaction(async (tx) => {
    // A revocation, or another key, that came in meanwhile wins.
    const current = await mustGetActivePatient(tx, p.email);
    if (current.status !== "pending-secupass" || current.kdf !== p.kdf) throw new PraxmailError("wrong-state", `patient ${p.email} changed meanwhile`);
    const { status, safetyCode: safety, secupassAt, approvedAt, approval } = next;
    await tx.records.updatePatient({ ...current, status, recipient, safetyCode: safety, secupassAt, approvedAt, approval, inviteSession: null });
    await tx.audit({ actor: ctx.actor, action: "patient.secupass", subject: p.email, details: { safetyCode: next.safetyCode, invited, waiting } }, now);
  });
  const code = next.safetyCode ?? "";
  await ctx.notifier.send({ kind: "secupass-activated", to: p.email, safetyCode: code, approved: invited });
  if (!invited) await ctx.notifier.send({ kind: "approval-needed", to: ctx.config.practiceEmail, patient: p.email, safetyCode: code });
  else if (waiting > 0) await ctx.notifier.send({ kind: "release-needed", to: ctx.config.practiceEmail, patient: p.email, safetyCode: code, waiting });
  return { ...patientView(next), waiting };
}

/**
 * @param ctx - The core context.
 * @param status - Only this status, or all.
 * @returns Patients, oldest registration first.
 */
export async function listPatients(ctx: Context, status?: PatientStatus): Promise<PatientView[]> {
  return (await ctx.store.records.patients(status)).map(patientView);
}

/**
 * @param ctx - The core context.
 * @param email - The patient.
 * @returns The patient's view.
 * @throws {@link PraxmailError} `no-such-patient`.
 */
export async function getPatient(ctx: Context, email: string): Promise<PatientView> {
  return patientView(await mustGet(ctx.store, email));
}

export { mustGet as mustGetPatient };

// Which recipient a patient's deliveries may be wrapped to (DESIGN.md §3, signed approvals).
// The database alone must not be able to redirect a delivery: an approval counts only with a
// signature that verifies against a key pinned in config.json, never against one read from
// the database. Every path that writes wrap[U] asks trustedRecipient first.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  practiceSigningKey,
  recipientOf,
  safetyCode,
  signStatement,
  signingKeyFromSeed,
  statement,
  verifyStatement,
  writeSecretFile,
  type SigningKey,
} from "../crypto/index.js";
import type { BlobStore, InviteRow, PatientRow, StoreTx } from "../store/index.js";
import type { Config } from "./config.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";

/** The portal's signing key seed under home (32 bytes, mode 0600). */
export const PORTAL_KEY_FILE = "portal-signing.key";
/** One empty marker per invite that has approved a patient (`invite-approvals/i_…`). */
const INVITES_DIR = "invite-approvals";
const ALARM_MAIL_EVERY_MS = 60 * 60_000;

/** A patient's approval as stored in `patients.approval` (JSON). */
type ApprovalRecord =
  /** `praxmail approve`, signed with the practice signing key (derived from P). */
  | { readonly by: "practice"; readonly at: string; readonly sig: string }
  /** The session that redeemed a practice-signed invite set the key; signed by the portal. */
  | { readonly by: "invite"; readonly at: string; readonly inviteId: string; readonly sig: string };

/** What trustedRecipient decides. */
export type Trust =
  | { readonly kind: "trusted"; readonly recipient: string }
  /** The row does not claim an approval: the delivery waits, as always. */
  | { readonly kind: "not-approved" }
  /** The row claims an approval that does not verify: an alarm. */
  | { readonly kind: "untrusted"; readonly reason: string };

/**
 * @param email - The patient.
 * @param recipient - U's recipient.
 * @param at - ISO time of the approval.
 * @returns The statement `praxmail approve` signs.
 */
function approvalStatement(email: string, recipient: string, at: string): string {
  return statement("praxmail approval v1", [email, recipient, safetyCode(recipient), at]);
}

/**
 * @param i - The invite.
 * @returns The statement `praxmail invite` signs.
 */
export function inviteStatement(i: Pick<InviteRow, "id" | "email" | "codeHash" | "expiresAt">): string {
  return statement("praxmail invite v1", [i.id, i.email, i.codeHash, i.expiresAt]);
}

function inviteApprovalStatement(inviteId: string, email: string, recipient: string, at: string): string {
  return statement("praxmail invite approval v1", [inviteId, email, recipient, safetyCode(recipient), at]);
}

/**
 * Signs a practice approval of the patient's current recipient.
 *
 * @param key - The practice signing key.
 * @param p - The patient, with a recipient.
 * @param at - ISO time.
 * @returns The JSON for `patients.approval`.
 */
export function signPracticeApproval(key: SigningKey, p: Pick<PatientRow, "email" | "recipient">, at: string): string {
  const record: ApprovalRecord = { by: "practice", at, sig: signStatement(key, approvalStatement(p.email, p.recipient ?? "", at)) };
  return JSON.stringify(record);
}

/**
 * Signs the approval of an invited patient with the portal key.
 *
 * @param key - The portal signing key.
 * @param inviteId - The invite the patient redeemed.
 * @param p - The patient, with the new recipient.
 * @param at - ISO time.
 * @returns The JSON for `patients.approval`.
 */
export function signInviteApproval(key: SigningKey, inviteId: string, p: Pick<PatientRow, "email" | "recipient">, at: string): string {
  const record: ApprovalRecord = { by: "invite", at, inviteId, sig: signStatement(key, inviteApprovalStatement(inviteId, p.email, p.recipient ?? "", at)) };
  return JSON.stringify(record);
}

function inviteSessionStatement(inviteId: string, email: string, session: string): string {
  return statement("praxmail invite session v1", [inviteId, email, session]);
}

/**
 * Binds an invite to the portal session that redeemed it, with the portal's signature, so
 * that a database writer cannot bind it to a session of their own.
 *
 * @param key - The portal signing key.
 * @param inviteId - The invite.
 * @param email - The patient.
 * @param session - SHA-256 of the session's id.
 * @returns The value for `patients.invite_session`.
 */
export function signInviteSession(key: SigningKey, inviteId: string, email: string, session: string): string {
  return `${session} ${signStatement(key, inviteSessionStatement(inviteId, email, session))}`;
}

/**
 * @param ctx - The core context.
 * @param p - A patient registered with an invite.
 * @param session - SHA-256 of the session that posts the key.
 * @returns The portal key if the invite is bound to exactly this session by the portal, else null.
 */
export function inviteSessionKey(ctx: Context, p: PatientRow, session: string): SigningKey | null {
  const [bound, sig] = (p.inviteSession ?? "").split(" ");
  if (p.inviteId === null || bound !== session || sig === undefined) return null;
  const key = loadPortalKey(ctx.home, ctx.config.portalKey);
  return key && verifyStatement(key.publicKey, inviteSessionStatement(p.inviteId, p.email, session), sig) ? key : null;
}

function parseApproval(json: string | null): ApprovalRecord | null {
  try {
    const r = JSON.parse(json ?? "null") as Record<string, unknown> | null;
    if (r === null || typeof r.at !== "string" || typeof r.sig !== "string") return null;
    if (r.by === "practice") return { by: "practice", at: r.at, sig: r.sig };
    if (r.by === "invite" && typeof r.inviteId === "string") return { by: "invite", at: r.at, inviteId: r.inviteId, sig: r.sig };
    return null;
  } catch {
    return null;
  }
}

async function inviteProblem(ctx: Context, rows: StoreTx, p: PatientRow, recipient: string, a: ApprovalRecord & { by: "invite" }): Promise<string | null> {
  const { approvalKey, portalKey } = ctx.config;
  if (approvalKey === null || portalKey === null) return "no approval or portal key is pinned in config.json";
  const invite = await rows.accounts.invite(a.inviteId);
  if (!invite?.sig || !verifyStatement(approvalKey, inviteStatement(invite), invite.sig)) return "the invite is not signed by the practice";
  if (invite.email !== p.email) return "the invite was made for another address";
  if (a.at > invite.expiresAt) return "the key was set after the invite expired";
  if (!verifyStatement(portalKey, inviteApprovalStatement(a.inviteId, p.email, recipient, a.at), a.sig)) return "the invite approval does not verify";
  return null;
}

/**
 * Decides whether a patient's current recipient may be wrapped to. It recomputes the
 * safety code from the recipient, rebuilds the signed statement from the row, and verifies
 * it against the keys pinned in config.json.
 *
 * @param ctx - The core context.
 * @param rows - The store, or the transaction that writes the wrap.
 * @param p - The patient row, or undefined for an unknown address.
 * @returns The recipient to wrap to, not-approved, or untrusted with the reason.
 */
export async function trustedRecipient(ctx: Context, rows: StoreTx, p: PatientRow | undefined): Promise<Trust> {
  if (p?.status !== "approved") return { kind: "not-approved" };
  const recipient = p.recipient;
  if (recipient === null) return { kind: "untrusted", reason: "the approved patient has no recipient" };
  if (p.safetyCode !== safetyCode(recipient)) return { kind: "untrusted", reason: "the safety code does not match the recipient" };
  if (ctx.config.approvalKey === null) return { kind: "untrusted", reason: "no approval key is pinned yet" };
  const a = parseApproval(p.approval);
  if (a === null) return { kind: "untrusted", reason: "the approval is not signed" };
  if (a.by === "practice") {
    return verifyStatement(ctx.config.approvalKey, approvalStatement(p.email, recipient, a.at), a.sig)
      ? { kind: "trusted", recipient }
      : { kind: "untrusted", reason: "the approval signature does not verify" };
  }
  const problem = await inviteProblem(ctx, rows, p, recipient, a);
  return problem === null ? { kind: "trusted", recipient } : { kind: "untrusted", reason: problem };
}

/**
 * Raises the alarm for a patient whose approval does not verify: a log line, an audit row,
 * and a mail to the practice at most once an hour per patient. Never throws for the mail.
 *
 * @param ctx - The core context.
 * @param p - The patient.
 * @param reason - Why the approval does not verify.
 * @param deliveries - Deliveries left waiting because of it.
 */
export async function raiseTrustAlarm(ctx: Context, p: PatientRow, reason: string, deliveries: readonly string[]): Promise<void> {
  ctx.alarm?.("approval-signature-invalid", { reason, deliveries: deliveries.length });
  const now = ctx.now();
  const mail = await ctx.store.transaction(async (tx) => {
    await tx.audit({ actor: ctx.actor, action: "patient.approval-invalid", subject: p.email, details: { reason, deliveries } }, now);
    const current = await tx.records.patient(p.email);
    const last = current?.alarmedAt ? Date.parse(current.alarmedAt) : NaN;
    // A time in the future (or garbage) does not silence the alarm.
    if (!current || (last <= now.getTime() && now.getTime() - last < ALARM_MAIL_EVERY_MS)) return false;
    await tx.records.updatePatient({ ...current, alarmedAt: now.toISOString() });
    return true;
  });
  if (!mail) return;
  try {
    await ctx.notifier.send({ kind: "approval-invalid", to: ctx.config.practiceEmail, patient: p.email, reason, deliveries: deliveries.length });
  } catch (e) {
    ctx.alarm?.("approval-alarm-mail-failed", { error: (e as Error).message });
  }
}

/** What checking an identity against config.json found (see {@link checkPracticeIdentity}). */
export type PracticeIdentityFinding =
  /** P: its recipient is `practiceRecipient`, and it derives the pinned approval key (or none is pinned yet). */
  | { readonly kind: "practice"; readonly key: SigningKey }
  /** Another identity: its recipient is not `practiceRecipient`. */
  | { readonly kind: "other-identity" }
  /** P, but the approval key pinned in config.json is not the one P derives. */
  | { readonly kind: "other-approval-key"; readonly key: SigningKey };

/**
 * Checks an identity against config.json: is it this practice's P, and does it derive the
 * pinned approval key? The one place these questions are answered (approve, invite, export
 * and doctor ask it).
 *
 * @param config - The configuration (its `practiceRecipient` and `approvalKey`).
 * @param identity - The secret to check.
 * @returns What was found; the signing key P derives unless it is another identity.
 */
export async function checkPracticeIdentity(config: Pick<Config, "practiceRecipient" | "approvalKey">, identity: string): Promise<PracticeIdentityFinding> {
  if ((await recipientOf(identity)) !== config.practiceRecipient) return { kind: "other-identity" };
  const key = practiceSigningKey(identity);
  if (config.approvalKey !== null && config.approvalKey !== key.publicKey) return { kind: "other-approval-key", key };
  return { kind: "practice", key };
}

/**
 * Checks that an identity is this practice's P and returns the signing key derived from it.
 *
 * @param config - The configuration.
 * @param identity - P's secret.
 * @returns The practice signing key.
 * @throws {@link PraxmailError} `identity` for another identity, or one that does not derive
 *   the pinned approval key.
 */
export async function practiceKey(config: Config, identity: string): Promise<SigningKey> {
  const found = await checkPracticeIdentity(config, identity);
  if (found.kind === "other-identity") {
    throw new PraxmailError("identity", "the identity is not this practice's identity", "pass the identity created by praxmail init for this home");
  }
  if (found.kind === "other-approval-key") {
    throw new PraxmailError("identity", "the practice identity does not derive the approval key pinned in config.json", "run praxmail doctor; config.json may have been altered");
  }
  return found.key;
}

/**
 * Creates the portal signing key under home, unless one that matches `pinned` is there.
 *
 * @param home - The home.
 * @param pinned - The portal key pinned in the config, if any.
 * @returns The public key to pin.
 */
export async function ensurePortalKey(home: string, pinned: string | null): Promise<string> {
  const path = join(home, PORTAL_KEY_FILE);
  if (pinned !== null && existsSync(path) && loadPortalKey(home, pinned) !== null) return pinned;
  const seed = randomBytes(32);
  await writeSecretFile(path, seed);
  return signingKeyFromSeed(seed).publicKey;
}

/**
 * Uses up an invite's one approval: the portal signs at most one recipient per invite, ever.
 * The mark is a marker beside the blobs (a file under home; an object in the bucket, which
 * every node sees), out of reach of someone who can only write the database (who could
 * otherwise put a used invite's patient back to "no key yet").
 *
 * @param blobs - The store's blobs.
 * @param inviteId - The invite (`i_` and 12 characters, checked).
 * @returns True if the invite had not approved anybody until now.
 * @throws If the marker cannot be written (the invite then approves nobody).
 */
export async function consumeInvite(blobs: BlobStore, inviteId: string): Promise<boolean> {
  if (!/^i_[a-z0-9]{12}$/.test(inviteId)) return false;
  return blobs.mark(`${INVITES_DIR}/${inviteId}`);
}

/**
 * Marks again, after a restore, every invite that approved a patient: the marks are not in
 * the backup, and without them a used invite could approve a second key.
 *
 * @param ctx - The core context of the restored home.
 * @returns How many invites were marked.
 */
export async function markUsedInvites(ctx: Context): Promise<number> {
  let n = 0;
  for (const p of await ctx.store.records.patients()) {
    if (p.inviteId === null || parseApproval(p.approval)?.by !== "invite") continue;
    if (await consumeInvite(ctx.store.blobs, p.inviteId)) n++;
  }
  return n;
}

/**
 * @param home - The home.
 * @param pinned - The portal key pinned in the config.
 * @returns The portal signing key, or null when it is missing or is not the pinned one.
 */
export function loadPortalKey(home: string, pinned: string | null): SigningKey | null {
  try {
    const key = signingKeyFromSeed(readFileSync(join(home, PORTAL_KEY_FILE)));
    return key.publicKey === pinned ? key : null;
  } catch {
    return null;
  }
}

// Approval: unwrap wrap[P] with the practice identity, write wrap[U]. O(1) per delivery;
// no payload is read or re-encrypted. Each approval is signed with the practice signing key
// and bound to the safety code the admin was shown.
import { keyFingerprint, safetyCode, unwrapIdentity, wrapIdentity, type SigningKey } from "../crypto/index.js";
import type { DeliveryRow, PatientRow, StoreTx, WrapRow } from "../store/index.js";
import { saveConfig, type Config } from "./config.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { levelRules } from "./levels.js";
import { mustGetPatient, patientView, type PatientView } from "./patients.js";
import { practiceKey, signPracticeApproval, trustedRecipient } from "./trust.js";
import { loginLink } from "./tokens.js";
import { signCheckpoint } from "./checkpoints.js";

/** One approved patient and how many deliveries were released to them. */
export interface Approval {
  readonly email: string;
  readonly deliveries: number;
}

/** A patient to approve and the safety code the admin compared (any spacing). */
export interface ApprovalTarget {
  readonly email: string;
  readonly safetyCode: string;
}

/** A patient waiting for `praxmail approve`, with the deliveries that wait for them. */
export interface PendingPatient extends PatientView {
  readonly waiting: number;
  /** The patient's stored approval does not verify (see src/core/trust.ts). */
  readonly untrusted: boolean;
}

const digits = (code: string): string => code.replace(/\D/g, "");

async function waitingCount(ctx: Context, rows: StoreTx, email: string): Promise<number> {
  const now = ctx.now().toISOString();
  return (await rows.records.deliveries({ recipient: email, statuses: ["pending-approval"] })).filter((d) => levelRules(d.level).patientKey && d.expiresAt > now).length;
}

/**
 * The patients `praxmail approve` can act on: those waiting for approval, and approved
 * patients whose deliveries still wait (sent before an invite, or held back because their
 * approval does not verify).
 *
 * @param ctx - The core context.
 * @returns Patients, oldest registration first.
 */
export async function listPending(ctx: Context): Promise<PendingPatient[]> {
  const out: PendingPatient[] = [];
  for (const p of await ctx.store.records.patients()) {
    const waiting = await waitingCount(ctx, ctx.store, p.email);
    if (p.status === "pending-approval" || (p.status === "approved" && waiting > 0)) {
      out.push({ ...patientView(p), waiting, untrusted: (await trustedRecipient(ctx, ctx.store, p)).kind === "untrusted" });
    }
  }
  return out;
}

async function checkTarget(ctx: Context, rows: StoreTx, p: PatientRow, expected: string): Promise<void> {
  if (!(p.status === "pending-approval" || (p.status === "approved" && (await waitingCount(ctx, rows, p.email)) > 0)) || p.recipient === null) {
    const hint = p.status === "pending-secupass" ? "the patient has not set a Secu-Pass-Key yet" : "run praxmail list pending";
    throw new PraxmailError("wrong-state", `patient ${p.email} is ${p.status}, not pending approval`, hint);
  }
  const actual = safetyCode(p.recipient);
  if (p.safetyCode !== actual || digits(actual) !== digits(expected)) {
    throw new PraxmailError(
      "wrong-state",
      `the safety code of ${p.email} is now ${actual}, not the ${expected} that was compared; nothing was approved`,
      "the patient set a new Secu-Pass-Key: compare the new code with the patient, then run praxmail approve again",
    );
  }
}

/** A patient checked for approval, with the safety code the admin compared. */
interface Checked {
  readonly p: PatientRow;
  readonly expected: string;
}

/** The wraps to the patient of one approval, made outside the transaction. */
interface Rewrapped {
  readonly now: Date;
  readonly due: readonly DeliveryRow[];
  readonly wraps: readonly WrapRow[];
}

/** Checks every target before any is touched; each patient once. */
async function checkTargets(ctx: Context, targets: readonly ApprovalTarget[]): Promise<Checked[]> {
  const patients: Checked[] = [];
  for (const t of targets) {
    const p = await mustGetPatient(ctx.store, t.email);
    await checkTarget(ctx, ctx.store, p, t.safetyCode);
    if (!patients.some((q) => q.p.email === p.email)) patients.push({ p, expected: t.safetyCode });
  }
  return patients;
}

/** Unwraps wrap[P] of each of the patient's unexpired deliveries and wraps it to U. */
async function rewrap(ctx: Context, p: PatientRow, practiceIdentity: string, onDelivery?: (email: string, done: number, total: number) => void | Promise<void>): Promise<Rewrapped> {
  const recipient = p.recipient ?? "";
  const now = ctx.now();
  const at = now.toISOString();
  const due = (await ctx.store.records.deliveries({ recipient: p.email, statuses: ["pending-approval", "ready", "downloaded"] })).filter(
    (d) => levelRules(d.level).patientKey && d.expiresAt > at,
  );
  // Every wrap[P] in one read: one round trip on the shared backend, not one per delivery.
  const practiceWraps = await ctx.store.records.wraps(due.map((d) => d.id), "practice");
  const wraps: WrapRow[] = [];
  for (const d of due) {
    const wrapP = practiceWraps.get(d.id);
    if (!wrapP) throw new Error(`delivery ${d.id} has no practice wrap`);
    const identity = await unwrapIdentity(wrapP.ciphertext, practiceIdentity);
    wraps.push({ deliveryId: d.id, holder: "patient", recipient, ciphertext: await wrapIdentity(identity, recipient), createdAt: at });
    await onDelivery?.(p.email, wraps.length, due.length);
  }
  return { now, due, wraps };
}

/**
 * Commits one approval: the signed approval, the wraps, the released deliveries and the audit
 * row, if the patient's recipient still is the one wrapped to and still has the safety code
 * that was compared.
 */
async function commitApproval(ctx: Context, key: SigningKey, { p, expected }: Checked, { now, due, wraps }: Rewrapped): Promise<void> {
  const at = now.toISOString();
  await ctx.store.transaction(async (tx) => {
    const current = await tx.records.patient(p.email);
    // The patient's session may have posted a new recipient since the code was shown.
    if (!current || current.recipient !== (p.recipient ?? "")) {
      throw new PraxmailError(
        "wrong-state",
        `the Secu-Pass-Key of ${p.email} changed while approving; nothing was approved`,
        "compare the new safety code with the patient, then run praxmail approve again",
      );
    }
    await checkTarget(ctx, tx, current, expected);
    const signed: PatientRow = { ...current, status: "approved", approvedAt: current.approvedAt ?? at, approval: signPracticeApproval(key, current, at) };
    // The one rule for every wrap[U], here too: the new approval must verify against config.json.
    if ((await trustedRecipient(ctx, tx, signed)).kind !== "trusted") throw new Error("a fresh approval does not verify against the pinned key");
    for (const w of wraps) {
      await tx.records.putWrap(w);
      const d = due.find((x) => x.id === w.deliveryId);
      if (d?.status === "pending-approval") await tx.records.setDeliveryStatus(d.id, "ready", at);
    }
    await tx.records.updatePatient(signed);
    await tx.audit(
      { actor: ctx.actor, action: "patient.approve", subject: p.email, details: { safetyCode: current.safetyCode, deliveries: wraps.length, signed: true } },
      now,
    );
  });
}

/**
 * Approves patients, after checking every one of them first: either all given patients can
 * be approved, or none is touched. Each approval commits only if the patient's recipient
 * still has the safety code that was compared, and is signed with the practice signing key.
 *
 * @param ctx - The core context.
 * @param targets - Patients waiting for approval (or approved with waiting deliveries), each
 *   with the safety code the admin compared.
 * @param practiceIdentity - P's secret; must match `practiceRecipient` and the pinned approval key.
 * @param onDelivery - Progress: deliveries rewrapped so far for the current patient; awaited.
 * @returns One entry per patient.
 * @throws {@link PraxmailError} `identity`, `no-such-patient`, `wrong-state` (also when a
 *   safety code changed), or `mail` (after the approval itself was committed).
 */
export async function approvePatients(
  ctx: Context,
  targets: readonly ApprovalTarget[],
  practiceIdentity: string,
  onDelivery?: (email: string, done: number, total: number) => void | Promise<void>,
): Promise<Approval[]> {
  const key = await practiceKey(ctx.config, practiceIdentity);
  if (ctx.config.approvalKey === null) {
    throw new PraxmailError("identity", "no approval key is pinned in config.json yet", "run praxmail approve on this home once to pin it");
  }
  const out: Approval[] = [];
  const failures: string[] = [];
  for (const checked of await checkTargets(ctx, targets)) {
    const email = checked.p.email;
    const rewrapped = await rewrap(ctx, checked.p, practiceIdentity, onDelivery);
    await commitApproval(ctx, key, checked, rewrapped);
    out.push({ email, deliveries: rewrapped.wraps.length });
    try {
      // One released delivery: the link opens it; several: the list.
      const [only] = rewrapped.wraps.length === 1 ? rewrapped.wraps : [];
      const loginUrl = loginLink(ctx.config.portalUrl, email, only ? `/deliveries/${only.deliveryId}` : undefined);
      await ctx.notifier.send({ kind: "released", to: email, loginUrl, deliveries: rewrapped.wraps.length });
    } catch (e) {
      failures.push(`${email}: ${(e as Error).message}`);
    }
  }
  await signCheckpoint(ctx, practiceIdentity);
  if (failures.length > 0) {
    throw new PraxmailError(
      "mail",
      `approved, but the release mail could not be sent to ${failures.join("; ")}`,
      "check upstream in config.json and tell the patient yourself",
    );
  }
  return out;
}

/** What pinning the approval key in a home made before signed approvals did. */
export interface PinResult {
  readonly config: Config;
  readonly fingerprint: string;
  /** The approved patients whose approvals were signed, with their safety codes. */
  readonly signed: readonly { readonly email: string; readonly safetyCode: string | null }[];
}

/**
 * @param ctx - The core context.
 * @returns The approved patients that pinning would sign (a home without a pinned key).
 */
export async function unsignedApprovals(ctx: Context): Promise<PatientView[]> {
  return (await ctx.store.records.patients("approved")).map(patientView);
}

/**
 * Upgrades a home made before signed approvals: pins the approval key derived from P in
 * config.json and signs the approval of every patient approved until now, as they are.
 * Until then every wrap to a patient fails closed. Does nothing once a key is pinned.
 *
 * @param ctx - The core context.
 * @param practiceIdentity - P's secret.
 * @returns The new configuration and the approvals signed.
 * @throws {@link PraxmailError} `identity` for another identity.
 */
export async function pinApprovalKey(ctx: Context, practiceIdentity: string): Promise<PinResult> {
  const key = await practiceKey(ctx.config, practiceIdentity);
  const fingerprint = keyFingerprint(key.publicKey);
  if (ctx.config.approvalKey !== null) return { config: ctx.config, fingerprint, signed: [] };
  const now = ctx.now();
  const at = now.toISOString();
  const signed = await ctx.store.transaction(async (tx) => {
    const rows = (await tx.records.patients("approved")).filter((p) => p.recipient !== null && p.safetyCode === safetyCode(p.recipient));
    for (const p of rows) await tx.records.updatePatient({ ...p, approval: signPracticeApproval(key, p, at) });
    const list = rows.map((p) => ({ email: p.email, safetyCode: p.safetyCode }));
    await tx.audit({ actor: ctx.actor, action: "approval-key.pin", subject: fingerprint, details: { patients: list } }, now);
    return list;
  });
  // After the rows: a crash in between leaves the key unpinned, and every wrap fails closed.
  const config: Config = { ...ctx.config, approvalKey: key.publicKey };
  await saveConfig(ctx.home, config);
  return { config, fingerprint, signed };
}

// Approval: unwrap wrap[P] with the practice identity, write wrap[U]. O(1) per delivery;
// no payload is read or re-encrypted.
import { recipientOf, unwrapIdentity, wrapIdentity } from "../crypto/index.js";
import type { PatientRow, WrapRow } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { mustGetPatient } from "./patients.js";
import { signCheckpoint } from "./checkpoints.js";

/** One approved patient and how many deliveries were released to them. */
export interface Approval {
  readonly email: string;
  readonly deliveries: number;
}

/**
 * Approves patients that are waiting, after checking every one of them first: either all
 * given patients can be approved, or none is touched.
 *
 * @param ctx - The core context.
 * @param emails - Patients in status `pending-approval`.
 * @param practiceIdentity - P's secret; must match `practiceRecipient`.
 * @param onDelivery - Progress: deliveries rewrapped so far for the current patient.
 * @returns One entry per patient.
 * @throws {@link PraxmailError} `identity`, `no-such-patient`, `wrong-state`, or `mail` (after
 *   the approval itself was committed).
 */
export async function approvePatients(
  ctx: Context,
  emails: readonly string[],
  practiceIdentity: string,
  onDelivery?: (email: string, done: number, total: number) => void,
): Promise<Approval[]> {
  if ((await recipientOf(practiceIdentity)) !== ctx.config.practiceRecipient) {
    throw new PraxmailError("identity", "the identity is not this practice's identity", "pass the identity created by praxmail init for this home");
  }
  const patients: PatientRow[] = [];
  for (const email of emails) {
    const p = mustGetPatient(ctx, email);
    const waiting = ctx.store.records.deliveries({ recipient: p.email, statuses: ["pending-approval"] }).some((d) => d.level >= 3);
    // An approved patient (e.g. invited) may still have deliveries from before the key.
    if (!(p.status === "pending-approval" || (p.status === "approved" && waiting)) || p.recipient === null) {
      const hint = p.status === "pending-secupass" ? "the patient has not set a Secu-Pass-Key yet" : "run praxmail list pending";
      throw new PraxmailError("wrong-state", `patient ${p.email} is ${p.status}, not pending approval`, hint);
    }
    if (!patients.some((q) => q.email === p.email)) patients.push(p);
  }
  const out: Approval[] = [];
  const failures: string[] = [];
  for (const p of patients) {
    const recipient = p.recipient ?? "";
    const now = ctx.now();
    const at = now.toISOString();
    const due = ctx.store.records
      .deliveries({ recipient: p.email, statuses: ["pending-approval", "ready", "downloaded"] })
      .filter((d) => d.level >= 3 && d.expiresAt > at);
    const wraps: WrapRow[] = [];
    for (const d of due) {
      const wrapP = ctx.store.records.wrap(d.id, "practice");
      if (!wrapP) throw new Error(`delivery ${d.id} has no practice wrap`);
      const identity = await unwrapIdentity(wrapP.ciphertext, practiceIdentity);
      wraps.push({ deliveryId: d.id, holder: "patient", recipient, ciphertext: await wrapIdentity(identity, recipient), createdAt: at });
      onDelivery?.(p.email, wraps.length, due.length);
    }
    ctx.store.transaction(() => {
      const current = ctx.store.records.patient(p.email);
      if ((current?.status !== "pending-approval" && current?.status !== "approved") || current.recipient !== recipient) {
        throw new PraxmailError("wrong-state", `patient ${p.email} changed while approving`, "run praxmail approve again");
      }
      for (const w of wraps) {
        ctx.store.records.putWrap(w);
        const d = due.find((x) => x.id === w.deliveryId);
        if (d?.status === "pending-approval") ctx.store.records.setDeliveryStatus(d.id, "ready", at);
      }
      ctx.store.records.updatePatient({ ...current, status: "approved", approvedAt: current.approvedAt ?? at });
      ctx.store.audit(
        { actor: ctx.actor, action: "patient.approve", subject: p.email, details: { safetyCode: p.safetyCode, deliveries: wraps.length } },
        now,
      );
    });
    out.push({ email: p.email, deliveries: wraps.length });
    try {
      await ctx.notifier.send({ kind: "released", to: p.email, loginUrl: `${ctx.config.portalUrl}/login`, deliveries: wraps.length });
    } catch (e) {
      failures.push(`${p.email}: ${(e as Error).message}`);
    }
  }
  signCheckpoint(ctx, practiceIdentity);
  if (failures.length > 0) {
    throw new PraxmailError(
      "mail",
      `approved, but the release mail could not be sent to ${failures.join("; ")}`,
      "check upstream in config.json and tell the patient yourself",
    );
  }
  return out;
}

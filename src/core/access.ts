// Who may see what: the rules behind the portal. A link token names one delivery for one
// address; files and wraps are given only to that address's session (level 1: to the
// token itself, since its key rides in the link).
import { parseKdfParams, type KdfParams } from "../crypto/index.js";
import type { DeliveryRow, FileRow, PatientRow } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { levelRules } from "./levels.js";
import { hashToken } from "./tokens.js";

/** A delivery as its patient sees it. */
export interface PatientDelivery {
  readonly id: string;
  readonly level: number;
  readonly status: DeliveryRow["status"];
  readonly recipient: string;
  readonly sender: string;
  /** The subject as the practice wrote it; null at level 4 (sealed with the text) or when there was none. */
  readonly subject: string | null;
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly downloadedAt: string | null;
  readonly files: readonly { readonly id: string; readonly name: string; readonly size: number; readonly kind: FileRow["kind"] }[];
  /** For levels 3–4: how the browser derives the patient's identity. */
  readonly kdf: KdfParams | null;
  /** The level policy's answers the portal needs: the key rides in the link (1–2)... */
  readonly keyInLink: boolean;
  /** ...or the patient's own Secu-Pass-Key unwraps it (3–4). */
  readonly patientKey: boolean;
}

/** What a link leads to for the person holding it. */
export type LinkAccess =
  | { readonly kind: "gone"; readonly status: "revoked" | "expired" }
  /** Level 1: the link alone opens it. */
  | { readonly kind: "open"; readonly delivery: PatientDelivery }
  | { readonly kind: "register"; readonly email: string }
  | { readonly kind: "login"; readonly email: string }
  | { readonly kind: "secupass"; readonly email: string }
  | { readonly kind: "wait"; readonly email: string; readonly safetyCode: string }
  | { readonly kind: "other-account" }
  | { readonly kind: "deliver"; readonly delivery: PatientDelivery };

const ACTIVE = new Set(["pending-approval", "ready", "downloaded"]);

function view(ctx: Context, d: DeliveryRow, patient: PatientRow | undefined, files: readonly FileRow[]): PatientDelivery {
  const rules = levelRules(d.level);
  return {
    id: d.id,
    level: d.level,
    status: d.status,
    recipient: d.recipient,
    sender: ctx.config.practiceName,
    subject: d.subject,
    createdAt: d.createdAt,
    expiresAt: d.expiresAt,
    downloadedAt: d.downloadedAt,
    files: files.map((f) => ({ id: f.id, name: f.name, size: f.size, kind: f.kind })),
    kdf: rules.patientKey && patient?.kdf ? parseKdfParams(JSON.parse(patient.kdf)) : null,
    keyInLink: rules.keyInLink,
    patientKey: rules.patientKey,
  };
}

function ended(ctx: Context, d: DeliveryRow): "revoked" | "expired" | null {
  if (d.status === "revoked" || d.status === "expired") return d.status;
  return d.expiresAt <= ctx.now().toISOString() ? "expired" : null;
}

/**
 * Decides what a link shows to whom.
 *
 * @param ctx - The core context.
 * @param token - The token from `/d/<token>`.
 * @param sessionEmail - The logged-in patient, or null.
 * @returns What to show.
 * @throws {@link PraxmailError} `no-such-delivery` for an unknown token.
 */
export async function resolveLink(ctx: Context, token: string, sessionEmail: string | null): Promise<LinkAccess> {
  const row = /^[A-Za-z0-9_-]{43}$/.test(token) ? await ctx.store.records.token(hashToken(token)) : undefined;
  if (!row) throw new PraxmailError("no-such-delivery", "no such link");
  // The token names both: read together, one round trip's wait on the shared backend.
  const [d, patient] = await Promise.all([ctx.store.records.delivery(row.deliveryId), ctx.store.records.patient(row.email)]);
  if (d?.sentAt == null) throw new PraxmailError("no-such-delivery", "no such link");
  const gone = ended(ctx, d);
  if (gone) return { kind: "gone", status: gone };
  const rules = levelRules(d.level);
  if (!rules.login) return { kind: "open", delivery: view(ctx, d, patient, await ctx.store.records.files(d.id)) };
  if (patient?.status === "revoked") return { kind: "gone", status: "revoked" };
  if (!patient) return sessionEmail === null ? { kind: "register", email: row.email } : { kind: "other-account" };
  if (sessionEmail === null) return { kind: "login", email: row.email };
  if (sessionEmail !== row.email) return { kind: "other-account" };
  if (rules.patientKey && patient.status === "pending-secupass") return { kind: "secupass", email: row.email };
  if (rules.patientKey && patient.status === "pending-approval") return { kind: "wait", email: row.email, safetyCode: patient.safetyCode ?? "" };
  return { kind: "deliver", delivery: view(ctx, d, patient, await ctx.store.records.files(d.id)) };
}

/**
 * A delivery for its own patient.
 *
 * @param ctx - The core context.
 * @param id - The delivery.
 * @param email - The logged-in patient.
 * @returns The delivery.
 * @throws {@link PraxmailError} `no-such-delivery` if it is not theirs or not visible,
 *   `wrong-state` (with the status as message) if it was revoked or expired.
 */
export async function deliveryForPatient(ctx: Context, id: string, email: string): Promise<PatientDelivery> {
  // Read together (one round trip's wait on the shared backend); nothing of them leaves
  // before the checks below.
  const [d, patient, files] = await Promise.all([ctx.store.records.delivery(id), ctx.store.records.patient(email), ctx.store.records.files(id)]);
  if (d?.sentAt == null || d.recipient !== email) throw new PraxmailError("no-such-delivery", "no such delivery");
  const gone = ended(ctx, d);
  if (gone) throw new PraxmailError("wrong-state", gone);
  if (patient?.status === "revoked") throw new PraxmailError("wrong-state", "revoked");
  return view(ctx, d, patient, files);
}

/** A delivery that has ended, as its patient's list still shows it. */
export interface EndedDelivery {
  readonly id: string;
  readonly level: number;
  readonly status: "revoked" | "expired";
  /** As in {@link PatientDelivery}: null at level 4. */
  readonly subject: string | null;
  readonly createdAt: string;
  /** When it was revoked, or when its time ran out. */
  readonly endedAt: string;
}

/**
 * A patient's messages for their list, from one read of the patient and their deliveries:
 * the open ones (newest first, with their files) and the ended ones (revoked or expired,
 * newest first), whose files are gone but which the list still names, so that the patient
 * knows what happened and whom to ask.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @returns Both lists; empty for a revoked patient.
 */
export async function patientMessages(ctx: Context, email: string): Promise<{ list: PatientDelivery[]; ended: EndedDelivery[] }> {
  const [patient, rows] = await Promise.all([ctx.store.records.patient(email), ctx.store.records.deliveries({ recipient: email })]);
  if (patient?.status === "revoked") return { list: [], ended: [] };
  const now = ctx.now().toISOString();
  const active = rows.filter((d) => ACTIVE.has(d.status) && d.expiresAt > now && levelRules(d.level).login).reverse();
  // Every delivery's files in one read, not one per delivery.
  const files = await ctx.store.records.filesOf(active.map((d) => d.id));
  const gone: EndedDelivery[] = [];
  for (const d of rows) {
    const status = d.sentAt != null && levelRules(d.level).login ? ended(ctx, d) : null;
    if (status) gone.push({ id: d.id, level: d.level, status, subject: d.subject, createdAt: d.createdAt, endedAt: status === "revoked" ? (d.endedAt ?? d.expiresAt) : d.expiresAt });
  }
  return { list: active.map((d) => view(ctx, d, patient, files.get(d.id) ?? [])), ended: gone.reverse() };
}

/**
 * The active deliveries of a patient, newest first.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @returns Their deliveries.
 */
export async function deliveriesForPatient(ctx: Context, email: string): Promise<PatientDelivery[]> {
  return (await patientMessages(ctx, email)).list;
}

/**
 * The blob of one file, for download, recording the delivery's first download.
 *
 * @param ctx - The core context.
 * @param d - A delivery the caller may see (from resolveLink or deliveryForPatient).
 * @param fileId - One of its files.
 * @returns The blob's key (the caller reads the blob and its size from the store).
 * @throws {@link PraxmailError} `no-such-delivery` for a file of another delivery.
 */
export async function fileForDownload(ctx: Context, d: PatientDelivery, fileId: string): Promise<string> {
  const f = (await ctx.store.records.files(d.id)).find((x) => x.id === fileId);
  if (!f?.blob) throw new PraxmailError("no-such-delivery", "no such file");
  if (f.kind === "attachment") {
    const now = ctx.now();
    const first = await ctx.store.transaction(async (tx) => {
      const changed = await tx.records.markDownloaded(d.id, now.toISOString());
      if (changed) await tx.audit({ actor: ctx.actor, action: "delivery.download", subject: d.id }, now);
      return changed;
    });
    if (first && ctx.config.notifyOnDownload) {
      await ctx.notifier.send({ kind: "downloaded", to: ctx.config.practiceEmail, patient: d.recipient, deliveryId: d.id, at: now });
    }
  }
  ctx.meter?.downloaded();
  return f.blob;
}

/**
 * The patient's wrap of a delivery identity (levels 3–4), which only their Secu-Pass-Key opens.
 *
 * @param ctx - The core context.
 * @param d - A delivery of the logged-in patient.
 * @returns The wrap (an age file).
 * @throws {@link PraxmailError} `wrong-state` if the patient is not approved yet.
 */
export async function patientWrap(ctx: Context, d: PatientDelivery): Promise<Uint8Array> {
  const w = await ctx.store.records.wrap(d.id, "patient");
  if (!d.patientKey || !w) throw new PraxmailError("wrong-state", "no wrap for the patient yet");
  return w.ciphertext;
}

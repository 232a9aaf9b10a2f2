// The end of a delivery: revoke, expire, garbage collection. Ending a delivery deletes its
// wraps and blobs (crypto-shred); the rows stay as a record, and so does the link token's
// hash, so that an old link answers 410 instead of 404.
import type { DeliveryRow, FileRow, StoreTx } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { LOGIN_FROM } from "./levels.js";
import { discardDelivery } from "./deliveries.js";
import { dropUnfinishedReplies } from "./replies.js";
import { mustGetPatient } from "./patients.js";
import { loginLink } from "./tokens.js";

const ACTIVE = ["pending-approval", "ready", "downloaded"] as const;

/** A delivery as `list deliveries` shows it (DESIGN.md §5). */
export interface DeliveryView {
  readonly id: string;
  readonly recipient: string;
  readonly level: number;
  readonly status: DeliveryRow["status"];
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly downloadedAt: string | null;
  readonly files: readonly { name: string; size: number; blob: string | null }[];
}

function view(d: DeliveryRow, files: readonly FileRow[]): DeliveryView {
  return {
    id: d.id,
    recipient: d.recipient,
    level: d.level,
    status: d.status,
    createdAt: d.createdAt,
    expiresAt: d.expiresAt,
    downloadedAt: d.downloadedAt,
    files: files.filter((f) => f.kind === "attachment").map((f) => ({ name: f.name, size: f.size, blob: f.blob })),
  };
}

/**
 * @param ctx - The core context.
 * @returns Every delivery, oldest first.
 */
export async function listDeliveries(ctx: Context): Promise<DeliveryView[]> {
  const rows = await ctx.store.records.deliveries();
  const files = await ctx.store.records.filesOf(rows.map((d) => d.id));
  return rows.map((d) => view(d, files.get(d.id) ?? []));
}

/**
 * @param ctx - The core context.
 * @param id - A delivery id.
 * @returns The delivery.
 * @throws {@link PraxmailError} `no-such-delivery`.
 */
export async function getDelivery(ctx: Context, id: string): Promise<DeliveryView> {
  const d = await ctx.store.records.delivery(id);
  if (d?.sentAt == null) throw new PraxmailError("no-such-delivery", `no such delivery ${JSON.stringify(id)}`, "run praxmail list deliveries");
  return view(d, await ctx.store.records.files(id));
}

/** Ends deliveries inside the caller's transaction. @returns The blobs to delete after it. */
async function shred(ctx: Context, tx: StoreTx, ids: readonly string[], status: "revoked" | "expired", action: string, now: Date): Promise<string[]> {
  const out: string[] = [];
  for (const id of ids) {
    const blobs = await tx.records.shred(id);
    await tx.records.setDeliveryStatus(id, status, now.toISOString());
    await tx.audit({ actor: ctx.actor, action, subject: id, details: { blobs: blobs.length } }, now);
    out.push(...blobs);
  }
  return out;
}

async function end(ctx: Context, ids: readonly string[], status: "revoked" | "expired", action: string): Promise<void> {
  const now = ctx.now();
  const blobs = await ctx.store.transaction((tx) => shred(ctx, tx, ids, status, action, now));
  // Rows first, files second: the database never points at a deleted blob. If deleting a
  // file fails now, gc removes it later as an orphan.
  await ctx.store.blobs.remove(blobs);
}

/**
 * Revokes one delivery: deletes its files, wraps and link.
 *
 * @param ctx - The core context.
 * @param id - The delivery.
 * @returns The delivery as it is now.
 * @throws {@link PraxmailError} `no-such-delivery` or `wrong-state`.
 */
export async function revokeDelivery(ctx: Context, id: string): Promise<DeliveryView> {
  const d = await getDelivery(ctx, id);
  if (d.status === "revoked" || d.status === "expired") {
    throw new PraxmailError("wrong-state", `delivery ${id} is already ${d.status}`);
  }
  await end(ctx, [id], "revoked", "delivery.revoke");
  return await getDelivery(ctx, id);
}

/**
 * Revokes a patient, in one transaction: every active delivery to them (crypto-shred), every
 * session and passkey, and every flow still open for them (a begun Secu-Pass reset, reset links, invites
 * for the address, replies being uploaded). Each of those flows re-reads the patient in its
 * own transaction and refuses a revoked one, so nothing begun before can finish after.
 *
 * @param ctx - The core context.
 * @param email - The patient.
 * @returns The ids of the revoked deliveries.
 * @throws {@link PraxmailError} `no-such-patient` or `wrong-state`.
 */
export async function revokePatient(ctx: Context, email: string): Promise<string[]> {
  const addr = (await mustGetPatient(ctx.store, email)).email;
  const now = ctx.now();
  const at = now.toISOString();
  const { ids, blobs } = await ctx.store.transaction(async (tx) => {
    const p = await mustGetPatient(tx, addr);
    if (p.status === "revoked") throw new PraxmailError("wrong-state", `patient ${p.email} is already revoked`);
    const ids = (await tx.records.deliveries({ recipient: p.email, statuses: ACTIVE })).map((d) => d.id);
    const blobs = await shred(ctx, tx, ids, "revoked", "delivery.revoke", now);
    const replies = await tx.accounts.uploadingRepliesOf(p.email);
    for (const r of replies) blobs.push(...(await tx.accounts.deleteReply(r.id)));
    await tx.records.updatePatient({ ...p, status: "revoked", revokedAt: at });
    const details = {
      deliveries: ids.length,
      sessions: await tx.records.deleteSessionsOf(p.email),
      passkeys: await tx.passkeys.deletePasskeysOf(p.email),
      resetLinks: await tx.accounts.endResetsOf(p.email, at),
      invites: await tx.accounts.revokeInvitesFor(p.email, at),
      unfinishedReplies: replies.length,
    };
    await tx.audit({ actor: ctx.actor, action: "patient.revoke", subject: p.email, details }, now);
    return { ids, blobs };
  });
  await ctx.store.blobs.remove(blobs);
  return ids;
}

/**
 * Reminds patients of deliveries they have not collected and that expire within
 * `deliveries.remindBeforeDays` (once per delivery; off at 0).
 *
 * @param ctx - The core context.
 * @returns How many reminders were sent.
 */
export async function sendReminders(ctx: Context): Promise<number> {
  const days = ctx.config.deliveries.remindBeforeDays;
  if (days === 0) return 0;
  const now = ctx.now();
  const due = await ctx.store.records.dueForReminder(new Date(now.getTime() + days * 86_400_000).toISOString(), now.toISOString(), LOGIN_FROM);
  for (const d of due) {
    await ctx.notifier.send({ kind: "reminder", to: d.recipient, loginUrl: loginLink(ctx.config.portalUrl, d.recipient, `/deliveries/${d.id}`), expiresAt: new Date(d.expiresAt) });
    await ctx.store.transaction(async (tx) => {
      await tx.records.markReminded(d.id, now.toISOString());
      await tx.audit({ actor: ctx.actor, action: "delivery.remind", subject: d.id }, now);
    });
  }
  return due.length;
}

/**
 * Deletes portal sessions that have ended (idle for `portal.idleMinutes`, or older than
 * `portal.sessionHours`) and attempt counters whose window has passed. The portal refuses
 * such a session anyway; this removes the rows.
 *
 * @param ctx - The core context.
 * @returns How many sessions were deleted.
 */
export async function purgeSessions(ctx: Context): Promise<number> {
  const now = ctx.now().getTime();
  const { idleMinutes, sessionHours } = ctx.config.portal;
  return ctx.store.transaction(async (tx) => {
    await tx.attempts.purge(now);
    return tx.records.deleteEndedSessions(new Date(now - idleMinutes * 60_000).toISOString(), new Date(now - sessionHours * 3_600_000).toISOString());
  });
}

/** What gc says when it did nothing because another process holds its lock. */
export const GC_BUSY = "another node is running gc";

/**
 * Runs fn under gc's lock: one process of all the nodes on a store at a time expires,
 * reminds and discards (else two would both mail a reminder and audit each expiry twice).
 * Does not wait for the lock.
 *
 * @param ctx - The core context.
 * @param fn - gc's work, or serve's hourly reminders.
 * @returns What fn returns, or null (fn not run) while another process holds the lock.
 */
export function oneNodeAtATime<T>(ctx: Context, fn: () => Promise<T>): Promise<T | null> {
  return ctx.store.exclusive("gc", fn);
}

/** What gc did. */
export interface GcReport {
  readonly expired: readonly string[];
  readonly reminded: number;
  /** Portal sessions that had ended. */
  readonly sessions: number;
  /** Replies whose upload never finished. */
  readonly unfinishedReplies: number;
  /** Deliveries whose send was interrupted (their mail was never accepted). */
  readonly unsent: number;
  readonly orphanBlobs: number;
  readonly tempFiles: number;
}

/**
 * Expires what is due and deletes blob files that no row references.
 *
 * @param ctx - The core context.
 * @param graceMs - Leave unreferenced files younger than this alone: a running relay may
 *   have written them for a delivery it has not committed yet.
 * @returns What was removed.
 */
export async function collectGarbage(ctx: Context, graceMs: number): Promise<GcReport> {
  const now = ctx.now();
  const expired = (await ctx.store.records.dueForExpiry(now.toISOString())).map((d) => d.id);
  await end(ctx, expired, "expired", "delivery.expire");
  const unsent = await ctx.store.records.unsentBefore(new Date(now.getTime() - graceMs).toISOString());
  for (const id of unsent) await discardDelivery(ctx, id, "send interrupted");
  const unfinishedReplies = await dropUnfinishedReplies(ctx, new Date(now.getTime() - Math.max(graceMs, 60 * 60_000)));
  const reminded = await sendReminders(ctx);
  const sessions = await purgeSessions(ctx);
  const referenced = await ctx.store.records.referencedBlobs();
  let orphanBlobs = 0;
  let tempFiles = 0;
  for (const f of await ctx.store.blobs.scan()) {
    if (referenced.has(f.key) || now.getTime() - f.mtime.getTime() < graceMs) continue;
    await ctx.store.blobs.removeScanned(f.key);
    if (f.temp) tempFiles++;
    else orphanBlobs++;
  }
  if (expired.length + unsent.length + orphanBlobs + tempFiles > 0) {
    await ctx.store.transaction((tx) =>
      tx.audit({ actor: ctx.actor, action: "gc", details: { expired: expired.length, unsent: unsent.length, orphanBlobs, tempFiles } }, now),
    );
  }
  return { expired, reminded, sessions, unsent: unsent.length, unfinishedReplies, orphanBlobs, tempFiles };
}

// Signed audit checkpoints. The hash chain alone can be rebuilt by whoever writes the
// database; a checkpoint signs (seq, hash of row seq, at) with the practice signing key, and
// verification trusts only the public key pinned in config.json. Each checkpoint sits on an
// `audit.checkpoint` row of its own and signs that row, so removing any checkpoint but the
// newest means rewriting the chain under a later one. The newest ones an attacker can drop:
// an anchor (seq:hash) kept outside the database closes that gap.
import { keyFingerprint, practiceSigningKey, signStatement, statement, verifyStatement, type SigningKey } from "../crypto/index.js";
import type { AuditRow, CheckpointRow, StoreTx } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";

const KIND = "praxmail audit checkpoint v1";
const ACTION = "audit.checkpoint";
const TAMPERED_HINT = "the log was altered outside praxmail; keep a copy of the database for investigation";

/** A signed checkpoint: the practice vouches for rows 1..seq. */
export type Checkpoint = CheckpointRow;

/** A row and its hash that the admin kept outside the database. */
export interface AuditAnchor {
  readonly seq: number;
  readonly hash: string;
}

/** What `audit --verify` found in an intact log. */
export interface AuditReport {
  readonly rows: number;
  /** Fingerprint of the approval key pinned in config.json; null in a home made before it. */
  readonly key: string | null;
  /** Signed checkpoints, all verified. */
  readonly checkpoints: number;
  readonly lastCheckpoint: Checkpoint | null;
  /** The anchor given, which matched. */
  readonly anchor: AuditAnchor | null;
  /** Rows 1..confirmed are covered by a signed checkpoint or the anchor (0: none). */
  readonly confirmed: number;
  /** Rows after the last checkpoint and anchor: intact as a chain, but nothing vouches for them. */
  readonly unconfirmed: { readonly count: number; readonly from: number; readonly to: number } | null;
}

type Outcome =
  | { readonly ok: true; readonly report: AuditReport; /** Of the last row. */ readonly hash: string }
  | { readonly ok: false; readonly seq: number; readonly reason: string };

function signedText(c: Omit<Checkpoint, "signature">): string {
  return statement(KIND, [String(c.seq), c.hash, c.at]);
}

// Call inside a transaction, so that checkpoints and rows are read from the same state. With
// base (an earlier outcome), only the rows and checkpoints after base's last row are checked.
async function check(ctx: Context, tx: StoreTx, anchor: AuditAnchor | undefined, base?: Extract<Outcome, { ok: true }>): Promise<Outcome> {
  const pinned = ctx.config.approvalKey;
  const after = base?.report.rows ?? 0;
  const stored = new Map((await tx.auditCheckpoints()).filter((c) => c.seq > after).map((c) => [c.seq, c]));
  const v = await tx.verifyAudit(
    (row: AuditRow) => {
      const c = stored.get(row.seq);
      if (row.action === ACTION && c === undefined) {
        return "no signed checkpoint is stored for this checkpoint row: a row before it was deleted or inserted, or the checkpoint removed";
      }
      if (row.action === ACTION && pinned === null) return "a signed checkpoint is here, but config.json pins no approval key (it was removed)";
      if (c !== undefined && pinned !== null) {
        if (!verifyStatement(pinned, signedText(c), c.signature)) return "checkpoint signature does not verify against the approval key pinned in config.json";
        if (c.hash !== row.hash) return "signed checkpoint no longer matches the chain: a row up to here was deleted, altered or inserted";
      }
      if (anchor?.seq === row.seq && anchor.hash !== row.hash) return "the anchor's hash no longer matches the chain: a row up to here was deleted, altered or inserted";
      return null;
    },
    base && { seq: after, hash: base.hash },
  );
  if (!v.ok) return v;
  // A checkpoint or anchor beyond the last row: the end of the chain was cut off.
  const beyond = [...(pinned === null ? [] : stored.keys()), anchor?.seq ?? 0].filter((s) => s > v.rows);
  if (beyond.length > 0) {
    const seq = Math.min(...beyond);
    const what = stored.has(seq) ? "a signed checkpoint" : "the anchor";
    return { ok: false, seq, reason: `row is missing, but ${what} names it: rows were deleted from the end` };
  }
  const valid = pinned === null ? [] : [...stored.values()];
  const lastCheckpoint = valid.at(-1) ?? base?.report.lastCheckpoint ?? null;
  const kept = anchor ?? base?.report.anchor ?? null;
  const confirmed = Math.max(lastCheckpoint?.seq ?? 0, kept?.seq ?? 0);
  return {
    ok: true,
    hash: v.hash,
    report: {
      rows: v.rows,
      key: pinned === null ? null : keyFingerprint(pinned),
      checkpoints: (base?.report.checkpoints ?? 0) + valid.length,
      lastCheckpoint,
      anchor: kept,
      confirmed,
      unconfirmed: confirmed < v.rows ? { count: v.rows - confirmed, from: confirmed + 1, to: v.rows } : null,
    },
  };
}

/**
 * Checks the audit log: recomputes the hash chain, verifies every checkpoint's signature
 * against `config.approvalKey` (never a key from the database), and checks that every
 * checkpoint, and the anchor if given, still matches its row.
 *
 * @param ctx - The core context.
 * @param anchor - A row and hash the admin kept, e.g. from an earlier `--sign`.
 * @returns What is confirmed and what is not.
 * @throws {@link PraxmailError} `wrong-state` naming the first row that does not fit.
 */
export async function verifyAuditLog(ctx: Context, anchor?: AuditAnchor): Promise<AuditReport> {
  const r = await ctx.store.snapshot((tx) => check(ctx, tx, anchor));
  if (!r.ok) throw new PraxmailError("wrong-state", `audit chain broken at row ${r.seq}: ${r.reason}`, TAMPERED_HINT);
  return r.report;
}

function signingKey(practiceIdentity: string, pinned: string): SigningKey {
  let key: SigningKey | undefined;
  try {
    key = practiceSigningKey(practiceIdentity);
  } catch {
    // Not a native age identity: no signing key can come from it.
  }
  if (key?.publicKey !== pinned) {
    throw new PraxmailError("identity", "the identity does not match the approval key pinned in config.json", "pass the identity created by praxmail init for this home");
  }
  return key;
}

/**
 * Signs a checkpoint over the whole audit log, after verifying it: appends an
 * `audit.checkpoint` row and signs (seq, hash, at) of that row. When the newest row already
 * is a signed checkpoint, returns that one instead.
 *
 * @param ctx - The core context.
 * @param practiceIdentity - P's secret; its signing key must be the one pinned in config.json.
 * @returns The checkpoint and whether it is new, or null in a home that pins no approval key.
 * @throws {@link PraxmailError} `identity` for another identity, `wrong-state` if the log
 *   does not verify (nothing is signed then).
 */
export async function signCheckpoint(ctx: Context, practiceIdentity: string): Promise<{ checkpoint: Checkpoint; created: boolean } | null> {
  const pinned = ctx.config.approvalKey;
  if (pinned === null) return null;
  const key = signingKey(practiceIdentity, pinned);
  // Verify the whole log without blocking writers, then, holding the write lock, only what
  // was appended meanwhile.
  const before = await ctx.store.snapshot((tx) => check(ctx, tx, undefined));
  return ctx.store.transaction(async (tx) => {
    const r = before.ok ? await check(ctx, tx, undefined, before) : before;
    if (!r.ok) {
      throw new PraxmailError("wrong-state", `audit chain broken at row ${r.seq}: ${r.reason}; no checkpoint was signed`, TAMPERED_HINT);
    }
    const last = r.report.lastCheckpoint;
    if (last !== null && last.seq === r.report.rows) return { checkpoint: last, created: false };
    const row = await tx.audit({ actor: ctx.actor, action: ACTION, details: { key: r.report.key } }, ctx.now());
    const signed = { seq: row.seq, hash: row.hash, at: row.at };
    const checkpoint = { ...signed, signature: signStatement(key, signedText(signed)) };
    await tx.putCheckpoint(checkpoint);
    return { checkpoint, created: true };
  });
}

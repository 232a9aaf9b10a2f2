// Moving a practice from the embedded backend (SQLite and files under home) to the shared
// one (PostgreSQL and S3): `praxmail migrate`. The order makes it resumable: every blob
// first, each read back and compared by SHA-256; then every row and the audit row of the
// migration in one transaction of the target, so that the rows are either all there or
// not at all. A run that was killed is simply run again: blobs that are there already and
// equal are kept, and a target whose rows are there says so. The home's database and blob
// files are only read; config.json names the shared backend at the end.
import { TransferError, copyBlob, copyRows, tablesWithRows, type Store, type StoreTx } from "../store/index.js";
import { databaseWhere, saveConfig, type SharedBackend } from "./config.js";
import { verifyAuditLog } from "./checkpoints.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { markUsedInvites } from "./trust.js";

/** The audit action of a migration, in the target's log. */
const ACTION = "migrate";
/**
 * Tables whose rows stay behind. Sessions: each is a live bearer credential of a browser
 * (its cookie's hash), and a move is a cut-over; patients log in again on the new nodes.
 */
const LEFT_BEHIND = ["sessions"];

/** Progress of a migration. */
export type MigrateProgress =
  | { readonly phase: "blobs"; readonly done: number; readonly total: number; readonly bytes: number }
  | { readonly phase: "rows"; readonly table: string; readonly rows: number };

/** What a migration needs besides the context and the target. */
export interface MigrateOptions {
  /** The target, as it goes into config.json. */
  readonly shared: SharedBackend;
  readonly progress?: (p: MigrateProgress) => void;
}

/** What a migration did. */
export interface MigrateReport {
  /** The target held this home's rows already (an earlier run got that far): nothing was copied. */
  readonly alreadyDone: boolean;
  /** Blobs the home names, all in the bucket and checked. */
  readonly blobs: number;
  readonly bytes: number;
  /** Blobs that an interrupted run had copied already (checked, not written again). */
  readonly resumed: number;
  /** Rows copied, by table (empty when alreadyDone). */
  readonly rows: Readonly<Record<string, number>>;
  /** Rows of the target's audit log, chain and signed checkpoints verified. */
  readonly auditRows: number;
}

/** The last row of the home's audit chain, which the migration row names. */
interface Head {
  readonly seq: number;
  readonly hash: string;
}

async function headOf(tx: StoreTx, rows: number): Promise<Head> {
  let head: Head = { seq: 0, hash: "" };
  for await (const r of tx.auditRows(Math.max(rows - 1, 0))) head = { seq: r.seq, hash: r.hash };
  return head;
}

/**
 * @returns Whether the target holds this home's rows, copied by an earlier run: its chain
 *   has the home's last row, and after it this practice's migration row.
 */
async function migratedHere(tx: StoreTx, head: Head, recipient: string): Promise<boolean> {
  let matched = head.seq === 0;
  for await (const r of tx.auditRows(Math.max(head.seq - 1, 0))) {
    if (r.seq === head.seq) matched = r.hash === head.hash;
    else if (r.seq === head.seq + 1) {
      const d = JSON.parse(r.details) as { practiceRecipient?: unknown; auditHead?: { seq?: unknown; hash?: unknown } };
      return matched && r.action === ACTION && d.practiceRecipient === recipient && d.auditHead?.seq === head.seq && d.auditHead.hash === head.hash;
    }
  }
  return false;
}

function transferFailure(e: unknown, shared: SharedBackend): unknown {
  if (!(e instanceof TransferError)) return e;
  const hints: Record<TransferError["code"], string> = {
    schema: `the database at ${databaseWhere(shared.database)} was set up by another praxmail version; use the same version on both sides`,
    mismatch: `the bucket ${shared.blobs} does not keep what it is given; check the S3 server, then run praxmail migrate again`,
    foreign: `give an empty bucket or prefix; praxmail migrate never merges two practices`,
  };
  return new PraxmailError("wrong-state", e.message, hints[e.code], { cause: e });
}

/**
 * Copies the home's practice into an empty shared backend, checks it there, and then names
 * the backend in config.json. Run again after an interruption, it goes on where it stopped.
 *
 * @param ctx - The context of the home, on its embedded store (praxmail serve stopped).
 * @param target - The shared store, open.
 * @param opts - The target's URLs, progress.
 * @returns What was copied and checked.
 * @throws {@link PraxmailError} `wrong-state` if the home uses the shared backend already,
 *   its audit chain is broken, it changed during the run, or the target holds another
 *   practice's rows or blobs; `wrong-state` if a blob does not read back as written.
 */
export async function migratePractice(ctx: Context, target: Store, opts: MigrateOptions): Promise<MigrateReport> {
  if (ctx.config.shared !== null) {
    throw new PraxmailError("wrong-state", `${ctx.home} uses the shared backend already (config.json names it)`, "praxmail migrate moves a home on SQLite and files into the shared backend");
  }
  // A broken chain is refused before anything is copied: the target would inherit it.
  const audit = await verifyAuditLog(ctx);
  try {
    const report = await ctx.store.snapshot(async (source) => {
      const head = await headOf(source, audit.rows);
      if (head.seq !== audit.rows) throw new PraxmailError("wrong-state", `${ctx.home} changed while praxmail migrate ran`, "stop praxmail serve on this home, then run praxmail migrate again");
      const holding = await target.snapshot(tablesWithRows);
      if (holding.length > 0) {
        if (await target.snapshot((tx) => migratedHere(tx, head, ctx.config.practiceRecipient))) {
          const keys = await source.records.referencedBlobs();
          return { alreadyDone: true, blobs: keys.size, bytes: 0, resumed: keys.size, rows: {} };
        }
        throw new PraxmailError(
          "wrong-state",
          `the database at ${databaseWhere(opts.shared.database)} holds another practice's data (rows in ${holding.join(", ")})`,
          "give an empty database; praxmail migrate never merges two practices",
        );
      }
      return copyPractice(ctx, source, target, head, opts);
    });
    // Rows written to the home after its snapshot (a praxmail serve still running) are not in
    // the target: then the home must not switch over.
    const later = await ctx.store.snapshot(async (tx) => (await headOf(tx, audit.rows + 1)).seq);
    if (later > audit.rows) {
      throw new PraxmailError(
        "wrong-state",
        `${ctx.home} changed while praxmail migrate ran (audit rows after row ${String(audit.rows)}); config.json still names SQLite and files`,
        "stop praxmail serve on this home, give an empty database and bucket prefix, and run praxmail migrate again",
      );
    }
    const verified = await verifyAuditLog({ ...ctx, store: target });
    await markUsedInvites({ ...ctx, store: target });
    await saveConfig(ctx.home, { ...ctx.config, shared: opts.shared });
    return { ...report, auditRows: verified.rows };
  } catch (e) {
    throw transferFailure(e, opts.shared);
  }
}

/** Copies the blobs (checked), then the rows and the migration's audit row in one transaction. */
async function copyPractice(ctx: Context, source: StoreTx, target: Store, head: Head, opts: MigrateOptions): Promise<Omit<MigrateReport, "auditRows">> {
  const keys = [...(await source.records.referencedBlobs())].sort();
  const wanted = new Set(keys);
  const present = new Set((await target.blobs.scan()).filter((b) => !b.temp).map((b) => b.key));
  const foreign = [...present].filter((k) => !wanted.has(k));
  if (foreign.length > 0) {
    throw new TransferError("foreign", `${opts.shared.blobs} holds ${foreign.length} blob(s) that this home does not name, e.g. ${foreign[0] ?? ""}`);
  }
  let bytes = 0;
  let resumed = 0;
  for (const [i, key] of keys.entries()) {
    const copied = await copyBlob(ctx.store.blobs, target.blobs, key, present.has(key));
    bytes += copied.size;
    if (copied.present) resumed++;
    opts.progress?.({ phase: "blobs", done: i + 1, total: keys.length, bytes });
  }
  const rows = await target.transaction(async (tx) => {
    const counts = await copyRows(source, tx, LEFT_BEHIND, (table, n) => opts.progress?.({ phase: "rows", table, rows: n }));
    await tx.audit(
      {
        actor: ctx.actor,
        action: ACTION,
        subject: opts.shared.blobs,
        details: { from: ctx.home, database: databaseWhere(opts.shared.database), practiceRecipient: ctx.config.practiceRecipient, auditHead: head, blobs: keys.length, bytes },
      },
      ctx.now(),
    );
    return counts;
  });
  return { alreadyDone: false, blobs: keys.length, bytes, resumed, rows };
}

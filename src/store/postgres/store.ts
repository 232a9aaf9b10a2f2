// The shared backend: rows in PostgreSQL, blobs in an S3 bucket, for several praxmail nodes
// at once. Write transactions of every node run one at a time, as SQLite's do on one
// machine: each takes one transaction-scoped advisory lock first. That keeps the core's
// transactions correct unchanged (a read-then-write never loses an update, and the audit
// chain is appended in order across nodes) at the cost of parallel writes, which a
// practice's load does not need. Reads outside a transaction run in parallel and see
// committed state; a snapshot is a REPEATABLE READ, READ ONLY transaction.
import { AuditWalk, fromChanged, nextAuditRow, type AuditEntry, type AuditRow, type AuditVerdict, type CheckpointRow } from "../audit.js";
import { TxGuard, type OpenTx } from "../guard.js";
import type { AccountStore, AttemptStore, BlobStore, RecordStore, Store, StoreTx } from "../types.js";
import { PgAccounts } from "./accounts.js";
import { PgAttempts } from "./attempts.js";
import { connectPostgres, type Pool, type Query } from "./connect.js";
import { migratePostgres } from "./migrate.js";
import { PgRecords } from "./records.js";

/** The advisory lock every write transaction holds ("prax" "wrtx" in ASCII). */
const WRITE_LOCK = (0x70726178_77727478n).toString();
/** How long {@link PostgresStore.close} lets running queries finish. */
const CLOSE_SECONDS = 5;
/** Rows of audit read per query of {@link PgRows.auditRows}. */
const AUDIT_PAGE = 500;
const AUDIT_COLS = `seq, at, actor, action, subject, details, prev_hash AS "prevHash", hash`;

/**
 * A query function that asks first whether it may run.
 *
 * @param q - The pool or a transaction's connection.
 * @param refused - Returns why a call may not run now, or null.
 * @returns The same query function, refusing when refused() says so.
 */
function checked(q: Query, refused: () => Error | null): Query {
  const guard = <T>(run: () => T): T => {
    const why = refused();
    if (why) throw why;
    return run();
  };
  const tag = ((...args: Parameters<Query>) => guard(() => (q as (...a: Parameters<Query>) => ReturnType<Query>)(...args))) as unknown as Query;
  return Object.assign(tag, {
    unsafe: (...args: Parameters<Query["unsafe"]>) => guard(() => q.unsafe(...args)),
    array: (...args: Parameters<Query["array"]>) => q.array(...args),
  });
}

/** Rows and the audit chain on one query function. */
class PgRows implements StoreTx {
  readonly records: RecordStore;
  readonly accounts: AccountStore;
  readonly attempts: AttemptStore;

  constructor(
    protected readonly q: Query,
    atomically: <T>(fn: (q: Query) => Promise<T>) => Promise<T>,
  ) {
    this.records = new PgRecords(q);
    this.accounts = new PgAccounts(q);
    this.attempts = new PgAttempts(q, atomically);
  }

  async audit(entry: AuditEntry, at: Date): Promise<AuditRow> {
    const [last] = await this.q<{ seq: number; hash: string }[]>`SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`;
    const row = nextAuditRow(last, entry, at);
    await this.q`INSERT INTO audit (seq, at, actor, action, subject, details, prev_hash, hash)
      VALUES (${row.seq}, ${row.at}, ${row.actor}, ${row.action}, ${row.subject}, ${row.details}, ${row.prevHash}, ${row.hash})`;
    return row;
  }

  async *auditRows(after = 0): AsyncIterable<AuditRow> {
    for (let seq = after; ; ) {
      const page = await this.q.unsafe<AuditRow[]>(`SELECT ${AUDIT_COLS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT ${AUDIT_PAGE}`, [seq]);
      yield* page;
      const last = page.at(-1);
      if (page.length < AUDIT_PAGE || !last) return;
      seq = last.seq;
    }
  }

  async putCheckpoint(c: CheckpointRow): Promise<void> {
    await this.q`INSERT INTO audit_checkpoints (seq, hash, at, signature) VALUES (${c.seq}, ${c.hash}, ${c.at}, ${c.signature})`;
  }

  auditCheckpoints(): Promise<CheckpointRow[]> {
    return this.q<CheckpointRow[]>`SELECT seq, hash, at, signature FROM audit_checkpoints ORDER BY seq`;
  }

  async verifyAudit(check?: (row: AuditRow) => string | null, from?: { readonly seq: number; readonly hash: string }): Promise<AuditVerdict> {
    if (from && from.seq > 0) {
      const [r] = await this.q<{ hash: string }[]>`SELECT hash FROM audit WHERE seq = ${from.seq}`;
      const moved = fromChanged(from, r?.hash);
      if (moved) return moved;
    }
    const walk = new AuditWalk(check, from);
    for await (const r of this.auditRows(walk.rows)) {
      const broken = walk.feed(r);
      if (broken) return broken;
    }
    return walk.end();
  }
}

/** PostgreSQL rows and S3 blobs, shared by every node. */
export class PostgresStore extends PgRows implements Store {
  private readonly guard: TxGuard;

  private constructor(
    private readonly pool: Pool,
    readonly blobs: BlobStore,
    guard: TxGuard,
    private readonly release: () => void,
  ) {
    const outer = checked(pool, () => guard.outerCall());
    // Attempt counters need no write lock: their upserts are atomic; a transaction makes
    // several claims all or nothing.
    super(outer, async <R>(fn: (q: Query) => Promise<R>): Promise<R> => {
      const refused = guard.outerCall();
      if (refused) throw refused;
      return (await pool.begin((tx) => fn(tx))) as R;
    });
    this.guard = guard;
  }

  /**
   * Connects to the database and migrates it (one node at a time).
   *
   * @param url - `postgres://…`.
   * @param blobs - Where the blobs live.
   * @param release - Frees what the blobs hold (their client) when the store closes.
   * @returns The store.
   */
  static async open(url: string, blobs: BlobStore, release: () => void = () => undefined): Promise<PostgresStore> {
    const pool = connectPostgres(url);
    try {
      await migratePostgres(pool);
    } catch (e) {
      await pool.end();
      throw e;
    }
    return new PostgresStore(pool, blobs, new TxGuard(), release);
  }

  /** Outside a transaction, an audit row still needs the write lock to chain in order. */
  override audit(entry: AuditEntry, at: Date): Promise<AuditRow> {
    return this.transaction((tx) => tx.audit(entry, at));
  }

  /** Outside a transaction, the walk reads one consistent state. */
  override verifyAudit(...args: Parameters<StoreTx["verifyAudit"]>): Promise<AuditVerdict> {
    return this.snapshot((tx) => tx.verifyAudit(...args));
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.run("ISOLATION LEVEL READ COMMITTED", true, fn);
  }

  snapshot<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.run("ISOLATION LEVEL REPEATABLE READ READ ONLY", false, fn);
  }

  private async run<T>(mode: string, write: boolean, fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    this.guard.beginning();
    const result: unknown = await this.pool.begin(mode, async (tx) => {
      if (write) await tx`SELECT pg_advisory_xact_lock(${WRITE_LOCK}::bigint)`;
      return this.guard.run((state: OpenTx) => {
        // Attempts inside a transaction are atomic through a savepoint of it.
        const q = checked(tx, () => TxGuard.handleCall(state));
        return fn(new PgRows(q, async <R>(work: (sp: Query) => Promise<R>): Promise<R> => (await tx.savepoint((sp) => work(sp))) as R));
      });
    });
    return result as T;
  }

  backup(): Promise<never> {
    return Promise.reject(new Error("backup of the shared backend is not built yet (issue 14, item 4)"));
  }

  async ping(): Promise<void> {
    await this.q`SELECT 1`;
  }

  async close(): Promise<void> {
    // Queries get CLOSE_SECONDS to finish; then their connections are ended regardless. The
    // client waits forever otherwise for a query it failed when its connection died, and a
    // node stopped after PostgreSQL had restarted never exited (test/scaleout.failures.test.ts).
    await this.pool.end({ timeout: CLOSE_SECONDS });
    this.release();
  }
}

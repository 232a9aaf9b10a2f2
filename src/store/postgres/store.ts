// The shared backend: rows in PostgreSQL, blobs in an S3 bucket, for several praxmail nodes
// at once. Write transactions of every node run one at a time, as SQLite's do on one
// machine: each takes one transaction-scoped advisory lock first. That keeps the core's
// transactions correct unchanged (a read-then-write never loses an update, and the audit
// chain is appended in order across nodes) at the cost of parallel writes, which a
// practice's load does not need. Reads outside a transaction run in parallel and see
// committed state; a snapshot is a REPEATABLE READ, READ ONLY transaction.
import { mkdtemp, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { AuditWalk, fromChanged, nextAuditRow, type AuditEntry, type AuditRow, type AuditVerdict, type CheckpointRow } from "../audit.js";
import { backupFrom, type BackupManifest, type BackupOptions, type BackupSource } from "../backup.js";
import { DB_FILE } from "../db.js";
import { EmbeddedStore } from "../embedded.js";
import { TxGuard, type OpenTx } from "../guard.js";
import { copyRows } from "../transfer.js";
import type postgres from "postgres";
import { IDENTIFIER } from "../tables.js";
import type { AccountStore, AttemptStore, BlobStore, PasskeyStore, RecordStore, Store, StoreTx, TableRow } from "../types.js";
import { PgAccounts } from "./accounts.js";
import { PgAttempts } from "./attempts.js";
import { connectPostgres, type Pool, type Query } from "./connect.js";
import { migratePostgres } from "./migrate.js";
import { PgPasskeys } from "./passkeys.js";
import { PgRecords } from "./records.js";
import { PIN_PRACTICE, PRACTICE_COLS, type PracticeRow } from "../practice.js";

/** The advisory lock every write transaction holds ("prax" "wrtx" in ASCII). */
const WRITE_LOCK = (0x70726178_77727478n).toString();
/** The first key of every named lock ("prax" in ASCII); the second is the name's hash. */
const NAMED_LOCKS = 0x70726178;
const LOCK_NAME = /^[a-z]{1,32}$/;
/** How long {@link PostgresStore.close} lets running queries finish. */
const CLOSE_SECONDS = 5;
/** Rows of audit read per query of {@link PgRows.auditRows}, and rows per page of tableRows and insertRows. */
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
  readonly passkeys: PasskeyStore;

  constructor(
    protected readonly q: Query,
    atomically: <T>(fn: (q: Query) => Promise<T>) => Promise<T>,
  ) {
    this.records = new PgRecords(q);
    this.accounts = new PgAccounts(q);
    this.attempts = new PgAttempts(q, atomically);
    this.passkeys = new PgPasskeys(q);
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

  async tables(): Promise<Map<string, string[]>> {
    const rows = await this.q<{ table: string; column: string }[]>`SELECT table_name AS "table", column_name AS "column" FROM information_schema.columns
      WHERE table_schema = current_schema() AND table_name <> 'schema_migrations' ORDER BY table_name, ordinal_position`;
    const out = new Map<string, string[]>();
    for (const r of rows) out.set(r.table, [...(out.get(r.table) ?? []), r.column]);
    return out;
  }

  async *tableRows(table: string): AsyncIterable<TableRow> {
    if (!IDENTIFIER.test(table)) throw new Error(`not a table name: ${JSON.stringify(table)}`);
    // Ordered by the first column (each table's key or the start of it), so that two reads agree.
    for await (const page of this.q.unsafe<TableRow[]>(`SELECT * FROM "${table}" ORDER BY 1`).cursor(AUDIT_PAGE)) yield* page;
  }

  async insertRows(table: string, rows: readonly TableRow[]): Promise<void> {
    const columns = Object.keys(rows[0] ?? {});
    if (![table, ...columns].every((n) => IDENTIFIER.test(n))) throw new Error(`not a table or column name in ${JSON.stringify(table)}`);
    for (let i = 0; i < rows.length; i += AUDIT_PAGE) {
      await this.q`INSERT INTO ${this.q(table)} ${this.q(rows.slice(i, i + AUDIT_PAGE) as Record<string, postgres.ParameterOrJSON<never>>[], columns)}`;
    }
  }
}

/** PostgreSQL rows and S3 blobs, shared by every node. */
export class PostgresStore extends PgRows implements Store {
  private readonly guard: TxGuard;

  private constructor(
    private readonly url: string,
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
    return new PostgresStore(url, pool, blobs, new TxGuard(), release);
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

  /**
   * The lock is a session-level advisory lock on a connection of its own, which is closed
   * afterwards: closing the session is what releases it, so no pooled connection can keep
   * it by mistake, and a node that dies (or loses its connection) frees it.
   */
  async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T | null> {
    if (!LOCK_NAME.test(name)) throw new Error(`invalid lock name ${JSON.stringify(name)}`);
    const session = connectPostgres(this.url, 1);
    try {
      const [row] = await session<{ ok: boolean }[]>`SELECT pg_try_advisory_lock(${NAMED_LOCKS}, hashtext(${name})) AS ok`;
      return row?.ok ? await fn() : null;
    } finally {
      await session.end({ timeout: CLOSE_SECONDS });
    }
  }

  async practice(): Promise<PracticeRow | undefined> {
    const [row] = await this.q.unsafe<PracticeRow[]>(`SELECT ${PRACTICE_COLS} FROM practice WHERE id = 1`);
    return row;
  }

  async pinPractice(p: PracticeRow): Promise<PracticeRow> {
    await this.q.unsafe(PIN_PRACTICE, [p.practiceEmail, p.practiceRecipient, p.approvalKey, p.portalKey, p.pinnedAt]);
    const row = await this.practice();
    if (!row) throw new Error("the practice row is missing right after pinning it");
    return row;
  }

  /**
   * Backs up in the embedded backend's format: the rows of one snapshot written into a new
   * SQLite database of the same schema (in home, then sealed), and the blobs it names
   * streamed out of the bucket.
   */
  backup(dest: string, opts: BackupOptions): Promise<BackupManifest> {
    const home = opts.home;
    if (home === undefined) return Promise.reject(new Error("a backup of the shared backend needs the home (BackupOptions.home) for its files"));
    return backupFrom(this.backupSource(home), dest, opts);
  }

  private backupSource(home: string): BackupSource {
    return {
      scratch: home,
      snapshotInto: async (file) => {
        // A folder of its own beside file, 0700, for the database's -wal while it is written.
        const folder = await mkdtemp(join(dirname(file), ".snapshot-"));
        try {
          const copy = EmbeddedStore.open(folder);
          try {
            await this.snapshot((from) => copy.transaction((to) => copyRows(from, to)));
          } finally {
            await copy.close();
          }
          await rename(join(folder, DB_FILE), file);
        } finally {
          await rm(folder, { recursive: true, force: true });
        }
      },
      openBlob: async (key) => {
        try {
          await this.blobs.size(key);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
          throw e;
        }
        return this.blobs.read(key);
      },
    };
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

// The embedded backend: SQLite (better-sqlite3, synchronous) and blob files under home,
// behind the asynchronous store interface. One connection serves the whole process, so at
// most one transaction is open on it at a time: an async mutex queues transactions, and a
// call on the store outside a transaction waits while another task's transaction is open
// (else it would run inside it). Without an open transaction a call runs at once.
import type { Database } from "better-sqlite3";
import { AccountRecords } from "./accounts.js";
import { AttemptRecords } from "./attempts.js";
import { appendAudit, appendCheckpoint, auditCheckpoints, auditPage, verifyAudit, type AuditRow } from "./audit.js";
import { backupHome } from "./backup.js";
import { FileBlobs } from "./blobs.js";
import { openDatabase } from "./db.js";
import { TxGuard, type OpenTx } from "./guard.js";
import { tryLock } from "./lock.js";
import { PasskeyRecords } from "./passkeys.js";
import { pinPractice, practiceOf, type PracticeRow } from "./practice.js";
import { Records } from "./records.js";
import { insertTableRows, tableColumns, tablePage } from "./tables.js";
import type { AccountStore, AttemptStore, BlobStore, PasskeyStore, RecordStore, Store, StoreTx, TableRow } from "./types.js";

/** The methods of a synchronous row class, each returning a Promise instead. */
type Promised<T> = { [K in keyof T]: T[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<R> : never };

/**
 * Wraps every method of a synchronous row class so that it runs through a gate.
 *
 * @param rows - An instance of Records, AccountRecords, AttemptRecords or PasskeyRecords.
 * @param gate - Runs synchronous work on the connection when it may.
 * @returns The same methods, asynchronous.
 */
function promised<T extends object>(rows: T, gate: <R>(work: () => R) => Promise<R>): Promised<T> {
  const out: Record<string, unknown> = {};
  for (const name of Object.getOwnPropertyNames(Object.getPrototypeOf(rows))) {
    const method = (rows as Record<string, unknown>)[name];
    if (name !== "constructor" && typeof method === "function") out[name] = (...args: unknown[]) => gate(() => method.apply(rows, args) as unknown);
  }
  return out as Promised<T>;
}

/**
 * @param work - Synchronous work.
 * @returns Its result, or its exception, as a Promise.
 */
function settle<R>(work: () => R): Promise<R> {
  try {
    return Promise.resolve(work());
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
}

/** Rows read per step of {@link StoreTx.auditRows} and {@link StoreTx.tableRows}. */
const AUDIT_PAGE = 500;

/** The rows and the audit chain on one connection; every call passes {@link gate}. */
abstract class Rows implements StoreTx {
  readonly records: RecordStore;
  readonly accounts: AccountStore;
  readonly attempts: AttemptStore;
  readonly passkeys: PasskeyStore;

  constructor(protected readonly db: Database) {
    const gate = <R>(work: () => R): Promise<R> => this.gate(work);
    this.records = promised(new Records(db), gate);
    this.accounts = promised(new AccountRecords(db), gate);
    this.attempts = promised(new AttemptRecords(db), gate);
    this.passkeys = promised(new PasskeyRecords(db), gate);
  }

  /** Runs synchronous work on the connection when it may, as a Promise. */
  protected abstract gate<R>(work: () => R): Promise<R>;

  audit(...args: Parameters<StoreTx["audit"]>): Promise<AuditRow> {
    return this.gate(() => appendAudit(this.db, ...args));
  }

  async *auditRows(after = 0): AsyncIterable<AuditRow> {
    // Page by page: an open iterator would hold the connection across the awaits between rows.
    for (let seq = after; ; ) {
      const page = await this.gate(() => auditPage(this.db, seq, AUDIT_PAGE));
      yield* page;
      const last = page.at(-1);
      if (page.length < AUDIT_PAGE || !last) return;
      seq = last.seq;
    }
  }

  putCheckpoint(...args: Parameters<StoreTx["putCheckpoint"]>): Promise<void> {
    return this.gate(() => {
      appendCheckpoint(this.db, ...args);
    });
  }

  auditCheckpoints(): ReturnType<StoreTx["auditCheckpoints"]> {
    return this.gate(() => auditCheckpoints(this.db));
  }

  verifyAudit(...args: Parameters<StoreTx["verifyAudit"]>): ReturnType<StoreTx["verifyAudit"]> {
    return this.gate(() => verifyAudit(this.db, ...args));
  }

  tables(): Promise<Map<string, string[]>> {
    return this.gate(() => tableColumns(this.db));
  }

  async *tableRows(table: string): AsyncIterable<TableRow> {
    for (let after = 0; ; ) {
      const page = await this.gate(() => tablePage(this.db, table, after, AUDIT_PAGE));
      yield* page.rows;
      if (page.rows.length < AUDIT_PAGE) return;
      after = page.last;
    }
  }

  insertRows(table: string, rows: readonly TableRow[]): Promise<void> {
    return this.gate(() => {
      insertTableRows(this.db, table, rows);
    });
  }
}

/** The handle a transaction body gets: runs at once while its transaction is open. */
class TxRows extends Rows {
  constructor(
    db: Database,
    private readonly state: OpenTx,
  ) {
    super(db);
  }

  protected gate<R>(work: () => R): Promise<R> {
    const refused = TxGuard.handleCall(this.state);
    return refused ? Promise.reject(refused) : settle(work);
  }
}

/** SQLite rows, blob files and the audit chain of one home. */
export class EmbeddedStore extends Rows implements Store {
  readonly blobs: BlobStore;
  /** Settles when the open transaction ends; undefined while none is open. */
  private busy: Promise<void> | undefined;
  private readonly guard = new TxGuard();

  private constructor(
    db: Database,
    private readonly home: string,
  ) {
    super(db);
    this.blobs = new FileBlobs(home);
  }

  /**
   * Opens the store of a home, creating and migrating the database as needed.
   *
   * @param home - An existing, writable folder.
   * @returns The store.
   */
  static open(home: string): EmbeddedStore {
    return new EmbeddedStore(openDatabase(home), home);
  }

  /**
   * Calls on the store itself run at once when no transaction is open, after it when
   * another task's is, and are refused from inside a transaction body (they would wait for
   * the body's own transaction forever).
   */
  protected gate<R>(work: () => R): Promise<R> {
    const refused = this.guard.outerCall();
    if (refused) return Promise.reject(refused);
    return this.busy ? this.whenIdle(work) : settle(work);
  }

  /** Runs work once no transaction is open: checked and run in one step, so none can start between. */
  private async whenIdle<R>(work: () => R): Promise<R> {
    while (this.busy) await this.busy;
    return work();
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.run("BEGIN IMMEDIATE", fn);
  }

  snapshot<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.run("BEGIN DEFERRED", fn);
  }

  private async run<T>(begin: string, fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    this.guard.beginning();
    while (this.busy) await this.busy;
    let end = (): void => undefined;
    this.busy = new Promise<void>((resolve) => (end = resolve));
    try {
      this.db.exec(begin);
      try {
        const result = await this.guard.run((state) => fn(new TxRows(this.db, state)));
        this.db.exec("COMMIT");
        return result;
      } catch (e) {
        if (this.db.inTransaction) this.db.exec("ROLLBACK");
        throw e;
      }
    } finally {
      this.busy = undefined;
      end();
    }
  }

  async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T | null> {
    const release = tryLock(this.home, name);
    if (release === null) return null;
    try {
      return await fn();
    } finally {
      release();
    }
  }

  practice(): Promise<PracticeRow | undefined> {
    return this.gate(() => practiceOf(this.db));
  }

  pinPractice(p: PracticeRow): Promise<PracticeRow> {
    return this.gate(() => pinPractice(this.db, p));
  }

  backup(...args: Parameters<Store["backup"]>): ReturnType<Store["backup"]> {
    return backupHome(this.home, ...args);
  }

  ping(): Promise<void> {
    return this.gate(() => {
      this.db.prepare("SELECT 1").get();
    });
  }

  close(): Promise<void> {
    return this.whenIdle(() => {
      this.db.close();
    });
  }
}

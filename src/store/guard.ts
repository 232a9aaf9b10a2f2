// The rules every backend enforces around transactions, in one place: a transaction body
// works through its handle (tx) only; the store itself, a nested transaction and a handle
// kept past its transaction's end are refused with an Error that names the mistake.
import { AsyncLocalStorage } from "node:async_hooks";

/** One transaction's state, as AsyncLocalStorage carries it into the body's awaits. */
export interface OpenTx {
  open: boolean;
}

/** Tracks which task is inside which transaction body. */
export class TxGuard {
  private readonly inside = new AsyncLocalStorage<OpenTx>();

  /** @returns Why a call on the store itself may not run here, or null if it may. */
  outerCall(): Error | null {
    return this.inside.getStore()?.open ? new Error("store: called on the store inside a transaction; use the transaction's handle (tx) passed to the body") : null;
  }

  /** @throws If the calling task is inside a transaction body already. */
  beginning(): void {
    if (this.inside.getStore()?.open) throw new Error("store: a transaction was started inside another; use the handle (tx) of the open one");
  }

  /**
   * @param state - The transaction's state.
   * @returns Why its handle may not be used any more, or null while it is open.
   */
  static handleCall(state: OpenTx): Error | null {
    return state.open ? null : new Error("store: the transaction has ended; its handle (tx) is no longer usable");
  }

  /**
   * Runs a transaction body, marking its task as inside the transaction; the state is
   * closed when the body settles.
   *
   * @param fn - The body.
   * @returns What it returns.
   */
  async run<T>(fn: (state: OpenTx) => Promise<T>): Promise<T> {
    const state: OpenTx = { open: true };
    try {
      return await this.inside.run(state, () => fn(state));
    } finally {
      state.open = false;
    }
  }
}

// Cleanup after a failure, for every layer: a cleanup step that throws never replaces the
// failure. It lives here, at the bottom, so that the store uses it too; core re-exports it
// (src/core/errors.ts) with the log fields of what failed.

// Cleanup failures of an error that was rethrown unchanged (Java's suppressed exceptions).
const suppressed = new WeakMap<Error, unknown[]>();

/**
 * Runs cleanup steps after a failure. A step that throws does not stop the others and never
 * replaces the failure: it is kept for {@link suppressedBy}, which the adapter logs with it.
 *
 * @param failure - What went wrong first.
 * @param steps - The cleanup steps, in order.
 * @returns The failure as an Error, to rethrow.
 */
export async function cleanUpAfter(failure: unknown, steps: readonly (() => unknown)[]): Promise<Error> {
  const e = failure instanceof Error ? failure : new Error(String(failure));
  for (const step of steps) {
    try {
      await step();
    } catch (c) {
      suppressed.set(e, [...(suppressed.get(e) ?? []), c]);
    }
  }
  return e;
}

/**
 * @param e - A failure that was rethrown.
 * @returns What its cleanup steps threw ({@link cleanUpAfter}), in order; empty if nothing.
 */
export function suppressedBy(e: unknown): readonly unknown[] {
  return (e instanceof Error ? suppressed.get(e) : undefined) ?? [];
}

/** Codes of the errors a user can act on. The CLI maps `usage` to exit 2, the rest to 1. */
export type ErrorCode =
  | "usage"
  | "not-initialised"
  | "home-not-writable"
  | "invalid-config"
  | "invalid-input"
  | "no-such-delivery"
  | "no-such-patient"
  | "wrong-state"
  | "identity"
  | "file"
  | "too-large"
  | "mail"
  | "backend";

/** An error with a message and hint meant for the person at the keyboard. */
export class PraxmailError extends Error {
  /**
   * @param code - What kind of failure; callers branch on this, never on the message.
   * @param message - Lowercase, no trailing period (age style).
   * @param hint - What to do about it.
   * @param options - `cause`: the failure underneath, kept for the CLI's debug output.
   */
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly hint?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "PraxmailError";
  }
}

/** What a log line may say about an error. */
export interface ErrorFields {
  readonly name: string;
  readonly code: string | number | null;
  readonly message: string;
}

/**
 * What a log line may say about an error: its class, its code and the first line of its
 * message with paths cut out. Never its stack or a cause's text, which may quote file names,
 * addresses or bytes of a message.
 *
 * @param e - Anything thrown.
 * @returns Fields for a pino line's `err`.
 */
export function errorFields(e: unknown): ErrorFields {
  const err = e instanceof Error ? (e as Error & { code?: unknown }) : null;
  const code = typeof err?.code === "string" || typeof err?.code === "number" ? err.code : null;
  const first = (err ? err.message : String(e)).split("\n")[0] ?? "";
  return { name: err?.name ?? typeof e, code, message: first.replace(/(?:\/[^\s'",):]+)+/g, "<path>").slice(0, 200) };
}

// Cleanup failures of an error that was rethrown unchanged (Java's suppressed exceptions).
const suppressed = new WeakMap<Error, unknown[]>();

/**
 * Runs cleanup steps after a failure. A step that throws does not stop the others and never
 * replaces the failure: it is kept for {@link cleanupFailures}, which the adapter logs with it.
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
 * The cleanup failures kept with an error by {@link cleanUpAfter}, as the adapter logs them
 * on the failure's one line.
 *
 * @param e - A failure that was rethrown.
 * @returns `{ cleanup: [...] }` with each failure's log fields, or nothing when cleanup went well.
 */
export function cleanupFailures(e: unknown): { cleanup?: ErrorFields[] } {
  const failed = e instanceof Error ? suppressed.get(e) : undefined;
  return failed ? { cleanup: failed.map(errorFields) } : {};
}

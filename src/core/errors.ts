import { cleanUpAfter, suppressedBy } from "../store/index.js";

export { cleanUpAfter };

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

/**
 * The cleanup failures kept with an error by {@link cleanUpAfter}, as the adapter logs them
 * on the failure's one line.
 *
 * @param e - A failure that was rethrown.
 * @returns `{ cleanup: [...] }` with each failure's log fields, or nothing when cleanup went well.
 */
export function cleanupFailures(e: unknown): { cleanup?: ErrorFields[] } {
  const failed = suppressedBy(e);
  return failed.length > 0 ? { cleanup: failed.map(errorFields) } : {};
}

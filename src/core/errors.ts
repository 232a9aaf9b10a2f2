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
  | "mail";

/** An error with a message and hint meant for the person at the keyboard. */
export class PraxmailError extends Error {
  /**
   * @param code - What kind of failure; callers branch on this, never on the message.
   * @param message - Lowercase, no trailing period (age style).
   * @param hint - What to do about it.
   */
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = "PraxmailError";
  }
}

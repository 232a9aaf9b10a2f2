/** Why a message was not accepted, with the SMTP reply the relay or milter gives. */
export class MailRejection extends Error {
  /**
   * @param responseCode - 451 (try again), 552 (too large), 554 (refused for good).
   * @param message - The reason, sent to the client after the code.
   * @param enhanced - The RFC 3463 status code, e.g. `4.3.0`.
   */
  constructor(
    readonly responseCode: 451 | 452 | 552 | 554,
    message: string,
    readonly enhanced: string,
  ) {
    super(message);
    this.name = "MailRejection";
  }
}

/**
 * A refusal's reason for the log: the enhanced code and praxmail's own text, with what it
 * quotes from the message (an address, a header value) cut out.
 *
 * @param e - The refusal.
 * @returns E.g. `5.6.0 X-Praxmail-Level must be a number from 0 to 4, not "…"`.
 */
export function loggableReason(e: MailRejection): string {
  return `${e.enhanced} ${e.message.replace(/"(?:[^"\\]|\\.)*"/g, '"…"')}`;
}

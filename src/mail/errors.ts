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

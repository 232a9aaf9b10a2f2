// Attempt limits (login, registration, Secu-Pass reset, invites), counted in the store: they
// hold across a restart and across processes that share one database. An attempt is
// reserved before the work it guards (scrypt, a mail), atomically, so parallel requests can
// never all pass the check before any of them is counted; what must not count is given back.
import { createHash } from "node:crypto";
import type { Store } from "../store/index.js";

/** A limit: attempts per fixed window. */
export interface Limit {
  readonly name: string;
  readonly max: number;
  readonly windowMs: number;
}

/** Every limit of the portal. */
export const LIMITS = {
  /** Failed logins per IP, across accounts. */
  loginIp: { name: "login-ip", max: 30, windowMs: 15 * 60_000 },
  /** Asks for login parameters per IP (each is one step of a login, successful or not). */
  loginParamsIp: { name: "login-params-ip", max: 100, windowMs: 15 * 60_000 },
  /** Failed logins per address, whether or not it has an account. */
  loginAccount: { name: "login-account", max: 5, windowMs: 15 * 60_000 },
  /** Registrations through a link per IP. */
  registerIp: { name: "register-ip", max: 10, windowMs: 60 * 60_000 },
  /** Password reset requests per IP. */
  resetIp: { name: "reset-ip", max: 10, windowMs: 60 * 60_000 },
  /** Reset mails per address. */
  resetAddress: { name: "reset-address", max: 3, windowMs: 60 * 60_000 },
  /** Passkey login challenges handed out per IP (each is a row until used or ended). */
  passkeyIp: { name: "passkey-ip", max: 60, windowMs: 15 * 60_000 },
  /** Wrong invite codes or addresses per IP. */
  inviteIp: { name: "invite-ip", max: 10, windowMs: 15 * 60_000 },
} as const satisfies Record<string, Limit>;

/** Attempts held by one request. */
export interface Reservation {
  /** Gives the attempts back: what they guarded turned out not to count. */
  release(): Promise<void>;
}

// Keys are hashed: a typed "address" is sometimes a password, and it is not kept in clear.
const keyOf = (limit: Limit, subject: string): string => createHash("sha256").update(`${limit.name}\n${subject}`).digest("hex");

/** The portal's limits over the counters of a store. */
export class Limits {
  /**
   * @param store - Where the counters live.
   * @param now - The clock in milliseconds.
   */
  constructor(
    private readonly store: Store,
    private readonly now: () => number,
  ) {}

  /**
   * Counts one attempt under each limit, or under none when any of them is used up.
   *
   * @param claims - Pairs of a limit and its subject, e.g. `[LIMITS.loginIp, req.ip]`.
   * @returns The reservation, or null when the request must be refused (429).
   */
  async reserve(...claims: (readonly [Limit, string])[]): Promise<Reservation | null> {
    const held = await this.store.attempts.reserve(
      claims.map(([l, s]) => ({ key: keyOf(l, s), max: l.max, windowMs: l.windowMs })),
      this.now(),
    );
    return held && { release: () => this.store.attempts.release(held) };
  }

  /**
   * Forgets the attempts of a subject (an account after a successful login).
   *
   * @param limit - The limit.
   * @param subject - Its subject.
   */
  clear(limit: Limit, subject: string): Promise<void> {
    return this.store.attempts.clear(keyOf(limit, subject));
  }
}

// Server-side sessions in the store. The cookie holds 32 random bytes; the database holds only
// their SHA-256. A row is written only at login: a visitor who is not logged in has none, so
// a flood of requests without a cookie writes nothing. Logging in issues a new id, so an id
// planted before login is worthless afterwards. A session ends after `portal.idleMinutes`
// without a request and `portal.sessionHours` after login however active; ended rows are
// deleted when seen and by `purgeSessions` (serve's timer, gc).
//
// CSRF. A logged-in form carries the token of the session row. A form shown before login
// (login, registration, password reset, invite) carries a double-submit token instead: a
// random value in its own cookie, set when such a form is rendered, that the form repeats.
// Another site can neither read that value nor make the browser send the cookie with its
// request (HttpOnly, SameSite=Strict), and on https the `__Host-` prefix keeps a subdomain
// or a plain-http answer from planting one. We chose it over a row per visitor because a row
// per page view let anyone fill the table.
import { randomBytes } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { PraxmailError, hashToken, sameSecret, type Context } from "../core/index.js";

/** The session of the current request. */
export interface Session {
  /** SHA-256 of the cookie value: names the session in the database; null before login. */
  readonly idHash: string | null;
  readonly email: string | null;
  /** The CSRF token a form of this visitor must carry; null while there is none yet. */
  readonly csrf: string | null;
  /** The request carried a session that ended, and why: inactivity or its lifetime. */
  readonly expired: "idle" | "lifetime" | null;
}

/** Cookie settings that follow from the portal URL. */
export interface CookiePolicy {
  readonly name: string;
  /** The cookie of the double-submit CSRF token of a visitor who is not logged in. */
  readonly csrfName: string;
  readonly secure: boolean;
}

/**
 * @param portalUrl - The public base URL.
 * @returns `__Host-` cookies with Secure on https; plain names on http (tests, localhost).
 */
export function cookiePolicy(portalUrl: string): CookiePolicy {
  const secure = portalUrl.startsWith("https:");
  const name = secure ? "__Host-praxmail" : "praxmail";
  return { name, csrfName: `${name}-csrf`, secure };
}

const TOKEN = /^[\w-]{43}$/;
/** How often a session's last_seen is written. */
const TOUCH_EVERY_MS = 60_000;

/** Sessions over the store of one context. */
export class Sessions {
  constructor(
    private readonly ctx: Context,
    private readonly policy: CookiePolicy,
  ) {}

  private setCookie(reply: FastifyReply, name: string, value: string): void {
    reply.setCookie(name, value, { path: "/", httpOnly: true, sameSite: "strict", secure: this.policy.secure });
  }

  private clearCookie(reply: FastifyReply): void {
    reply.clearCookie(this.policy.name, { path: "/", httpOnly: true, sameSite: "strict", secure: this.policy.secure });
  }

  /** The visitor's double-submit token, if the request carries a well-formed one. */
  private visitorToken(req: FastifyRequest): string | null {
    const v = req.cookies[this.policy.csrfName];
    return v !== undefined && TOKEN.test(v) ? v : null;
  }

  /**
   * The session of a request. Writes no row: an unknown or ended id is dropped (row and
   * cookie), and the visitor is not logged in.
   *
   * @param req - The request.
   * @param reply - Where an ended session's cookie is cleared.
   * @returns The session.
   */
  async get(req: FastifyRequest, reply: FastifyReply): Promise<Session> {
    const cookie = req.cookies[this.policy.name];
    if (cookie === undefined) return { idHash: null, email: null, csrf: this.visitorToken(req), expired: null };
    const row = TOKEN.test(cookie) ? await this.ctx.store.records.session(hashToken(cookie)) : undefined;
    let expired: Session["expired"] = null;
    if (row) {
      const now = this.ctx.now().getTime();
      const idleSince = now - Date.parse(row.lastSeen);
      const age = now - Date.parse(row.createdAt);
      const idle = idleSince > this.ctx.config.portal.idleMinutes * 60_000;
      if (!idle && age < this.ctx.config.portal.sessionHours * 3_600_000) {
        // Recorded at most once a minute: a committed write per request (every page and
        // download) cost the portal 40% of its CPU. A session may so end up to a minute
        // early, never late.
        if (idleSince >= TOUCH_EVERY_MS) await this.ctx.store.records.touchSession(row.idHash, new Date(now).toISOString());
        return { idHash: row.idHash, email: row.email, csrf: row.csrf, expired: null };
      }
      await this.ctx.store.records.deleteSession(row.idHash);
      if (row.email !== null) expired = idle ? "idle" : "lifetime";
    }
    // An unknown or ended id: the browser forgets it.
    this.clearCookie(reply);
    return { idHash: null, email: null, csrf: this.visitorToken(req), expired };
  }

  /**
   * The CSRF token for a form on the page being rendered: the session's, or for a visitor
   * who is not logged in the double-submit token, issued now if the request has none.
   *
   * @param req - The request.
   * @param reply - Where a new token's cookie goes.
   * @returns The token.
   */
  formToken(req: FastifyRequest, reply: FastifyReply): string {
    if (req.session.csrf !== null) return req.session.csrf;
    const token = randomBytes(32).toString("base64url");
    this.setCookie(reply, this.policy.csrfName, token);
    req.session = { ...req.session, csrf: token };
    return token;
  }

  /**
   * Logs a patient in: the old session ends and a new id is issued. The row is written only
   * while the patient's account is not revoked (one statement), so a login that raced a
   * revocation leaves no session behind.
   *
   * @param req - The request.
   * @param reply - Where the new cookie goes.
   * @param email - The patient.
   * @returns The new session.
   * @throws {@link PraxmailError} `wrong-state` when the account is revoked or unknown.
   */
  async login(req: FastifyRequest, reply: FastifyReply, email: string): Promise<Session & { readonly idHash: string }> {
    await this.end(req);
    const id = randomBytes(32).toString("base64url");
    const now = this.ctx.now().toISOString();
    const csrf = randomBytes(24).toString("base64url");
    const idHash = hashToken(id);
    if (!(await this.ctx.store.records.insertSession({ idHash, email, csrf, createdAt: now, lastSeen: now }))) {
      throw new PraxmailError("wrong-state", "this account may not log in");
    }
    this.setCookie(reply, this.policy.name, id);
    return { idHash, email, csrf, expired: null };
  }

  /**
   * Ends the request's session on the server and clears the cookie.
   *
   * @param req - The request.
   * @param reply - Where the cookie is cleared (omit when a new one follows).
   */
  async end(req: FastifyRequest, reply?: FastifyReply): Promise<void> {
    const cookie = req.cookies[this.policy.name];
    if (cookie) await this.ctx.store.records.deleteSession(hashToken(cookie));
    if (reply) this.clearCookie(reply);
  }
}

/**
 * Compares a submitted CSRF token with the session's, in constant time.
 *
 * @param session - The session.
 * @param given - The token from the form or header.
 * @returns Whether they match; never for a visitor without a token.
 */
export function csrfOk(session: Session, given: unknown): boolean {
  if (typeof given !== "string" || session.csrf === null) return false;
  return sameSecret(given, session.csrf);
}

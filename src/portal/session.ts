// Server-side sessions in SQLite. The cookie holds 32 random bytes; the database holds only
// their SHA-256. Every visitor gets a session (for the CSRF token of the forms); logging in
// replaces it with a new one, so an id planted before login is worthless afterwards.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Context } from "../core/index.js";
import type { SessionRow } from "../store/index.js";

/** The session of the current request. */
export interface Session {
  /** SHA-256 of the cookie value: names the session in the database. */
  readonly idHash: string;
  readonly email: string | null;
  readonly csrf: string;
  /** The request carried a session that ended by inactivity. */
  readonly expired: boolean;
}

/** Cookie settings that follow from the portal URL. */
export interface CookiePolicy {
  readonly name: string;
  readonly secure: boolean;
}

/**
 * @param portalUrl - The public base URL.
 * @returns `__Host-` cookies with Secure on https; a plain name on http (tests, localhost).
 */
export function cookiePolicy(portalUrl: string): CookiePolicy {
  const secure = portalUrl.startsWith("https:");
  return { name: secure ? "__Host-praxmail" : "praxmail", secure };
}

const hash = (v: string): string => createHash("sha256").update(v).digest("hex");
/** How often a session's last_seen is written. */
const TOUCH_EVERY_MS = 60_000;

/** Sessions over the store of one context. */
export class Sessions {
  constructor(
    private readonly ctx: Context,
    private readonly policy: CookiePolicy,
  ) {}

  private setCookie(reply: FastifyReply, value: string): void {
    reply.setCookie(this.policy.name, value, { path: "/", httpOnly: true, sameSite: "strict", secure: this.policy.secure });
  }

  private create(reply: FastifyReply, email: string | null): SessionRow {
    const id = randomBytes(32).toString("base64url");
    const now = this.ctx.now().toISOString();
    const row: SessionRow = { idHash: hash(id), email, csrf: randomBytes(24).toString("base64url"), createdAt: now, lastSeen: now };
    this.ctx.store.records.insertSession(row);
    this.setCookie(reply, id);
    return row;
  }

  /**
   * The session of a request, created if there is none (or it ended).
   *
   * @param req - The request.
   * @param reply - Where a new cookie goes.
   * @returns The session.
   */
  get(req: FastifyRequest, reply: FastifyReply): Session {
    const cookie = req.cookies[this.policy.name];
    const now = this.ctx.now();
    if (cookie) {
      const row = this.ctx.store.records.session(hash(cookie));
      if (row) {
        const idleSince = now.getTime() - Date.parse(row.lastSeen);
        if (idleSince <= this.ctx.config.portal.idleMinutes * 60_000) {
          // Recorded at most once a minute: a committed write per request (every page and
          // download) cost the portal 40% of its CPU. A session may so end up to a minute
          // early, never late.
          if (idleSince >= TOUCH_EVERY_MS) this.ctx.store.records.touchSession(row.idHash, now.toISOString());
          return { idHash: row.idHash, email: row.email, csrf: row.csrf, expired: false };
        }
        this.ctx.store.records.deleteSession(row.idHash);
        const fresh = this.create(reply, null);
        return { idHash: fresh.idHash, email: null, csrf: fresh.csrf, expired: row.email !== null };
      }
    }
    const fresh = this.create(reply, null);
    return { idHash: fresh.idHash, email: null, csrf: fresh.csrf, expired: false };
  }

  /**
   * Logs a patient in: the old session ends and a new id is issued.
   *
   * @param req - The request.
   * @param reply - Where the new cookie goes.
   * @param email - The patient.
   * @returns The new session.
   */
  login(req: FastifyRequest, reply: FastifyReply, email: string): Session {
    this.end(req);
    const row = this.create(reply, email);
    return { idHash: row.idHash, email, csrf: row.csrf, expired: false };
  }

  /**
   * Ends the request's session on the server and clears the cookie.
   *
   * @param req - The request.
   * @param reply - Where the cookie is cleared (omit when a new one follows).
   */
  end(req: FastifyRequest, reply?: FastifyReply): void {
    const cookie = req.cookies[this.policy.name];
    if (cookie) this.ctx.store.records.deleteSession(hash(cookie));
    if (reply) reply.clearCookie(this.policy.name, { path: "/", httpOnly: true, sameSite: "strict", secure: this.policy.secure });
  }
}

/**
 * Compares a submitted CSRF token with the session's, in constant time.
 *
 * @param session - The session.
 * @param given - The token from the form or header.
 * @returns Whether they match.
 */
export function csrfOk(session: Session, given: unknown): boolean {
  if (typeof given !== "string") return false;
  const a = Buffer.from(given);
  const b = Buffer.from(session.csrf);
  return a.length === b.length && timingSafeEqual(a, b);
}

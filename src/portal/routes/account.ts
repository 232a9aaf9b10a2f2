// The account pages: start, login, logout, registration through a link, the Secu-Pass-Key
// and the wait for approval.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  PraxmailError,
  authenticatePatient,
  dropInviteSession,
  getPatient,
  listPending,
  patientKdf,
  patientLanguage,
  registerPatient,
  resolveLink,
  setPatientLanguage,
  setSecuPassRecipient,
  type Context,
} from "../../core/index.js";
import { isLang } from "../../i18n/index.js";
import { API, FIELD_MAX, bodySchema, type Portal } from "../app.js";
import { LIMITS } from "../limits.js";
import { csrfOk } from "../session.js";

type Form = Record<string, unknown>;

/** A route handler over the shared portal state. */
export type Handler = (req: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply>;

/** A local path to go to after login; anything else becomes the message list. */
export function safeNext(next: unknown): string {
  return typeof next === "string" && next.length <= FIELD_MAX.next && /^\/(?!\/)[\w\-./]*$/.test(next) ? next : "/deliveries";
}

/**
 * Reads form fields, each a string within its length limit.
 *
 * @param body - The parsed form.
 * @param fields - The fields expected.
 * @returns The values, or null when one is missing or too long.
 */
export function fields<K extends keyof typeof FIELD_MAX>(body: unknown, ...fields: K[]): Record<K, string> | null {
  const b = (body ?? {}) as Form;
  const out = {} as Record<K, string>;
  for (const f of fields) {
    const v = b[f];
    if (typeof v !== "string" || v.length > FIELD_MAX[f]) return null;
    out[f] = v;
  }
  return out;
}

/**
 * Sends a logged-out visitor to the login page, coming back here afterwards.
 *
 * @param req - The request.
 * @param reply - The reply.
 * @returns The redirect, or null when the visitor is logged in.
 */
export function needLogin(req: FastifyRequest, reply: FastifyReply): FastifyReply | null {
  if (req.session.email !== null) return null;
  const m = req.session.expired === null ? "" : req.session.expired === "idle" ? "&m=expired" : "&m=ended";
  return reply.redirect(`/login?next=${encodeURIComponent(req.url)}${m}`, 303);
}

/**
 * The handler of a JSON post that hands the patient's new Secu-Pass recipient to core (the
 * first one, or the one after a reset), then sends the browser to the waiting page.
 *
 * @param ctx - The core context.
 * @param set - What core does with it.
 * @returns The route handler.
 */
export function postRecipient(ctx: Context, set: (ctx: Context, email: string, recipient: string, session: string) => Promise<unknown>): Handler {
  return async (req, reply) => {
    if (req.session.email === null) return reply.code(401).send({ error: "login required" });
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    const f = fields(req.body, "recipient");
    if (!f) return reply.code(400).send({ error: "recipient missing" });
    try {
      await set(ctx, req.session.email, f.recipient, req.session.idHash ?? "");
    } catch (e) {
      if (e instanceof PraxmailError) return reply.code(400).send({ error: e.code });
      throw e;
    }
    return reply.send({ next: "/waiting" });
  };
}

/**
 * Registers the account routes.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 */
export function accountRoutes(app: FastifyInstance, portal: Portal): void {
  app.get("/", async (req, reply) => {
    if (req.session.email !== null) return reply.redirect("/deliveries", 303);
    return portal.page(req, reply, "landing.eta", {});
  });
  app.get("/login", loginPage(portal));
  app.post("/login", { schema: bodySchema("_csrf", "email", "password", "next") }, login(portal));
  app.post("/logout", { schema: bodySchema("_csrf") }, async (req, reply) => {
    if (!csrfOk(req.session, (req.body as Form | undefined)?._csrf)) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    await portal.sessions.end(req, reply);
    return reply.redirect("/login?m=out", 303);
  });
  // The address shown on the form is read-only and ignored; it is still bounded.
  app.post("/register", { schema: bodySchema("_csrf", "token", "email", "password", "password2") }, register(portal));
  app.get("/secupass", secuPassPage(portal));
  app.post("/secupass", { schema: bodySchema("recipient"), config: API }, postRecipient(portal.ctx, setSecuPassRecipient));
  app.get("/waiting", waitingPage(portal));
}

/** GET /login: the form, with why the last session ended or what just happened. */
function loginPage(portal: Portal): Handler {
  return async (req, reply) => {
    const q = req.query as { next?: string; m?: string; email?: string };
    const t = portal.texts(req);
    const ended = req.session.expired ?? (q.m === "expired" ? "idle" : q.m === "ended" ? "lifetime" : null);
    const info = ended === "idle" ? t("sessionExpired") : ended === "lifetime" ? t("sessionEnded") : q.m === "out" ? t("loggedOut") : q.m === "reset" ? t("resetDone") : null;
    return portal.page(req, reply, "login.eta", { next: safeNext(q.next), info, error: null, email: typeof q.email === "string" ? q.email.slice(0, FIELD_MAX.email) : "" });
  };
}

/**
 * At login, account and cookie come to agree: a language chosen before login goes into the
 * account; else the account's language sets the cookie.
 *
 * @param portal - Shared portal state.
 * @param req - The login request.
 * @param reply - Its reply.
 * @param email - The patient who logged in.
 */
export async function agreeOnLanguage(portal: Portal, req: FastifyRequest, reply: FastifyReply, email: string): Promise<void> {
  const chosen = req.cookies.lang;
  if (isLang(chosen)) return setPatientLanguage(portal.ctx, email, chosen);
  const stored = await patientLanguage(portal.ctx.store, email);
  if (stored !== null) portal.rememberLang(reply, stored);
}

/** POST /login: within the attempt limits, a new session for the right password. */
function login(portal: Portal): Handler {
  const { ctx, sessions, limits } = portal;
  return async (req, reply) => {
    if (!csrfOk(req.session, (req.body as Form | undefined)?._csrf)) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    const f = fields(req.body, "email", "password");
    const next = safeNext((req.body as Form | undefined)?.next);
    if (!f) return portal.notice(req, reply, 400, "errorTitle", "badInput");
    const t = portal.texts(req);
    const account = f.email.trim().toLowerCase();
    // Counted before scrypt runs; only failures count, so a success gives its attempt back.
    const held = await limits.reserve([LIMITS.loginIp, req.ip], [LIMITS.loginAccount, account]);
    if (!held) return portal.page(req, reply, "login.eta", { next, info: null, error: t("tooMany"), email: f.email }, 429);
    const patient = await authenticatePatient(ctx, f.email, f.password);
    const failed = (): Promise<FastifyReply> => portal.page(req, reply, "login.eta", { next, info: null, error: t("loginFailed"), email: f.email }, 401);
    if (!patient) return failed();
    try {
      // Refused when the account was revoked while scrypt ran.
      await sessions.login(req, reply, patient.email);
    } catch (e) {
      if (e instanceof PraxmailError && e.code === "wrong-state") return failed();
      throw e;
    }
    await held.release();
    await limits.clear(LIMITS.loginAccount, account);
    await agreeOnLanguage(portal, req, reply, patient.email);
    // A later login is not necessarily the person who typed an invite code.
    await dropInviteSession(ctx, patient.email, "login");
    return reply.redirect(next, 303);
  };
}

/** POST /register: the password for the address a registration link was sent to. */
function register(portal: Portal): Handler {
  const { ctx, sessions, limits } = portal;
  return async (req, reply) => {
    if (!csrfOk(req.session, (req.body as Form | undefined)?._csrf)) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    const f = fields(req.body, "token", "password");
    const again = (req.body as Form | undefined)?.password2;
    if (!f || typeof again !== "string" || again.length > FIELD_MAX.password2) return portal.notice(req, reply, 400, "errorTitle", "badInput");
    const t = portal.texts(req);
    let access;
    try {
      access = await resolveLink(ctx, f.token, null);
    } catch (e) {
      if (!(e instanceof PraxmailError)) throw e;
      return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
    }
    // The address comes from the link, never from the form.
    if (access.kind !== "register") return reply.redirect(`/d/${f.token}`, 303);
    const again_ = { email: access.email, token: f.token };
    if (!(await limits.reserve([LIMITS.registerIp, req.ip]))) return portal.page(req, reply, "register.eta", { ...again_, error: t("tooMany") }, 429);
    if (f.password !== again) return portal.page(req, reply, "register.eta", { ...again_, error: t("passwordsDiffer") }, 400);
    if (Array.from(f.password).length < 10) return portal.page(req, reply, "register.eta", { ...again_, error: t("passwordTooShort") }, 400);
    try {
      await registerPatient(ctx, access.email, f.password, { lang: portal.knownLang(req) });
    } catch (e) {
      if (e instanceof PraxmailError && e.code === "wrong-state") return portal.page(req, reply, "register.eta", { ...again_, error: t("accountExists") }, 409);
      throw e;
    }
    await sessions.login(req, reply, access.email);
    return reply.redirect(`/d/${f.token}`, 303);
  };
}

/** GET /secupass: the page that makes the first Secu-Pass-Key, while the account waits for one. */
function secuPassPage(portal: Portal): Handler {
  return async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    const email = req.session.email ?? "";
    const p = await getPatient(portal.ctx, email);
    if (p.status !== "pending-secupass") return reply.redirect("/waiting", 303);
    const next = safeNext((req.query as { next?: string }).next);
    return portal.page(req, reply, "secupass.eta", { kdf: JSON.stringify(await patientKdf(portal.ctx, email)), next });
  };
}

/** GET /waiting: the safety code while the practice has not approved the account. */
function waitingPage(portal: Portal): Handler {
  const { ctx } = portal;
  return async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    const p = await getPatient(ctx, req.session.email ?? "");
    if (p.status === "pending-secupass") return reply.redirect("/secupass", 303);
    // An invited patient whose older deliveries still wait for the practice is told so.
    const waiting = p.status === "approved" ? ((await listPending(ctx)).find((q) => q.email === p.email)?.waiting ?? 0) : 0;
    if (p.status !== "pending-approval" && waiting === 0) return reply.redirect("/deliveries", 303);
    return portal.page(req, reply, "waiting.eta", { safetyCode: p.safetyCode, waiting });
  };
}

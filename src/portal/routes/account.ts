// The account pages: start, login with the Secu-Pass-Key, logout, registration through a
// link, and the wait for approval. The browser derives U and the login credential (client/
// main.ts); the server gets the credential, never the key or U.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  PraxmailError,
  authenticatePatient,
  getPatient,
  listPending,
  loginParams,
  patientLanguage,
  registerPatient,
  resolveLink,
  setPatientLanguage,
  setSecuPassRecipient,
  type NewKey,
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
 * Reads a new Secu-Pass-Key from a JSON body: parameters (an object), recipient and
 * credential, each within its limit.
 *
 * @param body - The parsed JSON.
 * @returns The key, or null when a part is missing or too long.
 */
export function newKeyOf(body: unknown): NewKey | null {
  const f = fields(body, "recipient", "credential");
  const kdf = (body as Form | null)?.kdf;
  if (!f || typeof kdf !== "object" || kdf === null) return null;
  return { kdf, recipient: f.recipient, credential: f.credential };
}

/** The JSON schema of a body with a new key, besides the named fields. */
export function newKeySchema(...names: (keyof typeof FIELD_MAX)[]): { body: Record<string, unknown> } {
  const { body } = bodySchema("recipient", "credential", ...names);
  return { body: { ...body, properties: { ...(body.properties as object), kdf: { type: "object", maxProperties: 8 } } } };
}

/**
 * The answer of a JSON form the browser sent: 200 with where to go, or the text to show.
 *
 * @param reply - The reply.
 * @param status - 200, or the error status.
 * @param what - `next` on success, else the message in the patient's language.
 * @returns The reply.
 */
export function answer(reply: FastifyReply, status: number, what: string): FastifyReply {
  return reply.code(status).send(status === 200 ? { next: what } : { error: what });
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
  app.post("/login/params", { schema: bodySchema("email"), config: API }, askParams(portal));
  app.post("/login", { schema: bodySchema("email", "credential", "nonce", "next"), config: API }, login(portal));
  app.post("/logout", { schema: bodySchema("_csrf") }, async (req, reply) => {
    if (!csrfOk(req.session, (req.body as Form | undefined)?._csrf)) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    await portal.sessions.end(req, reply);
    return reply.redirect("/login?m=out", 303);
  });
  app.post("/register", { schema: newKeySchema("token"), config: API }, register(portal));
  app.get("/waiting", waitingPage(portal));
}

/**
 * GET /login: the form, with why the last session ended or what just happened. A patient
 * who is logged in goes on to where the link points (a mail's link to a message opens it)
 * unless the link names another address: then the form, to log in as that one.
 */
function loginPage(portal: Portal): Handler {
  return async (req, reply) => {
    const q = req.query as { next?: string; m?: string; email?: string };
    const named = typeof q.email === "string" ? q.email.trim().toLowerCase() : "";
    if (req.session.email !== null && (named === "" || named === req.session.email)) return reply.redirect(safeNext(q.next), 303);
    const t = portal.texts(req);
    const ended = req.session.expired ?? (q.m === "expired" ? "idle" : q.m === "ended" ? "lifetime" : null);
    const info = ended === "idle" ? t("sessionExpired") : ended === "lifetime" ? t("sessionEnded") : q.m === "out" ? t("loggedOut") : null;
    return portal.page(req, reply, "login.eta", { next: safeNext(q.next), info, email: typeof q.email === "string" ? q.email.slice(0, FIELD_MAX.email) : "" });
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

/** POST /login/params: the KDF parameters and a challenge, the same shape for every address. */
function askParams(portal: Portal): Handler {
  return async (req, reply) => {
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    const f = fields(req.body, "email");
    if (!f) return reply.code(400).send({ error: "email missing" });
    if (!(await portal.limits.reserve([LIMITS.loginParamsIp, req.ip]))) return answer(reply, 429, portal.texts(req)("tooMany"));
    return reply.send(await loginParams(portal.ctx, f.email));
  };
}

/** POST /login: within the attempt limits, a new session for the right credential. */
function login(portal: Portal): Handler {
  const { ctx, sessions, limits } = portal;
  return async (req, reply) => {
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    const f = fields(req.body, "email", "credential");
    const nonce = (req.body as Form | null)?.nonce;
    if (!f || (nonce !== undefined && typeof nonce !== "string")) return reply.code(400).send({ error: "email or credential missing" });
    const next = safeNext((req.body as Form).next);
    const t = portal.texts(req);
    const account = f.email.trim().toLowerCase();
    // Counted before the check; only failures count, so a success gives its attempt back.
    const held = await limits.reserve([LIMITS.loginIp, req.ip], [LIMITS.loginAccount, account]);
    if (!held) return answer(reply, 429, t("tooMany"));
    const patient = await authenticatePatient(ctx, f.email, f.credential, nonce ?? null);
    if (!patient) return answer(reply, 401, t("loginFailed"));
    try {
      // Refused when the account was revoked meanwhile.
      await sessions.login(req, reply, patient.email);
    } catch (e) {
      if (e instanceof PraxmailError && e.code === "wrong-state") return answer(reply, 401, t("loginFailed"));
      throw e;
    }
    await held.release();
    await limits.clear(LIMITS.loginAccount, account);
    await agreeOnLanguage(portal, req, reply, patient.email);
    return answer(reply, 200, next);
  };
}

/** POST /register: the Secu-Pass-Key for the address a registration link was sent to, in one step. */
function register(portal: Portal): Handler {
  const { ctx, sessions, limits } = portal;
  return async (req, reply) => {
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    const f = fields(req.body, "token");
    const key = newKeyOf(req.body);
    if (!f || !key) return reply.code(400).send({ error: "token or key missing" });
    const t = portal.texts(req);
    let access;
    try {
      access = await resolveLink(ctx, f.token, null);
    } catch (e) {
      if (!(e instanceof PraxmailError)) throw e;
      return answer(reply, 404, t("notFound"));
    }
    const here = `/d/${f.token}`;
    // The address comes from the link, never from the form; a link registers one account once.
    if (access.kind !== "register") return answer(reply, 409, t("accountExists"));
    if (!(await limits.reserve([LIMITS.registerIp, req.ip]))) return answer(reply, 429, t("tooMany"));
    try {
      await registerPatient(ctx, access.email, key, { lang: portal.knownLang(req) });
    } catch (e) {
      if (e instanceof PraxmailError && e.code === "wrong-state") return answer(reply, 409, t("accountExists"));
      if (e instanceof PraxmailError && e.code === "invalid-input") return answer(reply, 400, t("failed"));
      throw e;
    }
    await sessions.login(req, reply, access.email);
    await setSecuPassRecipient(ctx, access.email, key.recipient);
    return answer(reply, 200, here);
  };
}

/** GET /waiting: the safety code while the practice has not approved the account. */
function waitingPage(portal: Portal): Handler {
  const { ctx } = portal;
  return async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    const p = await getPatient(ctx, req.session.email ?? "");
    // An account from before that never set its key sets one now.
    if (p.status === "pending-secupass") return reply.redirect("/secupass/reset", 303);
    // An invited patient whose older deliveries still wait for the practice is told so.
    const waiting = p.status === "approved" ? ((await listPending(ctx)).find((q) => q.email === p.email)?.waiting ?? 0) : 0;
    if (p.status !== "pending-approval" && waiting === 0) return reply.redirect("/deliveries", 303);
    return portal.page(req, reply, "waiting.eta", { safetyCode: p.safetyCode, waiting });
  };
}

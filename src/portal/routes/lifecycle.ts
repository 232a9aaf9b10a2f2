// The way back: a new Secu-Pass-Key by a mailed link ("forgotten") or while logged in,
// registration with an invite, help. Every new key is made in the browser (client/main.ts):
// fresh parameters, U's recipient and the login credential come as JSON.
import type { FastifyInstance, FastifyRequest } from "fastify";
import {
  INVITE_MISMATCH,
  PraxmailError,
  bindInviteSession,
  checkKeyReset,
  completeKeyReset,
  errorFields,
  inviteOpen,
  keyResetQueue,
  type WorkQueue,
  redeemInvite,
  resetSecuPass,
  setSecuPassRecipient,
} from "../../core/index.js";
import { API, FIELD_MAX, bodySchema, type Portal } from "../app.js";
import { LIMITS } from "../limits.js";
import { csrfOk } from "../session.js";
import { answer, fields, needLogin, newKeyOf, newKeySchema, type Handler } from "./account.js";

type Form = Record<string, unknown>;

const csrf = (body: unknown): unknown => (body as Form | undefined)?._csrf;

/**
 * Registers the lifecycle routes.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 */
export function lifecycleRoutes(app: FastifyInstance, portal: Portal): void {
  // Only the error's code is logged: the token lives in the mail and nowhere else.
  const resets = keyResetQueue(portal.ctx, (e) => {
    portal.log.error({ err: { code: (e as { code?: unknown }).code ?? null, responseCode: (e as { responseCode?: unknown }).responseCode ?? null } }, "key reset mail failed");
    portal.ctx.meter?.failed("reset-mail", errorFields(e).code);
  });
  portal.ctx.meter?.queue("key-reset", () => resets.waiting);
  app.addHook("onClose", () => resets.close());

  app.get("/help", async (req, reply) => portal.page(req, reply, "help.eta", {}));
  app.get("/reset", async (req, reply) => {
    return portal.page(req, reply, "reset.eta", { sent: false, error: null, email: emailFromQuery(req) });
  });
  app.post("/reset", { schema: bodySchema("_csrf", "email") }, askReset(portal, resets));
  app.get("/reset/:token", async (req, reply) => {
    let email: string;
    try {
      email = await checkKeyReset(portal.ctx, (req.params as { token: string }).token);
    } catch (e) {
      if (!(e instanceof PraxmailError)) throw e;
      return portal.notice(req, reply, 410, "resetGoneTitle", "resetGone");
    }
    return portal.page(req, reply, "secupass-reset.eta", newKeyPage(portal, email, req.url));
  });
  app.post("/reset/:token", { schema: newKeySchema(), config: API }, resetByMail(portal));
  app.get("/secupass/reset", async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    return portal.page(req, reply, "secupass-reset.eta", newKeyPage(portal, req.session.email ?? "", "/secupass/reset"));
  });
  app.post("/secupass/reset", { schema: newKeySchema(), config: API }, resetLoggedIn(portal));
  app.get("/invite/:id", async (req, reply) => {
    if (!(await inviteOpen(portal.ctx, (req.params as { id: string }).id))) return portal.notice(req, reply, 410, "inviteGoneTitle", "inviteGone");
    // The address may come with the link, as reception hands it out; it is checked against
    // the invite when the form is sent.
    return portal.page(req, reply, "invite.eta", { email: emailFromQuery(req), type: portal.ctx.config.crypto.recipientType });
  });
  app.post("/invite/:id", { schema: newKeySchema("email", "code"), config: API }, redeem(portal));
}

/** The address a link brings along (`?email=`): only a default for the form's field, so anything too long is dropped. */
function emailFromQuery(req: FastifyRequest): string {
  const { email } = req.query as { email?: unknown };
  return typeof email === "string" && email.length <= FIELD_MAX.email ? email : "";
}

/** POST /reset: asks for a password reset mail (the same answer for every address). */
function askReset(portal: Portal, resets: WorkQueue<string>): Handler {
  const { limits } = portal;
  return async (req, reply) => {
    if (!csrfOk(req.session, csrf(req.body))) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    const f = fields(req.body, "email");
    if (!f) return portal.notice(req, reply, 400, "errorTitle", "badInput");
    const t = portal.texts(req);
    if (!(await limits.reserve([LIMITS.resetIp, req.ip]))) return portal.page(req, reply, "reset.eta", { sent: false, error: t("tooMany"), email: f.email }, 429);
    // The same answer, in the same time, whether or not the address has an account: the
    // address as typed only joins a queue, and the worker looks it up and mails after this
    // answer. A flood of mails to one address, or a full queue, stops quietly.
    if ((await limits.reserve([LIMITS.resetAddress, f.email.trim().toLowerCase()])) && !resets.push(f.email)) {
      portal.log.warn({ waiting: resets.waiting }, "password reset queue full: request dropped");
    }
    return portal.page(req, reply, "reset.eta", { sent: true, error: null });
  };
}

/** What the page that makes a new key shows: the address it is for, where it posts, the identity type. */
function newKeyPage(portal: Portal, email: string, url: string): Record<string, unknown> {
  return { address: email, url, type: portal.ctx.config.crypto.recipientType };
}

/** POST /reset/:token: the new key; every session of the account ends, and this browser gets a new one. */
function resetByMail(portal: Portal): Handler {
  return async (req, reply) => {
    const { token } = req.params as { token: string };
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    const key = newKeyOf(req.body);
    if (!key) return reply.code(400).send({ error: "key missing" });
    const t = portal.texts(req);
    let patient;
    try {
      patient = await completeKeyReset(portal.ctx, token, key);
    } catch (e) {
      if (e instanceof PraxmailError && e.code === "wrong-state") return answer(reply, 410, t("resetGone"));
      if (e instanceof PraxmailError && e.code === "invalid-input") return answer(reply, 400, t("failed"));
      throw e;
    }
    // Whoever holds the link and set the key sees the new safety code right away.
    await portal.sessions.login(req, reply, patient.email);
    return answer(reply, 200, "/waiting");
  };
}

/** POST /secupass/reset: a new key for the logged-in patient; every other session ends. */
function resetLoggedIn(portal: Portal): Handler {
  return async (req, reply) => {
    if (req.session.email === null) return reply.code(401).send({ error: "login required" });
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    const key = newKeyOf(req.body);
    if (!key) return reply.code(400).send({ error: "key missing" });
    let patient;
    try {
      patient = await resetSecuPass(portal.ctx, req.session.email, key);
    } catch (e) {
      if (e instanceof PraxmailError) return answer(reply, 400, portal.texts(req)("failed"));
      throw e;
    }
    await portal.sessions.login(req, reply, patient.email);
    return answer(reply, 200, "/waiting");
  };
}

/** POST /invite/:id: registration with an invite's address and code and the new key, in one step, within the attempt limit. */
function redeem(portal: Portal): Handler {
  const { ctx, sessions, limits } = portal;
  return async (req, reply) => {
    const { id } = req.params as { id: string };
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    const f = fields(req.body, "email", "code");
    const key = newKeyOf(req.body);
    if (!f || !key) return reply.code(400).send({ error: "address, code or key missing" });
    const t = portal.texts(req);
    const held = await limits.reserve([LIMITS.inviteIp, req.ip]);
    if (!held) return answer(reply, 429, t("tooMany"));
    let patient;
    try {
      patient = await redeemInvite(ctx, id, f.email, f.code, key, portal.knownLang(req));
    } catch (e) {
      // Only a wrong address or code counts.
      const mismatch = e instanceof PraxmailError && e.code === "invalid-input" && e.message === INVITE_MISMATCH;
      if (!mismatch) await held.release();
      if (mismatch) return answer(reply, 400, t("inviteMismatch"));
      if (e instanceof PraxmailError && e.code === "wrong-state") return answer(reply, 410, t("inviteGone"));
      if (e instanceof PraxmailError && e.code === "invalid-input") return answer(reply, 400, t("failed"));
      throw e;
    }
    await held.release();
    // The invite's privilege stays with this session: a reset, another login or expiry drops it.
    const session = await sessions.login(req, reply, patient.email);
    await bindInviteSession(ctx, patient.email, session.idHash);
    await setSecuPassRecipient(ctx, patient.email, key.recipient, session.idHash);
    return answer(reply, 200, "/waiting");
  };
}

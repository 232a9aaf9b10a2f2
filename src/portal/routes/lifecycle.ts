// The way back: password reset, a new Secu-Pass-Key, registration with an invite, help.
import type { FastifyInstance } from "fastify";
import {
  PraxmailError,
  beginSecuPassReset,
  bindInviteSession,
  checkPasswordReset,
  completePasswordReset,
  errorFields,
  finishSecuPassReset,
  inviteOpen,
  passwordResetQueue,
  type WorkQueue,
  redeemInvite,
} from "../../core/index.js";
import { API, FIELD_MAX, bodySchema, type Portal } from "../app.js";
import { LIMITS } from "../limits.js";
import { csrfOk } from "../session.js";
import { fields, needLogin, postRecipient, type Handler } from "./account.js";

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
  const resets = passwordResetQueue(portal.ctx, (e) => {
    portal.log.error({ err: { code: (e as { code?: unknown }).code ?? null, responseCode: (e as { responseCode?: unknown }).responseCode ?? null } }, "password reset mail failed");
    portal.ctx.meter?.failed("reset-mail", errorFields(e).code);
  });
  portal.ctx.meter?.queue("password-reset", () => resets.waiting);
  app.addHook("onClose", () => resets.close());

  app.get("/help", async (req, reply) => portal.page(req, reply, "help.eta", {}));
  app.get("/reset", async (req, reply) => portal.page(req, reply, "reset.eta", { sent: false, error: null, email: "" }));
  app.post("/reset", { schema: bodySchema("_csrf", "email") }, askReset(portal, resets));
  app.get("/reset/:token", async (req, reply) => {
    try {
      await checkPasswordReset(portal.ctx, (req.params as { token: string }).token);
    } catch (e) {
      if (!(e instanceof PraxmailError)) throw e;
      return portal.notice(req, reply, 410, "resetGoneTitle", "resetGone");
    }
    return portal.page(req, reply, "reset-password.eta", { error: null });
  });
  app.post("/reset/:token", { schema: bodySchema("_csrf", "password", "password2") }, resetPassword(portal));
  app.get("/secupass/reset", secuPassResetPage(portal));
  app.post("/secupass/reset", { schema: bodySchema("recipient"), config: API }, postRecipient(portal.ctx, finishSecuPassReset));
  app.get("/invite/:id", async (req, reply) => {
    if (!(await inviteOpen(portal.ctx, (req.params as { id: string }).id))) return portal.notice(req, reply, 410, "inviteGoneTitle", "inviteGone");
    // The address may come with the link (`?email=`, as reception hands it out); it is only
    // a default for the field, checked against the invite when the form is sent.
    const { email } = req.query as { email?: unknown };
    return portal.page(req, reply, "invite.eta", { error: null, email: typeof email === "string" && email.length <= FIELD_MAX.email ? email : "" });
  });
  app.post("/invite/:id", { schema: bodySchema("_csrf", "email", "code", "password", "password2") }, redeem(portal));
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

/** POST /reset/:token: the new password; every session of the account ends. */
function resetPassword(portal: Portal): Handler {
  return async (req, reply) => {
    const { token } = req.params as { token: string };
    if (!csrfOk(req.session, csrf(req.body))) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    const f = fields(req.body, "password");
    const again = (req.body as Form | undefined)?.password2;
    if (!f || typeof again !== "string" || again.length > FIELD_MAX.password2) return portal.notice(req, reply, 400, "errorTitle", "badInput");
    const t = portal.texts(req);
    if (f.password !== again) return portal.page(req, reply, "reset-password.eta", { error: t("passwordsDiffer") }, 400);
    if (Array.from(f.password).length < 10) return portal.page(req, reply, "reset-password.eta", { error: t("passwordTooShort") }, 400);
    try {
      await completePasswordReset(portal.ctx, token, f.password);
    } catch (e) {
      if (e instanceof PraxmailError && e.code === "wrong-state") return portal.notice(req, reply, 410, "resetGoneTitle", "resetGone");
      throw e;
    }
    await portal.sessions.end(req, reply);
    return reply.redirect("/login?m=reset", 303);
  };
}

/** GET /secupass/reset: the page that makes a new Secu-Pass-Key. */
function secuPassResetPage(portal: Portal): Handler {
  return async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    let kdf;
    try {
      kdf = await beginSecuPassReset(portal.ctx, req.session.email ?? "");
    } catch (e) {
      if (e instanceof PraxmailError) return reply.redirect("/secupass", 303);
      throw e;
    }
    return portal.page(req, reply, "secupass-reset.eta", { kdf: JSON.stringify(kdf) });
  };
}

/** POST /invite/:id: registration with an invite's address and code, within the attempt limit. */
function redeem(portal: Portal): Handler {
  const { ctx, sessions, limits } = portal;
  return async (req, reply) => {
    const { id } = req.params as { id: string };
    if (!csrfOk(req.session, csrf(req.body))) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    const f = fields(req.body, "email", "password");
    const b = (req.body ?? {}) as Form;
    if (!f || typeof b.code !== "string" || b.code.length > FIELD_MAX.code || typeof b.password2 !== "string" || b.password2.length > FIELD_MAX.password2) {
      return portal.notice(req, reply, 400, "errorTitle", "badInput");
    }
    const t = portal.texts(req);
    const again = { email: f.email };
    if (f.password !== b.password2) return portal.page(req, reply, "invite.eta", { ...again, error: t("passwordsDiffer") }, 400);
    if (Array.from(f.password).length < 10) return portal.page(req, reply, "invite.eta", { ...again, error: t("passwordTooShort") }, 400);
    const held = await limits.reserve([LIMITS.inviteIp, req.ip]);
    if (!held) return portal.page(req, reply, "invite.eta", { ...again, error: t("tooMany") }, 429);
    let patient;
    try {
      patient = await redeemInvite(ctx, id, f.email, b.code, f.password, portal.knownLang(req));
    } catch (e) {
      // Only a wrong address or code counts.
      const mismatch = e instanceof PraxmailError && e.code === "invalid-input";
      if (!mismatch) await held.release();
      if (mismatch) return portal.page(req, reply, "invite.eta", { ...again, error: t("inviteMismatch") }, 400);
      if (e instanceof PraxmailError && e.code === "wrong-state") return portal.notice(req, reply, 410, "inviteGoneTitle", "inviteGone");
      throw e;
    }
    await held.release();
    // The invite's privilege stays with this session: a reset, another login or expiry drops it.
    await bindInviteSession(ctx, patient.email, (await sessions.login(req, reply, patient.email)).idHash);
    return reply.redirect("/secupass", 303);
  };
}

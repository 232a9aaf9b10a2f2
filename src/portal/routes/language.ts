// The language switch. Before login the choice lives in a cookie; a logged-in patient's
// account remembers it too, and their mails follow it (POST, with the CSRF token).
import type { FastifyInstance, FastifyReply } from "fastify";
import { setPatientLanguage } from "../../core/index.js";
import { isLang } from "../../i18n/index.js";
import { FIELD_MAX, bodySchema, type Portal } from "../app.js";
import { csrfOk } from "../session.js";

/** A local path to return to after switching; anything else is the start page. */
function backTo(back: unknown): string {
  return typeof back === "string" && back.length <= FIELD_MAX.back && /^\/(?!\/)[\w\-./?=&%]*$/.test(back) ? back : "/";
}

/**
 * Registers the language routes: `GET /lang/:code` (a link), `GET /lang` (the menu before
 * login) and `POST /lang` (the menu of a logged-in patient).
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 */
export function languageRoutes(app: FastifyInstance, portal: Portal): void {
  const choose = (reply: FastifyReply, code: unknown, back: unknown): FastifyReply => {
    if (isLang(code)) portal.rememberLang(reply, code);
    return reply.redirect(backTo(back), 303);
  };
  app.get("/lang/:code", async (req, reply) => choose(reply, (req.params as { code: string }).code, (req.query as { back?: unknown }).back));
  app.get("/lang", async (req, reply) => {
    const q = req.query as { code?: unknown; back?: unknown };
    return choose(reply, q.code, q.back);
  });
  app.post("/lang", { schema: bodySchema("_csrf", "code", "back") }, async (req, reply) => {
    const b = (req.body ?? {}) as { _csrf?: unknown; code?: unknown; back?: unknown };
    if (!csrfOk(req.session, b._csrf)) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    if (isLang(b.code) && req.session.email !== null) await setPatientLanguage(portal.ctx, req.session.email, b.code);
    return choose(reply, b.code, b.back);
  });
}

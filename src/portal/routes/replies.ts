// Secure replies: the browser encrypts to the practice recipient; we store ciphertext.
import { PassThrough, type Readable } from "node:stream";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { PraxmailError, ReplyRefusedError, addReplyPart, checkMayReply, finishReply, startReply, type ReplyRefusal } from "../../core/index.js";
import { API, bodySchema, type Portal } from "../app.js";
import type { MessageKey } from "../../i18n/index.js";
import { csrfOk } from "../session.js";
import { needLogin, type Handler } from "./account.js";

/** The text that tells a patient why they may not reply yet (or any more). */
const REFUSAL: Readonly<Record<ReplyRefusal, MessageKey>> = {
  "pending-secupass": "replyRefusedPendingSecupass",
  "pending-approval": "replyRefusedPendingApproval",
  revoked: "replyRefusedRevoked",
};

/**
 * Registers the reply routes.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 */
export function replyRoutes(app: FastifyInstance, portal: Portal): void {
  const { ctx } = portal;
  // Uploads stream straight into the blob store, counted and cut off at the limit.
  app.addContentTypeParser("application/octet-stream", (_req, payload, done) => {
    done(null, payload);
  });
  app.get("/reply", replyPage(portal));
  app.post("/reply", { schema: bodySchema("deliveryId"), config: API }, async (req, reply) =>
    api(portal, req, reply, async (email) => {
      const d = (req.body as { deliveryId?: unknown } | undefined)?.deliveryId;
      return { id: await startReply(ctx, email, typeof d === "string" && d !== "" ? d : null) };
    }),
  );
  app.post("/reply/:id/parts", { config: API }, uploadPart(portal));
  app.post("/reply/:id/finish", { config: API }, async (req, reply) =>
    api(portal, req, reply, async (email) => {
      await finishReply(ctx, email, (req.params as { id: string }).id);
      return { ok: true };
    }),
  );
}

/** GET /reply: the form, for a patient who may reply. */
function replyPage(portal: Portal): Handler {
  const { ctx } = portal;
  const max = ctx.config.portal.maxUploadBytes;
  return async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    try {
      await checkMayReply(ctx, req.session.email ?? "");
    } catch (e) {
      if (e instanceof ReplyRefusedError) return portal.notice(req, reply, 403, "replyTitle", REFUSAL[e.status]);
      throw e;
    }
    const d = (req.query as { d?: string }).d;
    return portal.page(req, reply, "reply.eta", {
      recipient: ctx.config.practiceRecipient,
      delivery: typeof d === "string" && /^d_[a-z0-9]{12}$/.test(d) ? d : "",
      max,
    });
  };
}

/**
 * Runs one step of a reply for the logged-in patient, with the CSRF header checked, and
 * answers its result or its refusal as JSON.
 *
 * @param portal - Shared portal state.
 * @param req - The request.
 * @param reply - The reply.
 * @param work - The step, given the patient's address.
 * @returns The reply, sent.
 */
async function api(portal: Portal, req: FastifyRequest, reply: FastifyReply, work: (email: string) => Promise<unknown>): Promise<FastifyReply> {
  if (req.session.email === null) return reply.code(401).send({ error: "login required" });
  if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
  let result: unknown;
  try {
    result = await work(req.session.email);
  } catch (e) {
    if (e instanceof ReplyRefusedError) return reply.code(403).send({ error: e.code, status: e.status, message: portal.texts(req)(REFUSAL[e.status]) });
    if (!(e instanceof PraxmailError)) throw e;
    const status = e.code === "too-large" ? 413 : e.code === "wrong-state" ? 403 : e.code === "no-such-delivery" ? 404 : 400;
    return reply.code(status).send({ error: e.code, message: e.message });
  }
  return reply.send(result);
}

/** POST /reply/:id/parts: one encrypted part, streamed into the store up to the upload limit. */
function uploadPart(portal: Portal): Handler {
  const { ctx } = portal;
  const max = ctx.config.portal.maxUploadBytes;
  return async (req, reply) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    const body = req.body as Readable | undefined;
    if (declared > max) {
      body?.resume();
      return reply.code(413).send({ error: "too-large", message: `upload is larger than ${max} bytes` });
    }
    if (!body || typeof body.pipe !== "function") return reply.code(415).send({ error: "send application/octet-stream" });
    const kind = (req.query as { kind?: string }).kind === "message" ? "message" : "file";
    // A refused upload must not reset the connection before the client reads our answer:
    // the store reads through a pipe, and what it leaves unread is drained (up to a bound).
    const pass = new PassThrough();
    body.pipe(pass);
    reply.header("Connection", "close");
    const res = await api(portal, req, reply, async (email) => ({ size: await addReplyPart(ctx, email, (req.params as { id: string }).id, kind, pass, max) }));
    if (!body.readableEnded) {
      body.unpipe(pass);
      let drained = 0;
      body.on("data", (c: Buffer) => {
        drained += c.length;
        if (drained > 16 * 1024 * 1024) body.destroy();
      });
      body.resume();
    }
    return res;
  };
}

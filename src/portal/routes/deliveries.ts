// Links, the list of messages, one message, and the ciphertext and wraps behind it.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  PraxmailError,
  deliveriesForPatient,
  deliveryForPatient,
  fileForDownload,
  patientWrap,
  resolveLink,
  type PatientDelivery,
} from "../../core/index.js";
import type { Portal } from "../app.js";
import { needLogin } from "./account.js";

/** What the browser needs to open a delivery; no key material. */
function clientData(d: PatientDelivery, base: string, address: string | null): string {
  return JSON.stringify({
    id: d.id,
    keyInLink: d.keyInLink,
    files: d.files.map((f) => ({ id: f.id, name: f.name, size: f.size, kind: f.kind, url: `${base}/files/${f.id}` })),
    wrapUrl: d.patientKey ? `${base}/wrap` : null,
    kdf: d.kdf,
    // The Secu-Pass derivation mixes in the patient's address (KdfParams v2).
    address,
  });
}

/**
 * Registers the delivery routes.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 */
export function deliveryRoutes(app: FastifyInstance, portal: Portal): void {
  const { ctx } = portal;

  const gone = (req: FastifyRequest, reply: FastifyReply, status: string): Promise<FastifyReply> =>
    portal.notice(req, reply, 410, "goneTitle", status === "revoked" ? "goneRevoked" : "goneExpired");

  const showDelivery = (req: FastifyRequest, reply: FastifyReply, d: PatientDelivery, base: string): Promise<FastifyReply> =>
    portal.page(req, reply, "delivery.eta", { d, data: clientData(d, base, req.session.email) });

  const sendBlob = async (reply: FastifyReply, key: string): Promise<FastifyReply> => {
    const size = await ctx.store.blobs.size(key);
    return reply
      .type("application/octet-stream")
      .header("Content-Length", size)
      .header("Content-Disposition", "attachment")
      .send(ctx.store.blobs.read(key));
  };

  /** The patient's delivery, or the page that says why not. */
  const own = async (req: FastifyRequest, reply: FastifyReply): Promise<PatientDelivery | FastifyReply> => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    const { id } = req.params as { id: string };
    try {
      return await deliveryForPatient(ctx, id, req.session.email ?? "");
    } catch (e) {
      if (e instanceof PraxmailError && e.code === "wrong-state") return gone(req, reply, e.message);
      if (e instanceof PraxmailError) return portal.notice(req, reply, 404, "notFoundTitle", "notFound");
      throw e;
    }
  };
  const isDelivery = (x: PatientDelivery | FastifyReply): x is PatientDelivery => "files" in x && "level" in x;

  app.get("/d/:token", async (req, reply) => {
    const { token } = req.params as { token: string };
    let access;
    try {
      access = await resolveLink(ctx, token, req.session.email);
    } catch (e) {
      // No such link; anything else (the store failing) is a 500, logged.
      if (!(e instanceof PraxmailError)) throw e;
      return portal.notice(req, reply, 404, "notFoundTitle", "notFound");
    }
    const here = `/d/${token}`;
    switch (access.kind) {
      case "gone":
        return gone(req, reply, access.status);
      case "open":
        return showDelivery(req, reply, access.delivery, here);
      case "register":
        return portal.page(req, reply, "register.eta", { email: access.email, token, error: null });
      case "login":
        // The #fragment (levels 1–2: the key) survives the redirect in the browser.
        return reply.redirect(`/login?next=${encodeURIComponent(here)}&email=${encodeURIComponent(access.email)}`, 303);
      case "secupass":
        return reply.redirect(`/secupass?next=${encodeURIComponent(here)}`, 303);
      case "wait":
        return portal.page(req, reply, "waiting.eta", { safetyCode: access.safetyCode });
      case "other-account":
        return portal.notice(req, reply, 403, "otherAccountTitle", "otherAccount");
      case "deliver":
        return reply.redirect(`/deliveries/${access.delivery.id}`, 303);
    }
  });

  app.get("/d/:token/files/:fileId", async (req, reply) => {
    const { token, fileId } = req.params as { token: string; fileId: string };
    try {
      const access = await resolveLink(ctx, token, null);
      if (access.kind === "gone") return await gone(req, reply, access.status);
      if (access.kind !== "open") return await portal.notice(req, reply, 404, "notFoundTitle", "notFound");
      return await sendBlob(reply, await fileForDownload(ctx, access.delivery, fileId));
    } catch (e) {
      if (e instanceof PraxmailError) return portal.notice(req, reply, 404, "notFoundTitle", "notFound");
      throw e;
    }
  });

  app.get("/deliveries", async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    return portal.page(req, reply, "deliveries.eta", { list: await deliveriesForPatient(ctx, req.session.email ?? "") });
  });

  app.get("/deliveries/:id", async (req, reply) => {
    const d = await own(req, reply);
    if (!isDelivery(d)) return d;
    if (d.patientKey && d.status === "pending-approval") return reply.redirect("/waiting", 303);
    return showDelivery(req, reply, d, `/deliveries/${d.id}`);
  });

  app.get("/deliveries/:id/files/:fileId", async (req, reply) => {
    const d = await own(req, reply);
    if (!isDelivery(d)) return d;
    try {
      return await sendBlob(reply, await fileForDownload(ctx, d, (req.params as { fileId: string }).fileId));
    } catch (e) {
      if (e instanceof PraxmailError) return portal.notice(req, reply, 404, "notFoundTitle", "notFound");
      throw e;
    }
  });

  app.get("/deliveries/:id/wrap", async (req, reply) => {
    const d = await own(req, reply);
    if (!isDelivery(d)) return d;
    let wrap: Uint8Array;
    try {
      wrap = await patientWrap(ctx, d);
    } catch (e) {
      if (e instanceof PraxmailError) return portal.notice(req, reply, 404, "notFoundTitle", "notFound");
      throw e;
    }
    return reply.type("application/octet-stream").send(Buffer.from(wrap));
  });
}

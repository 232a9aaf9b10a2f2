// Links, the list of messages, one message, and the ciphertext and wraps behind it.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  PraxmailError,
  deliveryForPatient,
  fileForDownload,
  listPasskeys,
  patientMessages,
  patientWrap,
  resolveLink,
  type PatientDelivery,
} from "../../core/index.js";
import type { Portal } from "../app.js";
import { needLogin, type Handler } from "./account.js";

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
  app.get("/d/:token", linkPage(portal));
  app.get("/d/:token/files/:fileId", linkFile(portal));
  app.get("/deliveries", async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    const email = req.session.email ?? "";
    return portal.page(req, reply, "deliveries.eta", await patientMessages(portal.ctx, email));
  });
  app.get("/deliveries/:id", deliveryPage(portal));
  app.get("/deliveries/:id/files/:fileId", deliveryFile(portal));
  app.get("/deliveries/:id/wrap", deliveryWrap(portal));
}

/** The page that says a delivery is revoked or expired, and whom to ask to send it again. */
function gone(portal: Portal, req: FastifyRequest, reply: FastifyReply, status: string): Promise<FastifyReply> {
  return portal.lost(req, reply, 410, "goneTitle", status === "revoked" ? "goneRevoked" : "goneExpired", "wayResend");
}

/** The page of one delivery, whose files and wrap are under `base`. */
async function showDelivery(portal: Portal, req: FastifyRequest, reply: FastifyReply, d: PatientDelivery, base: string): Promise<FastifyReply> {
  const email = req.session.email;
  // A passkey that holds U sealed can unlock instead of the typed key (client/delivery.ts).
  const passkeyUnlock = d.patientKey && email !== null && (await listPasskeys(portal.ctx, email)).some((k) => k.prf);
  return portal.page(req, reply, "delivery.eta", { d, data: clientData(d, base, email), passkeyUnlock });
}

/** A stored blob (ciphertext only) as a download. */
async function sendBlob(portal: Portal, reply: FastifyReply, key: string): Promise<FastifyReply> {
  const size = await portal.ctx.store.blobs.size(key);
  return reply
    .type("application/octet-stream")
    .header("Content-Length", size)
    .header("Content-Disposition", "attachment")
    .send(portal.ctx.store.blobs.read(key));
}

/** The logged-in patient's delivery `:id`, or the page that says why not. */
async function own(portal: Portal, req: FastifyRequest, reply: FastifyReply): Promise<PatientDelivery | FastifyReply> {
  const redirect = needLogin(req, reply);
  if (redirect) return redirect;
  const { id } = req.params as { id: string };
  try {
    return await deliveryForPatient(portal.ctx, id, req.session.email ?? "");
  } catch (e) {
    if (e instanceof PraxmailError && e.code === "wrong-state") return gone(portal, req, reply, e.message);
    if (e instanceof PraxmailError) return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
    throw e;
  }
}

const isDelivery = (x: PatientDelivery | FastifyReply): x is PatientDelivery => "files" in x && "level" in x;

/** GET /d/:token: wherever the link leads this visitor (core decides). */
function linkPage(portal: Portal): Handler {
  return async (req, reply) => {
    const { token } = req.params as { token: string };
    let access;
    try {
      access = await resolveLink(portal.ctx, token, req.session.email);
    } catch (e) {
      // No such link; anything else (the store failing) is a 500, logged.
      if (!(e instanceof PraxmailError)) throw e;
      return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
    }
    const here = `/d/${token}`;
    switch (access.kind) {
      case "gone":
        return gone(portal, req, reply, access.status);
      case "open":
        return showDelivery(portal, req, reply, access.delivery, here);
      case "register":
        return portal.page(req, reply, "register.eta", { email: access.email, token, type: portal.ctx.config.crypto.recipientType });
      case "login":
        // The #fragment (levels 1–2: the key) survives the redirect in the browser.
        return reply.redirect(`/login?next=${encodeURIComponent(here)}&email=${encodeURIComponent(access.email)}`, 303);
      case "secupass":
        // An account from before that never set its key sets one now.
        return reply.redirect("/secupass/reset", 303);
      case "wait":
        return portal.page(req, reply, "waiting.eta", { safetyCode: access.safetyCode });
      case "other-account":
        return portal.notice(req, reply, 403, "otherAccountTitle", "otherAccount");
      case "deliver":
        return reply.redirect(`/deliveries/${access.delivery.id}`, 303);
    }
  };
}

/** GET /d/:token/files/:fileId: a file of a delivery that its link opens without login. */
function linkFile(portal: Portal): Handler {
  return async (req, reply) => {
    const { token, fileId } = req.params as { token: string; fileId: string };
    try {
      const access = await resolveLink(portal.ctx, token, null);
      if (access.kind === "gone") return await gone(portal, req, reply, access.status);
      if (access.kind !== "open") return await portal.lost(req, reply, 404, "notFoundTitle", "notFound");
      return await sendBlob(portal, reply, await fileForDownload(portal.ctx, access.delivery, fileId));
    } catch (e) {
      if (e instanceof PraxmailError) return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
      throw e;
    }
  };
}

/** GET /deliveries/:id: one of the patient's deliveries, once the practice approved them. */
function deliveryPage(portal: Portal): Handler {
  return async (req, reply) => {
    const d = await own(portal, req, reply);
    if (!isDelivery(d)) return d;
    if (d.patientKey && d.status === "pending-approval") return reply.redirect("/waiting", 303);
    return showDelivery(portal, req, reply, d, `/deliveries/${d.id}`);
  };
}

/** GET /deliveries/:id/files/:fileId: a file of one of the patient's deliveries. */
function deliveryFile(portal: Portal): Handler {
  return async (req, reply) => {
    const d = await own(portal, req, reply);
    if (!isDelivery(d)) return d;
    try {
      return await sendBlob(portal, reply, await fileForDownload(portal.ctx, d, (req.params as { fileId: string }).fileId));
    } catch (e) {
      if (e instanceof PraxmailError) return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
      throw e;
    }
  };
}

/** GET /deliveries/:id/wrap: the delivery's wrap, which only the patient's Secu-Pass-Key opens. */
function deliveryWrap(portal: Portal): Handler {
  return async (req, reply) => {
    const d = await own(portal, req, reply);
    if (!isDelivery(d)) return d;
    let wrap: Uint8Array;
    try {
      wrap = await patientWrap(portal.ctx, d);
    } catch (e) {
      if (e instanceof PraxmailError) return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
      throw e;
    }
    return reply.type("application/octet-stream").send(Buffer.from(wrap));
  };
}

// Passkeys for known devices: the JSON steps of registering one and of logging in with one,
// and the devices page that lists and removes them. A login needs no address: the
// authenticator offers the patient's credential, the server finds the patient by it.
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from "@simplewebauthn/server";
import type { FastifyInstance } from "fastify";
import {
  PraxmailError,
  authenticatePasskey,
  listPasskeys,
  passkeyLoginOptions,
  passkeyRegistrationOptions,
  registerPasskey,
  removePasskey,
} from "../../core/index.js";
import { API, FIELD_MAX, bodySchema, type Portal } from "../app.js";
import { LIMITS } from "../limits.js";
import { csrfOk } from "../session.js";
import { agreeOnLanguage, fields, needLogin, safeNext, type Handler } from "./account.js";

const b64 = (maxLength: number): Record<string, unknown> => ({ type: "string", maxLength, pattern: "^[A-Za-z0-9_-]*$" });

/** The parts of a WebAuthn answer both ceremonies share, each bounded. */
const credential = (response: Record<string, unknown>, required: string[]): Record<string, unknown> => ({
  type: "object",
  required: ["id", "rawId", "type", "response"],
  properties: {
    id: b64(FIELD_MAX.credential),
    rawId: b64(FIELD_MAX.credential),
    type: { type: "string", const: "public-key" },
    response: { type: "object", required, properties: response },
    clientExtensionResults: { type: "object", maxProperties: 0 },
    authenticatorAttachment: { type: "string", maxLength: 20 },
  },
});

// Functions, not constants: app.ts imports this module before FIELD_MAX exists.
const loginBody = (): Record<string, unknown> => ({
  body: {
    type: "object",
    required: ["response"],
    properties: {
      response: credential({ clientDataJSON: b64(2048), authenticatorData: b64(2048), signature: b64(1024), userHandle: b64(128) }, ["clientDataJSON", "authenticatorData", "signature"]),
      next: { type: "string", maxLength: FIELD_MAX.next },
    },
  },
});

const registerBody = (): Record<string, unknown> => ({
  body: {
    type: "object",
    required: ["response", "sealed"],
    properties: {
      response: credential(
        {
          clientDataJSON: b64(2048),
          attestationObject: b64(8192),
          authenticatorData: b64(4096),
          publicKey: b64(4096),
          publicKeyAlgorithm: { type: "integer" },
          transports: { type: "array", maxItems: 8, items: { type: "string", maxLength: 20 } },
        },
        ["clientDataJSON", "attestationObject"],
      ),
      sealed: { anyOf: [{ type: "null" }, { type: "string", maxLength: 1600 }] },
    },
  },
});

/**
 * A device's name from its browser's User-Agent, e.g. "Chrome, Android": enough for the
 * patient to tell their devices apart, nothing more.
 *
 * @param ua - The User-Agent header.
 * @returns The label.
 */
export function deviceLabel(ua: string | undefined): string {
  const u = ua ?? "";
  const browser = /Edg\//.test(u) ? "Edge" : /Firefox\//.test(u) ? "Firefox" : /Chrome\//.test(u) ? "Chrome" : /Safari\//.test(u) ? "Safari" : "Browser";
  const os = /iPhone/.test(u) ? "iPhone" : /iPad/.test(u) ? "iPad" : /Android/.test(u) ? "Android" : /Windows/.test(u) ? "Windows" : /Mac OS X/.test(u) ? "Mac" : /Linux/.test(u) ? "Linux" : null;
  return os ? `${browser}, ${os}` : browser;
}

/**
 * Registers the passkey routes.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 */
export function passkeyRoutes(app: FastifyInstance, portal: Portal): void {
  app.post("/passkeys/login/options", { config: API }, loginOptions(portal));
  app.post("/passkeys/login", { schema: loginBody(), config: API }, login(portal));
  app.post("/passkeys/unlock", { schema: loginBody(), config: API }, unlock(portal));
  app.post("/passkeys/register/options", { config: API }, registerOptions(portal));
  app.post("/passkeys/register", { schema: registerBody(), config: API }, register(portal));
  app.get("/devices", devicesPage(portal));
  app.post("/devices/remove", { schema: bodySchema("_csrf", "credentialId") }, remove(portal));
}

/** POST /passkeys/login/options: a challenge for this visitor (double-submit CSRF), within a limit per address. */
function loginOptions(portal: Portal): Handler {
  return async (req, reply) => {
    const visitor = req.headers["x-csrf-token"];
    if (!csrfOk(req.session, visitor) || typeof visitor !== "string") return reply.code(403).send({ error: "csrf" });
    // Each challenge is a row until it is used or ends: bounded per address like the login.
    if (!(await portal.limits.reserve([LIMITS.passkeyIp, req.ip]))) return reply.code(429).send({ error: "too-many" });
    return reply.send({ options: await passkeyLoginOptions(portal.ctx, visitor) });
  };
}

/** POST /passkeys/login: a new session for a passkey's patient, with U still sealed (only the browser can open it). */
function login(portal: Portal): Handler {
  const { ctx, sessions, limits } = portal;
  return async (req, reply) => {
    const visitor = req.headers["x-csrf-token"];
    if (!csrfOk(req.session, visitor) || typeof visitor !== "string") return reply.code(403).send({ error: "csrf" });
    const body = req.body as { response: AuthenticationResponseJSON; next?: string };
    // Counted before the signature is checked; a success gives its attempt back, as the login's.
    const held = await limits.reserve([LIMITS.loginIp, req.ip]);
    if (!held) return reply.code(429).send({ error: "too-many" });
    let who;
    try {
      who = await authenticatePasskey(ctx, visitor, body.response);
      await sessions.login(req, reply, who.email);
    } catch (e) {
      if (e instanceof PraxmailError) return reply.code(401).send({ error: "passkey" });
      throw e;
    }
    await held.release();
    await agreeOnLanguage(portal, req, reply, who.email);
    return reply.send({ next: safeNext(body.next), address: who.email, sealed: who.sealed });
  };
}

/**
 * POST /passkeys/unlock: within a live session, U sealed for the session's own passkey (only
 * the browser can open it), so that a page asking for the key takes one tap instead. It
 * starts no session; another patient's passkey is refused.
 */
function unlock(portal: Portal): Handler {
  const { ctx, limits } = portal;
  return async (req, reply) => {
    const email = req.session.email;
    if (email === null) return reply.code(401).send({ error: "login required" });
    const visitor = req.headers["x-csrf-token"];
    if (!csrfOk(req.session, visitor) || typeof visitor !== "string") return reply.code(403).send({ error: "csrf" });
    const body = req.body as { response: AuthenticationResponseJSON };
    // Counted as the login's: an unlock that fails is a guess as much as a login that fails.
    const held = await limits.reserve([LIMITS.loginIp, req.ip]);
    if (!held) return reply.code(429).send({ error: "too-many" });
    let who;
    try {
      who = await authenticatePasskey(ctx, visitor, body.response, email);
    } catch (e) {
      if (e instanceof PraxmailError) return reply.code(401).send({ error: "passkey" });
      throw e;
    }
    await held.release();
    return reply.send({ address: who.email, sealed: who.sealed });
  };
}

/** POST /passkeys/register/options: a challenge for this session's patient. */
function registerOptions(portal: Portal): Handler {
  return async (req, reply) => {
    if (req.session.email === null || req.session.idHash === null) return reply.code(401).send({ error: "login required" });
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    try {
      return await reply.send({ options: await passkeyRegistrationOptions(portal.ctx, req.session.email, req.session.idHash), address: req.session.email });
    } catch (e) {
      if (e instanceof PraxmailError) return reply.code(409).send({ error: e.code });
      throw e;
    }
  };
}

/** POST /passkeys/register: stores the new passkey with U sealed under its PRF output (or without). */
function register(portal: Portal): Handler {
  return async (req, reply) => {
    if (req.session.email === null || req.session.idHash === null) return reply.code(401).send({ error: "login required" });
    if (!csrfOk(req.session, req.headers["x-csrf-token"])) return reply.code(403).send({ error: "csrf" });
    const body = req.body as { response: RegistrationResponseJSON; sealed: string | null };
    try {
      const added = await registerPasskey(portal.ctx, req.session.email, req.session.idHash, {
        response: body.response,
        sealed: body.sealed,
        label: deviceLabel(req.headers["user-agent"]),
      });
      return await reply.send({ prf: added.prf });
    } catch (e) {
      if (e instanceof PraxmailError) return reply.code(e.code === "invalid-input" ? 400 : 409).send({ error: e.code });
      throw e;
    }
  };
}

/** GET /devices: the patient's passkeys, each with a button that removes it. */
function devicesPage(portal: Portal): Handler {
  return async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    const removed = (req.query as { removed?: unknown }).removed;
    return portal.page(req, reply, "devices.eta", {
      devices: await listPasskeys(portal.ctx, req.session.email ?? ""),
      removed: typeof removed === "string" ? removed.slice(0, 80) : null,
    });
  };
}

/** POST /devices/remove: removes one passkey; it logs nobody in afterwards. */
function remove(portal: Portal): Handler {
  return async (req, reply) => {
    const redirect = needLogin(req, reply);
    if (redirect) return redirect;
    if (!csrfOk(req.session, (req.body as Record<string, unknown> | undefined)?._csrf)) return portal.notice(req, reply, 403, "csrfTitle", "csrf");
    const f = fields(req.body, "credentialId");
    if (!f) return portal.notice(req, reply, 400, "errorTitle", "badInput");
    let label;
    try {
      label = await removePasskey(portal.ctx, req.session.email ?? "", f.credentialId);
    } catch (e) {
      if (e instanceof PraxmailError) return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
      throw e;
    }
    return reply.redirect(`/devices?removed=${encodeURIComponent(label)}`, 303);
  };
}

// The patient portal: a fastify app over the core. It renders pages (eta, auto-escaping),
// serves ciphertext and wraps to the right session, and never sees a key that opens a file.
import { existsSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import fastifyCookie from "@fastify/cookie";
import fastifyFormbody from "@fastify/formbody";
import fastifyStatic from "@fastify/static";
import fastifyView from "@fastify/view";
import { Eta } from "eta";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Logger } from "pino";
import { errorFields, type Context, type ErrorFields, type Meter } from "../core/index.js";
import { CATALOGUES, LANGS, fromAcceptLanguage, isLang, pickLang, translator, type Lang, type MessageKey, type Translator } from "../i18n/index.js";
import { Limits } from "./limits.js";
import { accountRoutes } from "./routes/account.js";
import { deliveryRoutes } from "./routes/deliveries.js";
import { languageRoutes } from "./routes/language.js";
import { lifecycleRoutes } from "./routes/lifecycle.js";
import { lookRoutes, type Look } from "./routes/look.js";
import { passkeyRoutes } from "./routes/passkeys.js";
import { probeRoutes } from "./routes/probes.js";
import { replyRoutes } from "./routes/replies.js";
import { Sessions, cookiePolicy, type Session } from "./session.js";

/** What every route needs. */
export interface Portal {
  readonly ctx: Context;
  /** The portal's log: routes, status codes and failures, never tokens or bodies. */
  readonly log: Logger;
  readonly sessions: Sessions;
  readonly limits: Limits;
  /** Renders a page inside the layout. */
  page(req: FastifyRequest, reply: FastifyReply, view: string, data: Record<string, unknown>, status?: number): Promise<FastifyReply>;
  /** Renders a short page with a title and a text (errors, notices). */
  notice(req: FastifyRequest, reply: FastifyReply, status: number, title: MessageKey, text: MessageKey): Promise<FastifyReply>;
  /**
   * A notice that is no dead end: it leads to the patient's messages (or the login) and
   * names the practice to call. `way` says what to ask the practice: help in general, or
   * to send a message again.
   */
  lost(req: FastifyRequest, reply: FastifyReply, status: number, title: MessageKey, text: MessageKey, way?: "wayPractice" | "wayResend"): Promise<FastifyReply>;
  /** The texts in the visitor's language (see {@link textsOf}). */
  texts(req: FastifyRequest): Translator;
  /** The language the visitor chose (cookie) or their browser asks for; null when neither names one we speak. */
  knownLang(req: FastifyRequest): Lang | null;
  /** Sets the language cookie, which remembers the choice before login. */
  rememberLang(reply: FastifyReply, lang: Lang): void;
  /** The practice's logo and accent colour, as the layout shows them (set once the routes are registered). */
  look: Look;
}

declare module "fastify" {
  interface FastifyRequest {
    session: Session;
  }
  /** What a route is, for the hooks and the error handler (see {@link API} and {@link ASSET}). */
  interface FastifyContextConfig {
    /** A JSON route: its errors are JSON too. */
    readonly api?: boolean;
    /** A static file: it reads no session, and only its answers may be cached. */
    readonly asset?: boolean;
    /** A load balancer's probe: it reads no session and is never cached. */
    readonly probe?: boolean;
    /** A file that must run nothing, even opened on its own (the logo, which may be an SVG): {@link SANDBOX_CSP}. */
    readonly sandbox?: boolean;
  }
}

/** Where the views and the built browser assets are. */
export interface Assets {
  readonly views: string;
  readonly static: string;
}

/**
 * The default asset folders next to this file (dist/portal/ after `npm run build`).
 *
 * @returns The folders.
 */
export function defaultAssets(): Assets {
  const here = import.meta.dirname;
  const built = join(here, "..", "..", "dist", "portal");
  // From src/ (tests), the bundle only exists in dist/; from the CLI's bundle (dist/chunks/),
  // views and bundle are both in dist/portal/.
  const root = existsSync(join(here, "static", "app.js")) ? here : built;
  return { views: join(existsSync(join(here, "views")) ? here : built, "views"), static: join(root, "static") };
}

const CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'", // libsodium's WASM (client/sodium.ts); never 'unsafe-eval'
  "worker-src 'self'", // the Secu-Pass derivation (client/derive.ts), from our own origin only
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** The CSP of a file that is shown, never run: no script, no fetch, and a sandboxed origin. */
const SANDBOX_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/** Every field a form or JSON body may carry, and its longest allowed value. */
export const FIELD_MAX = {
  _csrf: 64,
  email: 254,
  token: 43,
  credential: 43,
  nonce: 43,
  next: 200,
  back: 200,
  code: 40,
  recipient: 2100,
  deliveryId: 32,
  /** A WebAuthn credential id, base64url (at most 1023 bytes). */
  credentialId: 1400,
} as const;

/**
 * A route schema for a form or JSON body: each named field, when present, is one string
 * within its {@link FIELD_MAX} limit. Fastify checks it before the handler runs, so an
 * over-long value costs no work (no scrypt, no query) and answers 400.
 *
 * @param names - The fields the route reads.
 * @returns The schema option of the route.
 */
export function bodySchema(...names: (keyof typeof FIELD_MAX)[]): { body: Record<string, unknown> } {
  return { body: { type: "object", properties: Object.fromEntries(names.map((n) => [n, { type: "string", maxLength: FIELD_MAX[n] }])) } };
}

/**
 * @param dir - The views folder.
 * @returns The views that render a form (they read `it.csrf`); the layout's form is the
 *   logout, shown to logged-in visitors only.
 */
async function formViewsIn(dir: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (const f of await readdir(dir)) {
    if (f.endsWith(".eta") && f !== "layout.eta" && (await readFile(join(dir, f), "utf8")).includes("it.csrf")) out.add(f);
  }
  return out;
}

/** Route config of the JSON routes: their errors are JSON too. */
export const API = { api: true } as const;

/** Route config of the static files: they carry no session, and only they may be cached. */
const ASSET = { asset: true } as const;

/**
 * The fastify instance. Fastify's own request lines would carry URLs, and URLs carry link
 * tokens: we log the route pattern instead (see {@link logRequests}).
 *
 * @param secure - Whether the portal is served over https.
 * @param trustProxy - The load balancers whose X-Forwarded-For names the client (see
 *   {@link buildPortal}).
 * @returns The instance, without plugins or routes.
 */
function createApp(secure: boolean, trustProxy: readonly string[]): FastifyInstance {
  return Fastify({
    logger: false,
    bodyLimit: 64 * 1024,
    // req.ip: the direct peer, unless it is a trusted proxy; then X-Forwarded-For from the
    // right, skipping only hops that are trusted proxies too (a client's own entries are never
    // believed).
    trustProxy: trustProxy.length > 0 ? [...trustProxy] : false,
    // A URL that does not decode (e.g. "/static/%zz") never reaches the hooks or handlers.
    frameworkErrors: (_err, req, reply) => {
      badUrl(req, reply, secure);
    },
  });
}

/**
 * The answer to a URL that does not decode. No hook or plugin ran for such a request (no
 * cookies, no views): a short text, with the same headers as every other answer.
 *
 * @param req - The request.
 * @param reply - The reply.
 * @param secure - Whether the portal is served over https.
 * @returns The reply, sent.
 */
function badUrl(req: FastifyRequest, reply: FastifyReply, secure: boolean): FastifyReply {
  securityHeaders(req, reply, secure);
  return reply.code(400).type("text/plain; charset=utf-8").send(translator(pickLang(undefined, req.headers["accept-language"]))("badInput"));
}

/**
 * Registers cookies, forms, the views and the static files. Every route @fastify/static adds
 * is marked {@link ASSET}, so that the session and cache rules read the route's config, not
 * its path.
 *
 * @param app - The fastify app.
 * @param assets - Views and static files.
 */
async function registerPlugins(app: FastifyInstance, assets: Assets): Promise<void> {
  await app.register(fastifyCookie);
  await app.register(fastifyFormbody);
  // production: templates are compiled once, not re-read on every request.
  await app.register(fastifyView, { engine: { eta: new Eta() }, root: assets.views, layout: "layout.eta", viewExt: "eta", production: true });
  // @fastify/static takes no route config: its routes are the ones added while it registers.
  let addingAssets = true;
  app.addHook("onRoute", (route) => {
    if (addingAssets) route.config = { ...route.config, ...ASSET };
  });
  await app.register(fastifyStatic, { root: assets.static, prefix: "/static/", cacheControl: false });
  addingAssets = false;
}

/**
 * The headers of every answer, including the 400 for a URL that does not decode.
 *
 * @param req - The request.
 * @param reply - The reply, about to be sent.
 * @param secure - Whether the portal is served over https (then with HSTS).
 */
function securityHeaders(req: FastifyRequest, reply: FastifyReply, secure: boolean): void {
  reply.header("Content-Security-Policy", req.routeOptions.config.sandbox === true ? SANDBOX_CSP : CSP);
  reply.header("X-Content-Type-Options", "nosniff");
  reply.header("Referrer-Policy", "no-referrer");
  reply.header("X-Frame-Options", "DENY");
  reply.header("Cross-Origin-Opener-Policy", "same-origin");
  reply.header("Cross-Origin-Resource-Policy", "same-origin");
  reply.header("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()");
  // Only a static asset itself may be cached; never a page, an error page or a response
  // that sets a cookie (a shared cache would hand it to the next visitor).
  const asset = req.routeOptions.config.asset === true && (reply.statusCode === 200 || reply.statusCode === 304) && !reply.hasHeader("set-cookie");
  reply.header("Cache-Control", asset ? "public, max-age=300" : "no-store");
  if (secure) reply.header("Strict-Transport-Security", "max-age=31536000; includeSubDomains");
}

/** Why a request failed or was refused, for its log line. */
type Failures = WeakMap<FastifyRequest, ErrorFields & { status: number }>;

/**
 * One line per request, by the route's pattern (never its URL, which may hold a token); a
 * request that failed or was refused carries its error on that line.
 *
 * @param app - The fastify app.
 * @param plog - The portal's log.
 * @param meter - Counts each response by status, and each failure by error code.
 * @returns Where the error handler records a request's error.
 */
function logRequests(app: FastifyInstance, plog: Logger, meter: Meter | undefined): Failures {
  const failures: Failures = new WeakMap();
  app.addHook("onResponse", async (req, reply) => {
    const err = failures.get(req);
    const line = { method: req.method, route: req.routeOptions.url ?? "(none)", status: reply.statusCode, ms: Math.round(reply.elapsedTime), ...(err ? { err } : {}) };
    meter?.response(reply.statusCode);
    if (reply.statusCode >= 500) {
      meter?.failed("portal", err?.code ?? null);
      plog.error(line, "request failed");
    } else if (err) plog.warn(line, "request refused");
    else plog.info(line, "request");
  });
  return failures;
}

/**
 * @param req - The request.
 * @returns The texts in the visitor's language (cookie, else Accept-Language).
 */
function textsOf(req: FastifyRequest): Translator {
  return translator(pickLang(req.cookies.lang, req.headers["accept-language"]));
}

/** A year: the language cookie outlives the browser session, so that the next visit speaks the same language. */
const LANG_COOKIE_SECONDS = 365 * 24 * 3600;

/** The language menu: each language by its own name. */
const LANGUAGES = LANGS.map((code) => ({ code, name: CATALOGUES[code].languageName }));

/**
 * The state and page rendering every route shares.
 *
 * @param ctx - The core context.
 * @param plog - The portal's log.
 * @param sessions - The sessions.
 * @param formViews - The views that render a form (see {@link formViewsIn}).
 * @param secure - Whether the portal is served over https (then the language cookie is too).
 * @returns The portal.
 */
function makePortal(ctx: Context, plog: Logger, sessions: Sessions, formViews: Set<string>, secure: boolean): Portal {
  const portal: Portal = {
    ctx,
    log: plog,
    sessions,
    limits: new Limits(ctx.store, () => ctx.now().getTime()),
    texts: textsOf,
    look: { logo: false, accent: false },
    knownLang: (req) => (isLang(req.cookies.lang) ? req.cookies.lang : fromAcceptLanguage(req.headers["accept-language"])),
    rememberLang(reply, lang) {
      reply.setCookie("lang", lang, { path: "/", sameSite: "strict", httpOnly: true, secure, maxAge: LANG_COOKIE_SECONDS });
    },
    async page(req, reply, view, data, status = 200) {
      const html = await reply.viewAsync(view, {
        t: textsOf(req),
        languages: LANGUAGES,
        practice: ctx.config.practiceName,
        look: portal.look,
        // A visitor who is not logged in gets a CSRF cookie only with a page that has a form.
        csrf: req.session.email !== null || formViews.has(view) ? sessions.formToken(req, reply) : "",
        user: req.session.email,
        here: req.url,
        ...data,
      });
      return reply.code(status).type("text/html; charset=utf-8").send(html);
    },
    async notice(req, reply, status, title, text) {
      return portal.page(req, reply, "notice.eta", { title: textsOf(req)(title), text: textsOf(req)(text) }, status);
    },
    async lost(req, reply, status, title, text, way = "wayPractice") {
      return portal.page(req, reply, "notice.eta", { title: textsOf(req)(title), text: textsOf(req)(text), way }, status);
    },
  };
  return portal;
}

/**
 * Registers every page and API route, by group.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 */
async function registerRoutes(app: FastifyInstance, portal: Portal): Promise<void> {
  portal.look = await lookRoutes(app, portal);
  languageRoutes(app, portal);
  accountRoutes(app, portal);
  deliveryRoutes(app, portal);
  lifecycleRoutes(app, portal);
  replyRoutes(app, portal);
  passkeyRoutes(app, portal);
  probeRoutes(app, portal);
}

/**
 * The 404 page and the error handler: bad input is a 400, any other refusal a 404, the rest
 * a 500; JSON for the {@link API} routes, a page for the others.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 * @param failures - Where each error is recorded for the request's log line.
 */
function handleErrors(app: FastifyInstance, portal: Portal, failures: Failures): void {
  // Static files carry no session (onRequest); their 404 page needs one for the layout.
  const withSession = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!(req.session as Session | null)) req.session = await portal.sessions.get(req, reply);
  };
  app.setNotFoundHandler(async (req, reply) => {
    await withSession(req, reply);
    return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
  });
  app.setErrorHandler(async (err, req, reply) => {
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    failures.set(req, { ...errorFields(err), status });
    const badInput = status === 413 || status === 415 || status === 400;
    // Any other refusal (@fastify/static's 403 for "..", "//" or "/./" in a path) is a page
    // that does not exist; it must not pass for a server fault.
    const missing = status >= 400 && status < 500 && !badInput;
    if (req.routeOptions.config.api === true) {
      if (missing) return reply.code(404).send({ error: "not-found" });
      if (!badInput) return reply.code(500).send({ error: "internal" });
      const validation = (err as { validation?: unknown }).validation !== undefined;
      return reply.code(status === 413 ? 413 : 400).send({ error: status === 413 ? "too-large" : "bad-request", ...(validation ? { message: (err as Error).message } : {}) });
    }
    await withSession(req, reply);
    if (badInput) return portal.notice(req, reply, 400, "errorTitle", "badInput");
    if (missing) return portal.lost(req, reply, 404, "notFoundTitle", "notFound");
    return portal.notice(req, reply, 500, "errorTitle", "error");
  });
}

/**
 * Builds the portal app.
 *
 * @param ctx - The core context.
 * @param log - Request logging goes here (method, route, status; never bodies).
 * @param assets - Views and static files.
 * @param trustProxy - Addresses and CIDR ranges of the load balancers in front (from
 *   `parseTrustedProxies`): only a request whose direct peer is one of them is taken to come
 *   from the address its X-Forwarded-For names, for the per-address limits. Empty: nobody.
 * @returns The fastify instance, not yet listening.
 */
export async function buildPortal(ctx: Context, log: Logger, assets: Assets = defaultAssets(), trustProxy: readonly string[] = []): Promise<FastifyInstance> {
  const secure = ctx.config.portalUrl.startsWith("https:");
  const app = createApp(secure, trustProxy);
  await registerPlugins(app, assets);
  const plog = log.child({ part: "portal" });
  const sessions = new Sessions(ctx, cookiePolicy(ctx.config.portalUrl));
  app.decorateRequest("session", null as unknown as Session);
  // A static file carries no session: it neither extends nor ends one (and stays cacheable).
  app.addHook("onRequest", async (req, reply) => {
    const { asset, probe } = req.routeOptions.config;
    if (asset !== true && probe !== true) req.session = await sessions.get(req, reply);
  });
  app.addHook("onSend", async (req, reply) => {
    securityHeaders(req, reply, secure);
  });
  const failures = logRequests(app, plog, ctx.meter);
  const portal = makePortal(ctx, plog, sessions, await formViewsIn(assets.views), secure);
  await registerRoutes(app, portal);
  handleErrors(app, portal, failures);
  return app;
}

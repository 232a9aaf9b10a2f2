// Web hardening of the portal (issue 8, item 4, in the spirit of OWASP ASVS L2): the
// security headers on every route, session ids that change at login, login answers and
// timing that do not tell whether an address has an account, the attempt limits, and a
// server-side limit on every field of every form. Against the real app (fastify inject) over
// a real home and store; the route and form tables are checked against the app itself, so
// a new route or field without an entry here fails.
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { openContext } from "../src/commands/shared.js";
import {
  createDelivery,
  createInvite,
  markSent,
  requestKeyReset,
  revokePatient,
  startReply,
  type CreatedDelivery,
} from "../src/core/index.js";

import { buildPortal, type Assets } from "../src/portal/index.js";
import { outbox, practiceIdentityOf } from "./helpers/cli.js";
import { approveWithTheirCodes, keyOf, newKey, registerThroughCore } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";
import { streamOf } from "./helpers/streams.js";
import { collect } from "./helpers/store.js";
import { readDb } from "./helpers/store.js";

// Every scrypt run (node:crypto) with its cost, so a test can count them per request.
const scrypts = vi.hoisted(() => [] as { N: number; r: number; p: number; keylen: number; salt: number }[]);
vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  const scrypt = (...args: unknown[]): void => {
    const [, salt, keylen, opts] = args as [unknown, Buffer, number, { N?: number; r?: number; p?: number } | undefined];
    scrypts.push({ N: opts?.N ?? 0, r: opts?.r ?? 0, p: opts?.p ?? 0, keylen, salt: salt.length });
    (real.scrypt as (...a: unknown[]) => void)(...args);
  };
  return { ...real, scrypt, default: { ...real, scrypt } };
});

const A = "anna@patient.example"; // approved, with deliveries: the logged-in visitor
const L = "lena@patient.example"; // the account lockout
const T = "tim@patient.example"; // the timing measurement
const R = "rolf@patient.example"; // revoked
const P = "paula@patient.example"; // Secu-Pass reset
const NOBODY = "niemand@patient.example";
const MAX_UPLOAD = 4096;
const GERMAN = {
  badInput: "Bitte prüfen Sie Ihre Eingaben.",
  loginFailed: "E-Mail-Adresse oder Secu-Pass-Key ist falsch.",
  tooMany: "Zu viele Versuche. Bitte warten Sie 15 Minuten und versuchen Sie es dann erneut.",
};
const silent = pino({ level: "silent" });
/** A well-formed credential that no key gives. */
const WRONG_CREDENTIAL = "W".repeat(43);
/** A new key the server refuses (its parameters are too cheap): the body's shape, no work done. */
const NO_KEY = { kdf: { alg: "scrypt", v: 3, logN: 10, r: 8, p: 1, salt: "AAAAAAAAAAAAAAAAAAAAAA==", type: "x25519" }, recipient: "age1kein-empfaenger", credential: "A".repeat(43) };
const assets: Assets = { views: join(import.meta.dirname, "../src/portal/views"), static: join(import.meta.dirname, "../src/portal/static") };

let fixtures = 0;
let practice: string;
/** An invite made up front (invites are signed with P, which takes a moment). */
let grenzen: { id: string; email: string; code: string };
const portal = usePortal({
  beforeOpen: async (home) => {
    await registerThroughCore(home, A, "Annas Secu-Pass-Key");
    for (const e of [L, T, R, P]) await registerThroughCore(home, e, `Secu-Pass-Key für ${e}`);
  },
  config: (config) => ({ ...config, portal: { ...config.portal, maxUploadBytes: MAX_UPLOAD } }),
  afterOpen: async (ctx) => {
    practice = await practiceIdentityOf(ctx.home);
    await approveWithTheirCodes(ctx, [A], practice);
    grenzen = await createInvite(ctx, "grenzen@patient.example", practice);
    await revokePatient(ctx, R);
  },
  assets,
});
/** The same portal under an https URL (HSTS, `__Host-` cookies). */
let httpsApp: FastifyInstance;
beforeAll(async () => {
  httpsApp = await buildPortal({ ...portal.ctx, config: { ...portal.ctx.config, portalUrl: "https://portal.praxis.example" } }, silent, assets);
});
afterAll(async () => {
  await httpsApp.close();
});

async function loggedIn(on: FastifyInstance, email = A): Promise<Client> {
  const c = new Client(on);
  const res = await c.login(email);
  expect(res.statusCode).toBe(200);
  // The new session has a new CSRF token: read it from a page.
  expect((await c.get("/deliveries")).statusCode).toBe(200);
  return c;
}

async function deliver(to: string, level: number): Promise<CreatedDelivery> {
  const d = await createDelivery(portal.ctx, { recipient: to, level, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4 Befund")) }] });
  await markSent(portal.ctx, [d.id]);
  return d;
}
const tokenOf = (d: CreatedDelivery): string => /\/d\/([\w-]{43})/.exec(d.link)![1]!;
const fileOf = async (d: CreatedDelivery): Promise<string> => (await portal.ctx.store.records.files(d.id)).find((f) => f.kind === "attachment")!.id;
const sessionHash = (id: string): string => createHash("sha256").update(id).digest("hex");
const errorText = (body: string): string | undefined => /<p class="error"[^>]*>([^<]*)</.exec(body)?.[1];
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function resetToken(email: string): Promise<string> {
  const before = (await outbox(portal.home)).length;
  await requestKeyReset(portal.ctx, email);
  const mails = await outbox(portal.home);
  expect(mails.length).toBe(before + 1);
  return /\/reset\/([\w-]{43})/.exec(mails.at(-1)?.text ?? "")![1]!;
}

/** Everything a request could have changed: scrypt runs, audit rows, mails, blobs, sessions aside. */
async function workDone(): Promise<{ scrypt: number; audit: number; mails: number; blobs: number }> {
  const count = async (p: string): Promise<number> => (await readdir(p, { recursive: true }).catch(() => [])).length;
  return { scrypt: scrypts.length, audit: (await collect(portal.ctx.store.auditRows())).length, mails: (await outbox(portal.home)).length, blobs: await count(join(portal.home, "blobs")) };
}

/** The routes fastify has, as "METHOD /path", read from printRoutes (HEAD included). */
function routesOf(on: FastifyInstance): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of on.printRoutes({ commonPrefix: false }).split("\n")) {
    const m = /^([ │]*)[├└]── (.+?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    const path = (depth === 0 ? "" : stack[depth - 1]!) + m[2]!;
    stack[depth] = path;
    stack.length = depth + 1;
    for (const method of m[3]?.split(", ") ?? []) out.push(`${method} ${path}`);
  }
  return out.sort();
}

describe("headers on every route", () => {
  /** One request per route; `auth` sends it from a logged-in session as well as anonymously. */
  interface Row {
    readonly route: string;
    readonly send: (c: Client, f: Fixture, user: boolean) => Promise<LightMyRequestResponse>;
  }
  interface Fixture {
    readonly level1: CreatedDelivery;
    readonly level3: CreatedDelivery;
    readonly register: CreatedDelivery;
    readonly reset: string;
    readonly invite: string;
    readonly reply: string;
  }
  const AGE = Buffer.from("age-encryption.org/v1\n-> X25519 x\n");
  // Ordered so that the logout comes last: the logged-in client stays logged in until then.
  const ROWS: Row[] = [
    { route: "GET /", send: (c) => c.get("/") },
    { route: "GET /static/*", send: (c) => c.get("/static/style.css") },
    { route: "GET /lang/:code", send: (c) => c.get("/lang/de?back=/login") },
    { route: "GET /lang", send: (c) => c.get("/lang?code=de&back=/login") },
    { route: "POST /lang", send: (c) => c.post("/lang", { code: "de", back: "/login", _csrf: c.csrf }) },
    { route: "GET /help", send: (c) => c.get("/help") },
    { route: "GET /healthz", send: (c) => c.get("/healthz") },
    { route: "GET /readyz", send: (c) => c.get("/readyz") },
    { route: "GET /login", send: (c) => c.get("/login?next=/deliveries") },
    {
      route: "POST /login",
      send: async (c, _f, user) => {
        const res = await c.login(user ? A : NOBODY, keyOf(A));
        if (user) await c.get("/deliveries"); // the new session's CSRF token
        return res;
      },
    },
    { route: "POST /login/params", send: (c) => c.json("/login/params", { email: NOBODY }) },
    { route: "POST /register", send: (c, f) => c.json("/register", { token: tokenOf(f.register), ...NO_KEY }) },
    { route: "GET /secupass/reset", send: (c) => c.get("/secupass/reset") },
    { route: "POST /secupass/reset", send: (c) => c.json("/secupass/reset", NO_KEY) },
    { route: "GET /waiting", send: (c) => c.get("/waiting") },
    { route: "GET /reset", send: (c) => c.get("/reset") },
    { route: "POST /reset", send: (c) => c.post("/reset", { email: NOBODY, _csrf: c.csrf }) },
    { route: "GET /reset/:token", send: (c, f) => c.get(`/reset/${f.reset}`) },
    { route: "POST /reset/:token", send: (c, f) => c.json(`/reset/${f.reset}`, NO_KEY) },
    { route: "GET /invite/:id", send: (c, f) => c.get(`/invite/${f.invite}`) },
    { route: "POST /invite/:id", send: (c, f) => c.json(`/invite/${f.invite}`, { email: "neu@patient.example", code: "AAAA", ...NO_KEY }) },
    { route: "GET /d/:token", send: (c, f) => c.get(`/d/${tokenOf(f.level1)}`) },
    { route: "GET /d/:token", send: (c, f) => c.get(`/d/${tokenOf(f.level3)}`) },
    { route: "GET /d/:token/files/:fileId", send: async (c, f) => c.get(`/d/${tokenOf(f.level1)}/files/${await fileOf(f.level1)}`) },
    { route: "GET /deliveries", send: (c) => c.get("/deliveries") },
    { route: "GET /deliveries/:id", send: (c, f) => c.get(`/deliveries/${f.level3.id}`) },
    { route: "GET /deliveries/:id/files/:fileId", send: async (c, f) => c.get(`/deliveries/${f.level3.id}/files/${await fileOf(f.level3)}`) },
    { route: "GET /deliveries/:id/wrap", send: (c, f) => c.get(`/deliveries/${f.level3.id}/wrap`) },
    { route: "GET /reply", send: (c) => c.get("/reply") },
    { route: "POST /reply", send: (c) => c.json("/reply", { deliveryId: "" }) },
    { route: "POST /reply/:id/parts", send: (c, f) => c.upload(`/reply/${f.reply}/parts?kind=message`, AGE) },
    { route: "POST /reply/:id/finish", send: (c, f) => c.json(`/reply/${f.reply}/finish`, {}) },
    { route: "GET /devices", send: (c) => c.get("/devices") },
    { route: "POST /devices/remove", send: (c) => c.post("/devices/remove", { credentialId: "kein-passkey", _csrf: c.csrf }) },
    { route: "POST /passkeys/login/options", send: (c) => c.json("/passkeys/login/options", {}) },
    { route: "POST /passkeys/login", send: (c) => c.json("/passkeys/login", { response: { id: "x", rawId: "x", type: "public-key", response: { clientDataJSON: "x", authenticatorData: "x", signature: "x" } } }) },
    { route: "POST /passkeys/unlock", send: (c) => c.json("/passkeys/unlock", { response: { id: "x", rawId: "x", type: "public-key", response: { clientDataJSON: "x", authenticatorData: "x", signature: "x" } } }) },
    { route: "POST /passkeys/register/options", send: (c) => c.json("/passkeys/register/options", {}) },
    { route: "POST /passkeys/register", send: (c) => c.json("/passkeys/register", { response: { id: "x", rawId: "x", type: "public-key", response: { clientDataJSON: "x", attestationObject: "x" } }, sealed: null }) },
    { route: "POST /logout", send: (c) => c.post("/logout", { _csrf: c.csrf }) },
  ];
  // Error pages and answers no route gives: unknown page, missing asset, bad bodies.
  const EXTRA: Row[] = [
    { route: "(404)", send: (c) => c.get("/gibt-es-nicht") },
    { route: "(404 static)", send: (c) => c.get("/static/gibt-es-nicht.js") },
    { route: "(bad JSON)", send: (c) => c.request("POST", "/login", { payload: "{kaputt", headers: { "content-type": "application/json", "x-csrf-token": c.csrf } }) },
    { route: "(CSRF)", send: (c) => c.request("POST", "/login", { payload: JSON.stringify({ email: NOBODY, credential: NO_KEY.credential }), headers: { "content-type": "application/json" } }) },
    { route: "(gone)", send: (c) => c.get("/invite/i_000000000000") },
    { route: "(415)", send: (c) => c.request("POST", "/login", { payload: "<x/>", headers: { "content-type": "application/xml" } }) },
    { route: "(too large)", send: (c) => c.post("/login", { email: "x".repeat(70 * 1024), _csrf: c.csrf }) },
  ];

  it("the table lists every route the app has, and every GET answers HEAD too", () => {
    // printRoutes shows the static route as "/*"; it is @fastify/static's "/static/*".
    expect(portal.app.hasRoute({ method: "GET", url: "/static/*" })).toBe(true);
    expect(portal.app.hasRoute({ method: "GET", url: "/*" })).toBe(false);
    const have = routesOf(portal.app).map((r) => r.replace(/^(GET|HEAD) \/\*$/, "$1 /static/*"));
    const listed = [...new Set(ROWS.map((r) => r.route))];
    expect(have.filter((r) => !r.startsWith("HEAD ")).sort()).toEqual(listed.sort());
    const gets = have.filter((r) => r.startsWith("GET ")).map((r) => r.slice(4));
    expect(have.filter((r) => r.startsWith("HEAD ")).map((r) => r.slice(5)).sort()).toEqual(gets.sort());
  });

  for (const https of [false, true]) {
    it(`every answer, logged in or not, has no-referrer, nosniff, frame-ancestors 'none', no-store, and HSTS ${https ? "(https)" : "never (http)"}`, async () => {
      const on = https ? httpsApp : portal.app;
      const seen = { status: new Set<number>(), type: new Set<string>() };
      const check = (res: LightMyRequestResponse, what: string): void => {
        seen.status.add(res.statusCode);
        seen.type.add(String(res.headers["content-type"]).split(";")[0]!);
        expect(res.headers["referrer-policy"], what).toBe("no-referrer");
        expect(res.headers["x-content-type-options"], what).toBe("nosniff");
        expect(String(res.headers["content-security-policy"]), what).toMatch(/(^|; )frame-ancestors 'none'(;|$)/);
        expect(res.headers["x-frame-options"], what).toBe("DENY");
        // Only an asset itself may be cached: not behind a login, no cookie, no page.
        const asset = what.includes("GET /static/*") && res.statusCode === 200;
        expect(res.headers["cache-control"], what).toBe(asset ? "public, max-age=300" : "no-store");
        if (asset) expect(res.headers["set-cookie"], what).toBeUndefined();
        expect(res.headers["strict-transport-security"], what).toBe(https ? "max-age=31536000; includeSubDomains" : undefined);
      };
      const fixture = async (): Promise<Fixture> => {
        fixtures++;
        const invite = await createInvite(portal.ctx, `eingeladen-${String(fixtures)}@patient.example`, practice);
        return {
          level1: await deliver(NOBODY, 1),
          level3: await deliver(A, 3),
          register: await deliver(`neu-${String(fixtures)}@patient.example`, 3),
          reset: await resetToken(P),
          invite: invite.id,
          reply: (await startReply(portal.ctx, A, null)),
        };
      };
      const user = await loggedIn(on);
      const anon = new Client(on);
      await anon.get("/login");
      for (const [who, c] of [
        ["anonymous", anon],
        ["logged in", user],
      ] as const) {
        const f = await fixture();
        for (const row of [...ROWS, ...EXTRA]) {
          const res = await row.send(c, f, c === user);
          check(res, `${who} ${row.route} → ${String(res.statusCode)}`);
          if (row.route.startsWith("GET ")) {
            // HEAD of the same URL, without changing the client's state.
            const last = res.raw.req.url ?? "";
            const head = await on.inject({ method: "HEAD", url: last, remoteAddress: c.ip, headers: { cookie: c.cookieHeader() } });
            check(head, `${who} HEAD ${row.route} → ${String(head.statusCode)}`);
          }
        }
      }
      // The table reached pages, redirects, files, wraps, JSON and error pages.
      expect([...seen.status].sort()).toEqual(expect.arrayContaining([200, 303, 400, 401, 403, 404, 410]));
      expect([...seen.type]).toEqual(expect.arrayContaining(["text/html", "application/json", "application/octet-stream", "text/css"]));
    });
  }
});

describe("session ids", () => {
  /** Each way into an account: the page the visitor opens first, and the form that logs in. */
  const WAYS: {
    name: string;
    open: () => Promise<{ url: string; code?: string; email?: string }>;
    submit: (c: Client, url: string, code: string, email: string) => Promise<LightMyRequestResponse>;
    then: RegExp;
  }[] = [
    {
      name: "login",
      // The link of A's mail (it names A), opened where T is logged in.
      open: () => Promise.resolve({ url: `/login?email=${encodeURIComponent(A)}` }),
      submit: (c) => c.login(A),
      then: /^\/deliveries$/,
    },
    {
      name: "registration through a link",
      open: async () => ({ url: `/d/${tokenOf(await deliver(`neu-fixierung-${String(++fixtures)}@patient.example`, 3))}` }),
      submit: async (c, url) => {
        const { kdf, recipient, credential } = await newKey(`neu-fixierung-${String(fixtures)}@patient.example`, "ein Secu-Pass-Key zum Anlegen");
        return c.json("/register", { token: url.slice(3), kdf, recipient, credential });
      },
      then: /^\/d\/[\w-]{43}$/,
    },
    {
      name: "registration with an invite",
      open: async () => {
        const inv = await createInvite(portal.ctx, `eingeladen-fixierung-${String(++fixtures)}@patient.example`, practice);
        return { url: `/invite/${inv.id}`, code: inv.code, email: inv.email };
      },
      submit: async (c, url, code, email) => {
        const { kdf, recipient, credential } = await newKey(email, "ein Secu-Pass-Key zum Anlegen");
        return c.json(url, { email, code, kdf, recipient, credential });
      },
      then: /^\/waiting$/,
    },
  ];
  const sessionCount = (): number => readDb(portal.home, (db) => db.prepare("SELECT count(*) FROM sessions").pluck().get() as number);

  for (const way of WAYS) {
    it(`${way.name}: a new id is issued, and the id from before is worthless afterwards; the form page writes no session`, async () => {
      // A visitor: no session before the form is sent.
      const first = await way.open();
      const visitor = new Client(portal.app);
      const rows = sessionCount();
      expect((await visitor.get(first.url)).statusCode).toBe(200);
      expect(visitor.sid).toBeUndefined();
      expect(sessionCount()).toBe(rows);
      const res = await way.submit(visitor, first.url, first.code ?? "", first.email ?? "");
      expect(res.statusCode, res.body).toBe(200);
      expect((JSON.parse(res.body) as { next: string }).next).toMatch(way.then);
      expect(visitor.sid).toMatch(/^[\w-]{43}$/);
      expect((await visitor.get("/deliveries")).statusCode).toBe(200);
      // A browser that carries a session from before (another patient's, on a shared computer).
      const { url, code = "", email = "" } = await way.open();
      const c = await loggedIn(portal.app, T);
      const before = c.sid!;
      // (A link for another address answers 403 to T; its page still carries T's form token.)
      expect([200, 403]).toContain((await c.get(url)).statusCode);
      const again = await way.submit(c, url, code, email);
      expect(again.statusCode, again.body).toBe(200);
      expect((JSON.parse(again.body) as { next: string }).next).toMatch(way.then);
      const after = c.sid!;
      expect(after).toMatch(/^[\w-]{43}$/);
      expect(after).not.toBe(before);
      // The old id is gone on the server, not merely replaced in this browser.
      expect(await portal.ctx.store.records.session(sessionHash(before))).toBeUndefined();
      const planted = await portal.app.inject({ method: "GET", url: "/deliveries", headers: { cookie: `praxmail=${before}` } });
      expect(planted.statusCode).toBe(303);
      expect(planted.headers.location).toBe("/login?next=%2Fdeliveries");
      expect((await c.get("/deliveries")).statusCode).toBe(200);
    });
  }

  it("an id the server did not issue is never adopted: the browser is told to drop it, no row is written, and logging in leaves the planted one logged out", async () => {
    const chosen = "A".repeat(43);
    const c = new Client(portal.app);
    c.cookies.set("praxmail", chosen);
    const rows = sessionCount();
    await c.get("/login");
    expect(c.sid).toBeUndefined();
    expect(sessionCount()).toBe(rows);
    expect(await portal.ctx.store.records.session(sessionHash(chosen))).toBeUndefined();
    c.cookies.set("praxmail", chosen);
    expect((await c.login(A)).statusCode).toBe(200);
    expect(c.sid).toMatch(/^[\w-]{43}$/);
    expect(c.sid).not.toBe(chosen);
    expect(await portal.ctx.store.records.session(sessionHash(chosen))).toBeUndefined();
    const planted = await portal.app.inject({ method: "GET", url: "/deliveries", headers: { cookie: `praxmail=${chosen}` } });
    expect(planted.statusCode).toBe(303);
  });

  it("a Secu-Pass reset by mail ends every session of the patient, this browser's too, and issues this browser a new id", async () => {
    const c = await loggedIn(portal.app, P);
    const elsewhere = await loggedIn(portal.app, P);
    const token = await resetToken(P);
    expect((await c.get(`/reset/${token}`)).statusCode).toBe(200);
    const before = c.sid!;
    const { kdf, recipient, credential } = await newKey(P, "Paulas neuer Secu-Pass-Key");
    const res = await c.json(`/reset/${token}`, { kdf, recipient, credential });
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ next: "/waiting" });
    expect(c.sid).toMatch(/^[\w-]{43}$/);
    expect(c.sid).not.toBe(before);
    expect(await portal.ctx.store.records.session(sessionHash(before))).toBeUndefined();
    expect(await portal.ctx.store.records.session(sessionHash(elsewhere.sid!))).toBeUndefined();
    const replay = await portal.app.inject({ method: "GET", url: "/deliveries", headers: { cookie: `praxmail=${before}` } });
    expect(replay.statusCode).toBe(303);
    expect((await elsewhere.get("/deliveries")).statusCode).toBe(303);
  });
});

describe("login does not tell whether an address has an account", () => {
  it("authenticatePatient runs no scrypt on any path (the browser derived the credential) and refuses every failure alike", async () => {
    const { authenticatePatient } = await import("../src/core/index.js");
    const { credentialHash } = await import("../src/core/keys.js");
    const row = (await portal.ctx.store.records.patient(T))!;
    const right = (await import("./helpers/patient.js")).deriveCached(keyOf(T), JSON.parse(row.kdf!) as never, T);
    const { credential } = await right;
    expect(credentialHash(credential)).toBe(row.credentialHash);
    const wrong = "B".repeat(43);
    const from = scrypts.length;
    for (const [email, given, ok] of [
      [NOBODY, credential, false],
      [T, wrong, false],
      [T, "kein Credential", false],
      [T, credential, true],
      ["kein Adressformat", credential, false],
      [R, credential, false],
      ["NIEMAND@Patient.Example", credential, false],
    ] as const) {
      expect((await authenticatePatient(portal.ctx, email, given, null)) !== null, email).toBe(ok);
    }
    expect(scrypts.slice(from)).toEqual([]);
  });

  it("the portal answers the same for a wrong key, an unknown, a malformed and a revoked address", async () => {
    const answers = [];
    for (const [email, key] of [
      [T, "ein falscher Secu-Pass-Key"],
      [NOBODY, keyOf(T)],
      ["kein Adressformat", keyOf(T)],
      [R, keyOf(R)],
    ] as const) {
      const res = await new Client(portal.app).login(email, key);
      answers.push({ status: res.statusCode, body: JSON.parse(res.body) as unknown, cookie: res.headers["set-cookie"] });
    }
    expect(answers[0]).toEqual({ status: 401, body: { error: GERMAN.loginFailed }, cookie: undefined });
    for (const a of answers) expect(a).toEqual(answers[0]);
  });

  it("takes as long for an unknown address as for a known one, to ask for the parameters and to fail the login (medians of 25 each, interleaved, within a factor of 2)", async () => {
    // Its own app. The clock moves 16 minutes before each attempt so that no limit ever answers.
    const own = await buildPortal(portal.ctx, silent, assets);
    try {
      const { credential } = await (await import("./helpers/patient.js")).deriveCached(keyOf(T), JSON.parse((await portal.ctx.store.records.patient(T))!.kdf!) as never, T);
      const wrong = `${credential.slice(0, 42)}${credential.endsWith("A") ? "B" : "A"}`;
      const times = { paramsKnown: [] as number[], paramsUnknown: [] as number[], loginKnown: [] as number[], loginUnknown: [] as number[] };
      const attempt = async (known: boolean): Promise<void> => {
        portal.clock = new Date(portal.clock.getTime() + 16 * 60_000);
        const c = new Client(own);
        await c.get("/login");
        const email = known ? T : NOBODY;
        let start = process.hrtime.bigint();
        expect((await c.json("/login/params", { email })).statusCode).toBe(200);
        (known ? times.paramsKnown : times.paramsUnknown).push(Number(process.hrtime.bigint() - start) / 1e6);
        start = process.hrtime.bigint();
        expect((await c.json("/login", { email, credential: wrong, next: "/deliveries" })).statusCode).toBe(401);
        (known ? times.loginKnown : times.loginUnknown).push(Number(process.hrtime.bigint() - start) / 1e6);
      };
      for (let i = 0; i < 3; i++) for (const k of [true, false]) await attempt(k); // warm-up
      for (const t of Object.values(times)) t.length = 0;
      // Alternate the order, so that neither kind always runs first.
      for (let i = 0; i < 25; i++) for (const k of i % 2 ? [true, false] : [false, true]) await attempt(k);
      for (const [what, known, unknown] of [
        ["parameters", median(times.paramsKnown), median(times.paramsUnknown)],
        ["login", median(times.loginKnown), median(times.loginUnknown)],
      ] as const) {
        expect(unknown / known, `${what}: unknown ${unknown.toFixed(2)} ms vs known ${known.toFixed(2)} ms`).toBeGreaterThan(0.5);
        expect(unknown / known, `${what}: unknown ${unknown.toFixed(2)} ms vs known ${known.toFixed(2)} ms`).toBeLessThan(2);
      }
    } finally {
      await own.close();
    }
  });
});

describe("attempt limits", () => {
  // The counters live in the store: each test starts with none.
  beforeEach(async () => {
    await portal.ctx.store.attempts.purge(Number.MAX_SAFE_INTEGER);
  });

  it("lock an account after 5 failed logins for 15 minutes, in German, the same for an unknown address, and open again after the window", async () => {
    const own = await buildPortal(portal.ctx, silent, assets);
    try {
      const fail = async (email: string): Promise<LightMyRequestResponse> => new Client(own).login(email, "ein falscher Secu-Pass-Key");
      // Address variants count for one account.
      for (const email of [L, L.toUpperCase(), ` ${L} `, L, L]) expect((await fail(email)).statusCode).toBe(401);
      for (let i = 0; i < 5; i++) expect((await fail(NOBODY)).statusCode).toBe(401);
      for (const email of [L, NOBODY]) {
        // The right key changes nothing while locked, and no session is made.
        const blocked = await new Client(own).login(email, keyOf(L));
        expect(blocked.statusCode, email).toBe(429);
        expect(JSON.parse(blocked.body)).toEqual({ error: GERMAN.tooMany });
        expect(blocked.headers["set-cookie"]).toBeUndefined();
      }
      portal.clock = new Date(portal.clock.getTime() + 15 * 60_000 - 1);
      expect((await new Client(own).login(L)).statusCode).toBe(429);
      portal.clock = new Date(portal.clock.getTime() + 1);
      expect((await new Client(own).login(L)).statusCode).toBe(200);
      expect((await new Client(own).login(NOBODY, keyOf(L))).statusCode).toBe(401);
    } finally {
      await own.close();
    }
  });

  it("limit 30 failed logins per IP across accounts for 15 minutes, in German; other IPs are not affected", async () => {
    const own = await buildPortal(portal.ctx, silent, assets);
    try {
      const ip = "10.9.9.9";
      const codes: number[] = [];
      for (let i = 0; i < 30; i++) codes.push((await new Client(own, ip).login(`user${String(i)}@patient.example`, "falsch falsch")).statusCode);
      expect(codes).toEqual(Array<number>(30).fill(401));
      const blocked = await new Client(own, ip).login(L);
      expect(blocked.statusCode).toBe(429);
      expect(JSON.parse(blocked.body)).toEqual({ error: GERMAN.tooMany });
      expect((await new Client(own, "10.9.9.10").login(L)).statusCode).toBe(200);
      portal.clock = new Date(portal.clock.getTime() + 15 * 60_000);
      expect((await new Client(own, ip).login(L)).statusCode).toBe(200);
    } finally {
      await own.close();
    }
  });
  it("150 parallel wrong credentials for one address: exactly 5 are checked, the other 145 get 429 in German", async () => {
    const clients = await Promise.all(
      Array.from({ length: 150 }, async () => {
        const c = new Client(portal.app);
        await c.get("/login");
        return c;
      }),
    );
    const answers = await Promise.all(clients.map((c) => c.json("/login", { email: L, credential: WRONG_CREDENTIAL, next: "/deliveries" })));
    expect(answers.filter((r) => r.statusCode === 401).length).toBe(5);
    const refused = answers.filter((r) => r.statusCode === 429);
    expect(refused.length).toBe(145);
    for (const r of refused) expect(JSON.parse(r.body)).toEqual({ error: GERMAN.tooMany });
  });

  it("150 parallel wrong logins from one IP to 150 addresses: exactly 30 are checked, the other 120 get 429", async () => {
    const clients = await Promise.all(
      Array.from({ length: 150 }, async () => {
        const c = new Client(portal.app, "10.8.8.8");
        await c.get("/login");
        return c;
      }),
    );
    const answers = await Promise.all(clients.map((c, i) => c.json("/login", { email: `parallel${String(i)}@patient.example`, credential: WRONG_CREDENTIAL, next: "/deliveries" })));
    expect(answers.map((r) => r.statusCode).sort()).toEqual([...Array<number>(30).fill(401), ...Array<number>(120).fill(429)]);
  });

  it("150 parallel wrong invite codes from one IP: exactly 10 are checked, the other 140 get 429", async () => {
    const invite = await createInvite(portal.ctx, "eingeladen-parallel@patient.example", practice);
    const { kdf, recipient, credential } = await newKey(invite.email, "ein Secu-Pass-Key zum Anlegen");
    const key = { kdf, recipient, credential };
    const clients = await Promise.all(
      Array.from({ length: 150 }, async () => {
        const c = new Client(portal.app, "10.8.8.9");
        await c.get(`/invite/${invite.id}`);
        return c;
      }),
    );
    const answers = await Promise.all(
      clients.map((c) => c.json(`/invite/${invite.id}`, { email: invite.email, code: "AAAA-BBBB-CCCC", ...key })),
    );
    expect(answers.map((r) => r.statusCode).sort()).toEqual([...Array<number>(10).fill(400), ...Array<number>(140).fill(429)]);
    expect(answers.filter((r) => r.statusCode === 429).every((r) => r.body === JSON.stringify({ error: GERMAN.tooMany }))).toBe(true);
  });

  describe("every limit counts across two portals on one home and survives a restart", () => {
    const IP = "10.7.7.7";
    /** One attempt under the limit; true if it went through, false if the limit refused it. */
    const LIMITS: { name: string; max: number; windowMs: number; attempt: (on: FastifyInstance, i: number) => Promise<boolean> }[] = [
      {
        name: "failed logins per address",
        max: 5,
        windowMs: 15 * 60_000,
        attempt: async (on) => (await new Client(on).login(L, "ein falscher Secu-Pass-Key")).statusCode !== 429,
      },
      {
        name: "failed logins per IP",
        max: 30,
        windowMs: 15 * 60_000,
        attempt: async (on, i) => {
          const c = new Client(on, IP);
          await c.get("/login");
          return (await c.json("/login", { email: `ip-limit${String(i)}@patient.example`, credential: WRONG_CREDENTIAL, next: "/deliveries" })).statusCode !== 429;
        },
      },
      {
        name: "asks for login parameters per IP",
        max: 100,
        windowMs: 15 * 60_000,
        attempt: async (on, i) => {
          const c = new Client(on, "10.6.6.6");
          await c.get("/login");
          return (await c.json("/login/params", { email: `params-limit${String(i)}@patient.example` })).statusCode !== 429;
        },
      },
      {
        name: "registrations per IP",
        max: 10,
        windowMs: 60 * 60_000,
        attempt: async (on) => {
          const token = tokenOf(registerLink);
          const c = new Client(on, IP);
          await c.get(`/d/${token}`);
          return (await c.json("/register", { token, ...NO_KEY })).statusCode !== 429;
        },
      },
      {
        name: "Secu-Pass reset requests per IP",
        max: 10,
        windowMs: 60 * 60_000,
        attempt: async (on) => {
          const c = new Client(on, IP);
          await c.get("/reset");
          return (await c.post("/reset", { email: NOBODY, _csrf: c.csrf })).statusCode !== 429;
        },
      },
      {
        name: "reset mails per address (quietly: the page is the same, no mail goes out)",
        max: 3,
        windowMs: 60 * 60_000,
        attempt: async (on) => {
          const before = (await outbox(portal.home)).length;
          const c = new Client(on);
          await c.get("/reset");
          expect((await c.post("/reset", { email: P, _csrf: c.csrf })).statusCode).toBe(200);
          // The mail is sent from a queue after the answer: wait for it, up to 2 s.
          for (const until = Date.now() + 2000; Date.now() < until; await new Promise((r) => setTimeout(r, 50))) {
            if ((await outbox(portal.home)).length > before) return true;
          }
          return false;
        },
      },
      {
        name: "wrong invite codes per IP",
        max: 10,
        windowMs: 15 * 60_000,
        attempt: async (on) => {
          const c = new Client(on, IP);
          await c.get(`/invite/${limitInvite}`);
          const res = await c.json(`/invite/${limitInvite}`, { email: "eingeladen-limit@patient.example", code: "AAAA-BBBB-CCCC", ...NO_KEY });
          return res.statusCode !== 429;
        },
      },
      {
        name: "passkey login challenges per IP (each is a row until used or ended)",
        max: 60,
        windowMs: 15 * 60_000,
        attempt: async (on) => {
          const c = new Client(on, IP);
          await c.get("/login");
          return (await c.json("/passkeys/login/options", {})).statusCode !== 429;
        },
      },
      {
        name: "failed passkey logins per IP (the password login's counter)",
        max: 30,
        windowMs: 15 * 60_000,
        attempt: async (on) => {
          const c = new Client(on, IP);
          await c.get("/login");
          const res = await c.json("/passkeys/login", { response: { id: "x", rawId: "x", type: "public-key", response: { clientDataJSON: "x", authenticatorData: "x", signature: "x" } } });
          expect(res.statusCode).not.toBe(200);
          return res.statusCode !== 429;
        },
      },
      {
        name: "failed passkey unlocks within a session per IP (the same counter)",
        max: 30,
        windowMs: 15 * 60_000,
        attempt: async (on) => {
          const c = new Client(on, IP);
          // The login shares the counter: once the unlocks used it up, the login is refused first.
          const login = await c.login(A);
          if (login.statusCode === 429) return false;
          expect(login.statusCode).toBe(200);
          await c.get("/deliveries");
          const res = await c.json("/passkeys/unlock", { response: { id: "x", rawId: "x", type: "public-key", response: { clientDataJSON: "x", authenticatorData: "x", signature: "x" } } });
          expect(res.statusCode).not.toBe(200);
          return res.statusCode !== 429;
        },
      },
    ];
    let registerLink: CreatedDelivery;
    let limitInvite: string;
    beforeAll(async () => {
      registerLink = await deliver("neu-limit@patient.example", 3);
      limitInvite = (await createInvite(portal.ctx, "eingeladen-limit@patient.example", practice)).id;
    });

    /** A second portal on the same home: its own database connection, as another process has. */
    async function portalOnHome(): Promise<{ app: FastifyInstance; close: () => Promise<void> }> {
      const base = await openContext({ home: portal.home }, "portal");
      const on = await buildPortal({ ...base, config: portal.ctx.config, now: () => portal.clock }, silent, assets);
      return {
        app: on,
        close: async () => {
          await on.close();
          await base.store.close();
        },
      };
    }

    for (const limit of LIMITS) {
      it(`${limit.name}: ${String(limit.max)}`, async () => {
        const second = await portalOnHome();
        try {
          // Alternating between the two portals, the limit is reached after max attempts in all.
          for (let i = 0; i < limit.max; i++) expect(await limit.attempt(i % 2 ? portal.app : second.app, i), `attempt ${String(i + 1)}`).toBe(true);
          expect(await limit.attempt(second.app, limit.max)).toBe(false);
          expect(await limit.attempt(portal.app, limit.max)).toBe(false);
        } finally {
          await second.close();
        }
        // A restart: a new portal on the same home still refuses, until the window has passed.
        const restarted = await portalOnHome();
        try {
          expect(await limit.attempt(restarted.app, limit.max)).toBe(false);
          portal.clock = new Date(portal.clock.getTime() + limit.windowMs);
          expect(await limit.attempt(restarted.app, limit.max)).toBe(true);
        } finally {
          await restarted.close();
        }
      });
    }
  });
});

describe("every form field has a server-side limit", () => {
  interface Target {
    readonly route: string;
    readonly kind: "form" | "json" | "upload";
    readonly url: () => Promise<string>;
    /** A complete body that does no harm (a wrong credential, a mismatch, an unknown address, a refused key). */
    readonly base: () => Promise<Record<string, unknown>>;
    /** Every field the route reads, with its limit in characters. */
    readonly fields: Readonly<Record<string, number>>;
    /** JSON routes: the answer to a value at the limit (the route's own check, past the length check), per field where they differ. */
    readonly taken?: Taken | Readonly<Record<string, Taken>>;
  }
  type Taken = { readonly status: number; readonly error: string | undefined };
  const FAILED = "Das hat nicht geklappt. Bitte laden Sie die Seite neu und versuchen Sie es erneut.";
  const invite = (): { id: string; email: string; code: string } => grenzen;
  let resetFor: string | undefined;
  const reset = async (): Promise<string> => (resetFor ??= await resetToken(P));
  let registerFor: string | undefined;
  const register = async (): Promise<string> => (registerFor ??= tokenOf(await deliver("grenzen-link@patient.example", 3)));
  const TARGETS: Target[] = [
    { route: "POST /logout", kind: "form", url: () => Promise.resolve("/logout"), base: () => Promise.resolve({}), fields: { _csrf: 64 } },
    // The language menu of a logged-in patient (before login, the same menu is a GET form).
    { route: "POST /lang", kind: "form", url: () => Promise.resolve("/lang"), base: () => Promise.resolve({ code: "de", back: "/login" }), fields: { _csrf: 64, code: 40, back: 200 } },
    { route: "POST /reset", kind: "form", url: () => Promise.resolve("/reset"), base: () => Promise.resolve({ email: NOBODY }), fields: { _csrf: 64, email: 254 } },
    // Sent by client/main.ts as JSON, with the form's CSRF token in a header.
    { route: "POST /login/params", kind: "json", url: () => Promise.resolve("/login/params"), base: () => Promise.resolve({ email: NOBODY }), fields: { email: 254 }, taken: { status: 200, error: undefined } },
    {
      route: "POST /login",
      kind: "json",
      url: () => Promise.resolve("/login"),
      base: () => Promise.resolve({ email: NOBODY, credential: WRONG_CREDENTIAL, next: "/deliveries" }),
      fields: { email: 254, credential: 43, nonce: 43, next: 200 },
      taken: { status: 401, error: GERMAN.loginFailed },
    },
    {
      route: "POST /register",
      kind: "json",
      url: () => Promise.resolve("/register"),
      base: async () => ({ token: await register(), ...NO_KEY }),
      fields: { token: 43, recipient: 2100, credential: 43 },
      taken: { token: { status: 404, error: "Diesen Link gibt es nicht. Bitte prüfen Sie, ob Sie ihn vollständig aus der E-Mail übernommen haben." }, recipient: { status: 400, error: FAILED }, credential: { status: 400, error: FAILED } },
    },
    { route: "POST /reset/:token", kind: "json", url: async () => `/reset/${await reset()}`, base: () => Promise.resolve(NO_KEY), fields: { recipient: 2100, credential: 43 }, taken: { status: 400, error: FAILED } },
    {
      route: "POST /invite/:id",
      kind: "json",
      url: () => Promise.resolve(`/invite/${invite().id}`),
      base: () => Promise.resolve({ email: invite().email, code: invite().code, ...NO_KEY }),
      fields: { email: 254, code: 40, recipient: 2100, credential: 43 },
      taken: {
        email: { status: 400, error: "E-Mail-Adresse oder Einladungscode stimmt nicht." },
        code: { status: 400, error: "E-Mail-Adresse oder Einladungscode stimmt nicht." },
        recipient: { status: 400, error: FAILED },
        credential: { status: 400, error: FAILED },
      },
    },
    { route: "POST /secupass/reset", kind: "json", url: () => Promise.resolve("/secupass/reset"), base: () => Promise.resolve(NO_KEY), fields: { recipient: 2100, credential: 43 }, taken: { status: 400, error: FAILED } },
    { route: "POST /reply", kind: "json", url: () => Promise.resolve("/reply"), base: () => Promise.resolve({ deliveryId: "" }), fields: { deliveryId: 32 }, taken: { status: 404, error: "no-such-delivery" } },
    { route: "POST /reply/:id/finish", kind: "json", url: async () => `/reply/${await startReply(portal.ctx, A, null)}/finish`, base: () => Promise.resolve({}), fields: {} },
    { route: "POST /devices/remove", kind: "form", url: () => Promise.resolve("/devices/remove"), base: () => Promise.resolve({ credentialId: "kein-passkey" }), fields: { _csrf: 64, credentialId: 1400 } },
    // Sent by client/passkeys.ts as JSON; their bodies are WebAuthn answers, bounded by their own schemas.
    { route: "POST /passkeys/login/options", kind: "json", url: () => Promise.resolve("/passkeys/login/options"), base: () => Promise.resolve({}), fields: {} },
    { route: "POST /passkeys/login", kind: "json", url: () => Promise.resolve("/passkeys/login"), base: () => Promise.resolve({}), fields: {} },
    { route: "POST /passkeys/unlock", kind: "json", url: () => Promise.resolve("/passkeys/unlock"), base: () => Promise.resolve({}), fields: {} },
    { route: "POST /passkeys/register/options", kind: "json", url: () => Promise.resolve("/passkeys/register/options"), base: () => Promise.resolve({}), fields: {} },
    { route: "POST /passkeys/register", kind: "json", url: () => Promise.resolve("/passkeys/register"), base: () => Promise.resolve({}), fields: {} },
    // The body is the field: an age file up to portal.maxUploadBytes.
    { route: "POST /reply/:id/parts", kind: "upload", url: async () => `/reply/${await startReply(portal.ctx, A, null)}/parts?kind=message`, base: () => Promise.resolve({}), fields: { body: MAX_UPLOAD } },
  ];
  let user: Client | undefined;
  const clientFor = async (t: Target): Promise<Client> => {
    if (t.kind === "form") {
      const c = new Client(portal.app);
      await c.get("/login");
      return c;
    }
    user ??= await loggedIn(portal.app);
    return user;
  };
  const send = async (t: Target, c: Client, url: string, body: Record<string, unknown>, pad?: string): Promise<LightMyRequestResponse> => {
    if (t.kind === "upload") {
      const data = Buffer.concat([Buffer.from("age-encryption.org/v1\n"), Buffer.alloc(Number(pad) - 22, 0x61)]);
      return c.upload(url, data);
    }
    if (t.kind === "json") return c.json(url, body);
    return c.post(url, { _csrf: c.csrf, ...(body as Record<string, string>) });
  };
  const refusedAsBadInput = (t: Target, res: LightMyRequestResponse, field: string, max: number): void => {
    if (t.kind === "form") {
      expect(res.statusCode).toBe(400);
      expect(res.body).toContain("<h1>Es ist ein Fehler aufgetreten</h1>");
      expect(res.body).toContain(`<p>${GERMAN.badInput}</p>`);
    } else if (t.kind === "json") {
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual({ error: "bad-request", message: `body/${field} must NOT have more than ${String(max)} characters` });
    } else {
      expect(res.statusCode).toBe(413);
      expect(res.json()).toEqual({ error: "too-large", message: `upload is larger than ${String(max)} bytes` });
    }
  };

  it("the table covers every POST route, and every form the portal renders with exactly its fields", async () => {
    const posts = routesOf(portal.app).filter((r) => r.startsWith("POST "));
    expect(TARGETS.map((t) => t.route).sort()).toEqual(posts);

    const anon = new Client(portal.app);
    const user = await loggedIn(portal.app);
    const pages: [Client, string][] = [
      [anon, "/"],
      [anon, "/login"],
      [anon, "/help"],
      [anon, "/reset"],
      [anon, `/reset/${await reset()}`],
      [anon, `/invite/${invite().id}`],
      [anon, `/d/${await register()}`],
      [user, "/deliveries"],
      [user, `/deliveries/${(await deliver(A, 3)).id}`],
      [user, "/reply"],
      [user, "/secupass/reset"],
      [user, "/devices"],
    ];
    // The devices page has a form per passkey.
    const passkey = { credentialId: "hardening-1", email: A, userHandle: "uh", publicKey: new Uint8Array(8), counter: 0, transports: "[]", label: "Chrome, Linux" };
    await portal.ctx.store.passkeys.insertPasskey({ ...passkey, createdAt: new Date().toISOString(), lastUsed: null, sealed: null });
    const posted = new Set<string>();
    for (const [c, url] of pages) {
      const res = await c.get(url);
      expect(res.statusCode, url).toBe(200);
      for (const [, attrs = "", inner = ""] of res.body.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/g)) {
        const fields = [...inner.matchAll(/<(?:input|textarea|select|button)\b[^>]*\bname="([^"]+)"[^>]*>/g)].map((m) => m[1]!);
        if (/\bmethod="get"/.test(attrs)) {
          // The language menu before login only navigates: to /lang, with the language and the way back.
          expect([/\baction="([^"]+)"/.exec(attrs)?.[1], fields.sort()], `${url}: <form${attrs}>`).toEqual(["/lang", ["back", "code"]]);
          continue;
        }
        if (!/\bmethod="post"/.test(attrs)) {
          // A script form: its inputs have no names, so nothing leaves the page but the JSON the script sends.
          expect(fields, `${url}: <form${attrs}>`).toEqual([]);
          continue;
        }
        const action = /\baction="([^"]+)"/.exec(attrs)?.[1] ?? "";
        const route = `POST ${action.replace(/^\/reset\/[\w-]{43}$/, "/reset/:token").replace(/^\/invite\/i_[a-z0-9]{12}$/, "/invite/:id")}`;
        const target = TARGETS.find((t) => t.route === route);
        expect(target, `${url}: form to ${route}`).toBeDefined();
        expect(fields.sort(), `${url}: form to ${route}`).toEqual(Object.keys(target!.fields).sort());
        // The browser never lets a patient type more than the server takes.
        for (const [, name = "", max = ""] of inner.matchAll(/\bname="([^"]+)"[^>]*\bmaxlength="(\d+)"/g)) expect(Number(max), `${route} ${name}`).toBeLessThanOrEqual(target!.fields[name]!);
        posted.add(route);
      }
    }
    expect([...posted].sort()).toEqual(TARGETS.filter((t) => t.kind === "form").map((t) => t.route).sort());
  });

  for (const t of TARGETS) {
    for (const [field, max] of Object.entries(t.fields)) {
      it(`${t.route} ${field}: ${String(max + 1)} → ${t.kind === "upload" ? "413" : "400"} before any work; ${String(max)} is taken`, async () => {
        const c = await clientFor(t);
        const [url, base] = [await t.url(), await t.base()];
        const before = await workDone();
        const over = await send(t, c, url, { ...base, [field]: "x".repeat(max + 1) }, String(max + 1));
        refusedAsBadInput(t, over, field, max);
        expect(await workDone()).toEqual(before);

        const at = await send(t, c, url, { ...base, [field]: "x".repeat(max) }, String(max));
        if (t.kind === "form") expect(at.statusCode === 400 && at.body.includes(GERMAN.badInput), `${String(at.statusCode)} ${errorText(at.body) ?? ""}`).toBe(false);
        else if (t.kind === "json") {
          const taken = t.taken !== undefined && "status" in t.taken ? t.taken : t.taken?.[field];
          expect({ status: at.statusCode, error: at.json<{ error?: string }>().error }).toEqual(taken);
        }
        else expect(at.json()).toEqual({ size: max });
      });
    }
  }

  it("a body over 64 KiB, a field sent twice, or a value that is not a string is refused the same way", async () => {
    for (const t of TARGETS.filter((x) => x.kind !== "upload")) {
      const c = await clientFor(t);
      const [url, base] = [await t.url(), await t.base()];
      const before = await workDone();
      const big = await send(t, c, url, { ...base, polster: "x".repeat(65 * 1024) });
      if (t.kind === "form") refusedAsBadInput(t, big, "", 0);
      else {
        expect(big.statusCode, t.route).toBe(413);
        expect(big.json()).toEqual({ error: "too-large" });
      }
      const [first] = Object.keys(t.fields);
      if (first === undefined) continue;
      if (t.kind === "form") {
        const twice = await c.request("POST", url, {
          payload: `${new URLSearchParams({ _csrf: c.csrf, ...(base as Record<string, string>) }).toString()}&${first}=zweimal`,
          headers: { "content-type": "application/x-www-form-urlencoded" },
        });
        refusedAsBadInput(t, twice, first, 0);
      } else {
        const notString = await c.json(url, { ...base, [first]: { length: 1 } });
        expect(notString.statusCode, t.route).toBe(400);
        expect(notString.json()).toEqual({ error: "bad-request", message: `body/${first} must be string` });
      }
      expect(await workDone(), t.route).toEqual(before);
    }
  });
});

// Portal sessions and static paths (security review items 13 and 15): a visitor who is not
// logged in writes no session row, forms before login keep their CSRF protection, ended
// sessions are deleted, every session ends 12 hours after login, and traversal attempts
// under /static/ answer 404 with the security headers. Against the real app over a real home
// and store; the static paths over real HTTP, so that no client normalises them first.
import { createHash } from "node:crypto";
import { request } from "node:http";
import type { LightMyRequestResponse } from "fastify";
import { describe, expect, it } from "vitest";
import { collectGarbage, createDelivery, createInvite, markSent } from "../src/core/index.js";
import { practiceIdentityOf } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";
import { streamOf } from "./helpers/streams.js";
import { readDb } from "./helpers/store.js";

const A = "anna@patient.example";
const B = "ben@patient.example";

const portal = usePortal({
  beforeOpen: async (home) => {
    await registerThroughCore(home, A, "Annas Secu-Pass-Key");
    await registerThroughCore(home, B, "Bens Secu-Pass-Key");
  },
  listen: true,
});

/** The session rows, as (hash, email) pairs in a fixed order. */
const sessionRows = (): unknown[] => readDb(portal.home, (db) => db.prepare("SELECT id_hash, email FROM sessions ORDER BY id_hash").all());

async function loggedIn(email: string): Promise<Client> {
  const c = new Client(portal.app);
  expect((await c.login(email)).statusCode).toBe(200);
  expect((await c.get("/deliveries")).statusCode).toBe(200);
  return c;
}

describe("a visitor who is not logged in has no session row", () => {
  it("GET and HEAD of /, /login, /help, /reset, a link, an invite, static files and 404s without a cookie write none", async () => {
    const d = await createDelivery(portal.ctx, { recipient: "neu@patient.example", level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF-1.4")) }] });
    await markSent(portal.ctx, [d.id]);
    const invite = await createInvite(portal.ctx, "eingeladen@patient.example", await practiceIdentityOf(portal.home));
    const pages: [string, number, boolean][] = [
      // url, status, whether the page has a form (and so sets the CSRF cookie, never a session)
      ["/", 200, false],
      ["/help", 200, false],
      ["/login", 200, true],
      ["/login?next=/deliveries&m=expired", 200, true],
      ["/reset", 200, true],
      [new URL(d.link).pathname, 200, true],
      [`/invite/${invite.id}`, 200, true],
      ["/static/style.css", 200, false],
      ["/static/gibt-es-nicht.js", 404, false],
      ["/gibt-es-nicht", 404, false],
      ["/deliveries", 303, false],
      ["/lang/en?back=/help", 303, false],
    ];
    const before = sessionRows();
    for (const [url, status, form] of pages) {
      for (const method of ["GET", "HEAD"] as const) {
        const res = await portal.app.inject({ method, url });
        expect(res.statusCode, `${method} ${url}`).toBe(status);
        const cookies = [res.headers["set-cookie"] ?? []].flat().map((c) => c.split("=")[0]);
        expect(cookies, `${method} ${url}`).toEqual(form ? ["praxmail-csrf"] : url.startsWith("/lang/") ? ["lang"] : []);
      }
    }
    expect(sessionRows()).toEqual(before);
  });

  it("a flood of 1000 requests without a cookie leaves the sessions table as it was", async () => {
    await loggedIn(A);
    const before = sessionRows();
    expect(before.length).toBeGreaterThan(0);
    const urls = ["/", "/login", "/help", "/reset", "/static/style.css", "/gibt-es-nicht", "/deliveries"];
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => portal.app.inject({ method: i % 5 ? "GET" : "HEAD", url: urls[i % urls.length]!, remoteAddress: `10.1.${String(batch)}.${String(i)}` })));
      expect(answers.every((r) => r.statusCode < 500)).toBe(true);
    }
    expect(sessionRows()).toEqual(before);
  });

  it("forms before login keep CSRF: no token, a token without its cookie or another visitor's token is refused; the matching pair is taken", async () => {
    // The login page's script posts JSON with the form's token in a header.
    const post = (form: { _csrf?: string }, cookie?: string): Promise<LightMyRequestResponse> =>
      portal.app.inject({
        method: "POST",
        url: "/login",
        headers: { "content-type": "application/json", ...(form._csrf === undefined ? {} : { "x-csrf-token": form._csrf }), ...(cookie === undefined ? {} : { cookie }) },
        payload: JSON.stringify({ email: A, credential: "W".repeat(43), next: "/deliveries" }),
      });
    const mine = new Client(portal.app);
    await mine.get("/login");
    const other = new Client(portal.app);
    await other.get("/login");
    expect(mine.csrf).toMatch(/^[\w-]{43}$/);
    expect(mine.cookies.get("praxmail-csrf")).toBe(mine.csrf);
    expect(other.csrf).not.toBe(mine.csrf);
    const csrfRefused = JSON.stringify({ error: "csrf" });
    for (const [what, res] of [
      ["no token, no cookie", await post({})],
      ["no token", await post({}, mine.cookieHeader())],
      ["a token without its cookie", await post({ _csrf: mine.csrf })],
      ["another visitor's token", await post({ _csrf: other.csrf }, mine.cookieHeader())],
      ["a forged pair that is not well-formed", await post({ _csrf: "x" }, "praxmail-csrf=x")],
    ] as const) {
      expect(res.statusCode, what).toBe(403);
      expect(res.body, what).toContain(csrfRefused);
    }
    expect((await post({ _csrf: mine.csrf }, mine.cookieHeader())).statusCode).toBe(401);
    // The right key logs in; the session's forms then carry the session's own token.
    const res = await mine.login(A);
    expect(res.statusCode).toBe(200);
    await mine.get("/deliveries");
    expect(mine.csrf).not.toBe(mine.cookies.get("praxmail-csrf"));
    expect((await mine.post("/logout", { _csrf: mine.cookies.get("praxmail-csrf")! })).statusCode).toBe(403);
    expect((await mine.post("/logout", { _csrf: mine.csrf })).headers.location).toBe("/login?m=out");
  });
});

describe("ended sessions", () => {
  it("idle ones are deleted by gc, not only refused; active ones stay", async () => {
    const idle = await loggedIn(A);
    const active = await loggedIn(B);
    const rows = sessionRows().length;
    portal.clock = new Date(portal.clock.getTime() + 10 * 60_000);
    expect((await active.get("/deliveries")).statusCode).toBe(200);
    portal.clock = new Date(portal.clock.getTime() + 6 * 60_000);
    const report = await collectGarbage(portal.ctx, 60 * 60_000);
    expect(report.sessions).toBeGreaterThanOrEqual(1);
    const left = sessionRows();
    expect(left.length).toBe(rows - report.sessions);
    const hash = (c: Client): string => readDb(portal.home, (db) => db.prepare("SELECT id_hash FROM sessions WHERE id_hash = ?").pluck().get(sha256(c.sid!)) as string);
    expect(hash(idle)).toBeUndefined();
    expect(hash(active)).toBe(sha256(active.sid!));
    expect((await active.get("/deliveries")).statusCode).toBe(200);
  });

  it("a session active every minute ends 12 hours after login, with its own German explanation, and its row is gone", async () => {
    const c = await loggedIn(A);
    const start = portal.clock.getTime();
    for (let minute = 1; minute < 12 * 60; minute++) {
      portal.clock = new Date(start + minute * 60_000);
      const res = await c.get("/deliveries");
      if (res.statusCode !== 200) expect.fail(`minute ${String(minute)}: ${String(res.statusCode)}`);
    }
    portal.clock = new Date(start + 12 * 60 * 60_000);
    const ended = await c.get("/deliveries");
    expect(ended.statusCode).toBe(303);
    expect(ended.headers.location).toBe("/login?next=%2Fdeliveries&m=ended");
    expect((await c.get(String(ended.headers.location))).body).toContain("Ihre Anmeldung ist abgelaufen: Aus Sicherheitsgründen endet jede Anmeldung nach einigen Stunden.");
    expect(c.sid).toBeUndefined();
    expect(sessionRows()).not.toContainEqual(expect.objectContaining({ email: A }));
  });
});

describe("static files and sessions", () => {
  it("a static file neither reads nor ends a session and stays cacheable; a page with the same cookie is no-store", async () => {
    const c = await loggedIn(A);
    const lastSeen = (): unknown => readDb(portal.home, (db) => db.prepare("SELECT last_seen FROM sessions WHERE id_hash = ?").pluck().get(createHash("sha256").update(c.sid ?? "").digest("hex")));
    const seen = lastSeen();
    expect(seen).toBeDefined();
    // Long enough that a page would record the visit; an unknown id would be cleared.
    portal.clock = new Date(portal.clock.getTime() + 5 * 60_000);
    const stranger = new Client(portal.app);
    stranger.cookies.set(c.cookies.has("praxmail") ? "praxmail" : "__Host-praxmail", "A".repeat(43));
    for (const who of [c, stranger]) {
      for (const method of ["GET", "HEAD"]) {
        const res = await who.request(method, "/static/style.css");
        expect(res.statusCode, method).toBe(200);
        expect(res.headers["set-cookie"], method).toBeUndefined();
        expect(res.headers["cache-control"], method).toBe("public, max-age=300");
      }
    }
    expect(lastSeen()).toBe(seen);
    expect(stranger.sid).toBe("A".repeat(43));
    const page = await c.get("/deliveries");
    expect(page.statusCode).toBe(200);
    expect(page.headers["cache-control"]).toBe("no-store");
    expect(lastSeen()).not.toBe(seen);
    const gone = await stranger.get("/help");
    expect(gone.headers["cache-control"]).toBe("no-store");
    expect(stranger.sid).toBeUndefined();
  });
});

describe("paths under /static/", () => {
  /** A GET with the path exactly as given, over real HTTP. */
  function raw(path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: portal.port, path, method: "GET" }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        });
      });
      req.on("error", reject);
      req.end();
    });
  }

  const TRAVERSAL = [
    "/static/..",
    "/static/../",
    "/static/%2e%2e",
    "/static/%2e%2e/",
    "/static/.%2e/",
    "/static/%2E%2E/%2E%2E/etc/passwd",
    "/static/../../etc/passwd",
    "/static/../../../../../../etc/passwd",
    "/static/..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e%2fpackage.json",
    "/static/..%5c..%5cetc%5cpasswd",
    "/static/\\..\\..\\etc\\passwd",
    "/static/%252e%252e/%252e%252e/etc/passwd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/./style.css",
    "/static/app.js/..",
    "/static/style.css/",
    "/static/..;/etc/passwd",
    "/static/",
    "/static",
  ];
  // Not a URL at all (bad percent-encoding, an overlong UTF-8 dot, a NUL): bad input.
  const MALFORMED = ["/static/%", "/static/%zz", "/static/%c0%ae%c0%ae/etc/passwd", "/static/..%00/"];

  for (const [what, paths, status] of [
    ["traversal and non-canonical paths (.., %2e%2e, encoded slashes, //, /./)", TRAVERSAL, 404],
    ["paths that do not decode", MALFORMED, 400],
  ] as const) {
    it(`${what} answer ${String(status)} with the security headers and nothing from outside`, async () => {
      for (const path of paths) {
        const res = await raw(path);
        expect(res.status, path).toBe(status);
        expect(String(res.headers["content-security-policy"]), path).toMatch(/(^|; )frame-ancestors 'none'(;|$)/);
        expect(res.headers["x-content-type-options"], path).toBe("nosniff");
        expect(res.headers["referrer-policy"], path).toBe("no-referrer");
        expect(res.headers["x-frame-options"], path).toBe("DENY");
        expect(res.headers["cache-control"], path).toBe("no-store");
        expect(res.headers["content-type"], path).toMatch(/^text\/(html|plain); charset=utf-8$/);
        expect(res.body, path).toContain(status === 404 ? "nicht gefunden" : "Bitte prüfen Sie Ihre Eingaben.");
        expect(res.body, path).not.toMatch(/root:|"name": "praxmail"/);
      }
      expect((await raw("/static/style.css")).status).toBe(200);
    });
  }
});

function sha256(v: string): string {
  return createHash("sha256").update(v).digest("hex");
}

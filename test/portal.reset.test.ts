// The "Secu-Pass-Key forgotten" form tells nobody who has an account: with an upstream that takes 2 s
// to accept a mail, a known address answers as fast as an unknown one, with the same bytes,
// and the mail still arrives afterwards with a working link. A failed mail logs no token.
import { Writable } from "node:stream";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import type { Context } from "../src/core/index.js";
import { buildPortal } from "../src/portal/index.js";
import { cleanup, initHome, tempDir } from "./helpers/cli.js";
import { newKey, registerThroughCore } from "./helpers/patient.js";
import { Client } from "./helpers/portal.js";
import { startSink, type Sink } from "./helpers/sink.js";
import { collect } from "./helpers/store.js";

const KNOWN = "anna@patient.example";
const REFUSED = "berta@patient.example";
const UNKNOWN = "niemand@patient.example";
const SLOW_MS = 2000;

let dir: string;
let home: string;
let sink: Sink;
let ctx: Context;
let app: FastifyInstance;
let logged = "";

/** A visitor with a session: the CSRF token and cookie of the reset page. */
async function visitor(): Promise<{ post: (url: string, fields: Record<string, string>) => Promise<{ ms: number; status: number; body: string; location: string | undefined }> }> {
  const page = await app.inject({ method: "GET", url: "/reset" });
  const cookie = String(page.headers["set-cookie"]).split(";")[0]!;
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page.body)![1]!;
  return {
    async post(url, fields) {
      const start = performance.now();
      const res = await app.inject({
        method: "POST",
        url,
        headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
        payload: new URLSearchParams({ ...fields, _csrf: csrf }).toString(),
      });
      return { ms: performance.now() - start, status: res.statusCode, body: res.body, location: res.headers.location };
    },
  };
}

beforeAll(async () => {
  dir = await tempDir();
  home = join(dir, "home");
  sink = await startSink({ acceptDelayMs: SLOW_MS });
  await initHome(home, ["--upstream", sink.url, "--recipient-type", "x25519"]);
  await registerThroughCore(home, KNOWN, "Annas Secu-Pass-Key");
  await registerThroughCore(home, REFUSED, "Bertas Secu-Pass-Key");
  ctx = await openContext({ home }, "portal");
  const log = new Writable({
    write(chunk: Buffer, _enc, done) {
      logged += chunk.toString();
      done();
    },
  });
  app = await buildPortal(ctx, pino(log));
}, 30_000);
afterAll(async () => {
  await app.close();
  await ctx.store.close();
  await sink.close();
  await cleanup(dir);
});

const resetMails = (to: string) => sink.messages.filter((m) => m.to.includes(to) && m.mail.subject?.startsWith("Neuen Secu-Pass-Key festlegen"));

describe("POST /reset with an upstream that takes 2 s per mail", () => {
  it("answers a known address as fast as an unknown one, byte for byte, and the mail arrives afterwards with a working link", async () => {
    const v = await visitor();
    const known = await v.post("/reset", { email: KNOWN });
    const unknown = await v.post("/reset", { email: UNKNOWN });
    expect(known.status).toBe(200);
    expect(unknown.status).toBe(200);
    expect(known.body).toContain("Wenn es für diese Adresse ein Konto gibt, haben wir eine E-Mail mit einem Link geschickt.");
    expect(known.body).toBe(unknown.body);
    // The mail takes 2 s; neither answer waits for it.
    expect(known.ms).toBeLessThan(1000);
    expect(unknown.ms).toBeLessThan(1000);
    expect(resetMails(KNOWN)).toHaveLength(0);

    await expect.poll(() => resetMails(KNOWN).length, { timeout: 10_000, interval: 100 }).toBe(1);
    expect(sink.messages.filter((m) => m.to.includes(UNKNOWN))).toHaveLength(0);
    const link = /https?:\/\/[^/\s]+(\/reset\/[\w-]{43})/.exec(resetMails(KNOWN)[0]!.mail.text ?? "")?.[1];
    expect(link).toBeDefined();
    expect((await app.inject({ method: "GET", url: link! })).statusCode).toBe(200);
    const c = new Client(app);
    await c.get(link!);
    const { kdf, recipient, credential } = await newKey(KNOWN, "ein neuer Secu-Pass-Key 2027");
    const set = await c.json(link!, { kdf, recipient, credential });
    expect(set.statusCode).toBe(200);
    expect(JSON.parse(set.body)).toEqual({ next: "/waiting" });
    expect((await new Client(app).login(KNOWN, "ein neuer Secu-Pass-Key 2027")).statusCode).toBe(200);
    expect((await new Client(app).login(KNOWN, "Annas Secu-Pass-Key")).statusCode).toBe(401);
  }, 30_000);

  it("logs a failed reset mail with its SMTP code and without the token", async () => {
    sink.refuse.add(REFUSED);
    const before = (await collect(ctx.store.auditRows())).filter((r) => r.action === "patient.key-reset-requested" && r.subject === REFUSED).length;
    const res = await (await visitor()).post("/reset", { email: REFUSED });
    expect(res.status).toBe(200);
    expect(res.ms).toBeLessThan(1000);
    await expect.poll(() => logged.includes("key reset mail failed"), { timeout: 10_000, interval: 100 }).toBe(true);
    // The link was made (and stays unusable: its token was only in the mail that failed).
    expect((await collect(ctx.store.auditRows())).filter((r) => r.action === "patient.key-reset-requested" && r.subject === REFUSED).length).toBe(before + 1);
    const line = JSON.parse(logged.split("\n").find((l) => l.includes("key reset mail failed"))!) as { err: unknown };
    expect(line.err).toEqual({ code: "EENVELOPE", responseCode: 550 });
    expect(logged).not.toMatch(/\/reset\/[\w-]{43}/);
    expect(logged).not.toMatch(/(?<![\w-])[\w-]{43}(?![\w-])/);
  }, 30_000);
});

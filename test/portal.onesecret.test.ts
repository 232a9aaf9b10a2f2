// One secret (DESIGN.md §3): the Secu-Pass-Key is the only secret a patient types. The
// login asks for parameters that do not tell whether an account exists, takes a credential
// derived from the key (the server keeps only its hash), and moves an account from before
// (password, no credential) over at its next login. Registration through a link or an
// invite sets the key in one step; a forgotten key is replaced through a mailed link, and a
// delivery sent before opens with the new key once the practice approved again.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  approvePatients,
  createDelivery,
  createInvite,
  markSent,
  requestKeyReset,
  type Context,
  type Notification,
} from "../src/core/index.js";
import { deriveSecuPass, parseKdfParams, recipientOf, unwrapIdentity } from "../src/crypto/index.js";
import { practiceIdentityOf } from "./helpers/cli.js";
import { approveWithTheirCodes, legacyPatient, newKey, registerThroughCore } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";
import { collect } from "./helpers/store.js";
import { streamOf } from "./helpers/streams.js";

const KNOWN = "anna@patient.example";
const LEGACY = "berta@patient.example";
const KEYLESS = "carl@patient.example";
const NOBODY = "niemand@patient.example";
const ANNA_KEY = "Annas langer Secu-Pass-Key";
const BERTA_KEY = "Bertas alter Secu-Pass-Key";
const BERTA_PASSWORD = "Bertas altes Passwort";
const FAILED = "E-Mail-Adresse oder Secu-Pass-Key ist falsch.";

const portal = usePortal({
  beforeOpen: async (home) => {
    await registerThroughCore(home, KNOWN, ANNA_KEY);
  },
});

/** Asks for the login parameters as the login page does. */
async function ask(c: Client, email: string): Promise<{ status: number; body: { kdf: Record<string, unknown>; challenge: string } }> {
  await c.get("/login");
  const res = await c.json("/login/params", { email });
  return { status: res.statusCode, body: JSON.parse(res.body) as { kdf: Record<string, unknown>; challenge: string } };
}

/** Sends one level 3 delivery to a patient and makes it visible; its id and link token. */
async function deliver(ctx: Context, email: string, text: string): Promise<{ id: string; token: string }> {
  const d = await createDelivery(ctx, { recipient: email, level: 3, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from(text)) }] });
  await markSent(ctx, [d.id]);
  return { id: d.id, token: new URL(d.link).pathname.replace("/d/", "") };
}

/** Opens the patient's wrap of a delivery with U: D's identity. */
async function openWrap(ctx: Context, id: string, email: string, identity: string): Promise<string> {
  const w = await ctx.store.records.wrap(id, "patient");
  if (!w) throw new Error(`no patient wrap of ${id} for ${email}`);
  return unwrapIdentity(w.ciphertext, identity);
}

describe("the login parameters", () => {
  it("are the same for an unknown address on every ask, and have the shape of a known account's", async () => {
    const a = await ask(new Client(portal.app), NOBODY);
    const b = await ask(new Client(portal.app), ` ${NOBODY.toUpperCase()} `);
    const known = await ask(new Client(portal.app), KNOWN);
    expect([a.status, b.status, known.status]).toEqual([200, 200, 200]);
    expect(a.body.kdf).toEqual(b.body.kdf);
    expect(Object.keys(a.body).sort()).toEqual(Object.keys(known.body).sort());
    expect(Object.keys(a.body.kdf).sort()).toEqual(Object.keys(known.body.kdf).sort());
    expect(a.body.kdf).toMatchObject({ alg: "scrypt", v: 3, logN: 17, r: 8, p: 1, type: "x25519" });
    expect(parseKdfParams(a.body.kdf)).toEqual(a.body.kdf);
    expect(Buffer.from(a.body.kdf.salt as string, "base64")).toHaveLength(16);
    // The challenge is an age file of one size for everyone, and a fresh one each time.
    expect(a.body.challenge).not.toBe(b.body.challenge);
    expect(Buffer.from(a.body.challenge, "base64").length).toBe(Buffer.from(known.body.challenge, "base64").length);
    // Another unknown address gets other parameters.
    expect((await ask(new Client(portal.app), "jemand@patient.example")).body.kdf.salt).not.toBe(a.body.kdf.salt);
    // The known account gets its own.
    expect(known.body.kdf).toEqual(JSON.parse((await portal.ctx.store.records.patient(KNOWN))!.kdf!));
  });

  it("need the form's CSRF token", async () => {
    const c = new Client(portal.app);
    await c.get("/login");
    const res = await c.request("POST", "/login/params", { payload: JSON.stringify({ email: KNOWN }), headers: { "content-type": "application/json", "x-csrf-token": "x".repeat(43) } });
    expect(res.statusCode).toBe(403);
  });
});

describe("the login with the Secu-Pass-Key", () => {
  it("logs in with the right key, and answers a wrong key and an unknown address with the same 401 and text", async () => {
    const ok = await new Client(portal.app).login(KNOWN);
    expect(ok.statusCode).toBe(200);
    expect(JSON.parse(ok.body)).toEqual({ next: "/deliveries" });
    const wrong = await new Client(portal.app).login(KNOWN, "ein falscher Secu-Pass-Key");
    const unknown = await new Client(portal.app).login(NOBODY, ANNA_KEY);
    expect([wrong.statusCode, unknown.statusCode]).toEqual([401, 401]);
    expect(JSON.parse(wrong.body)).toEqual({ error: FAILED });
    expect(JSON.parse(unknown.body)).toEqual({ error: FAILED });
  });

  it("a link on a new device leads to the login with the recipient's address filled in and the focus on the key, and the login goes on to the link", async () => {
    const { token } = await deliver(portal.ctx, KNOWN, "%PDF-1.4 für ein neues Gerät");
    const c = new Client(portal.app);
    const link = await c.get(`/d/${token}`);
    expect(link.statusCode).toBe(303);
    expect(link.headers.location).toBe(`/login?next=${encodeURIComponent(`/d/${token}`)}&email=${encodeURIComponent(KNOWN)}`);
    const page = await c.get(String(link.headers.location));
    expect(page.body).toContain(`value="${KNOWN}" aria-describedby="login-error">`);
    expect(page.body).toMatch(/<input id="login-key" [^>]* autofocus>/);
    expect(page.body).toContain(`data-next="/d/${token}"`);
    expect(page.body).toContain("<noscript>");
    const res = await c.login(KNOWN, ANNA_KEY, `/d/${token}`);
    expect(JSON.parse(res.body)).toEqual({ next: `/d/${token}` });
  });

  it("a mail's link to a message, opened while logged in, goes straight to the message; a link for another address shows the login", async () => {
    const { id } = await deliver(portal.ctx, KNOWN, "%PDF-1.4 mit offener Sitzung");
    const c = new Client(portal.app);
    expect((await c.login(KNOWN)).statusCode).toBe(200);
    const next = `/deliveries/${id}`;
    for (const email of [KNOWN, KNOWN.toUpperCase(), undefined]) {
      const res = await c.get(`/login?${email === undefined ? "" : `email=${encodeURIComponent(email)}&`}next=${encodeURIComponent(next)}`);
      expect([res.statusCode, res.headers.location]).toEqual([303, next]);
    }
    // Where the link points elsewhere than the portal's own pages: the message list.
    expect((await c.get(`/login?email=${encodeURIComponent(KNOWN)}&next=${encodeURIComponent("//elsewhere.example/")}`)).headers.location).toBe("/deliveries");
    const other = await c.get(`/login?email=${encodeURIComponent(NOBODY)}&next=${encodeURIComponent(next)}`);
    expect(other.statusCode).toBe(200);
    expect(other.body).toContain(`value="${NOBODY}" aria-describedby="login-error">`);
  });

  it("stores only a hash of the credential: neither the key, nor U, nor the credential is in the row", async () => {
    const row = (await portal.ctx.store.records.patient(KNOWN))!;
    const keys = await deriveSecuPass(ANNA_KEY, parseKdfParams(JSON.parse(row.kdf!)), KNOWN);
    expect(row.credentialHash).toMatch(/^[0-9a-f]{64}$/);
    expect(row.passwordHash).toBeNull();
    const stored = JSON.stringify(row);
    for (const secret of [ANNA_KEY, keys.identity, keys.credential, Buffer.from(keys.credential, "base64url").toString("hex")]) expect(stored).not.toContain(secret);
  });

  it("refuses a credential that is not 32 bytes, and a login without the CSRF token", async () => {
    const c = new Client(portal.app);
    await c.get("/login");
    const bad = await c.json("/login", { email: KNOWN, credential: "kurz" });
    expect(bad.statusCode).toBe(401);
    const res = await c.request("POST", "/login", { payload: JSON.stringify({ email: KNOWN, credential: randomBytes(32).toString("base64url") }), headers: { "content-type": "application/json" } });
    expect(res.statusCode).toBe(403);
  });
});

describe("an account from before (a password, no credential)", () => {
  it("moves over at its next login: credential hash set, password hash gone, audited; old deliveries still open with U; the old password no longer logs in", async () => {
    const { ctx } = portal;
    const u = (await legacyPatient(ctx, LEGACY, BERTA_PASSWORD, BERTA_KEY))!;
    await approveWithTheirCodes(ctx, [LEGACY], await practiceIdentityOf(portal.home));
    const { id } = await deliver(ctx, LEGACY, "%PDF-1.4 vor dem Umzug");
    const before = (await ctx.store.records.patient(LEGACY))!;
    expect(before).toMatchObject({ credentialHash: null, status: "approved" });
    expect(before.passwordHash).toMatch(/^scrypt\$/);
    // The old password, typed as the key, does not log in, nor does a wrong key; neither moves the account.
    expect((await new Client(portal.app).login(LEGACY, BERTA_PASSWORD)).statusCode).toBe(401);
    expect((await new Client(portal.app).login(LEGACY, "ein falscher Key")).statusCode).toBe(401);
    expect((await ctx.store.records.patient(LEGACY))?.credentialHash).toBeNull();
    // The old form post with a password is no longer a way in.
    const old = new Client(portal.app);
    await old.get("/login");
    expect((await old.post("/login", { email: LEGACY, password: BERTA_PASSWORD, _csrf: old.csrf, next: "/deliveries" })).statusCode).toBe(403);
    const c = new Client(portal.app);
    const moved = await c.login(LEGACY);
    expect(moved.statusCode).toBe(200);
    const after = (await ctx.store.records.patient(LEGACY))!;
    expect(after.passwordHash).toBeNull();
    expect(after.credentialHash).toMatch(/^[0-9a-f]{64}$/);
    expect({ kdf: after.kdf, recipient: after.recipient, status: after.status }).toEqual({ kdf: before.kdf, recipient: before.recipient, status: "approved" });
    expect((await collect(ctx.store.auditRows())).filter((r) => r.subject === LEGACY && r.action === "patient.login-moved")).toHaveLength(1);
    // U is what it was: the old delivery opens with it, and the page lets the patient in.
    expect((await c.get(`/deliveries/${id}`)).statusCode).toBe(200);
    const d = await openWrap(ctx, id, LEGACY, u);
    expect(d).toMatch(/^AGE-SECRET-KEY-/);
    // From now on the credential alone logs in; the challenge is no longer needed.
    expect((await new Client(portal.app).login(LEGACY)).statusCode).toBe(200);
    expect((await collect(ctx.store.auditRows())).filter((r) => r.subject === LEGACY && r.action === "patient.login-moved")).toHaveLength(1);
  });

  it("cannot log in without a Secu-Pass-Key: its parameters are decoys, and the reset by mail sets its first key", async () => {
    const { ctx } = portal;
    await legacyPatient(ctx, KEYLESS, "Carls altes Passwort");
    const a = await ask(new Client(portal.app), KEYLESS);
    const b = await ask(new Client(portal.app), KEYLESS);
    expect(a.body.kdf).toEqual(b.body.kdf);
    expect(a.body.kdf).not.toEqual(JSON.parse((await ctx.store.records.patient(KEYLESS))!.kdf!));
    expect((await new Client(portal.app).login(KEYLESS, "Carls altes Passwort")).statusCode).toBe(401);
    const link = await resetLink(ctx, KEYLESS);
    const c = new Client(portal.app);
    await c.get(link);
    const key = await newKey(KEYLESS, "Carls erster Secu-Pass-Key");
    const res = await c.json(link, { kdf: key.kdf, recipient: key.recipient, credential: key.credential });
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ next: "/waiting" });
    expect(await ctx.store.records.patient(KEYLESS)).toMatchObject({ status: "pending-approval", recipient: key.recipient, passwordHash: null });
    expect((await new Client(portal.app).login(KEYLESS)).statusCode).toBe(200);
  });
});

/** Asks for a reset mail through core, as the form's queue does, and returns the link's path. */
async function resetLink(ctx: Context, email: string): Promise<string> {
  let link = "";
  const notifier = {
    send: (n: Notification): Promise<void> => {
      if (n.kind === "key-reset") link = new URL(n.link).pathname;
      return Promise.resolve();
    },
  };
  await requestKeyReset({ ...ctx, notifier }, email);
  expect(link).toMatch(/^\/reset\/[\w-]{43}$/);
  return link;
}

describe("registration in one step", () => {
  it("through the link: the page asks for the key only, and the post sets account, key and session at once", async () => {
    const { ctx } = portal;
    const email = "dora@patient.example";
    const { token } = await deliver(ctx, email, "%PDF-1.4 an Dora");
    const c = new Client(portal.app);
    const page = await c.get(`/d/${token}`);
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('id="newkey-form"');
    expect(page.body).not.toContain('name="password"');
    expect(page.body).toContain(`value="${email}" readonly`);
    const key = await newKey(email, "Doras Secu-Pass-Key 2026");
    const res = await c.json("/register", { token, kdf: key.kdf, recipient: key.recipient, credential: key.credential });
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ next: `/d/${token}` });
    expect(await ctx.store.records.patient(email)).toMatchObject({ status: "pending-approval", recipient: key.recipient, passwordHash: null });
    expect((await c.get("/waiting")).statusCode).toBe(200);
    expect((await new Client(portal.app).login(email)).statusCode).toBe(200);
    // The link registers once: a second key for it is refused, and the first one stays.
    const other = new Client(portal.app);
    await other.get("/login");
    const second = await newKey("dora.zwei@patient.example", "ein anderer Secu-Pass-Key");
    const again = await other.json("/register", { token, kdf: second.kdf, recipient: second.recipient, credential: second.credential });
    expect(again.statusCode).toBe(409);
    expect(JSON.parse(again.body)).toEqual({ error: "Für diese Adresse gibt es schon ein Konto. Bitte melden Sie sich an." });
    expect((await ctx.store.records.patient(email))?.recipient).toBe(key.recipient);
  });

  it("refuses parameters below the minimum or of an old version, and writes nothing", async () => {
    const { ctx } = portal;
    const email = "emil@patient.example";
    const { token } = await deliver(ctx, email, "%PDF-1.4 an Emil");
    const key = await newKey(email, "Emils Secu-Pass-Key 2026");
    for (const kdf of [{ ...key.kdf, logN: 15 }, { ...key.kdf, v: 2 }]) {
      const c = new Client(portal.app);
      await c.get(`/d/${token}`);
      expect((await c.json("/register", { token, kdf, recipient: key.recipient, credential: key.credential })).statusCode).toBe(400);
    }
    expect(await ctx.store.records.patient(email)).toBeUndefined();
  });

  it("through an invite: address prefilled from the link, code and key in one post, approved at once", async () => {
    const { ctx } = portal;
    const email = "frieda@patient.example";
    const invite = await createInvite(ctx, email, await practiceIdentityOf(portal.home));
    expect(invite.link).toMatch(new RegExp(`/invite/i_[a-z0-9]{12}\\?email=${encodeURIComponent(email)}$`));
    const path = new URL(invite.link).pathname;
    const c = new Client(portal.app);
    const page = await c.get(`${path}?email=${encodeURIComponent(email)}`);
    expect(page.body).toContain(`value="${email}"`);
    expect(page.body).not.toContain('name="password"');
    const key = await newKey(email, "Friedas Secu-Pass-Key");
    const wrong = await c.json(path, { email, code: "AAAA-BBBB-CCCC", kdf: key.kdf, recipient: key.recipient, credential: key.credential });
    expect(wrong.statusCode).toBe(400);
    expect(JSON.parse(wrong.body)).toEqual({ error: "E-Mail-Adresse oder Einladungscode stimmt nicht." });
    const res = await c.json(path, { email, code: invite.code.toLowerCase(), kdf: key.kdf, recipient: key.recipient, credential: key.credential });
    expect(res.statusCode).toBe(200);
    expect(await ctx.store.records.patient(email)).toMatchObject({ status: "approved", recipient: key.recipient, passwordHash: null });
    expect((await c.get("/deliveries")).statusCode).toBe(200);
  });
});

describe("a forgotten Secu-Pass-Key", () => {
  it("is replaced through a mailed link: sessions end, the practice approves again, and a delivery sent before opens with the new key", async () => {
    const { ctx } = portal;
    const email = "gustav@patient.example";
    const oldU = await registerThroughCore(portal.home, email, "Gustavs alter Key");
    await approveWithTheirCodes(ctx, [email], await practiceIdentityOf(portal.home));
    const { id } = await deliver(ctx, email, "%PDF-1.4 vor dem Vergessen");
    const d = await openWrap(ctx, id, email, oldU);
    const before = new Client(portal.app);
    expect((await before.login(email)).statusCode).toBe(200);
    const link = await resetLink(ctx, email);
    const c = new Client(portal.app);
    const page = await c.get(link);
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('id="newkey-form"');
    const key = await newKey(email, "Gustavs neuer Key");
    const res = await c.json(link, { kdf: key.kdf, recipient: key.recipient, credential: key.credential });
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ next: "/waiting" });
    // The old session ended; the old key no longer logs in; the link is used up.
    expect((await before.get("/deliveries")).statusCode).toBe(303);
    expect((await new Client(portal.app).login(email, "Gustavs alter Key")).statusCode).toBe(401);
    expect((await new Client(portal.app).get(link)).statusCode).toBe(410);
    const row = (await ctx.store.records.patient(email))!;
    expect(row).toMatchObject({ status: "pending-approval", recipient: key.recipient });
    expect(await ctx.store.records.wrap(id, "patient")).toBeUndefined();
    await approvePatients(ctx, [{ email, safetyCode: row.safetyCode! }], await practiceIdentityOf(portal.home));
    expect(await openWrap(ctx, id, email, key.identity)).toBe(d);
    expect((await c.get("/waiting")).statusCode).toBe(303);
    expect(await recipientOf(key.identity)).toBe(row.recipient);
  });
});

describe("limits", () => {
  it("count every ask for parameters per IP, and still every failed login per account, before the check", async () => {
    const ip = "10.77.0.1";
    const c = new Client(portal.app, ip);
    await c.get("/login");
    const codes: number[] = [];
    for (let i = 0; i < 101; i++) codes.push((await c.json("/login/params", { email: `x${String(i)}@patient.example` })).statusCode);
    expect(codes.slice(0, 100).every((s) => s === 200)).toBe(true);
    expect(codes[100]).toBe(429);
    expect(JSON.parse((await c.json("/login/params", { email: KNOWN })).body)).toEqual({ error: "Zu viele Versuche. Bitte warten Sie 15 Minuten und versuchen Sie es dann erneut." });
    // Five wrong keys for one account from five addresses: the sixth try is refused, the right key too.
    const target = "hanna@patient.example";
    await registerThroughCore(portal.home, target, "Hannas Secu-Pass-Key");
    for (let i = 0; i < 5; i++) expect((await new Client(portal.app, `10.78.0.${String(i + 1)}`).login(target, "falsch falsch")).statusCode).toBe(401);
    expect((await new Client(portal.app, "10.78.0.9").login(target)).statusCode).toBe(429);
  });
});

// Invites under signed approvals (security review items 1 and 16), through the real portal
// app and store: the invite's privilege stays with the session that typed the code, an invite
// written into the database approves nobody, and deliveries sent before an invite are offered
// to the practice and released by `praxmail approve`.
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { LightMyRequestResponse } from "fastify";
import { describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import { bindInviteSession, createDelivery, createInvite, markSent, redeemInvite, setSecuPassRecipient, type CreatedInvite } from "../src/core/index.js";
import { generateIdentity, recipientOf, safetyCode } from "../src/crypto/index.js";
import { outbox, practiceIdentityOf, praxmail } from "./helpers/cli.js";
import { newKey } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";
import { streamOf } from "./helpers/streams.js";

let practice: string;
const portal = usePortal({
  beforeOpen: async (home) => {
    practice = await practiceIdentityOf(home);
  },
});

interface Session {
  cookie: string;
  csrf: string;
  /** SHA-256 of the cookie's value: the session's name in the store. */
  hash: string;
}

const cookieOf = (res: LightMyRequestResponse): string => String(res.headers["set-cookie"]).split(";")[0]!;
const csrfOf = (body: string): string => /(?:name="_csrf" value|data-csrf)="([^"]+)"/.exec(body)![1]!;
const hashOf = (cookie: string): string => createHash("sha256").update(cookie.split("=")[1]!).digest("hex");

async function anonymous(): Promise<Session> {
  const page = await portal.app.inject({ method: "GET", url: "/login" });
  return { cookie: cookieOf(page), csrf: csrfOf(page.body), hash: "" };
}

async function post(s: Session, url: string, fields: Record<string, string>): Promise<LightMyRequestResponse> {
  return portal.app.inject({
    method: "POST",
    url,
    headers: { cookie: s.cookie, "content-type": "application/x-www-form-urlencoded" },
    payload: new URLSearchParams({ ...fields, _csrf: s.csrf }).toString(),
  });
}

async function json(s: Session, url: string, body: unknown): Promise<LightMyRequestResponse> {
  return portal.app.inject({ method: "POST", url, headers: { cookie: s.cookie, "x-csrf-token": s.csrf, "content-type": "application/json" }, payload: JSON.stringify(body) });
}

/** The new session a login, registration or reset answered with, and its CSRF token. */
async function sessionAfter(res: LightMyRequestResponse): Promise<Session> {
  expect(res.statusCode, res.body).toBe(200);
  const cookie = cookieOf(res);
  const page = await portal.app.inject({ method: "GET", url: "/help", headers: { cookie } });
  expect(page.statusCode).toBe(200);
  return { cookie, csrf: csrfOf(page.body), hash: hashOf(cookie) };
}

/** Session A: types the address, the code from reception and a new Secu-Pass-Key, in one post. */
async function redeem(inv: CreatedInvite): Promise<{ a: Session; recipient: string }> {
  const { kdf, recipient, credential } = await newKey(inv.email, `Secu-Pass-Key von ${inv.email}`);
  const res = await json(await anonymous(), `/invite/${inv.id}`, { email: inv.email, code: inv.code, kdf, recipient, credential });
  expect(JSON.parse(res.body)).toEqual({ next: "/waiting" });
  return { a: await sessionAfter(res), recipient };
}

/** Logs in with the key the patient registered with. */
async function login(email: string): Promise<Session> {
  const c = new Client(portal.app);
  return sessionAfter(await c.login(email));
}

/** Core's step of the key, as a session with this hash would post it; returns the recipient. */
async function setKeyFrom(email: string, session: string): Promise<string> {
  const recipient = await recipientOf(generateIdentity("x25519"));
  await setSecuPassRecipient(portal.ctx, email, recipient, session);
  return recipient;
}

/** An account as an invite redemption leaves it before the key: the row, bound to a session of this hash. */
async function redeemedBeforeKey(inv: CreatedInvite, session: string): Promise<void> {
  await redeemInvite(portal.ctx, inv.id, inv.email, inv.code, await newKey(inv.email, `Secu-Pass-Key von ${inv.email}`));
  await bindInviteSession(portal.ctx, inv.email, session);
}

async function level3(email: string): Promise<{ id: string; status: string }> {
  const d = await createDelivery(portal.ctx, { recipient: email, level: 3, files: [{ name: "Befund.pdf", open: () => streamOf(Buffer.from("%PDF Befund")) }] });
  await markSent(portal.ctx, [d.id]);
  return d;
}

const status = async (email: string): Promise<string | undefined> => (await portal.ctx.store.records.patient(email))?.status;
const patientWrap = async (id: string): Promise<string | undefined> => (await portal.ctx.store.records.wrap(id, "patient"))?.recipient;
const practiceMails = async (subject: string) => (await outbox(portal.home)).filter((m) => m.subject === subject);

describe("item 1: the invite's privilege stays with the session that typed the code", () => {
  it("redeemed and keyed in the same post: approved by the portal's signature, the next delivery is ready", async () => {
    const email = "erika@patient.example";
    const { recipient } = await redeem(await createInvite(portal.ctx, email, practice));
    expect(await status(email)).toBe("approved");
    expect(JSON.parse((await portal.ctx.store.records.patient(email))!.approval!)).toMatchObject({ by: "invite" });
    expect(await practiceMails(`Freigabe erforderlich: ${email}`)).toEqual([]);
    const d = await level3(email);
    expect(d.status).toBe("ready");
    expect(await patientWrap(d.id)).toBe(recipient);
  });

  it("backup and restore keep an invited patient approved: the portal key comes back, and so does the mark of the used invite", async () => {
    const email = "gesichert@patient.example";
    const invite = await createInvite(portal.ctx, email, practice);
    const { recipient } = await redeem(invite);
    expect(await status(email)).toBe("approved");
    const backup = join(portal.dir, "backup-invite");
    const restored = join(portal.dir, "restored-invite");
    expect((await praxmail(["backup", backup, "--home", portal.home])).code).toBe(0);
    const identity = join(portal.dir, "identity-invite.txt");
    await writeFile(identity, `${practice}\n`, { mode: 0o600 });
    const r = await praxmail(["restore", backup, "--home", restored, "--identity", identity]);
    expect(r.code, r.stderr).toBe(0);
    expect(await readFile(join(restored, "portal-signing.key"))).toEqual(await readFile(join(portal.home, "portal-signing.key")));
    expect((await stat(join(restored, "portal-signing.key"))).mode & 0o777).toBe(0o600);
    expect(existsSync(join(restored, "invite-approvals", invite.id))).toBe(true);
    const other = await openContext({ home: restored }, "cli");
    try {
      const d = await createDelivery(other, { recipient: email, level: 3, files: [{ name: "Befund.pdf", open: () => streamOf(Buffer.from("%PDF Befund")) }] });
      expect(d.status).toBe("ready");
      expect((await other.store.records.wrap(d.id, "patient"))?.recipient).toBe(recipient);
    } finally {
      await other.store.close();
    }
  });

  it("a Secu-Pass reset by mail after the invite: the mailbox reader's key waits for the ordinary approval", async () => {
    const email = "takeover@patient.example";
    const { a } = await redeem(await createInvite(portal.ctx, email, practice));
    // Someone who reads the mailbox asks for a reset and sets a key of their own (session B).
    expect((await post(await anonymous(), "/reset", { email })).statusCode).toBe(200);
    // The reset mail is sent from a queue after the answer.
    const resetMail = async () => (await outbox(portal.home)).filter((m) => m.subject?.startsWith("Neuen Secu-Pass-Key festlegen") && m.to && JSON.stringify(m.to).includes(email)).at(-1);
    await expect.poll(resetMail, { timeout: 10_000, interval: 50 }).toBeDefined();
    const mail = await resetMail();
    const link = /\/reset\/[\w-]{43}/.exec(mail?.text ?? "")![0];
    const { kdf, recipient, credential } = await newKey(email, "der Schlüssel des Mitlesers");
    const b = await sessionAfter(await json(await anonymous(), link, { kdf, recipient, credential }));
    expect(b.cookie).not.toBe(a.cookie);
    expect(await status(email)).toBe("pending-approval");
    expect((await portal.ctx.store.records.patient(email))!.approval).toBeNull();
    const [asked] = await practiceMails(`Freigabe erforderlich: ${email}`);
    expect(asked?.text).toContain(`Sicherheitscode: ${safetyCode(recipient)}`);
    const d = await level3(email);
    expect(d.status).toBe("pending-approval");
    expect(await patientWrap(d.id)).toBeUndefined();
    // Session A ended with the reset.
    expect((await portal.app.inject({ method: "GET", url: "/deliveries", headers: { cookie: a.cookie } })).statusCode).toBe(303);
  });

  it("an invite row written into the database approves nobody, also with a signature copied from a real invite", async () => {
    const real = await createInvite(portal.ctx, "echt@patient.example", practice);
    const sig = (await portal.ctx.store.accounts.invite(real.id))!.sig;
    for (const [email, copied] of [["eingeschleust@patient.example", null], ["kopiert@patient.example", sig]] as const) {
      const code = "ABCD-EFGH-JKMN";
      const id = `i_${createHash("sha256").update(email).digest("hex").slice(0, 12)}`;
      const db = new Database(join(portal.home, "praxmail.db"));
      db.prepare("INSERT INTO invites (id, email, code_hash, created_at, expires_at, used_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL, NULL)").run(
        id,
        email,
        createHash("sha256").update(`praxmail invite\n${code.replace(/-/g, "")}`).digest("hex"),
        portal.clock.toISOString(),
        new Date(portal.clock.getTime() + 86_400_000).toISOString(),
      );
      if (copied !== null) db.prepare("UPDATE invites SET sig = ? WHERE id = ?").run(copied, id);
      db.close();
      await redeem({ id, email, code, link: "", expiresAt: portal.clock });
      expect(await status(email)).toBe("pending-approval");
      expect(await practiceMails(`Freigabe erforderlich: ${email}`)).toHaveLength(1);
    }
  });

  it("an invite bound in the database to a session of someone else's making approves nobody", async () => {
    const email = "untergeschoben@patient.example";
    const a = createHash("sha256").update("sitzung-a").digest("hex");
    await redeemedBeforeKey(await createInvite(portal.ctx, email, practice), a);
    const sigOfA = (await portal.ctx.store.records.patient(email))!.inviteSession!.split(" ")[1]!;
    for (const [i, bind] of [(h: string) => h, (h: string) => `${h} ${sigOfA}`].entries()) {
      // A database writer makes a session of their own and binds the invite to it.
      const value = createHash("sha256").update(`eigene-sitzung-${String(i)}`).digest("base64url");
      const hash = createHash("sha256").update(value).digest("hex");
      const db = new Database(join(portal.home, "praxmail.db"));
      db.prepare("INSERT INTO sessions (id_hash, email, csrf, created_at, last_seen) VALUES (?, ?, 'x', ?, ?)").run(hash, email, portal.clock.toISOString(), portal.clock.toISOString());
      db.prepare("UPDATE patients SET status = 'pending-secupass', recipient = NULL, safety_code = NULL, approval = NULL, invite_session = ? WHERE email = ?").run(bind(hash), email);
      db.close();
      await setKeyFrom(email, hash);
      expect(await status(email)).toBe("pending-approval");
      expect((await portal.ctx.store.records.patient(email))!.approval).toBeNull();
    }
  });

  it("a used invite approves nobody a second time, even with the row put back to 'no key yet' and bound to another session", async () => {
    const email = "zurueck@patient.example";
    await redeem(await createInvite(portal.ctx, email, practice));
    expect(await status(email)).toBe("approved");
    const b = await login(email);
    const db = new Database(join(portal.home, "praxmail.db"));
    db.prepare("UPDATE patients SET status = 'pending-secupass', recipient = NULL, safety_code = NULL, approval = NULL, invite_session = ? WHERE email = ?").run(b.hash, email);
    db.close();
    await setKeyFrom(email, b.hash);
    expect(await status(email)).toBe("pending-approval");
    expect((await portal.ctx.store.records.patient(email))!.approval).toBeNull();
  });

  it("the recipient of an invited patient replaced in the database gets no wrap, and the practice is alarmed", async () => {
    const email = "umgeleitet@patient.example";
    await redeem(await createInvite(portal.ctx, email, practice));
    expect(await status(email)).toBe("approved");
    const attacker = await recipientOf(generateIdentity("x25519"));
    const db = new Database(join(portal.home, "praxmail.db"));
    db.prepare("UPDATE patients SET recipient = ?, safety_code = ? WHERE email = ?").run(attacker, safetyCode(attacker), email);
    db.close();
    const d = await level3(email);
    expect(d.status).toBe("pending-approval");
    expect(await patientWrap(d.id)).toBeUndefined();
    const [alarm] = await practiceMails(`ALARM: Freigabe ungültig: ${email}`);
    expect(alarm?.text).toContain("Grund: the invite approval does not verify");
  });
});

describe("item 16: deliveries sent before an invite", () => {
  it("are offered to the practice, shown to the patient, listed as pending, and released by approve", async () => {
    const email = "vorher@patient.example";
    const before = await level3(email);
    expect(before.status).toBe("pending-approval");
    const { a, recipient } = await redeem(await createInvite(portal.ctx, email, practice));
    expect(await status(email)).toBe("approved");
    const code = safetyCode(recipient);

    const waiting = await portal.app.inject({ method: "GET", url: "/waiting", headers: { cookie: a.cookie } });
    expect(waiting.statusCode).toBe(200);
    // ICU's plural (src/i18n): one delivery is singular now, no longer "1 Zustellungen warten".
    expect(waiting.body).toContain("1 Zustellung wartet auf Freigabe durch die Praxis. Sie wurde vor Ihrer Einladung verschickt;");
    expect(waiting.body).toContain(code);
    const [mail] = await practiceMails(`Freigabe erforderlich: ${email} (1 wartend)`);
    expect(mail?.text).toContain(`Sicherheitscode: ${code}`);
    expect(mail?.text).toContain(`praxmail approve ${email}`);

    const pending = JSON.parse((await praxmail(["list", "pending", "--json", "--home", portal.home])).stdout) as { email: string; status: string; waiting: number }[];
    expect(pending.find((p) => p.email === email)).toMatchObject({ status: "approved", safetyCode: code, waiting: 1 });
    const r = await praxmail(["approve", email, "--code", code, "--yes", "--json", "--home", portal.home]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ approved: [{ email, deliveries: 1 }] });
    expect((await portal.ctx.store.records.delivery(before.id))?.status).toBe("ready");
    expect(await patientWrap(before.id)).toBe(recipient);
    expect(JSON.parse((await portal.ctx.store.records.patient(email))!.approval!)).toMatchObject({ by: "practice" });
    // Nothing waits any more: the patient goes straight to the messages.
    expect((await portal.app.inject({ method: "GET", url: "/waiting", headers: { cookie: a.cookie } })).headers.location).toBe("/deliveries");
  });
});

// What the way back refuses, each with its exact answer: expired or reused reset links and
// invites, an invite for another address, a reply from a patient who is not approved, an oversized or
// plaintext upload, and a file name that would escape the folder in `praxmail receive`.
import { createHash, randomBytes } from "node:crypto";
import { request } from "node:http";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  ReplyRefusedError,
  addReplyPart,
  createInvite,
  finishReply,
  revokePatient,
  startReply,
} from "../src/core/index.js";
import { encryptBytes } from "../src/crypto/index.js";
import { outbox, practiceIdentityOf, praxmail, walk } from "./helpers/cli.js";
import { approveWithTheirCodes, legacyPatient, newKey, registerThroughCore } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";
import { patchConfig } from "./helpers/relay.js";
import { Readable } from "node:stream";

const A = "anna@patient.example";

let practice: string;
const portal = usePortal({
  beforeOpen: async (home) => {
    await patchConfig(home, { portal: { maxUploadBytes: 1024 * 1024 } });
    await registerThroughCore(home, A, "Annas Secu-Pass-Key");
    // Only approved patients may reply.
    expect((await praxmail(["approve", A, "--yes", "--home", home])).code).toBe(0);
    practice = await practiceIdentityOf(home);
  },
  listen: true,
});

async function session(email: string): Promise<{ cookie: string; csrf: string }> {
  const c = new Client(portal.app);
  expect((await c.login(email)).statusCode).toBe(200);
  const logged = `praxmail=${c.sid!}`;
  const list = await portal.app.inject({ method: "GET", url: "/deliveries", headers: { cookie: logged } });
  return { cookie: logged, csrf: /name="_csrf" value="([^"]+)"/.exec(list.body)![1]! };
}

/** A session row as a login from before the Secu-Pass-Key login left it (for an account that can no longer log in). */
async function sessionFromBefore(email: string): Promise<{ cookie: string; csrf: string }> {
  const id = randomBytes(32).toString("base64url");
  const csrf = randomBytes(24).toString("base64url");
  const now = portal.clock.toISOString();
  expect(await portal.ctx.store.records.insertSession({ idHash: createHash("sha256").update(id).digest("hex"), email, csrf, createdAt: now, lastSeen: now })).toBe(true);
  return { cookie: `praxmail=${id}`, csrf };
}

/** Posts a form with a visitor's CSRF token (taken from the login page). */
async function form(url: string, fields: Record<string, string>) {
  const c = new Client(portal.app);
  await c.get("/login");
  return c.post(url, { ...fields, _csrf: c.csrf });
}

/** Posts JSON as a page's script does, with a visitor's CSRF token. */
async function script(url: string, body: Record<string, unknown>) {
  const c = new Client(portal.app);
  await c.get("/login");
  return c.json(url, body);
}

/** A new key's fields as the browser posts them. */
const keyBody = async (email: string, key: string): Promise<Record<string, unknown>> => {
  const { kdf, recipient, credential } = await newKey(email, key);
  return { kdf, recipient, credential };
};

const resetMails = async () => (await outbox(portal.home)).filter((m) => m.subject?.startsWith("Neuen Secu-Pass-Key festlegen"));

/** Asks for a reset link for A and waits until the queue has mailed it. */
const resetLink = async (): Promise<string> => {
  const before = (await resetMails()).length;
  const res = await form("/reset", { email: A });
  expect(res.body).toContain("Wenn es für diese Adresse ein Konto gibt");
  await expect.poll(async () => (await resetMails()).length, { timeout: 10_000, interval: 50 }).toBe(before + 1);
  const mail = (await resetMails()).at(-1);
  return /\/reset\/[\w-]{43}/.exec(mail?.text ?? "")![0];
};

describe("Secu-Pass reset links", () => {
  it("answer the same for an unknown address, and send nothing", async () => {
    const before = (await outbox(portal.home)).length;
    const res = await form("/reset", { email: "niemand@patient.example" });
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain("Wenn es für diese Adresse ein Konto gibt, haben wir eine E-Mail mit einem Link geschickt.");
    // The queue works in order: once a known patient's mail (asked for next) is out, the
    // unknown address was handled.
    await registerThroughCore(portal.home, "bekannt@patient.example", "Bekannts Secu-Pass-Key");
    const registered = (await outbox(portal.home)).length;
    // The account mail, the Secu-Pass mail, and the practice's approval request.
    expect(registered).toBe(before + 3);
    await form("/reset", { email: "bekannt@patient.example" });
    await expect.poll(async () => (await resetMails()).filter((m) => JSON.stringify(m.to).includes("bekannt@patient.example")).length, { timeout: 10_000, interval: 50 }).toBe(1);
    expect((await outbox(portal.home)).length).toBe(registered + 1);
  });

  it("expire after 30 minutes with 410", async () => {
    const link = await resetLink();
    portal.clock = new Date(portal.clock.getTime() + 31 * 60_000);
    const get = await portal.app.inject({ method: "GET", url: link });
    expect(get.statusCode).toBe(410);
    expect(get.body).toContain("Dieser Link ist abgelaufen oder wurde schon benutzt.");
    // (Derived for another address: a refused key must not become the one the tests below log in with.)
    const post = await script(link, await keyBody("niemand@patient.example", "noch ein Secu-Pass-Key"));
    expect(post.statusCode).toBe(410);
  });

  it("work once: a reused link answers 410; the new key ends every session", async () => {
    const before = await session(A);
    expect((await portal.app.inject({ method: "GET", url: "/deliveries", headers: { cookie: before.cookie } })).statusCode).toBe(200);
    const link = await resetLink();
    const first = await script(link, await keyBody(A, "Annas zweiter Secu-Pass-Key"));
    expect(first.statusCode).toBe(200);
    expect(JSON.parse(first.body)).toEqual({ next: "/waiting" });
    const ended = await portal.app.inject({ method: "GET", url: "/deliveries", headers: { cookie: before.cookie } });
    expect(ended.statusCode).toBe(303);
    expect(ended.headers.location).toMatch(/^\/login\?next=/);
    const again = await script(link, await keyBody("niemand@patient.example", "ein dritter Secu-Pass-Key"));
    expect(again.statusCode).toBe(410);
    expect(JSON.parse(again.body)).toEqual({ error: "Dieser Link ist abgelaufen oder wurde schon benutzt. Fordern Sie bitte einen neuen an." });
    expect((await portal.app.inject({ method: "GET", url: link })).body).toContain("<h1>Link abgelaufen</h1>");
    // The practice approves the new key, for the tests below.
    await approveWithTheirCodes(portal.ctx, [A], practice);
  });
});

describe("invites", () => {
  it("refuse another address and a wrong code with one answer, and count both", async () => {
    const inv = await createInvite(portal.ctx, "neu@patient.example", practice);
    const url = `/invite/${inv.id}`;
    const key = await keyBody("neu@patient.example", "ein Secu-Pass-Key zum Anlegen");
    const other = await script(url, { email: "jemand@patient.example", code: inv.code, ...key });
    expect(other.statusCode).toBe(400);
    expect(other.body).toContain("E-Mail-Adresse oder Einladungscode stimmt nicht.");
    const wrong = await script(url, { email: "neu@patient.example", code: "AAAA-BBBB-CCCC", ...key });
    expect(wrong.statusCode).toBe(400);
    expect(wrong.body).toContain("E-Mail-Adresse oder Einladungscode stimmt nicht.");
    expect(await portal.ctx.store.records.patient("neu@patient.example")).toBeUndefined();
  });

  it("work once: a reused invite answers 410", async () => {
    const inv = await createInvite(portal.ctx, "einmal@patient.example", practice);
    const url = `/invite/${inv.id}`;
    const key = await keyBody("einmal@patient.example", "ein Secu-Pass-Key zum Anlegen");
    const first = await script(url, { email: "einmal@patient.example", code: inv.code, ...key });
    expect(first.statusCode).toBe(200);
    expect(JSON.parse(first.body)).toEqual({ next: "/waiting" });
    const again = await script(url, { email: "einmal@patient.example", code: inv.code, ...key });
    expect(again.statusCode).toBe(410);
    expect(again.body).toContain("Diese Einladung ist abgelaufen, wurde schon benutzt oder zurückgezogen.");
  });

  it("expire after 14 days, and can be revoked", async () => {
    const inv = await createInvite(portal.ctx, "spaet@patient.example", practice);
    portal.clock = new Date(portal.clock.getTime() + 15 * 86_400_000);
    expect((await portal.app.inject({ method: "GET", url: `/invite/${inv.id}` })).statusCode).toBe(410);
    portal.clock = new Date();
    const r = await praxmail(["invite", "--revoke", inv.id, "--home", portal.home]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`revoked ${inv.id} (spaet@patient.example)\n`);
    expect((await portal.app.inject({ method: "GET", url: `/invite/${inv.id}` })).statusCode).toBe(410);
    const again = await praxmail(["invite", "--revoke", inv.id, "--home", portal.home]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`praxmail: error: invite ${inv.id} is revoked\n`);
    const list = JSON.parse((await praxmail(["invite", "--list", "--json", "--home", portal.home])).stdout) as { id: string; status: string }[];
    expect(list.find((i) => i.id === inv.id)?.status).toBe("revoked");
  });

  it("are refused for an address that has an account", async () => {
    const r = await praxmail(["invite", A, "--home", portal.home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`praxmail: error: ${A} has an account already\npraxmail: hint: for a waiting patient, compare the safety code and run praxmail approve\n`);
  });
});

/** Posts an upload over real HTTP, chunked (no Content-Length), so the limit bites while streaming. */
function upload(path: string, cookie: string, csrf: string, chunks: Buffer[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: portal.port, path, method: "POST", headers: { cookie, "x-csrf-token": csrf, "content-type": "application/octet-stream", "transfer-encoding": "chunked" } }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on("error", reject);
    Readable.from(chunks).pipe(req);
  });
}

describe("replies", () => {
  it("refuse an upload over the limit while it streams, and one that is not an age file", async () => {
    const { cookie, csrf } = await session(A);
    const start = await portal.app.inject({ method: "POST", url: "/reply", headers: { cookie, "x-csrf-token": csrf, "content-type": "application/json" }, payload: "{}" });
    const { id } = JSON.parse(start.body) as { id: string };
    const blobsBefore = (await walk(join(portal.home, "blobs")).catch(() => [])).length;
    const big = await upload(`/reply/${id}/parts?kind=message`, cookie, csrf, [Buffer.from("age-encryption.org/v1\n"), ...Array.from({ length: 40 }, () => Buffer.alloc(64 * 1024))]);
    expect(big.status).toBe(413);
    expect(JSON.parse(big.body)).toEqual({ error: "too-large", message: "upload is larger than 1048576 bytes" });
    const declared = await portal.app.inject({ method: "POST", url: `/reply/${id}/parts?kind=message`, headers: { cookie, "x-csrf-token": csrf, "content-type": "application/octet-stream", "content-length": String(5 * 1024 * 1024) }, payload: Buffer.alloc(10) });
    expect(declared.statusCode).toBe(413);
    const plain = await upload(`/reply/${id}/parts?kind=message`, cookie, csrf, [Buffer.from("Mein Befund im Klartext, nicht verschlüsselt")]);
    expect(plain.status).toBe(400);
    expect(JSON.parse(plain.body)).toEqual({ error: "invalid-input", message: "upload is not an age file" });
    expect((await walk(join(portal.home, "blobs")).catch(() => [])).filter((f) => f.endsWith(".age")).length).toBe(blobsBefore);
  });

  it("come only from approved patients: pending accounts get 403 and the reason in German, a revoked one has no session left, and core refuses all three", async () => {
    await legacyPatient(portal.ctx, "ohne-key@patient.example", "ein altes Passwort");
    await registerThroughCore(portal.home, "wartet@patient.example", "Secu-Pass wartet");
    await registerThroughCore(portal.home, "gesperrt@patient.example", "Secu-Pass gesperrt");
    const cases = [
      { email: "ohne-key@patient.example", status: "pending-secupass", text: "Sie können erst antworten, wenn Sie Ihren Secu-Pass-Key festgelegt haben und Ihre Praxis Ihren Zugang freigegeben hat." },
      { email: "wartet@patient.example", status: "pending-approval", text: "Sie können erst antworten, wenn Ihre Praxis Ihren Zugang freigegeben hat. Dazu vergleicht sie Ihren Sicherheitscode." },
      { email: "gesperrt@patient.example", status: "revoked", text: "Ihre Praxis hat Ihren Zugang gesperrt. Sie können keine Antworten senden. Bitte wenden Sie sich an Ihre Praxis." },
    ] as const;
    const sessions = new Map<string, { cookie: string; csrf: string }>();
    // The account without a key cannot log in any more: its session is one from before.
    sessions.set(cases[0].email, await sessionFromBefore(cases[0].email));
    for (const c of cases.slice(1)) sessions.set(c.email, await session(c.email));
    await revokePatient(portal.ctx, "gesperrt@patient.example");
    const repliesBefore = (await portal.ctx.store.accounts.replies()).length;
    for (const c of cases) {
      expect((await portal.ctx.store.records.patient(c.email))?.status).toBe(c.status);
      await expect(startReply(portal.ctx, c.email, null)).rejects.toThrow(ReplyRefusedError);
      await expect(startReply(portal.ctx, c.email, null)).rejects.toThrow(`patient ${c.email} is ${c.status}: only approved patients may send replies`);
      const s = sessions.get(c.email)!;
      const res = await portal.app.inject({ method: "POST", url: "/reply", headers: { cookie: s.cookie, "x-csrf-token": s.csrf, "content-type": "application/json" }, payload: "{}" });
      if (c.status === "revoked") {
        // The revocation ended every session of the patient.
        expect(res.statusCode).toBe(401);
        expect(JSON.parse(res.body)).toEqual({ error: "login required" });
        continue;
      }
      expect(res.statusCode).toBe(403);
      expect(JSON.parse(res.body)).toEqual({ error: "wrong-state", status: c.status, message: c.text });
      const page = await portal.app.inject({ method: "GET", url: "/reply", headers: { cookie: s.cookie } });
      expect(page.statusCode).toBe(403);
      expect(page.body).toContain(`<p>${c.text}</p>`);
      expect(page.body).not.toContain('id="reply-form"');
    }
    expect((await portal.ctx.store.accounts.replies()).length).toBe(repliesBefore);
    // An approved patient still can.
    const { cookie, csrf } = await session(A);
    const ok = await portal.app.inject({ method: "POST", url: "/reply", headers: { cookie, "x-csrf-token": csrf, "content-type": "application/json" }, payload: "{}" });
    expect(ok.statusCode).toBe(200);
    expect((await portal.app.inject({ method: "GET", url: "/reply", headers: { cookie } })).body).toContain('id="reply-form"');
  });

  it("started before a revocation cannot be finished after it; `praxmail inbox` shows each sender's account status", async () => {
    const B = "widerruf@patient.example";
    await registerThroughCore(portal.home, B, "Secu-Pass Widerruf");
    expect((await praxmail(["approve", B, "--yes", "--home", portal.home])).code).toBe(0);
    const s = await session(B);
    const message = Buffer.from(await encryptBytes(JSON.stringify({ v: 1, text: "Hallo", files: [] }), [portal.ctx.config.practiceRecipient]));
    const sent = await startReply(portal.ctx, B, null);
    await addReplyPart(portal.ctx, B, sent, "message", Readable.from([message]));
    await finishReply(portal.ctx, B, sent);
    const open = await startReply(portal.ctx, B, null);
    await revokePatient(portal.ctx, B);
    // The revocation ended the session and deleted the unfinished reply; core refuses the rest.
    const headers = { cookie: s.cookie, "x-csrf-token": s.csrf, "content-type": "application/octet-stream" };
    const part = await portal.app.inject({ method: "POST", url: `/reply/${open}/parts?kind=message`, headers, payload: message });
    expect(part.statusCode).toBe(401);
    expect(await portal.ctx.store.accounts.reply(open)).toBeUndefined();
    await expect(addReplyPart(portal.ctx, B, open, "message", Readable.from([message]))).rejects.toThrow("no such reply");
    await expect(finishReply(portal.ctx, B, open)).rejects.toThrow("no such reply");
    await expect(startReply(portal.ctx, B, null)).rejects.toThrow(expect.objectContaining({ name: "ReplyRefusedError", status: "revoked" }));

    const json = await praxmail(["inbox", "--json", "--home", portal.home]);
    expect(json.code).toBe(0);
    const rows = JSON.parse(json.stdout) as { id: string; from: string; accountStatus: string; status: string }[];
    expect(rows.find((r) => r.id === sent)).toMatchObject({ from: B, accountStatus: "revoked", status: "new" });
    expect(rows.filter((r) => r.from === A).map((r) => r.accountStatus)).not.toContain("revoked");
    const table = await praxmail(["inbox", "--home", portal.home]);
    expect(table.stdout.split("\n")[0]).toMatch(/^ID\s+FROM\s+ACCOUNT\s+STATUS\s+RECEIVED\s+FILES\s+SIZE$/);
    expect(table.stdout).toMatch(new RegExp(`^${sent}\\s+${B}\\s+revoked\\s+new\\s`, "m"));
  });

  it("`praxmail receive` refuses a file name with ../ and writes nothing", async () => {
    const id = await startReply(portal.ctx, A, null);
    const message = await encryptBytes(JSON.stringify({ v: 1, text: "Hallo", files: ["../entkommen.txt"] }), [portal.ctx.config.practiceRecipient]);
    await addReplyPart(portal.ctx, A, id, "message", Readable.from([Buffer.from(message)]));
    await addReplyPart(portal.ctx, A, id, "file", Readable.from([Buffer.from(await encryptBytes("Inhalt", [portal.ctx.config.practiceRecipient]))]));
    await finishReply(portal.ctx, A, id);
    const out = join(portal.dir, "out");
    const r = await praxmail(["receive", id, "--out", out, "--home", portal.home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('praxmail: error: refusing the file name "../entkommen.txt": it would leave the folder or is not a plain name\n');
    expect(await readdir(out).catch(() => [])).toEqual([]);
    expect(await readdir(portal.dir)).not.toContain("entkommen.txt");
  });

  it("`praxmail receive` writes the patient's file names cleaned (bidi, forbidden characters, device names) and numbered where they collide", async () => {
    const names = ["Befund\u202Efdp.exe", "CON", "message.txt", "a?.pdf", "a*.pdf"];
    const id = await startReply(portal.ctx, A, null);
    const message = await encryptBytes(JSON.stringify({ v: 1, text: "Hallo", files: names }), [portal.ctx.config.practiceRecipient]);
    await addReplyPart(portal.ctx, A, id, "message", Readable.from([Buffer.from(message)]));
    for (const [i] of names.entries()) {
      await addReplyPart(portal.ctx, A, id, "file", Readable.from([Buffer.from(await encryptBytes(`Inhalt ${i}`, [portal.ctx.config.practiceRecipient]))]));
    }
    await finishReply(portal.ctx, A, id);
    const out = join(portal.dir, "out");
    const r = await praxmail(["receive", id, "--out", out, "--home", portal.home]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const written = ["message.txt", "Befundfdp.exe", "_CON", "message (2).txt", "a_.pdf", "a_ (2).pdf"];
    expect(r.stdout).toBe(written.map((n) => `${join(out, n)}\n`).join(""));
    expect((await readdir(out)).sort()).toEqual([...written].sort());
    expect(await readFile(join(out, "Befundfdp.exe"), "utf8")).toBe("Inhalt 0");
    expect(await readFile(join(out, "message (2).txt"), "utf8")).toBe("Inhalt 2");
  });

  it("`praxmail receive` of an unknown reply: exit 1 with a hint", async () => {
    const r = await praxmail(["receive", "r_unbekannt", "--out", join(portal.dir, "x"), "--home", portal.home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('praxmail: error: no such reply "r_unbekannt"\npraxmail: hint: run praxmail inbox\n');
  });
});

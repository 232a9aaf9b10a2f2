// Signed audit checkpoints against an attacker who can write the database: drop the triggers,
// delete, alter or insert rows, and rebuild every hash after them. The real binary, a real home.
import { createHash } from "node:crypto";
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateIdentity, practiceSigningKey, signStatement, statement } from "../src/crypto/index.js";
import { verifyAudit } from "../src/store/audit.js";
import { cleanup, initHome, praxmail, tempDir, type Run } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";

interface AuditDbRow {
  seq: number;
  at: string;
  actor: string;
  action: string;
  subject: string | null;
  details: string;
  prev_hash: string;
  hash: string;
}

interface VerifyJson {
  ok: boolean;
  rows: number;
  key: string | null;
  checkpoints: number;
  lastCheckpoint: { seq: number; hash: string; at: string; signature: string } | null;
  confirmed: number;
  unconfirmed: { count: number; from: number; to: number } | null;
}

let dir: string;
/** Rows 1–3: deliveries; row 4: a checkpoint signed by audit --verify --sign; rows 5–6: deliveries. */
let base: string;
let anchor: string;
let n = 0;

async function send(home: string, to: string): Promise<void> {
  const r = await praxmail(["send", "--home", home, "--to", to, "--level", "3", join(dir, "befund.txt")]);
  expect(r.code, r.stderr).toBe(0);
}

/** A copy of the base home to attack. */
async function copy(): Promise<string> {
  const home = join(dir, `home-${String(++n)}`);
  await cp(base, home, { recursive: true });
  return home;
}

function open(home: string): Database.Database {
  return new Database(join(home, "praxmail.db"));
}

/**
 * What an attacker with write access does: drops the triggers, edits the rows, then renumbers
 * them and recomputes every hash with praxmail's own (unkeyed) algorithm.
 */
function rewriteChain(home: string, edit: (rows: AuditDbRow[]) => AuditDbRow[]): void {
  const db = open(home);
  try {
    db.exec("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;");
    const rows = edit(db.prepare("SELECT * FROM audit ORDER BY seq").all() as AuditDbRow[]);
    db.transaction(() => {
      db.exec("DELETE FROM audit");
      let prev = "0".repeat(64);
      rows.forEach((r, i) => {
        const seq = i + 1;
        const hash = createHash("sha256").update(JSON.stringify([seq, r.at, r.actor, r.action, r.subject, r.details, prev])).digest("hex");
        db.prepare("INSERT INTO audit (seq, at, actor, action, subject, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)").run(
          seq, r.at, r.actor, r.action, r.subject, r.details, prev, hash,
        );
        prev = hash;
      });
    })();
    // The unkeyed chain alone cannot tell: it verifies.
    expect(verifyAudit(db)).toMatchObject({ ok: true, rows: rows.length });
  } finally {
    db.close();
  }
}

function verifyJson(r: Run): VerifyJson {
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as VerifyJson;
}

function expectBroken(r: Run, row: number, reason: string): void {
  expect(r.code).toBe(1);
  expect(r.stdout).toBe("");
  expect(r.stderr).toContain(`praxmail: error: audit chain broken at row ${String(row)}: ${reason}`);
}

/** Edits of rows before the checkpoint at row 4, and the row and reason verify then names. */
const ATTACKS = [
  {
    attack: "deleting an earlier row",
    edit: (rows: AuditDbRow[]) => rows.filter((r) => r.seq !== 2),
    // The checkpoint's own row moved from 4 to 3.
    row: 3,
    reason: "no signed checkpoint is stored for this checkpoint row: a row before it was deleted or inserted, or the checkpoint removed",
  },
  {
    attack: "altering an earlier row",
    edit: (rows: AuditDbRow[]) => rows.map((r) => (r.seq === 2 ? { ...r, details: r.details.replace("b@example.org", "x@example.org") } : r)),
    row: 4,
    reason: "signed checkpoint no longer matches the chain: a row up to here was deleted, altered or inserted",
  },
  {
    attack: "inserting an earlier row",
    edit: (rows: AuditDbRow[]) => [...rows.slice(0, 1), { ...rows[0]!, subject: "d_forged" }, ...rows.slice(1)],
    row: 4,
    reason: "signed checkpoint no longer matches the chain: a row up to here was deleted, altered or inserted",
  },
];

/** The two ways to give gc the practice identity. */
const GC_IDENTITY = [
  { how: "--identity", args: (f: string) => ["--identity", f], env: () => ({}) },
  { how: "PRAXMAIL_IDENTITY", args: () => [], env: (f: string) => ({ PRAXMAIL_IDENTITY: f }) },
];

beforeAll(async () => {
  dir = await tempDir();
  base = join(dir, "base");
  await writeFile(join(dir, "befund.txt"), "Laborbefund\n");
  await initHome(base, ["--recipient-type", "x25519"]);
  for (const to of ["a@example.org", "b@example.org", "c@example.org"]) await send(base, to);
  const signed = await praxmail(["audit", "--verify", "--sign", "--home", base]);
  expect(signed.code).toBe(0);
  const m = /^audit chain intact: 4 rows\nsigned checkpoint at row 4; keep this anchor outside the server: (4:[0-9a-f]{64})\n$/.exec(signed.stdout);
  expect(m, signed.stdout).not.toBeNull();
  anchor = m?.[1] ?? "";
  for (const to of ["d@example.org", "e@example.org"]) await send(base, to);
}, 60_000);

afterAll(async () => {
  await cleanup(dir);
});

describe("audit --verify with signed checkpoints", () => {
  it("confirms the rows up to the checkpoint and reports the later ones as unconfirmed", async () => {
    const text = await praxmail(["audit", "--verify", "--home", base]);
    expect(text.code).toBe(0);
    expect(text.stdout).toBe("audit chain intact: 6 rows\n");
    expect(text.stderr).toMatch(/^praxmail: rows 1–4 confirmed by a signed checkpoint \(the latest at row 4, .+\), key SHA256:\S+\n/);
    expect(text.stderr).toContain("praxmail: 2 rows unconfirmed (rows 5–6): nothing signed vouches for them; sign a checkpoint with praxmail audit --verify --sign\n");

    const json = verifyJson(await praxmail(["audit", "--verify", "--json", "--home", base]));
    expect(json).toMatchObject({ ok: true, rows: 6, checkpoints: 1, confirmed: 4, unconfirmed: { count: 2, from: 5, to: 6 } });
    expect(`${String(json.lastCheckpoint?.seq)}:${json.lastCheckpoint?.hash ?? ""}`).toBe(anchor);
  });

  it.each(ATTACKS)("fails naming the row after $attack and recomputing every later hash", async ({ edit, row, reason }) => {
    const home = await copy();
    rewriteChain(home, edit);
    expectBroken(await praxmail(["audit", "--verify", "--home", home]), row, reason);
    // Nothing is signed over a log that does not verify.
    const sign = await praxmail(["audit", "--verify", "--sign", "--home", home]);
    expectBroken(sign, row, reason);
    const db = open(home);
    expect(db.prepare("SELECT count(*) AS n FROM audit_checkpoints").get()).toEqual({ n: 1 });
    db.close();
  });

  it("rejects a checkpoint re-signed by another key over a rebuilt chain", async () => {
    const home = await copy();
    rewriteChain(home, (rows) => rows.map((r) => (r.seq === 2 ? { ...r, details: "{}" } : r)));
    const db = open(home);
    const row4 = db.prepare("SELECT hash, at FROM audit WHERE seq = 4").get() as { hash: string; at: string };
    const forger = practiceSigningKey(generateIdentity("x25519"));
    const signature = signStatement(forger, statement("praxmail audit checkpoint v1", ["4", row4.hash, row4.at]));
    db.exec("DROP TRIGGER audit_checkpoints_no_update");
    db.prepare("UPDATE audit_checkpoints SET hash = ?, at = ?, signature = ? WHERE seq = 4").run(row4.hash, row4.at, signature);
    db.close();
    expectBroken(await praxmail(["audit", "--verify", "--home", home]), 4, "checkpoint signature does not verify against the approval key pinned in config.json");
  });

  it("notices a removed checkpoint by its row; removing that too leaves the rows unconfirmed, and the anchor catches it", async () => {
    const home = await copy();
    const db = open(home);
    db.exec("DROP TRIGGER audit_checkpoints_no_delete; DELETE FROM audit_checkpoints");
    db.close();
    expectBroken(
      await praxmail(["audit", "--verify", "--home", home]),
      4,
      "no signed checkpoint is stored for this checkpoint row: a row before it was deleted or inserted, or the checkpoint removed",
    );

    rewriteChain(home, (rows) => rows.filter((r) => r.action !== "audit.checkpoint"));
    const bare = await praxmail(["audit", "--verify", "--home", home]);
    expect(bare.code).toBe(0);
    expect(bare.stderr).toBe(
      "praxmail: no signed checkpoint yet: a chain rebuilt after tampering would pass too\n" +
        "praxmail: 5 rows unconfirmed (rows 1–5): nothing signed vouches for them; sign a checkpoint with praxmail audit --verify --sign\n",
    );
    expectBroken(
      await praxmail(["audit", "--verify", "--anchor", anchor, "--home", home]),
      4,
      "the anchor's hash no longer matches the chain: a row up to here was deleted, altered or inserted",
    );
  });

  it("checks an anchor the admin kept: it confirms the rows up to it, and fails once the end was cut off", async () => {
    const ok = verifyJson(await praxmail(["audit", "--verify", "--json", "--anchor", anchor, "--home", base]));
    expect(ok).toMatchObject({ confirmed: 4, anchor: { seq: 4, hash: anchor.slice(2) } });

    const home = await copy();
    const db = open(home);
    db.exec("DROP TRIGGER audit_no_delete; DROP TRIGGER audit_checkpoints_no_delete; DELETE FROM audit WHERE seq >= 4; DELETE FROM audit_checkpoints");
    db.close();
    expectBroken(
      await praxmail(["audit", "--verify", "--anchor", anchor, "--home", home]),
      4,
      "row is missing, but the anchor names it: rows were deleted from the end",
    );
    const bad = await praxmail(["audit", "--verify", "--anchor", "4:xyz", "--home", home]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("give SEQ:HASH");
    const stray = await praxmail(["audit", "--verify", "--identity", join(home, "practice-identity.txt"), "--home", home]);
    expect(stray.code).toBe(2);
    expect(stray.stderr).toContain("praxmail: error: --identity is only used with --sign");
  });

  it("--sign refuses an identity that is not this practice's", async () => {
    const home = await copy();
    const other = join(dir, "other-identity.txt");
    await writeFile(other, `${generateIdentity("x25519")}\n`);
    const r = await praxmail(["audit", "--verify", "--sign", "--identity", other, "--home", home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("praxmail: error: the identity does not match the approval key pinned in config.json");
    expect(verifyJson(await praxmail(["audit", "--verify", "--json", "--home", home])).rows).toBe(6);
  });

  it("says plainly that a home without a pinned approval key has nothing to check, and signs nothing", async () => {
    const home = await copy();
    rewriteChain(home, (rows) => rows.filter((r) => r.action !== "audit.checkpoint"));
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(join(home, "config.json"), JSON.stringify({ ...config, approvalKey: null }));
    const r = await praxmail(["audit", "--verify", "--home", home]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(
      "praxmail: no approval key is pinned in config.json (a home made before signed checkpoints): no checkpoint can be checked, so a chain rebuilt after tampering would pass too\n" +
        "praxmail: 5 rows unconfirmed (rows 1–5): nothing signed vouches for them\n",
    );
    expect(verifyJson(await praxmail(["audit", "--verify", "--json", "--home", home]))).toMatchObject({ key: null, checkpoints: 0, lastCheckpoint: null, confirmed: 0 });
    const sign = await praxmail(["audit", "--verify", "--sign", "--home", home]);
    expect(sign.code).toBe(1);
    expect(sign.stderr).toContain("praxmail: error: no approval key is pinned in config.json, so no checkpoint can be signed");
  });

  it("fails when config.json lost its approval key but the log has signed checkpoints", async () => {
    const home = await copy();
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(join(home, "config.json"), JSON.stringify({ ...config, approvalKey: null }));
    expectBroken(await praxmail(["audit", "--verify", "--home", home]), 4, "a signed checkpoint is here, but config.json pins no approval key (it was removed)");
  });
});

describe("who signs checkpoints", () => {
  it("approve signs one after approving", async () => {
    const home = await copy();
    await send(home, "p@example.org");
    await registerThroughCore(home, "p@example.org", "Sonnenblume-Kaffee-7-Leuchtturm");
    const r = await praxmail(["approve", "p@example.org", "--yes", "--home", home]);
    expect(r.code).toBe(0);
    const audit = JSON.parse((await praxmail(["audit", "--json", "--home", home])).stdout) as { seq: number; action: string }[];
    expect(audit.slice(-2).map((a) => a.action)).toEqual(["patient.approve", "audit.checkpoint"]);
    const v = verifyJson(await praxmail(["audit", "--verify", "--json", "--home", home]));
    expect(v).toMatchObject({ checkpoints: 2, confirmed: v.rows, unconfirmed: null, lastCheckpoint: { seq: v.rows } });
  });

  it("approve on a tampered log still approves, then fails naming the row and signs nothing", async () => {
    const home = await copy();
    await send(home, "p@example.org");
    await registerThroughCore(home, "p@example.org", "Sonnenblume-Kaffee-7-Leuchtturm");
    rewriteChain(home, (rows) => rows.map((r) => (r.seq === 2 ? { ...r, details: "{}" } : r)));
    const r = await praxmail(["approve", "p@example.org", "--yes", "--home", home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      "praxmail: error: audit chain broken at row 4: signed checkpoint no longer matches the chain: a row up to here was deleted, altered or inserted; no checkpoint was signed\n",
    );
    const patients = JSON.parse((await praxmail(["list", "patients", "--json", "--home", home])).stdout) as { email: string; status: string }[];
    expect(patients).toEqual([expect.objectContaining({ email: "p@example.org", status: "approved" })]);
    const db = open(home);
    expect(db.prepare("SELECT count(*) AS n FROM audit_checkpoints").get()).toEqual({ n: 1 });
    db.close();
  });

  it("gc signs none without the practice identity and says so", async () => {
    const home = await copy();
    const text = await praxmail(["gc", "--home", home]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("\nsigned no audit checkpoint: no practice identity given (--identity or PRAXMAIL_IDENTITY)\n");
    const json = await praxmail(["gc", "--json", "--home", home]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ checkpoint: null, checkpointSkipped: "no practice identity given (--identity or PRAXMAIL_IDENTITY)" });
    expect(verifyJson(await praxmail(["audit", "--verify", "--json", "--home", home]))).toMatchObject({ rows: 6, checkpoints: 1, unconfirmed: { count: 2 } });
  });

  it.each(GC_IDENTITY)("gc with $how signs one over the whole log, and none again while nothing changed", async ({ args, env }) => {
    const home = await copy();
    const file = join(home, "practice-identity.txt");
    const first = await praxmail(["gc", "--json", "--home", home, ...args(file)], { env: env(file) });
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    const out = JSON.parse(first.stdout) as { checkpoint: { seq: number; hash: string; created: boolean } | null; checkpointSkipped: string | null };
    expect(out).toMatchObject({ checkpoint: { seq: 7, created: true }, checkpointSkipped: null });
    const v = verifyJson(await praxmail(["audit", "--verify", "--json", "--home", home]));
    expect(v).toMatchObject({ rows: 7, checkpoints: 2, confirmed: 7, unconfirmed: null });

    const again = await praxmail(["gc", "--home", home, ...args(file)], { env: env(file) });
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`\naudit log already signed at row 7: anchor 7:${out.checkpoint?.hash ?? ""}\n`);
  });
});

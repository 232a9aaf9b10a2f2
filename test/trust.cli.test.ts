// Signed approvals with the real binary (security review items 2 and 3): a database writer
// without P replaces an approved patient's key and waits for the next delivery; a home made
// before signed approvals is upgraded by the first approve; doctor checks the pinned key; and
// approve commits only for the safety code it showed.
import { execFileSync } from "node:child_process";
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import { resetSecuPass } from "../src/core/index.js";
import { generateIdentity, keyFingerprint, practiceSigningKey, recipientOf, safetyCode, signingKeyFromSeed } from "../src/crypto/index.js";
import { cleanup, initHome, outbox, practiceIdentityOf, praxmail, tempDir } from "./helpers/cli.js";
import { newKey as keyFor, registerThroughCore } from "./helpers/patient.js";
import { befundMail, submit } from "./helpers/relay.js";
import { startServe } from "./helpers/serve.js";
import { needTool } from "./helpers/tools.js";
import { Terminal } from "./helpers/tty.js";

const ANNA = "anna@patient.example";
const JAN = "jan@patient.example";
const ALARM = (email: string): string => `ALARM: Freigabe ungültig: ${email}`;

let dir: string;
let pdf: string;
beforeAll(async () => {
  dir = await tempDir();
  pdf = join(dir, "Befund.pdf");
  await writeFile(pdf, "%PDF-1.4 Befund vom 29.11.\n");
});
afterAll(async () => {
  await cleanup(dir);
});

/** Runs `praxmail send` at level 3 and returns the delivery. */
async function send(home: string, to: string): Promise<{ id: string; status: string; stderr: string }> {
  const r = await praxmail(["send", "--home", home, "--to", to, pdf, "--json"]);
  expect(r.code, r.stderr).toBe(0);
  const [d] = (JSON.parse(r.stdout) as { deliveries: { id: string; status: string }[] }).deliveries;
  return { ...d!, stderr: r.stderr };
}

function db(home: string): Database.Database {
  return new Database(join(home, "praxmail.db"));
}

function patientWraps(home: string, id: string): { recipient: string; ciphertext: Buffer }[] {
  const d = db(home);
  try {
    return d.prepare("SELECT recipient, ciphertext FROM wraps WHERE delivery_id = ? AND holder = 'patient'").all(id) as { recipient: string; ciphertext: Buffer }[];
  } finally {
    d.close();
  }
}

function auditActions(home: string, action: string): { subject: string; details: string }[] {
  const d = db(home);
  try {
    return d.prepare("SELECT subject, details FROM audit WHERE action = ? ORDER BY seq").all(action) as { subject: string; details: string }[];
  } finally {
    d.close();
  }
}

/** What a database writer does: put another recipient (and its correct safety code) in the row. */
function redirect(home: string, email: string, recipient: string, approval?: string | null): void {
  const d = db(home);
  try {
    d.prepare("UPDATE patients SET recipient = ?, safety_code = ? WHERE email = ?").run(recipient, safetyCode(recipient), email);
    if (approval != null) d.prepare("UPDATE patients SET approval = ? WHERE email = ?").run(approval, email);
  } finally {
    d.close();
  }
}

function row(home: string, email: string): { recipient: string; safety_code: string; approval: string | null } {
  const d = db(home);
  try {
    const r = d.prepare("SELECT * FROM patients WHERE email = ?").get(email) as { recipient: string; safety_code: string; approval?: string | null };
    return { recipient: r.recipient, safety_code: r.safety_code, approval: r.approval ?? null };
  } finally {
    d.close();
  }
}

/** Tries the attacker's identity with the age CLI on every wrap and file of a delivery. */
function ageOpensAnything(home: string, id: string, identityFile: string): boolean {
  const d = db(home);
  const items = [
    ...(d.prepare("SELECT ciphertext FROM wraps WHERE delivery_id = ?").all(id) as { ciphertext: Buffer }[]).map((w) => w.ciphertext),
    ...(d.prepare("SELECT blob FROM files WHERE delivery_id = ?").all(id) as { blob: string }[]).map((f) => join(home, f.blob)),
  ];
  d.close();
  expect(items.length).toBeGreaterThanOrEqual(2);
  return items.some((item) => {
    try {
      if (typeof item === "string") execFileSync("age", ["-d", "-i", identityFile, item], { stdio: "pipe" });
      else execFileSync("age", ["-d", "-i", identityFile], { input: item, stdio: "pipe" });
      return true;
    } catch {
      return false;
    }
  });
}

describe.runIf(needTool("age"))("item 2: the database alone cannot redirect a delivery", () => {
  let home: string;
  let attacker: string;
  let attackerFile: string;
  let attackerRecipient: string;
  let real: { recipient: string; safety_code: string; approval: string | null };

  beforeAll(async () => {
    home = join(dir, "redirect");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, ANNA, "Annas Secu-Pass-Key");
    await registerThroughCore(home, JAN, "Jans Secu-Pass-Key");
    const r = await praxmail(["approve", ANNA, JAN, "--yes", "--home", home]);
    expect(r.code, r.stderr).toBe(0);
    real = row(home, ANNA);
    attacker = generateIdentity("x25519");
    attackerRecipient = await recipientOf(attacker);
    attackerFile = join(dir, "attacker.txt");
    await writeFile(attackerFile, `${attacker}\n`);
  });

  it("approve signs the approval with the key pinned in config.json", async () => {
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { approvalKey: string };
    const practice = await practiceIdentityOf(home);
    expect(config.approvalKey).toBe(practiceSigningKey(practice).publicKey);
    const approval = JSON.parse(real.approval ?? "null") as { by: string; at: string; sig: string };
    expect(approval.by).toBe("practice");
    expect(approval.sig).toMatch(/^[A-Za-z0-9+/]{86}==$/);
    const before = await send(home, ANNA);
    expect(before.status).toBe("ready");
    expect(patientWraps(home, before.id).map((w) => w.recipient)).toEqual([real.recipient]);
  });

  it("a recipient replaced in the row gets no wrap: the delivery waits, the practice is alarmed once, age opens nothing", async () => {
    redirect(home, ANNA, attackerRecipient);
    const first = await send(home, ANNA);
    const second = await send(home, ANNA);
    for (const d of [first, second]) {
      expect(d.status).toBe("pending-approval");
      expect(patientWraps(home, d.id)).toEqual([]);
      expect(ageOpensAnything(home, d.id, attackerFile)).toBe(false);
    }
    expect(first.stderr).toContain('praxmail: alarm: approval-signature-invalid {"reason":"the approval signature does not verify","deliveries":1}');
    expect(first.stderr).not.toContain(attacker);
    // Two deliveries in a burst: one alarm mail, an audit row for each.
    const alarms = (await outbox(home)).filter((m) => m.subject === ALARM(ANNA));
    expect(alarms).toHaveLength(1);
    expect(alarms[0]!.to).toMatchObject({ text: "praxis@praxis-weber.example" });
    expect(alarms[0]!.text).toContain("praxmail approve anna@patient.example");
    expect(auditActions(home, "patient.approval-invalid").map((a) => [a.subject, (JSON.parse(a.details) as { deliveries: string[] }).deliveries])).toEqual([
      [ANNA, [first.id]],
      [ANNA, [second.id]],
    ]);
    const verify = await praxmail(["audit", "--verify", "--home", home]);
    expect(verify.code).toBe(0);
  });

  it("a signature copied from another approved patient does not verify either", async () => {
    redirect(home, ANNA, attackerRecipient, row(home, JAN).approval);
    const d = await send(home, ANNA);
    expect(d.status).toBe("pending-approval");
    expect(patientWraps(home, d.id)).toEqual([]);
    expect(ageOpensAnything(home, d.id, attackerFile)).toBe(false);
    // Nor does Jan's row with Jan's own signature and the attacker's key.
    redirect(home, JAN, attackerRecipient);
    const j = await send(home, JAN);
    expect(j.status).toBe("pending-approval");
    expect(patientWraps(home, j.id)).toEqual([]);
    expect((await outbox(home)).filter((m) => m.subject === ALARM(JAN))).toHaveLength(1);
  });

  it("through the relay of praxmail serve too: no wrap, a greppable alarm in the log without keys, no second mail within the hour", async () => {
    const served = await startServe(home);
    try {
      const raw = befundMail({ from: "praxis@praxis-weber.example", to: ANNA, messageId: "befund-relay@praxis-weber.example", attachment: Buffer.from("%PDF Befund") });
      const reply = await submit(served.smtpPort, "praxis@praxis-weber.example", [ANNA], raw);
      expect(reply.code).toBe(250);
    } finally {
      await served.stop();
    }
    const list = JSON.parse((await praxmail(["list", "deliveries", "--json", "--home", home])).stdout) as { id: string; recipient: string; status: string }[];
    const d = list.filter((x) => x.recipient === ANNA).at(-1)!;
    expect(d.status).toBe("pending-approval");
    expect(patientWraps(home, d.id)).toEqual([]);
    const alarm = served.stdout().split("\n").filter((l) => l.includes('"alarm":"approval-signature-invalid"'));
    expect(alarm).toHaveLength(1);
    expect(JSON.parse(alarm[0]!)).toMatchObject({ level: 50, alarm: "approval-signature-invalid", reason: "the approval signature does not verify", deliveries: 1 });
    expect(served.stdout()).not.toContain(attackerRecipient);
    expect(served.stdout()).not.toContain(ANNA);
    expect((await outbox(home)).filter((m) => m.subject === ALARM(ANNA))).toHaveLength(1);
  });

  it("with the real row restored, the next delivery is ready and wrapped to the real key", async () => {
    redirect(home, ANNA, real.recipient, real.approval);
    const d = await send(home, ANNA);
    expect(d.status).toBe("ready");
    expect(d.stderr).not.toContain("alarm");
    expect(patientWraps(home, d.id).map((w) => w.recipient)).toEqual([real.recipient]);
  });
});

describe("item 2: a home made before signed approvals", () => {
  it("fails closed until the first approve pins the key and signs the approved patients it lists", async () => {
    const home = join(dir, "legacy");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, ANNA, "Annas Secu-Pass-Key");
    // As the code before signed approvals left it: approved without a signature, no key pinned.
    const d = db(home);
    d.prepare("UPDATE patients SET status = 'approved', approved_at = secupass_at").run();
    d.close();
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as Record<string, unknown>;
    const pinned = config.approvalKey as string;
    delete config.approvalKey;
    await writeFile(join(home, "config.json"), JSON.stringify(config));
    const code = row(home, ANNA).safety_code;

    const held = await send(home, ANNA);
    expect(held.status).toBe("pending-approval");
    expect(held.stderr).toContain("approval-signature-invalid");
    expect(held.stderr).toContain("no approval key is pinned yet");
    const doctor = await praxmail(["doctor", "--json", "--home", home, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--timeout", "1"]);
    expect((JSON.parse(doctor.stdout) as { checks: { name: string; status: string }[] }).checks).toContainEqual(expect.objectContaining({ name: "signing-key", status: "warn" }));

    const r = await praxmail(["approve", "--yes", "--home", home]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain("this home has no approval key pinned yet");
    expect(r.stderr).toContain(`  ${ANNA}  safety code ${code}`);
    expect(r.stdout).toBe(`pinned approval key ${keyFingerprint(pinned)}; signed 1 existing approval\nsigned ${ANNA}  safety code ${code}\n`);
    expect((JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { approvalKey: string }).approvalKey).toBe(pinned);
    expect(auditActions(home, "approval-key.pin").map((a) => JSON.parse(a.details) as unknown)).toEqual([{ patients: [{ email: ANNA, safetyCode: code }] }]);

    // The delivery held back meanwhile is listed and released by an ordinary approve.
    const pending = JSON.parse((await praxmail(["list", "pending", "--json", "--home", home])).stdout) as { email: string; status: string; waiting: number }[];
    expect(pending).toEqual([expect.objectContaining({ email: ANNA, status: "approved", waiting: 1 })]);
    const release = await praxmail(["approve", ANNA, "--yes", "--json", "--home", home]);
    expect(JSON.parse(release.stdout)).toEqual({ approved: [{ email: ANNA, deliveries: 1 }] });
    expect((await send(home, ANNA)).status).toBe("ready");
  });
});

describe("item 1: the portal key", () => {
  it("init makes it (0600, pinned in config.json), and a re-run gives a home without one its key", async () => {
    const home = join(dir, "portal-key");
    await initHome(home, ["--recipient-type", "x25519"]);
    const key = join(home, "portal-signing.key");
    expect((await stat(key)).mode & 0o777).toBe(0o600);
    expect((await readFile(key)).length).toBe(32);
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config.portalKey).toBe(signingKeyFromSeed(await readFile(key)).publicKey);
    await initHome(home, ["--recipient-type", "x25519"]);
    expect((JSON.parse(await readFile(join(home, "config.json"), "utf8")) as Record<string, unknown>).portalKey).toBe(config.portalKey);
    // A home made before: no key file, none pinned.
    await rm(key);
    delete config.portalKey;
    await writeFile(join(home, "config.json"), JSON.stringify(config));
    const refused = await praxmail(["invite", "neu@patient.example", "--home", home]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("praxmail: error: this home has no pinned approval or portal key yet");
    await initHome(home, ["--recipient-type", "x25519"]);
    const again = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as Record<string, unknown>;
    expect(again.portalKey).toBe(signingKeyFromSeed(await readFile(key)).publicKey);
    expect((await praxmail(["invite", "neu@patient.example", "--home", home])).code).toBe(0);
  });
});

describe("item 2: doctor", () => {
  const approvalCheck = async (home: string): Promise<{ status: string; reason: string }> => {
    const r = await praxmail(["doctor", "--json", "--home", home, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--timeout", "1"]);
    return (JSON.parse(r.stdout) as { checks: { name: string; status: string; reason: string }[] }).checks.find((c) => c.name === "signing-key")!;
  };

  it("prints the approval key's fingerprint, and fails when P does not derive the pinned key", async () => {
    const home = join(dir, "doctor");
    await initHome(home, ["--recipient-type", "x25519"]);
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as Record<string, string>;
    expect(await approvalCheck(home)).toEqual({ name: "signing-key", status: "ok", reason: `${keyFingerprint(config.approvalKey!)}, derived from the practice identity` });
    const other = practiceSigningKey(generateIdentity("x25519")).publicKey;
    await writeFile(join(home, "config.json"), JSON.stringify({ ...config, approvalKey: other }));
    const r = await praxmail(["doctor", "--home", home, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--timeout", "1"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`fail\\s+signing-key\\s+${keyFingerprint(other).replace(/[+/]/g, "\\$&")} pinned in config.json is not the key the practice identity derives`));
  });
});

/** The patient's session posts a new Secu-Pass recipient (a Secu-Pass reset), through core. */
async function newKey(home: string, email: string): Promise<string> {
  const ctx = await openContext({ home }, "portal");
  try {
    const { kdf, recipient, credential } = await keyFor(email, `ein neuer Secu-Pass-Key ${generateIdentity("x25519").slice(-8)}`);
    const p = await resetSecuPass(ctx, email, { kdf, recipient, credential });
    return p.safetyCode ?? "";
  } finally {
    await ctx.store.close();
  }
}

describe("item 3: approve is bound to the safety code it shows", () => {
  it("--code of another key, with --yes and --json: exit 1, nothing approved", async () => {
    const home = join(dir, "code");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, ANNA, "Annas Secu-Pass-Key");
    const shown = row(home, ANNA).safety_code;
    const changed = await newKey(home, ANNA);
    expect(changed).not.toBe(shown);
    for (const extra of [[], ["--json"]]) {
      const r = await praxmail(["approve", ANNA, "--code", shown, "--yes", ...extra, "--home", home]);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(`praxmail: error: the safety code of ${ANNA} is ${changed}, not ${shown}; nothing was approved`);
    }
    expect(row(home, ANNA).approval).toBeNull();
    expect(auditActions(home, "patient.approve")).toEqual([]);
    const ok = await praxmail(["approve", ANNA, "--code", changed.replace(/ /g, ""), "--yes", "--json", "--home", home]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ approved: [{ email: ANNA, deliveries: 0 }] });
    const usage = await praxmail(["approve", ANNA, JAN, "--code", changed, "--yes", "--home", home]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("praxmail: error: --code needs exactly one patient");
  });
});

describe.runIf(needTool("tmux"))("item 3: on a terminal", () => {
  let term: Terminal | undefined;
  afterEach(() => {
    term?.close();
    term = undefined;
  });

  it("a key posted between showing the code and the 'y' is not approved: exit 1 and the error", async () => {
    const home = join(dir, "race");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, ANNA, "Annas Secu-Pass-Key");
    const shown = row(home, ANNA).safety_code;
    term = new Terminal(`approve --home '${home}'`);
    expect(await term.waitFor(ANNA)).toContain(`${ANNA}  safety code ${shown}`);
    term.keys("Space", "Enter");
    await term.waitFor("Do these safety codes match");
    const changed = await newKey(home, ANNA);
    term.keys("y", "Enter");
    const { code, screen } = await term.exit();
    expect(code).toBe(1);
    // Compared without white space: the terminal wraps the line anywhere.
    const flat = (t: string): string => t.replace(/\s+/g, "");
    expect(flat(screen)).toContain(flat(`error: the safety code of ${ANNA} is now ${changed}, not the ${shown} that was compared; nothing was approved`));
    expect(row(home, ANNA).approval).toBeNull();
    const pending = JSON.parse((await praxmail(["list", "pending", "--json", "--home", home])).stdout) as { status: string }[];
    expect(pending.map((p) => p.status)).toEqual(["pending-approval"]);
  });
});

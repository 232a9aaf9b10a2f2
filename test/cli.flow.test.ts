// The whole admin flow with the real binary against a temp home (issue 2, "Done when").
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decryptStream, keyFingerprint, practiceSigningKey, unwrapIdentity, type KdfParams } from "../src/crypto/index.js";
import { cleanup, initHome, outbox, praxmail, tempDir, walk } from "./helpers/cli.js";
import { deriveCached, registerThroughCore } from "./helpers/patient.js";
import { readDb } from "./helpers/store.js";
import { readAll } from "./helpers/streams.js";
import { needTool } from "./helpers/tools.js";

const PATIENT = "p@example.org";
const SECU_PASS = "Sonnenblume-Kaffee-7-Leuchtturm";

interface SendJson {
  deliveries: { id: string; recipient: string; level: number; status: string; link: string; expiresAt: string; files: { name: string; size: number }[] }[];
}
interface ListJson {
  id: string;
  status: string;
  downloadedAt: string | null;
  files: { name: string; size: number; blob: string }[];
}

async function listDeliveries(home: string): Promise<ListJson[]> {
  const r = await praxmail(["list", "deliveries", "--json", "--home", home]);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as ListJson[];
}

function patientWrap(home: string, deliveryId: string): Uint8Array {
  const db = new Database(join(home, "praxmail.db"), { readonly: true });
  try {
    const row = db.prepare("SELECT ciphertext FROM wraps WHERE delivery_id = ? AND holder = 'patient'").get(deliveryId) as
      | { ciphertext: Buffer }
      | undefined;
    if (!row) throw new Error("no patient wrap");
    return row.ciphertext;
  } finally {
    db.close();
  }
}

describe.each([
  { type: "x25519", prefix: "age1", goAge: true },
  { type: "mlkem768x25519", prefix: "age1pq1", goAge: false },
])("send → register → approve → decrypt ($type)", ({ type, prefix, goAge }) => {
  let dir: string;
  let home: string;
  let file: string;
  let original: Buffer;
  let deliveryId: string;
  let patientIdentity: string;

  beforeAll(async () => {
    dir = await tempDir();
    home = join(dir, "home");
    file = join(dir, "befund.pdf");
    // A recognisable PDF head plus random bytes larger than one 64 KiB STREAM chunk.
    original = Buffer.concat([Buffer.from("%PDF-1.4\n% Laborbefund Anna Schaefer HbA1c 5.4\n"), randomBytes(200_000)]);
    await writeFile(file, original);
  });
  afterAll(async () => {
    await cleanup(dir);
  });

  it("init prints the practice recipient of the chosen type", async () => {
    const recipient = await initHome(home, ["--recipient-type", type]);
    expect(recipient.startsWith(prefix)).toBe(true);
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { practiceRecipient: string };
    expect(config.practiceRecipient).toBe(recipient);
  });

  it("init pins the approval key derived from the practice identity and prints its fingerprint", async () => {
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { approvalKey: string };
    const identity = (await readFile(join(home, "practice-identity.txt"), "utf8")).split("\n").find((l) => l.startsWith("AGE-SECRET-KEY-")) ?? "";
    expect(config.approvalKey).toBe(practiceSigningKey(identity).publicKey);
    const again = await praxmail(["init", "--home", home, "--yes", "--no-keyring", "--practice-name", "Praxis Dr. Weber", "--practice-email", "praxis@praxis-weber.example", "--json"]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ created: false, approvalKey: config.approvalKey, approvalKeyFingerprint: keyFingerprint(config.approvalKey) });
  });

  it("send --json creates a pending delivery and mails its link to the outbox", async () => {
    const r = await praxmail(["send", "--home", home, "--to", PATIENT, "--level", "3", file, "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as SendJson;
    expect(out.deliveries).toHaveLength(1);
    const d = out.deliveries[0]!;
    deliveryId = d.id;
    expect(d).toMatchObject({ recipient: PATIENT, level: 3, status: "pending-approval", files: [{ name: "befund.pdf", size: original.length }] });
    expect(d.link).toMatch(/^http:\/\/127\.0\.0\.1:8080\/d\/[A-Za-z0-9_-]{43}$/);
    const mails = await outbox(home);
    expect(mails).toHaveLength(1);
    expect(mails[0]!.subject).toBe("Neue sichere Nachricht von Praxis Dr. Weber");
    expect(mails[0]!.text).toContain(d.link);
    expect(mails[0]!.html).toContain(d.link);
    expect(mails[0]!.text).toContain("Herunterladen");
    expect(mails[0]!.attachments).toHaveLength(0);
  });

  it("list deliveries --json shows it pending-approval with a blob under home", async () => {
    const [d] = await listDeliveries(home);
    expect(d).toMatchObject({ id: deliveryId, status: "pending-approval", downloadedAt: null });
    const blob = await readFile(join(home, d!.files[0]!.blob));
    expect(blob.subarray(0, 22).toString()).toBe("age-encryption.org/v1\n");
  });

  it("approve --yes releases the delivery after the patient set a Secu-Pass-Key", async () => {
    patientIdentity = (await registerThroughCore(home, PATIENT, SECU_PASS))!;
    const pending = await praxmail(["list", "pending", "--json", "--home", home]);
    const [p] = JSON.parse(pending.stdout) as { email: string; status: string; safetyCode: string }[];
    expect(p).toMatchObject({ email: PATIENT, status: "pending-approval" });
    expect(p!.safetyCode).toMatch(/^\d{4} \d{4} \d{4}$/);

    const r = await praxmail(["approve", PATIENT, "--yes", "--json", "--home", home]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ approved: [{ email: PATIENT, deliveries: 1 }] });
    expect(r.stderr).toContain(p!.safetyCode);

    const [d] = await listDeliveries(home);
    expect(d!.status).toBe("ready");
    const mails = await outbox(home);
    expect(mails.map((m) => [m.subject, m.to && !Array.isArray(m.to) ? m.to.value[0]?.address : null])).toEqual([
      ["Neue sichere Nachricht von Praxis Dr. Weber", PATIENT],
      ["Konto angelegt – Praxis Dr. Weber", PATIENT],
      ["Secu-Pass aktiviert – Praxis Dr. Weber", PATIENT],
      [`Freigabe erforderlich: ${PATIENT}`, "praxis@praxis-weber.example"],
      ["Zustellung freigegeben – Praxis Dr. Weber", PATIENT],
    ]);
    expect(mails[3]!.text).toContain(p!.safetyCode);
  });

  it("the file decrypts byte for byte with the identity derived from the Secu-Pass-Key", async () => {
    const [d] = await listDeliveries(home);
    const deliveryIdentity = await unwrapIdentity(patientWrap(home, deliveryId), patientIdentity);
    const blob = await readFile(join(home, d!.files[0]!.blob));
    const plain = await readAll(await decryptStream(new Blob([blob]).stream(), [deliveryIdentity]));
    expect(plain.equals(original)).toBe(true);
  });

  // Debian 12's age (1.1) predates the hybrid recipients; interop is checked in x25519 mode.
  if (goAge && needTool("age")) it("the Go age CLI decrypts the file given the delivery identity", async () => {
    const [d] = await listDeliveries(home);
    const deliveryIdentity = await unwrapIdentity(patientWrap(home, deliveryId), patientIdentity);
    const keyFile = join(dir, "delivery-identity.txt");
    await writeFile(keyFile, `${deliveryIdentity}\n`, { mode: 0o600 });
    const plain = execFileSync("age", ["-d", "-i", keyFile, join(home, d!.files[0]!.blob)], { maxBuffer: 64 * 1024 * 1024 });
    expect(plain.equals(original)).toBe(true);
  });

  it("leaves no plaintext at rest: no attachment bytes, Secu-Pass-Key, login credential or private key under home", async () => {
    const deliveryIdentity = await unwrapIdentity(patientWrap(home, deliveryId), patientIdentity);
    const kdf = JSON.parse(readDb(home, (db) => db.prepare("SELECT kdf FROM patients WHERE email = ?").pluck().get(PATIENT) as string)) as KdfParams;
    const { credential } = await deriveCached(SECU_PASS, kdf, PATIENT);
    const needles = [
      original.subarray(0, 48),
      original.subarray(100_000, 100_064),
      original.subarray(original.length - 64),
      Buffer.from(SECU_PASS),
      Buffer.from(SECU_PASS, "utf16le"),
      Buffer.from(patientIdentity),
      Buffer.from(deliveryIdentity),
      Buffer.from(credential),
      Buffer.from(credential, "base64url"),
    ];
    const files = await walk(home);
    expect(files.some((f) => f.endsWith("praxmail.db"))).toBe(true);
    for (const f of files) {
      const bytes = await readFile(f);
      for (const n of needles) expect(bytes.includes(n), `${n.subarray(0, 12).toString("hex")} found in ${f}`).toBe(false);
    }
  });

  it("audit --verify passes, and names the row after one was altered in SQLite", async () => {
    const ok = await praxmail(["audit", "--verify", "--home", home]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^audit chain intact: [4-9] rows\n$/);

    const db = new Database(join(home, "praxmail.db"));
    expect(() => db.prepare("UPDATE audit SET details = '{}' WHERE seq = 2").run()).toThrow(/append-only/);
    db.exec("DROP TRIGGER audit_no_update");
    db.prepare(`UPDATE audit SET details = '{"recipient":"someone-else@example.org"}' WHERE seq = 2`).run();
    db.close();

    const bad = await praxmail(["audit", "--verify", "--home", home]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toContain("praxmail: error: audit chain broken at row 2: row content does not match its hash");
  });
});

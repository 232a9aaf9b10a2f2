// praxmail export: one delivery's plain files, under their real names, into a new folder,
// with the practice identity and an audit row; refusals leave nothing behind.
import { randomBytes } from "node:crypto";
import { mkdir, readFile, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, initHome, praxmail, tempDir } from "./helpers/cli.js";

let dir: string;
let home: string;
const first = randomBytes(70_000);
const second = randomBytes(2_000);
const image = randomBytes(4_000);
let level3: string;
let level4: string;

const SUBJECT = "Ihr Befund – Röntgen";
const TEXT = "Guten Tag,\nder Befund ist unauffällig.\n";

interface Exported {
  id: string;
  recipient: string;
  level: number;
  dir: string;
  subject: string | null;
  files: { name: string; size: number; kind: string }[];
}

async function sendJson(args: string[]): Promise<string> {
  const r = await praxmail(["send", "--home", home, "--to", "patient@example.org", "--json", ...args]);
  expect(r.stderr).toBe("");
  return (JSON.parse(r.stdout) as { deliveries: { id: string }[] }).deliveries[0]!.id;
}

async function exportRows(): Promise<{ subject: string; details: { dir: string; files: number } }[]> {
  const r = await praxmail(["audit", "--json", "--home", home]);
  return (JSON.parse(r.stdout) as { action: string; subject: string; details: { dir: string; files: number } }[]).filter((a) => a.action === "delivery.export");
}

beforeAll(async () => {
  dir = await tempDir("praxmail-export-");
  home = join(dir, "home");
  await initHome(home);
  for (const d of ["a", "b"]) await mkdir(join(dir, d));
  await writeFile(join(dir, "a", "Befund März.pdf"), first);
  await writeFile(join(dir, "b", "Befund März.pdf"), second);
  await writeFile(join(dir, "Röntgen Knie.jpg"), image);
  level3 = await sendJson(["--level", "3", join(dir, "a", "Befund März.pdf"), join(dir, "b", "Befund März.pdf")]);
  level4 = await sendJson(["--level", "4", "--subject", SUBJECT, "--message", TEXT, join(dir, "Röntgen Knie.jpg")]);
});
afterAll(async () => {
  await cleanup(dir);
});

describe("praxmail export", () => {
  it("writes a level-3 delivery's files under their real names (numbered when equal), 0700 and 0600, and audits it", async () => {
    const out = join(dir, "out3");
    const r = await praxmail(["export", level3, "--out", out, "--json", "--home", home]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout) as Exported).toEqual({
      id: level3,
      recipient: "patient@example.org",
      level: 3,
      dir: out,
      subject: null,
      files: [
        { name: "Befund März.pdf", size: first.length, kind: "attachment" },
        { name: "Befund März (2).pdf", size: second.length, kind: "attachment" },
      ],
    });
    expect((await readdir(out)).sort()).toEqual(["Befund März (2).pdf", "Befund März.pdf"]);
    expect((await stat(out)).mode & 0o777).toBe(0o700);
    for (const n of await readdir(out)) expect((await stat(join(out, n))).mode & 0o777).toBe(0o600);
    expect((await readFile(join(out, "Befund März.pdf"))).equals(first)).toBe(true);
    expect((await readFile(join(out, "Befund März (2).pdf"))).equals(second)).toBe(true);
    expect((await exportRows()).filter((a) => a.subject === level3).map((a) => a.details)).toEqual([{ dir: out, files: 2 }]);
  });

  it("writes a level-4 delivery's message as message.txt and its files under the real names from the sealed part", async () => {
    const out = join(dir, "out4");
    await mkdir(out, { mode: 0o755 });
    const r = await praxmail(["export", level4, "--out", out, "--home", home]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${join(out, "message.txt")}\n${join(out, "Röntgen Knie.jpg")}\n`);
    expect((await stat(out)).mode & 0o777).toBe(0o700);
    expect(await readFile(join(out, "message.txt"), "utf8")).toBe(`Subject: ${SUBJECT}\n\n${TEXT}`);
    expect((await readFile(join(out, "Röntgen Knie.jpg"))).equals(image)).toBe(true);
  });

  it("refuses a non-empty folder, a file, an unknown or revoked delivery and a foreign identity, before writing anything or auditing", async () => {
    const before = (await exportRows()).length;
    const full = join(dir, "full");
    await mkdir(full);
    await writeFile(join(full, "keep.txt"), "mine");
    const notEmpty = await praxmail(["export", level3, "--out", full, "--home", home]);
    expect(notEmpty.code).toBe(1);
    expect(notEmpty.stderr).toBe(`praxmail: error: ${full} is not empty\npraxmail: hint: give a new or empty folder; existing files are never overwritten\n`);
    expect(await readdir(full)).toEqual(["keep.txt"]);

    const file = join(dir, "a-file");
    await writeFile(file, "mine");
    const notDir = await praxmail(["export", level3, "--out", file, "--home", home]);
    expect(notDir.code).toBe(1);
    expect(notDir.stderr).toBe(`praxmail: error: ${file} is not a folder\npraxmail: hint: give a new or empty folder\n`);
    expect(await readFile(file, "utf8")).toBe("mine");

    const unknown = await praxmail(["export", "d_nosuchthing", "--out", join(dir, "none"), "--home", home]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('praxmail: error: no such delivery "d_nosuchthing"\npraxmail: hint: run praxmail list deliveries\n');

    const foreignHome = join(dir, "foreign");
    await initHome(foreignHome, ["--recipient-type", "x25519"]);
    const foreign = await praxmail(["export", level3, "--out", join(dir, "none"), "--identity", join(foreignHome, "practice-identity.txt"), "--home", home]);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toContain("praxmail: error: the identity is not this practice's identity\n");

    const revoked = await sendJson(["--level", "3", join(dir, "Röntgen Knie.jpg")]);
    expect((await praxmail(["revoke", revoked, "--yes", "--home", home])).code).toBe(0);
    const gone = await praxmail(["export", revoked, "--out", join(dir, "none"), "--home", home]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe(`praxmail: error: delivery ${revoked} is revoked: its files are deleted\n`);

    const usage = await praxmail(["export", level3, "--home", home]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("praxmail: error: required option '--out <dir>' not specified\n");

    await expect(stat(join(dir, "none"))).rejects.toMatchObject({ code: "ENOENT" });
    expect((await exportRows()).length).toBe(before);
  });

  it("a damaged file fails the export and leaves no file behind: a folder it made is removed, a given one stays empty", async () => {
    const id = await sendJson(["--level", "3", join(dir, "b", "Befund März.pdf"), join(dir, "a", "Befund März.pdf")]);
    const list = await praxmail(["list", "deliveries", "--json", "--home", home]);
    const blob = (JSON.parse(list.stdout) as { id: string; files: { blob: string }[] }[]).find((d) => d.id === id)!.files[1]!.blob;
    const bytes = await readFile(join(home, blob));
    bytes[bytes.length - 100]! ^= 1;
    await writeFile(join(home, blob), bytes);

    const made = join(dir, "made");
    const r = await praxmail(["export", id, "--out", made, "--home", home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `praxmail: error: ${blob} (Befund März (2).pdf) does not decrypt: payload chunk 1 failed to authenticate\npraxmail: hint: the file was damaged or altered on disk; take it from a backup\n`,
    );
    await expect(stat(made)).rejects.toMatchObject({ code: "ENOENT" });

    const given = join(dir, "given");
    await mkdir(given);
    expect((await praxmail(["export", id, "--out", given, "--home", home])).code).toBe(1);
    expect(await readdir(given)).toEqual([]);
  });

  it("needs the passphrase of a protected identity and writes nothing without it", async () => {
    const protectedHome = join(dir, "protected");
    const env = { PRAXMAIL_IDENTITY_PASSPHRASE: "Notfall-Passphrase 2026" };
    expect((await praxmail(["init", "--home", protectedHome, "--yes", "--protect", "--recipient-type", "x25519", "--practice-name", "P", "--practice-email", "p@praxis.example"], { env })).code).toBe(0);
    const s = await praxmail(["send", "--home", protectedHome, "--to", "patient@example.org", "--json", join(dir, "Röntgen Knie.jpg")]);
    const id = (JSON.parse(s.stdout) as { deliveries: { id: string }[] }).deliveries[0]!.id;
    const out = join(dir, "protected-out");
    const without = await praxmail(["export", id, "--out", out, "--home", protectedHome]);
    expect(without.code).toBe(1);
    expect(without.stderr).toContain("praxmail: error: the identity file is passphrase-protected\n");
    await expect(stat(out)).rejects.toMatchObject({ code: "ENOENT" });
    const ok = await praxmail(["export", id, "--out", out, "--home", protectedHome], { env });
    expect(ok.code).toBe(0);
    expect((await readFile(join(out, "Röntgen Knie.jpg"))).equals(image)).toBe(true);
  });
});

// Bad input gets a precise error, the right exit code, and leaves nothing behind.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import { legacyPatient, registerThroughCore } from "./helpers/patient.js";
import { BIN, cleanup, initHome, outbox, praxmail, tempDir, walk } from "./helpers/cli.js";

let dir: string;
let home: string;
let pdf: string;

beforeAll(async () => {
  dir = await tempDir();
  home = join(dir, "home");
  await initHome(home, ["--recipient-type", "x25519"]);
  pdf = join(dir, "befund.pdf");
  await writeFile(pdf, "%PDF-1.4 test\n");
});
afterAll(async () => {
  await cleanup(dir);
});

/** Asserts that no delivery, blob or mail exists in home. */
async function expectNothingCreated(h = home): Promise<void> {
  const list = await praxmail(["list", "deliveries", "--json", "--home", h]);
  expect(list.code).toBe(0);
  expect(JSON.parse(list.stdout)).toEqual([]);
  const blobs = await walk(join(h, "blobs")).catch(() => []);
  expect(blobs).toEqual([]);
  expect((await outbox(h)).filter((m) => m.subject?.startsWith("Neue sichere Nachricht"))).toEqual([]);
}

describe("send with bad input", () => {
  it("a missing file: exit 1, names the file, nothing created", async () => {
    const missing = join(dir, "gibt-es-nicht.pdf");
    const r = await praxmail(["send", "--home", home, "--to", "p@example.org", pdf, missing]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(`praxmail: error: cannot read "${missing}": no such file\npraxmail: hint: check the path and its permissions\n`);
    await expectNothingCreated();
  });

  it("an unreadable file: exit 1, permission denied, nothing created", async () => {
    const secret = join(dir, "gesperrt.pdf");
    await writeFile(secret, "%PDF-1.4 nope\n");
    await chmod(secret, 0o000);
    const r = await praxmail(["send", "--home", home, "--to", "p@example.org", secret], { dropPrivileges: true });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`praxmail: error: cannot read "${secret}": permission denied\n`);
    await expectNothingCreated();
  });

  it("a folder instead of a file: exit 1, nothing created", async () => {
    const r = await praxmail(["send", "--home", home, "--to", "p@example.org", dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`praxmail: error: "${dir}" is not a regular file\n`);
    await expectNothingCreated();
  });

  it.each(["0", "5", "3.5", "drei", ""])("level %j: exit 2 with usage help", async (level) => {
    const r = await praxmail(["send", "--home", home, "--to", "p@example.org", "--level", level, pdf]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`praxmail: error: option '--level <1-4>' argument '${level}' is invalid. use a level from 1 to 4\n`);
    expect(r.stderr).toContain("praxmail: hint: run praxmail send --help\n");
    await expectNothingCreated();
  });

  it.each(["patient", "p@", "@example.org", "p@example", "Anna <p@example.org>", "p@exa mple.org", "p@example.org\nBcc: x@y.org"])(
    "--to %j is not an address: exit 1, nothing created",
    async (to) => {
      const r = await praxmail(["send", "--home", home, "--to", to, pdf]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`praxmail: error: not an e-mail address: ${JSON.stringify(to)}\n`);
      await expectNothingCreated();
    },
  );

  it("no files at level 3: exit 2", async () => {
    const r = await praxmail(["send", "--home", home, "--to", "p@example.org"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("praxmail: error: no files given\n");
    await expectNothingCreated();
  });

  it("an unknown option: exit 2", async () => {
    const r = await praxmail(["send", "--home", home, "--to", "p@example.org", "--levle", "3", pdf]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("praxmail: error: unknown option '--levle'");
    await expectNothingCreated();
  });
});

describe("approve and revoke of what does not exist", () => {
  it("approve of an unknown patient: exit 1", async () => {
    const r = await praxmail(["approve", "niemand@example.org", "--yes", "--home", home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('praxmail: error: no such patient "niemand@example.org"\npraxmail: hint: run praxmail list patients\n');
    const audit = await praxmail(["audit", "--json", "--home", home]);
    expect(JSON.parse(audit.stdout)).not.toContainEqual(expect.objectContaining({ action: "patient.approve" }));
  });

  it("revoke of an unknown id: exit 1", async () => {
    const r = await praxmail(["revoke", "d_doesnotexist", "--yes", "--home", home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('praxmail: error: no such delivery "d_doesnotexist"\npraxmail: hint: run praxmail list deliveries\n');
  });

  it("revoke without a target: exit 2", async () => {
    const r = await praxmail(["revoke", "--yes", "--home", home]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("praxmail: error: give either a delivery id or --patient EMAIL\n");
  });

  it("approve without --yes and without a terminal refuses: exit 2, patient still pending", async () => {
    await registerThroughCore(home, "wartend@example.org", "ein anderer Schlüssel");
    const r = await praxmail(["approve", "wartend@example.org", "--home", home]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("praxmail: error: confirmation needed, but stdin is not a terminal\npraxmail: hint: pass --yes to confirm in a script\n");
    const pending = await praxmail(["list", "pending", "--json", "--home", home]);
    expect(JSON.parse(pending.stdout)).toMatchObject([{ email: "wartend@example.org", status: "pending-approval" }]);
  });

  it("approve of a patient without a Secu-Pass-Key: exit 1 with the reason", async () => {
    const ctx = await openContext({ home });
    try {
      await legacyPatient(ctx, "neu@example.org", "ein altes Passwort");
    } finally {
      await ctx.store.close();
    }
    const r = await praxmail(["approve", "neu@example.org", "--yes", "--home", home]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      "praxmail: error: patient neu@example.org is pending-secupass, not pending approval\npraxmail: hint: the patient has not set a Secu-Pass-Key yet\n",
    );
  });
});

describe("a home that is not writable", () => {
  it("a read-only folder: exit 1 naming the home, nothing written", async () => {
    const ro = join(dir, "readonly-home");
    await mkdir(ro);
    await chmod(ro, 0o555);
    const r = await praxmail(
      ["init", "--yes", "--no-keyring", "--home", ro, "--practice-name", "P", "--practice-email", "p@praxis.example"],
      { dropPrivileges: true },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`praxmail: error: home ${ro} is not writable (EACCES)\npraxmail: hint: check its owner and permissions, or pass --home DIR\n`);
    expect(await readdir(ro)).toEqual([]);
  });

  it("an initialised home made read-only: send fails before creating anything", async () => {
    await chmod(home, 0o555);
    try {
      const r = await praxmail(["send", "--home", home, "--to", "p@example.org", pdf], { dropPrivileges: true });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`praxmail: error: home ${home} is not writable (EACCES)\n`);
    } finally {
      await chmod(home, 0o700);
    }
    await expectNothingCreated();
  });

  it("a home below a regular file: exit 1", async () => {
    const under = join(pdf, "home");
    const r = await praxmail(["list", "--home", under]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`praxmail: error: home ${under} is not writable (ENOTDIR)\n`);
  });

  it("a home that was never initialised: exit 1 with a hint to init", async () => {
    const fresh = join(dir, "fresh");
    const r = await praxmail(["list", "--home", fresh]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`praxmail: error: no praxmail configuration in ${fresh}\npraxmail: hint: run praxmail init, or pass --home\n`);
  });
});

describe("a reader that goes away", () => {
  it("praxmail --help into a closed pipe (praxmail … | head): exit 0 and no stack trace", async () => {
    const child = spawn(BIN, ["--help"], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.destroy();
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const [code] = (await once(child, "close")) as [number];
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });
});

// Where the practice identity lives: identity file (plain or passphrase-protected, which the
// Go age CLI must open too), --identity / PRAXMAIL_IDENTITY overrides, and the OS keyring
// through a real Secret Service (gnome-keyring on a private D-Bus).
import { execFileSync, spawnSync } from "node:child_process";
import { readFile, rename, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PassphraseRequiredError, generateIdentity, readIdentityFile, recipientOf, writeIdentityFile } from "../src/crypto/index.js";
import { BIN, cleanup, praxmail, tempDir, walk } from "./helpers/cli.js";
import { inKeyringSession } from "./helpers/keyring.js";
import { registerThroughCore } from "./helpers/patient.js";
import { patchConfig } from "./helpers/relay.js";
import { needTool } from "./helpers/tools.js";

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await cleanup(dir);
});

const none = (): Promise<string | undefined> => Promise.resolve(undefined);

describe("identity files", () => {
  it("a plain file is written like age-keygen's, mode 0600, and read back", async () => {
    const id = generateIdentity("x25519");
    const path = join(dir, "plain.txt");
    await writeIdentityFile(path, id, undefined, new Date("2026-11-29T08:00:00Z"));
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readFile(path, "utf8")).toBe(`# created: 2026-11-29T08:00:00Z\n# public key: ${await recipientOf(id)}\n${id}\n`);
    expect(await readIdentityFile(path, none)).toBe(id);
  });

  it("a protected file needs the passphrase and rejects a wrong one", async () => {
    const id = generateIdentity("mlkem768x25519");
    const path = join(dir, "protected.age");
    await writeIdentityFile(path, id, "richtige Passphrase", new Date());
    const text = await readFile(path, "utf8");
    expect(text.startsWith("-----BEGIN AGE ENCRYPTED FILE-----\n")).toBe(true);
    expect(text).not.toContain("AGE-SECRET-KEY");
    await expect(readIdentityFile(path, none)).rejects.toBeInstanceOf(PassphraseRequiredError);
    await expect(readIdentityFile(path, () => Promise.resolve("falsch"))).rejects.toThrow("wrong passphrase for the identity file");
    expect(await readIdentityFile(path, () => Promise.resolve("richtige Passphrase"))).toBe(id);
  });

  if (needTool("age") && needTool("script")) {
    it("the Go age CLI opens a protected identity file with the passphrase", async () => {
      const id = generateIdentity("x25519");
      const path = join(dir, "for-go.age");
      await writeIdentityFile(path, id, "correct horse battery staple", new Date());
      const msg = join(dir, "msg.age");
      execFileSync("age", ["-r", await recipientOf(id), "-o", msg], { input: "Befund: unauffällig\n" });
      // age reads the passphrase from the terminal, so give it one with script(1).
      const r = spawnSync("script", ["-qec", `age -d -i '${path}' '${msg}'`, "/dev/null"], {
        input: "correct horse battery staple\r",
        encoding: "utf8",
        timeout: 60_000,
      });
      expect(r.status).toBe(0);
      expect(r.stdout).toContain("Befund: unauffällig");
    });
  }
});

describe("the practice identity through the CLI", () => {
  const initArgs = (home: string): string[] => [
    "init", "--yes", "--home", home, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example", "--recipient-type", "x25519",
  ];

  it("init --protect writes a protected file; approve needs the passphrase", async () => {
    const home = join(dir, "protected-home");
    const env = { PRAXMAIL_IDENTITY_PASSPHRASE: "eine lange Passphrase" };
    const init = await praxmail([...initArgs(home), "--protect"], { env });
    expect(init.code).toBe(0);
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { identity: unknown };
    expect(config.identity).toEqual({ kind: "file", file: "practice-identity.age", protected: true });
    await registerThroughCore(home, "p@example.org", "Secu-Pass 1");

    const without = await praxmail(["approve", "p@example.org", "--yes", "--home", home]);
    expect(without.code).toBe(1);
    expect(without.stderr).toContain("praxmail: error: the identity file is passphrase-protected\npraxmail: hint: run on a terminal, or set PRAXMAIL_IDENTITY_PASSPHRASE\n");
    const wrong = await praxmail(["approve", "p@example.org", "--yes", "--home", home], { env: { PRAXMAIL_IDENTITY_PASSPHRASE: "falsch" } });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("praxmail: error: cannot load the practice identity: wrong passphrase for the identity file\n");
    const ok = await praxmail(["approve", "p@example.org", "--yes", "--home", home, "--json"], { env });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ approved: [{ email: "p@example.org", deliveries: 0 }] });
  });

  it("--identity and PRAXMAIL_IDENTITY override the stored identity; a foreign one is refused", async () => {
    const home = join(dir, "moved-home");
    expect((await praxmail([...initArgs(home), "--no-keyring"])).code).toBe(0);
    const moved = join(dir, "offline-identity.txt");
    await rename(join(home, "practice-identity.txt"), moved);
    await registerThroughCore(home, "a@example.org", "Secu-Pass A");
    await registerThroughCore(home, "b@example.org", "Secu-Pass B");

    const missing = await praxmail(["approve", "a@example.org", "--yes", "--home", home]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`praxmail: error: cannot load the practice identity: ENOENT reading ${join(home, "practice-identity.txt")}\n`);

    const foreign = join(dir, "foreign.txt");
    await writeIdentityFile(foreign, generateIdentity("x25519"), undefined, new Date());
    const refused = await praxmail(["approve", "a@example.org", "--yes", "--home", home, "--identity", foreign]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("praxmail: error: the identity is not this practice's identity\n");

    expect((await praxmail(["approve", "a@example.org", "--yes", "--home", home, "--identity", moved])).code).toBe(0);
    expect((await praxmail(["approve", "b@example.org", "--yes", "--home", home], { env: { PRAXMAIL_IDENTITY: moved } })).code).toBe(0);
    const list = await praxmail(["list", "patients", "--json", "--home", home]);
    expect((JSON.parse(list.stdout) as { status: string }[]).map((p) => p.status)).toEqual(["approved", "approved"]);
  });

  it("the error keeps the keyring's cause; PRAXMAIL_DEBUG prints it without the secret", async () => {
    const home = join(dir, "keyring-gone-home");
    expect((await praxmail([...initArgs(home), "--no-keyring"])).code).toBe(0);
    const secret = (await readFile(join(home, "practice-identity.txt"), "utf8")).trim().split("\n").at(-1) ?? "";
    await patchConfig(home, { identity: { kind: "keyring", account: "practice-identity gone" } });
    await registerThroughCore(home, "g@example.org", "Secu-Pass G");
    const env = { DBUS_SESSION_BUS_ADDRESS: "unix:path=/nonexistent" };
    const plain = await praxmail(["approve", "g@example.org", "--yes", "--home", home], { env });
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/^praxmail: error: cannot load the practice identity: the OS keyring did not answer: .+$/m);
    expect(plain.stderr).not.toContain("praxmail: cause:");
    const debug = await praxmail(["approve", "g@example.org", "--yes", "--home", home], { env: { ...env, PRAXMAIL_DEBUG: "1" } });
    expect(debug.code).toBe(1);
    // The wrapped error, then the keyring's own chain, one line each.
    expect(debug.stderr).toMatch(/^praxmail: cause: Error: the OS keyring did not answer: .+\n(?:praxmail: cause: Error GenericFailure: .+\n)+praxmail: hint: /m);
    expect(debug.stderr).not.toContain(secret);
    expect(debug.stderr).not.toContain("AGE-SECRET-KEY");
  });
});

const keyringTools = needTool("dbus-run-session") && needTool("gnome-keyring-daemon");
describe.runIf(keyringTools)("the OS keyring (Secret Service)", () => {
  /** Runs praxmail in a private D-Bus session with gnome-keyring unlocked; the keyring persists in userHome. */
  const praxmailInKeyring = (userHome: string, args: string): ReturnType<typeof inKeyringSession> => inKeyringSession(userHome, `node "${BIN}" ${args}`);

  it("init stores the identity in the keyring, writes no identity file, and approve loads it in a later session", async () => {
    const home = join(dir, "keyring-home");
    const userHome = join(dir, "keyring-user");
    const init = praxmailInKeyring(userHome, `init --yes --home "${home}" --practice-name Praxis --practice-email praxis@praxis.example --recipient-type x25519`);
    expect(init.stderr).toContain("praxmail: practice identity in the OS keyring");
    expect(init.status).toBe(0);
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { identity: { kind: string } };
    expect(config.identity.kind).toBe("keyring");
    expect((await walk(home)).some((f) => f.includes("practice-identity"))).toBe(false);

    await registerThroughCore(home, "k@example.org", "Secu-Pass K");
    const approve = praxmailInKeyring(userHome, `approve k@example.org --yes --json --home "${home}"`);
    expect(approve.stderr).not.toContain("error");
    expect(approve.status).toBe(0);
    expect(JSON.parse(approve.stdout)).toEqual({ approved: [{ email: "k@example.org", deliveries: 0 }] });
  });

  it("without a Secret Service, init falls back to the identity file", async () => {
    const home = join(dir, "no-keyring-home");
    const r = await praxmail(["init", "--yes", "--home", home, "--practice-name", "P", "--practice-email", "p@praxis.example"], {
      env: { DBUS_SESSION_BUS_ADDRESS: "unix:path=/nonexistent" },
    });
    expect(r.code).toBe(0);
    // Why the keyring was not used is said, not swallowed.
    expect(r.stderr).toMatch(/^praxmail: the OS keyring did not answer: .+; using a file instead$/m);
    expect(r.stderr).toContain(`praxmail: practice identity in ${home}/practice-identity.txt (mode 0600`);
  });
});


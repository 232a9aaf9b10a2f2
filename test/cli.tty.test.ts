// What only happens on a terminal: the init wizard, choosing patients to approve, the
// confirmation prompt, and progress while encrypting.
import { spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stripVTControlCharacters } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { progress } from "../src/commands/shared.js";
import { BIN, cleanup, initHome, praxmail, tempDir } from "./helpers/cli.js";
import { registerThroughCore } from "./helpers/patient.js";
import { needTool } from "./helpers/tools.js";
import { Terminal } from "./helpers/tty.js";

let dir: string;
let term: Terminal | undefined;
beforeAll(async () => {
  dir = await tempDir();
});
afterEach(() => {
  term?.close();
  term = undefined;
});
afterAll(async () => {
  await cleanup(dir);
});

describe.runIf(needTool("tmux"))("on a terminal", () => {
  it("init runs a wizard with defaults and writes what was answered", async () => {
    const home = join(dir, "wizard");
    term = new Terminal(`init --no-keyring --home '${home}'`);
    await term.waitFor("Practice name");
    term.keys("-l", "Praxis Dr. Weber");
    term.keys("Enter");
    await term.waitFor("Practice e-mail address");
    term.keys("-l", "praxis@praxis-weber.example");
    term.keys("Enter");
    await term.waitFor("Public portal URL");
    term.keys("C-u");
    term.keys("-l", "https://portal.praxis-weber.example");
    term.keys("Enter");
    await term.waitFor("Upstream SMTP URL");
    term.keys("Enter");
    await term.waitFor("Recipient type");
    term.keys("Enter");
    await term.waitFor("Protect the identity file");
    term.keys("Enter");
    const { code, screen } = await term.exit();
    expect(code).toBe(0);
    expect(screen).toMatch(/age1pq1[0-9a-z]{20,}/);
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({
      practiceName: "Praxis Dr. Weber",
      practiceEmail: "praxis@praxis-weber.example",
      portalUrl: "https://portal.praxis-weber.example",
      upstream: null,
      crypto: { recipientType: "mlkem768x25519" },
      identity: { kind: "file", protected: false },
    });
  });

  it("approve without arguments offers the waiting patients with their safety codes, then asks", async () => {
    const home = join(dir, "choose");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, "anna@example.org", "Anna-Schlüssel");
    await registerThroughCore(home, "jan@example.org", "Jan-Schlüssel");
    const pending = JSON.parse((await praxmail(["list", "pending", "--json", "--home", home])).stdout) as { email: string; safetyCode: string }[];
    term = new Terminal(`approve --home '${home}'`);
    const list = await term.waitFor("jan@example.org");
    for (const p of pending) expect(list).toContain(`${p.email}  safety code ${p.safetyCode}`);
    term.keys("Down", "Space", "Enter");
    await term.waitFor("Do these safety codes match");
    term.keys("y", "Enter");
    const { code, screen } = await term.exit();
    expect(code).toBe(0);
    expect(screen).toContain("approved jan@example.org: 0 deliveries released");
    const after = JSON.parse((await praxmail(["list", "patients", "--json", "--home", home])).stdout) as { email: string; status: string }[];
    expect(after.map((p) => [p.email, p.status])).toEqual([
      ["anna@example.org", "pending-approval"],
      ["jan@example.org", "approved"],
    ]);
  });

  it("restore asks for the passphrase of a protected identity on a terminal, and refuses without one in a pipe", async () => {
    const home = join(dir, "protected");
    const passphrase = "eine lange Passphrase";
    const init = await praxmail(
      ["init", "--yes", "--protect", "--home", home, "--practice-name", "P", "--practice-email", "praxis@praxis-weber.example", "--recipient-type", "x25519"],
      { env: { PRAXMAIL_IDENTITY_PASSPHRASE: passphrase } },
    );
    expect(init.code, init.stderr).toBe(0);
    const backup = join(dir, "protected-backup");
    expect((await praxmail(["backup", backup, "--home", home])).code).toBe(0);
    const identity = join(home, "practice-identity.age");
    const target = join(dir, "protected-restored");
    const piped = await praxmail(["restore", backup, "--home", target, "--identity", identity]);
    expect(piped.code).toBe(1);
    expect(piped.stderr).toBe("praxmail: error: the identity file is passphrase-protected\npraxmail: hint: run on a terminal, or set PRAXMAIL_IDENTITY_PASSPHRASE\n");
    await expect(readFile(join(target, "config.json"))).rejects.toMatchObject({ code: "ENOENT" });
    term = new Terminal(`restore '${backup}' --home '${target}' --identity '${identity}'`);
    await term.waitFor("Passphrase of the practice identity");
    term.keys("-l", passphrase);
    term.keys("Enter");
    const { code, screen } = await term.exit();
    expect(code).toBe(0);
    expect(screen.replace(/\n/g, "")).toContain(`into ${target}; audit chain intact`);
    expect(await readFile(join(target, "config.json"))).toEqual(await readFile(join(home, "config.json")));
  });

  it("answering no to the confirmation approves nobody", async () => {
    const home = join(dir, "decline");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, "anna@example.org", "Anna-Schlüssel");
    term = new Terminal(`approve anna@example.org --home '${home}'`);
    await term.waitFor("Do these safety codes match");
    term.keys("n", "Enter");
    const { code, screen } = await term.exit();
    expect(code).toBe(0);
    expect(screen).toContain("praxmail: nothing approved");
    const after = JSON.parse((await praxmail(["list", "pending", "--json", "--home", home])).stdout) as unknown[];
    expect(after).toHaveLength(1);
  });
});

describe("progress()", () => {
  it("builds its text only when it shows it: never in a pipe, at most every 100 ms on a terminal", () => {
    vi.useFakeTimers({ now: 1_000_000 });
    try {
      for (const interactive of [false, true]) {
        let built = 0;
        const text = (): string => `encrypting ${String(++built)}`;
        const lines: string[] = [];
        const bar = progress({ out: () => undefined, err: (t) => lines.push(t), interactive, env: {} });
        // send calls it once per MiB read.
        for (let i = 0; i < 1000; i++) bar.update(text);
        vi.advanceTimersByTime(100);
        bar.update(text);
        expect(built).toBe(interactive ? 2 : 0);
        expect(lines.map((l) => stripVTControlCharacters(l))).toEqual(interactive ? ["\rencrypting 1", "\rencrypting 2"] : []);
      }
    } finally {
      vi.useRealTimers();
    }
  });
});

describe.runIf(needTool("script"))("progress", () => {
  it("send shows encryption progress on a terminal, and none in a pipe", async () => {
    const home = join(dir, "progress");
    await initHome(home);
    const big = join(dir, "ct-serie.bin");
    await writeFile(big, Buffer.alloc(20 * 1024 * 1024, 7));
    const onTty = spawnSync("script", ["-qec", `'${process.execPath}' '${BIN}' send --to p@example.org --home '${home}' '${big}'`, "/dev/null"], {
      encoding: "utf8",
      env: { PATH: process.env.PATH, NO_COLOR: "1" },
      timeout: 120_000,
    });
    expect(onTty.status).toBe(0);
    expect(onTty.stdout).toMatch(/encrypting ct-serie\.bin for p@example\.org: \d+% \([\d.]+ (KB|MB) of 21 MB\)/);
    const piped = await praxmail(["send", "--to", "p@example.org", "--home", home, big]);
    expect(piped.code).toBe(0);
    expect(piped.stderr).not.toContain("encrypting");
  });
});

// `praxmail serve` as a user runs it: a fresh home, embedded defaults, the outbox.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { BIN, cleanup, outbox, tempDir } from "./helpers/cli.js";
import { submit } from "./helpers/relay.js";

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await cleanup(dir);
});

it("starts on defaults in a fresh home, relays a level-3 mail into the outbox, logs no content, and stops on SIGTERM", async () => {
  const home = join(dir, "fresh");
  const child = spawn(process.execPath, [BIN, "serve", "--home", home, "--smtp", "127.0.0.1:0"], { env: { PATH: process.env.PATH, NO_COLOR: "1" } });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on("exit", r));
  try {
    const port = await new Promise<number>((res, rej) => {
      const t = setInterval(() => {
        const m = /relay listening on 127\.0\.0\.1:(\d+)/.exec(stderr);
        if (m) {
          clearInterval(t);
          res(Number(m[1]));
        }
      }, 50);
      void exited.then(() => {
        clearInterval(t);
        rej(new Error(`serve exited: ${stderr}`));
      });
    });
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { practiceName: string; upstream: unknown };
    expect(config).toMatchObject({ practiceName: "Praxis", upstream: null });
    const raw = await readFile(resolve(import.meta.dirname, "fixtures/mail/01-level3-subject-tag.eml"));
    const r = await submit(port, "praxis@praxis-weber.example", ["anna.schaefer@patient.example"], raw);
    expect(r.code).toBe(250);
    const mails = await outbox(home);
    expect(mails).toHaveLength(1);
    expect(mails[0]!.attachments).toEqual([]);
    expect(mails[0]!.subject).toBe("Ihr Laborbefund vom 28.10.");
    expect(mails[0]!.text).toMatch(/Herunterladen: http:\/\/127\.0\.0\.1:8080\/d\/[\w-]{43}/);
  } finally {
    child.kill("SIGTERM");
  }
  expect(await exited).toBe(0);
  const lines = stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(lines).toContainEqual(expect.objectContaining({ msg: "message", outcome: 250, level: 3, deliveries: 1, recipients: 1 }));
  expect(stdout).not.toContain("Laborbefund");
  expect(stdout).not.toContain("AGE-SECRET-KEY");
});

// `praxmail serve` as a user runs it: a fresh home, embedded defaults, the outbox.
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { cleanup, outbox, tempDir } from "./helpers/cli.js";
import { submit } from "./helpers/relay.js";
import { startServe } from "./helpers/serve.js";

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await cleanup(dir);
});

it("starts on defaults in a fresh home, relays a level-3 mail into the outbox, logs no content, and stops on SIGTERM", async () => {
  const home = join(dir, "fresh");
  const served = await startServe(home);
  let link: string | undefined;
  try {
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { practiceName: string; upstream: unknown };
    expect(config).toMatchObject({ practiceName: "Praxis", upstream: null });
    const raw = await readFile(resolve(import.meta.dirname, "fixtures/mail/01-level3-subject-tag.eml"));
    const r = await submit(served.smtpPort, "praxis@praxis-weber.example", ["anna.schaefer@patient.example"], raw);
    expect(r.code).toBe(250);
    const mails = await outbox(home);
    expect(mails).toHaveLength(1);
    expect(mails[0]!.attachments).toEqual([]);
    expect(mails[0]!.subject).toBe("Ihr Laborbefund vom 28.10.");
    link = /Herunterladen: (http:\/\/127\.0\.0\.1:8080\/d\/[\w-]{43})/.exec(mails[0]!.text ?? "")?.[1];
    expect(link).toBeDefined();
    // The portal answers the link (registration, since the patient has no account yet).
    const page = await fetch(link!.replace(":8080", `:${served.httpPort}`));
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<h1>Konto anlegen</h1>");
  } finally {
    expect(await served.stop()).toBe(0);
  }
  const lines = served.stdout().trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(lines).toContainEqual(expect.objectContaining({ msg: "message", outcome: 250, level: 3, deliveries: 1, recipients: 1 }));
  expect(lines).toContainEqual(expect.objectContaining({ msg: "request", route: "/d/:token", status: 200 }));
  expect(served.stdout()).not.toContain("Laborbefund");
  expect(served.stdout()).not.toContain("AGE-SECRET-KEY");
  expect(served.stdout()).not.toContain(link!.slice(-43));
});

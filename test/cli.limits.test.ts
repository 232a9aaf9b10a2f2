// The login limit across real processes (security review item 5): two `praxmail serve` on
// one home share the count, and a restart does not reset it. Over real HTTP.
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { cleanup, initHome, tempDir } from "./helpers/cli.js";
import { patientAtPortal } from "./helpers/download.js";
import { keyOf, registerThroughCore } from "./helpers/patient.js";
import { startServe, type Served } from "./helpers/serve.js";

const A = "anna@patient.example";
const TOO_MANY = "Zu viele Versuche. Bitte warten Sie 15 Minuten und versuchen Sie es dann erneut.";

let dir: string;
let home: string;
const running: Served[] = [];

/** Logs in as the login page does (parameters, derivation, credential); returns the status and answer. */
async function login(on: Served, secret: string): Promise<{ status: number; body: string }> {
  const { login: res } = await patientAtPortal(`http://127.0.0.1:${String(on.httpPort)}`, A, secret);
  return { status: res.status, body: await res.text() };
}

async function serve(): Promise<Served> {
  const s = await startServe(home);
  running.push(s);
  return s;
}

beforeAll(async () => {
  dir = await tempDir();
  home = join(dir, "home");
  await initHome(home, ["--recipient-type", "x25519"]);
  await registerThroughCore(home, A, "Annas Secu-Pass-Key");
});
afterAll(async () => {
  for (const s of running) await s.stop();
  await cleanup(dir);
});

it("5 failed logins spread over two `praxmail serve` on one home lock the account on both, and after a restart", async () => {
  const [one, two] = [await serve(), await serve()];
  for (let i = 0; i < 5; i++) expect((await login(i % 2 ? one : two, "ein falscher Secu-Pass-Key")).status, `attempt ${String(i + 1)}`).toBe(401);
  for (const s of [one, two]) {
    const blocked = await login(s, keyOf(A));
    expect(blocked.status).toBe(429);
    expect(blocked.body).toContain(TOO_MANY);
  }
  await one.stop();
  await two.stop();
  const restarted = await serve();
  const blocked = await login(restarted, keyOf(A));
  expect(blocked.status).toBe(429);
  expect(blocked.body).toContain(TOO_MANY);
});

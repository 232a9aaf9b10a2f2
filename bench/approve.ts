// Approval benchmark: approving a patient unwraps wrap[P] and writes wrap[U] per delivery and
// never touches a payload (DESIGN.md §3), so 1,000 deliveries of 10 MiB must approve as fast
// as 1,000 of 1 MiB. Both homes are filled in-process through the core, as `praxmail send`
// does; the measured step is the real `praxmail approve` in its own process.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openContext } from "../src/commands/shared.js";
import { createDelivery, getPatient, markSent, registerPatient, resetSecuPass, setSecuPassRecipient, type Context, type NewKey } from "../src/core/index.js";
import { generateIdentity, newKdfParams, recipientOf, unwrapIdentity, type RecipientType } from "../src/crypto/index.js";
import { BIN } from "./parts.js";
import type { Figure } from "./stats.js";

const MiB = 1024 * 1024;
const DELIVERIES = 1000;
const PATIENT = "patient@patient.example";
// Encryption is synchronous on node:crypto; a few deliveries at once overlap it with the fsyncs.
const CONCURRENCY = 4;
// USER_HZ of /proc/<pid>/stat; 100 on every Linux build we run on.
const CLOCK_TICKS = 100;

export interface Home {
  readonly label: string;
  readonly dir: string;
  /** The size of each delivery's file. */
  readonly bytes: number;
  /** The patient's current Secu-Pass identity U. */
  identity: string;
}

function cli(args: readonly string[]): Promise<{ code: number | null; out: string; err: string; seconds: number; cpu: number }> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    let cpu = 0;
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    // utime + stime only grow, so the last reading is the child's CPU time (within one interval).
    const timer = setInterval(() => {
      readFile(`/proc/${String(child.pid)}/stat`, "utf8")
        .then((stat) => {
          const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
          cpu = Math.max(cpu, (Number(f[11]) + Number(f[12])) / CLOCK_TICKS);
        })
        .catch(() => undefined);
    }, 20);
    child.on("error", reject);
    child.on("close", (code) => {
      clearInterval(timer);
      resolvePromise({ code, out, err, seconds: (performance.now() - started) / 1000, cpu });
    });
  });
}

async function withBenchContext<T>(dir: string, fn: (ctx: Context) => Promise<T>): Promise<T> {
  const ctx = await openContext({ home: dir }, "bench");
  try {
    return await fn(ctx);
  } finally {
    await ctx.store.close();
  }
}

// The same random MiB again and again: encryption reads its chunks and never writes them.
function blocks(block: Uint8Array, count: number): ReadableStream<Uint8Array> {
  let left = count;
  return new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (left-- > 0) ctl.enqueue(block);
      else ctl.close();
    },
  });
}

/**
 * A fresh home with DELIVERIES sent deliveries and their patient waiting for approval.
 *
 * @param dir - The home.
 * @param label - Its name in progress lines and errors.
 * @param bytes - The size of each delivery's file (a multiple of 1 MiB, or less than 1 MiB).
 * @param log - Progress lines.
 * @param opts - More `praxmail init` flags (e.g. the shared backend, the recipient type; the
 *   shared backend's AWS_* come from this process's environment), and how many deliveries
 *   are created at once (default CONCURRENCY).
 * @returns The home.
 */
export async function buildHome(dir: string, label: string, bytes: number, log: (s: string) => void, opts: { init?: readonly string[]; concurrency?: number } = {}): Promise<Home> {
  const init = await cli(["init", "--yes", "--no-keyring", "--home", dir, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example", ...(opts.init ?? [])]);
  if (init.code !== 0) throw new Error(`init failed: ${init.err}`);
  const started = performance.now();
  const identity = await withBenchContext(dir, async (ctx) => {
    const block = randomBytes(Math.min(bytes, MiB));
    const count = Math.max(1, bytes / MiB);
    let next = 0;
    let done = 0;
    await Promise.all(
      Array.from({ length: opts.concurrency ?? CONCURRENCY }, async () => {
        while (next < DELIVERIES) {
          next++;
          // As `praxmail send`: create durably, then make it visible once "mailed".
          const d = await createDelivery(ctx, {
            recipient: PATIENT,
            level: 3,
            subject: "Befund",
            files: [{ name: "befund.pdf", open: () => blocks(block, count) }],
          });
          await markSent(ctx, [d.id]);
          if (++done % 100 === 0) log(`  approve setup ${label}: ${String(done)}/${String(DELIVERIES)} deliveries (${((performance.now() - started) / 1000).toFixed(0)} s)`);
        }
      }),
    );
    // The patient registers through the link and sets a Secu-Pass-Key; reception has not approved.
    const u = generateIdentity(ctx.config.crypto.recipientType);
    await registerPatient(ctx, PATIENT, await benchKey(ctx.config.crypto.recipientType, u));
    await setSecuPassRecipient(ctx, PATIENT, await recipientOf(u));
    const pending = (await ctx.store.records.deliveries({ recipient: PATIENT, statuses: ["pending-approval"] })).length;
    if (pending !== DELIVERIES) throw new Error(`${label}: ${String(pending)} deliveries pending approval, expected ${String(DELIVERIES)}`);
    return u;
  });
  return { label, dir, bytes, identity };
}

/** A new key as the browser sends it, for a random U (the bench measures no derivation). */
async function benchKey(type: RecipientType, u: string): Promise<NewKey> {
  return { kdf: newKdfParams(type), recipient: await recipientOf(u), credential: randomBytes(32).toString("base64url") };
}

/** Back to pending approval under a fresh key, as after the patient reset their Secu-Pass-Key. */
export async function resetPatient(home: Home): Promise<void> {
  home.identity = await withBenchContext(home.dir, async (ctx) => {
    const u = generateIdentity(ctx.config.crypto.recipientType);
    await resetSecuPass(ctx, PATIENT, await benchKey(ctx.config.crypto.recipientType, u));
    return u;
  });
}

/** Every delivery is ready and holds a wrap that the patient's current identity opens. */
export async function checkApproved(home: Home): Promise<void> {
  await withBenchContext(home.dir, async (ctx) => {
    if ((await getPatient(ctx, PATIENT)).status !== "approved") throw new Error(`${home.label}: patient not approved`);
    const recipient = await recipientOf(home.identity);
    const ready = await ctx.store.records.deliveries({ recipient: PATIENT, statuses: ["ready"] });
    if (ready.length !== DELIVERIES) throw new Error(`${home.label}: ${String(ready.length)} deliveries ready, expected ${String(DELIVERIES)}`);
    for (const d of ready) {
      if ((await ctx.store.records.wrap(d.id, "patient"))?.recipient !== recipient) throw new Error(`${home.label}: delivery ${d.id} has no wrap for the patient`);
    }
    const first = ready[0] && (await ctx.store.records.wrap(ready[0].id, "patient"));
    if (first) await unwrapIdentity(first.ciphertext, home.identity);
  });
}

/**
 * Runs the real `praxmail approve --yes`; check its work with {@link checkApproved}.
 *
 * @param home - The home.
 * @returns Its wall and CPU time.
 * @throws If it fails or does not release every delivery.
 */
export async function runApprove(home: Home): Promise<{ seconds: number; cpu: number }> {
  const r = await cli(["approve", "--home", home.dir, "--yes", "--json", PATIENT]);
  if (r.code !== 0) throw new Error(`${home.label}: approve exited with ${String(r.code)}: ${r.err}`);
  const released = (JSON.parse(r.out) as { approved: { email: string; deliveries: number }[] }).approved[0]?.deliveries;
  if (released !== DELIVERIES) throw new Error(`${home.label}: approve released ${String(released)} deliveries`);
  return { seconds: r.seconds, cpu: r.cpu };
}

async function approve(home: Home): Promise<{ seconds: number; cpu: number }> {
  const t = await runApprove(home);
  await checkApproved(home);
  return t;
}

/** The approve figures. */
export async function approveBench(runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-approve-"));
  try {
    const started = performance.now();
    const small = await buildHome(join(dir, "1mib"), "1 MiB", MiB, log);
    const big = await buildHome(join(dir, "10mib"), "10 MiB", 10 * MiB, log);
    log(`  approve setup: 1,000 × 1 MiB and 1,000 × 10 MiB in ${((performance.now() - started) / 1000).toFixed(0)} s`);
    const a: number[] = [];
    const b: number[] = [];
    for (let r = 0; r < runs; r++) {
      if (r > 0) {
        await resetPatient(small);
        await resetPatient(big);
      }
      // Alternate which set goes first, so that drift hits both.
      const [first, second] = r % 2 === 0 ? [small, big] : [big, small];
      const t1 = await approve(first);
      const t2 = await approve(second);
      const [ta, tb] = first === small ? [t1, t2] : [t2, t1];
      a.push(ta.seconds);
      b.push(tb.seconds);
      // CPU time shows whether a wall-time gap is work or a busy machine.
      log(
        `  approve run ${String(r + 1)}: 1 MiB set ${ta.seconds.toFixed(2)} s (${ta.cpu.toFixed(1)} s CPU), ` +
          `10 MiB set ${tb.seconds.toFixed(2)} s (${tb.cpu.toFixed(1)} s CPU), ${(tb.seconds / ta.seconds).toFixed(2)}×`,
      );
    }
    return [
      { name: "approve: 1,000 deliveries of 1 MiB (baseline)", unit: "s", runs: a },
      { name: "approve: 1,000 deliveries of 10 MiB", unit: "s", runs: b },
      { name: "approve: 10 MiB set / 1 MiB set (target ≤ 1.2)", unit: "×", runs: b.map((v, i) => v / (a[i] ?? v)) },
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

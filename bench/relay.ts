// Relay benchmark: level-3 mails with a 1 MiB PDF against untagged passthrough through the
// same relay process (the real `praxmail serve`) with 1, 4 and 16 concurrent clients, and the
// relay's peak RSS for a 10 MiB and a 100 MiB attachment. Upstream is an smtp-server sink in
// this process.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { BIN, benchMail, countingSink, initBenchHome } from "./parts.js";
import { percentile, peakRss, round, type Figure } from "./stats.js";

const MiB = 1024 * 1024;

interface RelayProc {
  child: ChildProcess;
  port: number;
  stop(): Promise<void>;
}

async function startRelay(home: string): Promise<RelayProc> {
  const child = spawn(process.execPath, [BIN, "serve", "--home", home, "--smtp", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    err += d;
  });
  const port = await new Promise<number>((res, rej) => {
    const t = setInterval(() => {
      const m = /relay listening on 127\.0\.0\.1:(\d+)/.exec(err);
      if (m) {
        clearInterval(t);
        res(Number(m[1]));
      }
    }, 20);
    child.once("exit", () => {
      clearInterval(t);
      rej(new Error(`relay exited: ${err}`));
    });
  });
  return {
    child,
    port,
    stop: () =>
      new Promise((r) => {
        child.once("exit", () => {
          r();
        });
        child.kill("SIGTERM");
      }),
  };
}

/** Sends `count` messages with `concurrency` clients; returns per-message latencies (ms) and wall time. */
export async function load(port: number, make: (i: number) => Buffer, count: number, concurrency: number): Promise<{ latencies: number[]; seconds: number }> {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const t = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true, pool: true, maxConnections: 1, maxMessages: Infinity });
      while (next < count) {
        const raw = make(next++);
        const t0 = performance.now();
        const info = await t.sendMail({ envelope: { from: "praxis@praxis.example", to: ["patient@patient.example"] }, raw });
        if (!info.response.startsWith("250")) throw new Error(`not accepted: ${info.response}`);
        latencies.push(performance.now() - t0);
      }
      t.close();
    }),
  );
  return { latencies, seconds: (performance.now() - started) / 1000 };
}

/** Concurrent SMTP clients for throughput and latency (issue 15, target 5). */
const CLIENTS = [1, 4, 16] as const;

/** Resets a process's peak RSS (VmHWM) to its current RSS, so the next reading covers what follows. */
async function resetPeak(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, "5");
}

/** The relay figures. */
export async function relayBench(runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-"));
  const sink = await countingSink();
  try {
    const pdf = randomBytes(MiB);
    const figures: Figure[] = [];
    let id = 0;
    // One relay process per concurrency, so that its peak RSS belongs to that load.
    for (const clients of CLIENTS) {
      const home = join(dir, `throughput-${clients}`);
      await initBenchHome(home, sink.url);
      const relay = await startRelay(home);
      const pid = relay.child.pid ?? 0;
      const count = Math.max(40, 5 * clients);
      const pass: number[] = [];
      const l3: number[] = [];
      const passLat: number[] = [];
      const l3Lat: number[] = [];
      const peak: number[] = [];
      // Warm up both paths once.
      await load(relay.port, () => benchMail("Befund", pdf, `w${id++}`), clients, clients);
      await load(relay.port, () => benchMail("[S3] Befund", pdf, `w${id++}`), clients, clients);
      for (let r = 0; r < runs; r++) {
        const a = await load(relay.port, () => benchMail("Befund", pdf, `p${id++}`), count, clients);
        pass.push(count / a.seconds);
        passLat.push(...a.latencies);
        await resetPeak(pid);
        const b = await load(relay.port, () => benchMail("[S3] Befund", pdf, `l${id++}`), count, clients);
        peak.push((await peakRss(pid)) / MiB);
        l3.push(count / b.seconds);
        l3Lat.push(...b.latencies);
        log(`  relay run ${r + 1}/${runs}, ${clients} clients: passthrough ${(count / a.seconds).toFixed(1)}/s, level 3 ${(count / b.seconds).toFixed(1)}/s, peak RSS ${peak.at(-1)!.toFixed(0)} MiB`);
      }
      await relay.stop();
      const who = `${clients} ${clients === 1 ? "client" : "clients"}`;
      figures.push(
        { name: `relay: untagged 1 MiB mail, passthrough, ${who} (baseline)`, unit: "msg/s", runs: pass },
        { name: `relay: level 3, 1 MiB PDF encrypted, ${who}`, unit: "msg/s", runs: l3 },
        { name: `relay: level-3 throughput / passthrough, ${who} (target ≥ 0.8)`, unit: "×", runs: l3.map((v, i) => v / (pass[i] ?? 1)) },
        { name: `relay: passthrough latency, ${who}`, unit: "ms", runs: passLat, text: `p50 ${round(percentile(passLat, 50))} ms, p99 ${round(percentile(passLat, 99))} ms` },
        { name: `relay: level-3 latency, ${who}`, unit: "ms", runs: l3Lat, text: `p50 ${round(percentile(l3Lat, 50))} ms, p99 ${round(percentile(l3Lat, 99))} ms` },
        { name: `relay: level-3 p99 / passthrough p99, ${who}`, unit: "×", runs: [percentile(l3Lat, 99) / percentile(passLat, 99)] },
        { name: `relay: peak RSS while ${who} send level 3`, unit: "MiB", runs: peak },
      );
    }

    // Peak RSS: a fresh relay process per size, three messages each.
    const rss: Record<number, number[]> = { 10: [], 100: [] };
    for (let r = 0; r < runs; r++) {
      for (const size of [10, 100]) {
        const h = join(dir, `rss-${size}-${r}`);
        await initBenchHome(h, sink.url);
        const p = await startRelay(h);
        const att = randomBytes(size * MiB);
        await load(p.port, (i) => benchMail("[S3] CT-Serie", att, `rss${size}-${r}-${i}`), 3, 1);
        rss[size]!.push((await peakRss(p.child.pid ?? 0)) / MiB);
        await p.stop();
      }
      log(`  relay RSS run ${r + 1}: 10 MiB → ${rss[10]!.at(-1)!.toFixed(0)} MiB, 100 MiB → ${rss[100]!.at(-1)!.toFixed(0)} MiB`);
    }
    figures.push(
      { name: "relay: peak RSS, level 3 with a 10 MiB attachment (baseline)", unit: "MiB", runs: rss[10]! },
      { name: "relay: peak RSS, level 3 with a 100 MiB attachment", unit: "MiB", runs: rss[100]! },
      { name: "relay: peak RSS 100 MiB / 10 MiB (target ≤ 1.5)", unit: "×", runs: rss[100]!.map((v, i) => v / (rss[10]![i] ?? 1)) },
    );
    return figures;
  } finally {
    await sink.close();
    await rm(dir, { recursive: true, force: true });
  }
}

// Milter benchmark: level-3 mails with a 1 MiB PDF through Postfix + praxmail milter against
// the same mails through Postfix alone, in the same run; and the peak RSS of praxmail serve
// for a 10 MiB and a 100 MiB attachment. Needs root and Debian's postfix.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { startPostfix } from "../test/helpers/postfix.js";
import { freePort } from "../test/helpers/serve.js";
import { BIN, benchMail, countingSink, initBenchHome } from "./parts.js";
import { peakRss, type Figure } from "./stats.js";

const MiB = 1024 * 1024;
// Room for a 100 MiB attachment in base64.
const SIZE_LIMIT = "message_size_limit = 209715200";

/** `praxmail serve` with its milter on the given port; resolves once it listens. */
async function startServe(home: string, milterPort: number): Promise<{ pid: number; stop: () => Promise<unknown> }> {
  const serve = spawn(process.execPath, [BIN, "serve", "--home", home, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--milter", `127.0.0.1:${milterPort}`], { stdio: ["ignore", "ignore", "pipe"] });
  await new Promise<void>((res, rej) => {
    let err = "";
    serve.stderr.setEncoding("utf8").on("data", (d: string) => {
      err += d;
      if (err.includes("milter listening")) res();
    });
    serve.once("exit", () => {
      rej(new Error(`serve exited: ${err}`));
    });
  });
  return {
    pid: serve.pid ?? 0,
    stop: () =>
      new Promise((r) => {
        serve.once("exit", r);
        serve.kill("SIGTERM");
      }),
  };
}

/** Submits count mails with 4 clients and waits until the sink has them all; messages per second. */
async function throughput(smtpPort: number, sinkCount: () => number, pdf: Buffer, tag: string, count: number): Promise<number> {
  const start = sinkCount();
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      const t = nodemailer.createTransport({ host: "127.0.0.1", port: smtpPort, secure: false, ignoreTLS: true, pool: true, maxConnections: 1, maxMessages: Infinity });
      while (next < count) {
        const i = next++;
        await t.sendMail({ envelope: { from: "praxis@praxis.example", to: ["patient@patient.example"] }, raw: benchMail("[S3] Befund", pdf, `${tag}-${i}`) });
      }
      t.close();
    }),
  );
  while (sinkCount() - start < count) await new Promise((r) => setTimeout(r, 20));
  return count / ((performance.now() - t0) / 1000);
}

/** The milter figures, or a note why they are missing. */
export async function milterBench(runs: number, log: (s: string) => void): Promise<Figure[] | string> {
  if (process.getuid?.() !== 0) return "skipped: the Postfix test instance needs root";
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-milter-"));
  const sink = await countingSink();
  const stops: (() => Promise<unknown>)[] = [];
  try {
    const home = join(dir, "home");
    const reinject = await freePort();
    const milterPort = await freePort();
    await initBenchHome(home, `smtp://127.0.0.1:${reinject}`);
    let serve = await startServe(home, milterPort);
    stops.push(() => serve.stop());
    const withMilter = await startPostfix(join(dir, "pf-milter"), { smtp: await freePort(), reinject, milter: milterPort, sink: sink.port }, SIZE_LIMIT);
    stops.push(() => withMilter.stop());
    // Postfix alone: the same instance setup, its milter pointing nowhere and skipped.
    const alone = await startPostfix(join(dir, "pf-alone"), { smtp: await freePort(), reinject: await freePort(), milter: await freePort(), sink: sink.port });
    stops.push(() => alone.stop());
    const aloneConf = join(dir, "pf-alone", "conf", "main.cf");
    await writeFile(aloneConf, (await readFile(aloneConf, "utf8")).replace(/^smtpd_milters = .*$/m, "smtpd_milters =").replace(/^non_smtpd_milters = .*$/m, "non_smtpd_milters ="));
    await new Promise<void>((res) => {
      spawn("postfix", ["-c", join(dir, "pf-alone", "conf"), "reload"], { stdio: "ignore" }).on("exit", () => {
        res();
      });
    });
    await new Promise((r) => setTimeout(r, 1500));

    const pdf = randomBytes(1024 * 1024);
    const count = 30;
    await throughput(alone.smtpPort, sink.count, pdf, "warm-a", 4);
    await throughput(withMilter.smtpPort, sink.count, pdf, "warm-m", 4);
    const base: number[] = [];
    const milter: number[] = [];
    for (let r = 0; r < runs; r++) {
      base.push(await throughput(alone.smtpPort, sink.count, pdf, `a${r}`, count));
      milter.push(await throughput(withMilter.smtpPort, sink.count, pdf, `m${r}`, count));
      log(`  milter run ${r + 1}/${runs}: Postfix alone ${base.at(-1)!.toFixed(1)}/s, Postfix + milter (level 3) ${milter.at(-1)!.toFixed(1)}/s`);
    }

    // Peak RSS: a fresh serve process per size and run, one mail each.
    const rss: Record<number, number[]> = { 10: [], 100: [] };
    for (let r = 0; r < runs; r++) {
      for (const size of [10, 100]) {
        await serve.stop();
        serve = await startServe(home, milterPort);
        await throughput(withMilter.smtpPort, sink.count, randomBytes(size * MiB), `rss${size}-${r}`, 1);
        rss[size]!.push((await peakRss(serve.pid)) / MiB);
      }
      log(`  milter RSS run ${r + 1}: 10 MiB → ${rss[10]!.at(-1)!.toFixed(0)} MiB, 100 MiB → ${rss[100]!.at(-1)!.toFixed(0)} MiB`);
    }
    return [
      { name: "Postfix alone: 1 MiB mails end to end (baseline)", unit: "msg/s", runs: base },
      { name: "Postfix + praxmail milter: level 3, 1 MiB PDF encrypted", unit: "msg/s", runs: milter },
      { name: "milter throughput / Postfix alone", unit: "×", runs: milter.map((v, i) => v / (base[i] ?? 1)) },
      { name: "milter: serve peak RSS, a 10 MiB attachment (baseline)", unit: "MiB", runs: rss[10]! },
      { name: "milter: serve peak RSS, a 100 MiB attachment", unit: "MiB", runs: rss[100]! },
      { name: "milter: peak RSS 100 MiB / 10 MiB", unit: "×", runs: rss[100]!.map((v, i) => v / (rss[10]![i] ?? 1)) },
    ];
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await sink.close();
    await rm(dir, { recursive: true, force: true });
  }
}

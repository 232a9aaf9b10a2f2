// Peak RSS of `praxmail send` for a 10 MiB and a 1 GiB file: streaming encryption must not
// grow with the file size.
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BIN, measure, type Measured } from "./parts.js";
import type { Figure } from "./stats.js";

const MiB = 1024 * 1024;

function run(args: string[]): Promise<Measured> {
  return measure(process.execPath, [BIN, ...args], true);
}

async function sparseFile(path: string, size: number): Promise<void> {
  const fh = await open(path, "w");
  await fh.truncate(size);
  await fh.close();
}

/** The send figures. */
export async function sendBench(runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-send-"));
  try {
    const home = join(dir, "home");
    const init = await run(["init", "--yes", "--no-keyring", "--home", home, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example"]);
    if (init.code !== 0) throw new Error("init failed");
    const small = join(dir, "10mib.bin");
    const big = join(dir, "1gib.bin");
    await sparseFile(small, 10 * MiB);
    await sparseFile(big, 1024 * MiB);
    const rss: Record<string, number[]> = { small: [], big: [] };
    const speed: number[] = [];
    for (let r = 0; r < runs; r++) {
      const a = await run(["send", "--home", home, "--to", "p@example.org", small]);
      const b = await run(["send", "--home", home, "--to", "p@example.org", big]);
      if (a.code !== 0 || b.code !== 0) throw new Error("send failed");
      rss.small!.push(a.peak / MiB);
      rss.big!.push(b.peak / MiB);
      speed.push(1024 / b.seconds);
      log(`  send run ${r + 1}: 10 MiB → ${(a.peak / MiB).toFixed(0)} MiB RSS, 1 GiB → ${(b.peak / MiB).toFixed(0)} MiB RSS in ${b.seconds.toFixed(1)} s`);
      await rm(join(home, "blobs"), { recursive: true, force: true });
    }
    return [
      { name: "send: peak RSS for a 10 MiB file (baseline)", unit: "MiB", runs: rss.small! },
      { name: "send: peak RSS for a 1 GiB file (target < 200)", unit: "MiB", runs: rss.big! },
      { name: "send: peak RSS 1 GiB / 10 MiB (target ≤ 1.3)", unit: "×", runs: rss.big!.map((v, i) => v / (rss.small![i] ?? 1)) },
      { name: "send: 1 GiB end to end (read, encrypt, fsync)", unit: "MiB/s", runs: speed },
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// `praxmail send` of large files. Time: 256 MiB end to end against the Go `age -r` on the
// same file, each a process of its own, start included. send writes a blob durably (fsync
// of the file and its folder) and commits rows, which `age -r` does not do; so the
// baseline with the target is `age -r -o out` followed by `sync out` (an fsync of out),
// and the ratio to `age -r` alone is shown beside it. Memory: peak RSS for a 10 MiB and a
// 1 GiB file (streaming encryption must not grow with the file size), and for `send
// --help`, which loads the CLI and does nothing else: the share of the peak that is code.
import { execFileSync } from "node:child_process";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateIdentity, recipientOf } from "../src/crypto/index.js";
import { BIN, measure, randomFile, type Measured } from "./parts.js";
import type { Figure } from "./stats.js";

const MiB = 1024 * 1024;

function run(args: string[], cpu = false): Promise<Measured> {
  return measure(process.execPath, [BIN, ...args], !cpu, cpu);
}

async function sparseFile(path: string, size: number): Promise<void> {
  const fh = await open(path, "w");
  await fh.truncate(size);
  await fh.close();
}

function hasAge(): boolean {
  try {
    execFileSync("age", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** The send figures. */
export async function sendBench(runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-send-"));
  try {
    const home = join(dir, "home");
    const init = await run(["init", "--yes", "--no-keyring", "--home", home, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example"]);
    if (init.code !== 0) throw new Error("init failed");
    const send = (file: string, cpu = false): Promise<Measured> => run(["send", "--home", home, "--to", "p@example.org", file], cpu);
    const figures: Figure[] = [];

    if (hasAge()) {
      const medium = join(dir, "256mib.bin");
      await randomFile(medium, 256 * MiB);
      const recipient = await recipientOf(generateIdentity("x25519"));
      const out = join(dir, "out.age");
      const t: Record<string, number[]> = {};
      const add = (key: string, m: Measured): void => {
        if (m.code !== 0) throw new Error(`${key} failed: ${m.stderr}`);
        (t[key] ??= []).push(m.seconds);
        (t[`${key}-cpu`] ??= []).push(m.cpu);
      };
      for (let r = 0; r < runs; r++) {
        add("age-fsync", await measure("bash", ["-c", 'age -r "$1" -o "$2" "$3" && sync "$2"', "bash", recipient, out, medium], false, true));
        await rm(out);
        add("age", await measure("age", ["-r", recipient, "-o", out, medium], false, true));
        // Removed before its pages are written back, so that no later run pays for them.
        await rm(out);
        add("send", await send(medium, true));
        await rm(join(home, "blobs"), { recursive: true, force: true });
        const [a, b, c] = [t["age-fsync"]?.at(-1), t.age?.at(-1), t.send?.at(-1)].map((s) => (s ?? 0).toFixed(2));
        log(`  send run ${r + 1}: 256 MiB: age -r + fsync ${String(a)} s, age -r ${String(b)} s, praxmail send ${String(c)} s`);
      }
      const k = (key: string): number[] => t[key] ?? [];
      const ratio = (a: string, b: string): number[] => k(a).map((v, i) => v / (k(b)[i] ?? 1));
      figures.push(
        { name: "send 256 MiB: age -r, then fsync of its output (baseline)", unit: "s", runs: k("age-fsync") },
        { name: "send 256 MiB: age -r alone", unit: "s", runs: k("age") },
        { name: "send 256 MiB: praxmail send (start, encrypt, fsync, rows)", unit: "s", runs: k("send") },
        { name: "send 256 MiB: praxmail send / (age -r + fsync) (target ≤ 1.5)", unit: "×", runs: ratio("send", "age-fsync") },
        { name: "send 256 MiB: praxmail send / age -r alone", unit: "×", runs: ratio("send", "age") },
        { name: "send 256 MiB: age -r + fsync, CPU time (user + system)", unit: "s", runs: k("age-fsync-cpu") },
        { name: "send 256 MiB: praxmail send, CPU time (user + system)", unit: "s", runs: k("send-cpu") },
      );
    } else {
      log("  send 256 MiB against age -r: skipped, the Go age CLI is not installed");
    }

    const small = join(dir, "10mib.bin");
    const big = join(dir, "1gib.bin");
    await sparseFile(small, 10 * MiB);
    await sparseFile(big, 1024 * MiB);
    const rss: Record<string, number[]> = { help: [], small: [], big: [] };
    const speed: number[] = [];
    for (let r = 0; r < runs; r++) {
      const h = await run(["send", "--help"]);
      const a = await send(small);
      const b = await send(big);
      if (h.code !== 0 || a.code !== 0 || b.code !== 0) throw new Error("send failed");
      rss.help!.push(h.peak / MiB);
      rss.small!.push(a.peak / MiB);
      rss.big!.push(b.peak / MiB);
      speed.push(1024 / b.seconds);
      log(`  send run ${r + 1}: --help → ${(h.peak / MiB).toFixed(0)} MiB RSS, 10 MiB → ${(a.peak / MiB).toFixed(0)} MiB RSS, 1 GiB → ${(b.peak / MiB).toFixed(0)} MiB RSS in ${b.seconds.toFixed(1)} s`);
      await rm(join(home, "blobs"), { recursive: true, force: true });
    }
    figures.push(
      { name: "send: peak RSS of send --help (loading the CLI, no work)", unit: "MiB", runs: rss.help! },
      { name: "send: peak RSS for a 10 MiB file (baseline)", unit: "MiB", runs: rss.small! },
      { name: "send: peak RSS for a 1 GiB file (target ≤ 100)", unit: "MiB", runs: rss.big! },
      { name: "send: peak RSS 1 GiB / 10 MiB (target ≤ 1.3)", unit: "×", runs: rss.big!.map((v, i) => v / (rss.small![i] ?? 1)) },
      { name: "send: 1 GiB end to end (read, encrypt, fsync)", unit: "MiB/s", runs: speed },
    );
    return figures;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// Encrypt and decrypt 256 MiB with three age implementations, each a process that reads a
// file and writes a file: the Go `age` CLI (the baseline), ours (node:crypto, through
// agefile.ts) and age-encryption (typage, pure JavaScript, through agefile.ts). Same input,
// same key, interleaved within each run; the outputs are checked before anything is timed.
// Besides wall time, each run takes the CPU time (user + system): on a shared machine with
// two vCPUs the wall time follows it, and it shows what overlapping I/O cannot hide. The
// start figures (an empty file, and `node -e 0`) give the fixed cost of each process.
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateIdentity, recipientOf } from "../src/crypto/index.js";
import { measure, randomFile, sha256File as sha256 } from "./parts.js";
import type { Figure } from "./stats.js";

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
const AGEFILE = join(import.meta.dirname, "agefile.js");

/** Names of the figures that bench/run.ts explains when the age target is missed. */
export const AGE_FIGURES = {
  goStart: "start: Go age CLI, encrypting an empty file",
  oursStart: "start: ours, encrypting an empty file (Node, imports, header)",
  nodeStart: "start: node -e 0",
  wall: (mode: Mode, impl: Impl) => `${mode} 256 MiB: ${NAMES[impl]}`,
  cpu: (mode: Mode, impl: "go" | "ours") => `${mode} 256 MiB: ${NAMES[impl]}, CPU time (user + system)`,
  ratio: (mode: Mode) => `${mode}: ours / Go (target ≤ 1.3)`,
  cpuRatio: (mode: Mode) => `${mode}: ours / Go, CPU time`,
} as const;

type Mode = "encrypt" | "decrypt";
const NAMES = { go: "Go age CLI (baseline)", ours: "ours (node:crypto)", typage: "age-encryption (pure JS)" } as const;

type Impl = "go" | "ours" | "typage";
const IMPLS: readonly Impl[] = ["go", "ours", "typage"];

function command(impl: Impl, mode: Mode, key: string, keyFile: string, input: string, output: string): [string, string[]] {
  if (impl === "go") return ["age", mode === "encrypt" ? ["-r", key, "-o", output, input] : ["-d", "-i", keyFile, "-o", output, input]];
  return [process.execPath, [AGEFILE, mode, impl, key, input, output]];
}

/**
 * The age figures, or a reason they could not be measured.
 *
 * @param runs - Timed runs per implementation and direction.
 * @param log - Progress lines.
 * @returns Figures, or a string saying why not.
 */
export async function ageBench(runs: number, log: (s: string) => void): Promise<Figure[] | string> {
  try {
    execFileSync("age", ["--version"], { stdio: "ignore" });
  } catch {
    return "skipped: the Go age CLI is not installed";
  }
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-age-"));
  try {
    const identity = generateIdentity("x25519");
    const recipient = await recipientOf(identity);
    const keyFile = join(dir, "key.txt");
    await writeFile(keyFile, `${identity}\n`, { mode: 0o600 });
    const plain = join(dir, "plain.bin");
    await randomFile(plain, SIZE);
    const plainHash = await sha256(plain);
    const goFile = join(dir, "go.age");
    const out = join(dir, "out");

    // Correctness first: each implementation's file opens with Go, and each decrypts Go's.
    for (const impl of IMPLS) {
      const ct = join(dir, `${impl}.age`);
      const enc = await measure(...command(impl, "encrypt", recipient, keyFile, plain, ct));
      if (enc.code !== 0) throw new Error(`${impl} encrypt failed: ${enc.stderr}`);
      await measure(...command("go", "decrypt", identity, keyFile, ct, out));
      if ((await sha256(out)) !== plainHash) throw new Error(`age -d does not restore what ${impl} encrypted`);
      const dec = await measure(...command(impl, "decrypt", identity, keyFile, goFile, out));
      if (dec.code !== 0 || (await sha256(out)) !== plainHash) throw new Error(`${impl} does not decrypt the Go file: ${dec.stderr}`);
      if (impl !== "go") await rm(ct);
    }

    const empty = join(dir, "empty");
    await writeFile(empty, "");
    const times: Record<string, number[]> = {};
    const add = (key: string, value: number): void => {
      (times[key] ??= []).push(value);
    };
    for (let r = 0; r < runs; r++) {
      const line: string[] = [];
      for (const [key, cmd, args] of [
        ["start-go", ...command("go", "encrypt", recipient, keyFile, empty, out)],
        ["start-ours", ...command("ours", "encrypt", recipient, keyFile, empty, out)],
        ["start-node", process.execPath, ["-e", "0"]],
      ] as const) {
        const m = await measure(cmd, args, false, true);
        if (m.code !== 0) throw new Error(`${key} failed: ${m.stderr}`);
        add(key, m.seconds);
      }
      for (const mode of ["encrypt", "decrypt"] as const) {
        for (const impl of IMPLS) {
          // Always a fresh output file, so that no one pays for truncating an old one.
          const target = join(dir, `run-${impl}`);
          await rm(target, { force: true });
          const m = await measure(...command(impl, mode, mode === "encrypt" ? recipient : identity, keyFile, mode === "encrypt" ? plain : goFile, target), false, true);
          if (m.code !== 0) throw new Error(`${impl} ${mode} failed: ${m.stderr}`);
          add(`${mode}-${impl}`, m.seconds);
          add(`${mode}-${impl}-cpu`, m.cpu);
          line.push(`${mode} ${impl} ${m.seconds.toFixed(2)} s (CPU ${m.cpu.toFixed(2)} s)`);
        }
      }
      log(`  age run ${r + 1}: ${line.join(", ")}`);
    }
    const t = (k: string): number[] => times[k] ?? [];
    const ratio = (a: string, b: string): number[] => t(a).map((v, i) => v / (t(b)[i] ?? 1));
    const F = AGE_FIGURES;
    return [
      { name: F.goStart, unit: "s", runs: t("start-go") },
      { name: F.oursStart, unit: "s", runs: t("start-ours") },
      { name: F.nodeStart, unit: "s", runs: t("start-node") },
      ...(["encrypt", "decrypt"] as const).flatMap((mode) => [
        { name: F.wall(mode, "go"), unit: "s", runs: t(`${mode}-go`) },
        { name: F.wall(mode, "ours"), unit: "s", runs: t(`${mode}-ours`) },
        { name: F.wall(mode, "typage"), unit: "s", runs: t(`${mode}-typage`) },
        { name: F.ratio(mode), unit: "×", runs: ratio(`${mode}-ours`, `${mode}-go`) },
        { name: `${mode}: age-encryption / Go`, unit: "×", runs: ratio(`${mode}-typage`, `${mode}-go`) },
        { name: F.cpu(mode, "go"), unit: "s", runs: t(`${mode}-go-cpu`) },
        { name: F.cpu(mode, "ours"), unit: "s", runs: t(`${mode}-ours-cpu`) },
        { name: F.cpuRatio(mode), unit: "×", runs: ratio(`${mode}-ours-cpu`, `${mode}-go-cpu`) },
      ]),
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

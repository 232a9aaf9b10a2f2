// Encrypt and decrypt 256 MiB with three age implementations, each a process that reads a
// file and writes a file: the Go `age` CLI (the baseline), ours (node:crypto, through
// agefile.ts) and age-encryption (typage, pure JavaScript, through agefile.ts). Same input,
// same key, interleaved within each run; the outputs are checked before anything is timed.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateIdentity, recipientOf } from "../src/crypto/index.js";
import { measure } from "./parts.js";
import type { Figure } from "./stats.js";

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
const AGEFILE = join(import.meta.dirname, "agefile.js");

async function sha256(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest("hex");
}

async function randomFile(path: string, size: number): Promise<void> {
  const fh = await open(path, "w");
  const block = Buffer.alloc(MiB);
  for (let at = 0; at < size; at += MiB) {
    crypto.getRandomValues(block.subarray(0, 65536));
    for (let i = 65536; i < MiB; i += 65536) block.copy(block, i, 0, 65536);
    // Shift every MiB so that no two 64 KiB chunks of the file are equal.
    block.writeUInt32BE(at / MiB, 0);
    await fh.write(block, 0, Math.min(MiB, size - at));
  }
  await fh.close();
}

type Impl = "go" | "ours" | "typage";
const IMPLS: readonly Impl[] = ["go", "ours", "typage"];

function command(impl: Impl, mode: "encrypt" | "decrypt", key: string, keyFile: string, input: string, output: string): [string, string[]] {
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

    const times: Record<string, number[]> = {};
    for (let r = 0; r < runs; r++) {
      const line: string[] = [];
      for (const mode of ["encrypt", "decrypt"] as const) {
        for (const impl of IMPLS) {
          // Always a fresh output file, so that no one pays for truncating an old one.
          const target = join(dir, `run-${impl}`);
          await rm(target, { force: true });
          const m = await measure(...command(impl, mode, mode === "encrypt" ? recipient : identity, keyFile, mode === "encrypt" ? plain : goFile, target));
          if (m.code !== 0) throw new Error(`${impl} ${mode} failed: ${m.stderr}`);
          (times[`${mode}-${impl}`] ??= []).push(m.seconds);
          line.push(`${mode} ${impl} ${m.seconds.toFixed(2)} s`);
        }
      }
      log(`  age run ${r + 1}: ${line.join(", ")}`);
    }
    const t = (k: string): number[] => times[k] ?? [];
    const ratio = (a: string, b: string): number[] => t(a).map((v, i) => v / (t(b)[i] ?? 1));
    return (["encrypt", "decrypt"] as const).flatMap((mode) => [
      { name: `${mode} 256 MiB: Go age CLI (baseline)`, unit: "s", runs: t(`${mode}-go`) },
      { name: `${mode} 256 MiB: ours (node:crypto)`, unit: "s", runs: t(`${mode}-ours`) },
      { name: `${mode} 256 MiB: age-encryption (pure JS)`, unit: "s", runs: t(`${mode}-typage`) },
      { name: `${mode}: ours / Go (target ≤ 1.3)`, unit: "×", runs: ratio(`${mode}-ours`, `${mode}-go`) },
      { name: `${mode}: age-encryption / Go`, unit: "×", runs: ratio(`${mode}-typage`, `${mode}-go`) },
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

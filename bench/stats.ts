// Small statistics for benchmarks: every figure is a median with its spread over runs.
import { cpus, totalmem } from "node:os";

/** @returns The median of the values. */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

/** @returns The p-th percentile (0–100), nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? 0;
}

/** A figure measured over several runs. */
export interface Figure {
  readonly name: string;
  readonly unit: string;
  readonly runs: readonly number[];
  /** Shown instead of median and spread (e.g. latency percentiles). */
  readonly text?: string;
}

/** @returns A number rounded for a table. */
export function round(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** @returns "median (min–max)" with sensible rounding. */
export function show(f: Figure): string {
  if (f.text !== undefined) return f.text;
  return `${round(median(f.runs))} ${f.unit} (${round(Math.min(...f.runs))}–${round(Math.max(...f.runs))})`;
}

/** @returns A line describing this machine and run. */
export function machine(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  return `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
}

/**
 * Peak resident memory of a process, from /proc (VmHWM).
 *
 * @param pid - The process.
 * @returns Bytes.
 */
export async function peakRss(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  if (!kb) throw new Error("no VmHWM in /proc status");
  return Number(kb) * 1024;
}

// CLI start (issue 15, target 1): the real `praxmail` against `node -e 0` in the same run,
// from spawn to exit. `list` reads a home with 10,000 deliveries; `send` mails a 1 KiB file
// into the outbox of a home made by `init` on its defaults.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BIN, measure } from "./parts.js";
import { median, type Figure } from "./stats.js";

const DELIVERIES = 10_000;
/** Concurrent `send` processes filling the big home: their fsyncs overlap. */
const WRITERS = 8;

async function praxmail(args: readonly string[]): Promise<number> {
  const r = await measure(process.execPath, [BIN, ...args]);
  if (r.code !== 0) throw new Error(`praxmail ${args[0] ?? ""} failed: ${r.stderr}`);
  return r.seconds * 1000;
}

async function init(home: string, extra: readonly string[] = []): Promise<void> {
  await praxmail(["init", "--yes", "--no-keyring", "--home", home, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example", ...extra]);
}

/** Fills a home with deliveries the way users make them: `send` with many `--to`. */
async function fill(home: string, file: string, log: (s: string) => void): Promise<void> {
  const started = performance.now();
  const each = DELIVERIES / WRITERS;
  await Promise.all(
    Array.from({ length: WRITERS }, (_, w) =>
      praxmail(["send", "--home", home, "--level", "1", ...Array.from({ length: each }, (_, i) => ["--to", `p${w}-${i}@patient.example`]).flat(), file]),
    ),
  );
  log(`  filled a home with ${DELIVERIES} deliveries in ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

/** The CLI start figures. */
export async function cliBench(runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-cli-"));
  try {
    const file = join(dir, "brief.bin");
    await writeFile(file, Buffer.alloc(1024, 0x61));
    const big = join(dir, "big");
    // x25519 keeps filling quick; listing reads rows and never touches a key.
    await init(big, ["--recipient-type", "x25519"]);
    await fill(big, file, log);
    const home = join(dir, "home");
    await init(home);
    const commands: Record<string, readonly string[]> = {
      version: ["--version"],
      help: ["--help"],
      list: ["list", "deliveries", "--json", "--home", big],
      send: ["send", "--home", home, "--to", "patient@patient.example", file],
    };
    const node: number[] = [];
    const ms: Record<string, number[]> = { version: [], help: [], list: [], send: [] };
    for (let r = 0; r < runs; r++) {
      node.push((await measure(process.execPath, ["-e", "0"])).seconds * 1000);
      for (const [k, args] of Object.entries(commands)) ms[k]!.push(await praxmail(args));
      log(`  cli run ${r + 1}/${runs}: node -e 0 ${node.at(-1)!.toFixed(0)} ms, ${Object.entries(ms).map(([k, v]) => `${k} ${v.at(-1)!.toFixed(0)} ms`).join(", ")}`);
    }
    const ratio = (k: string): number[] => ms[k]!.map((v, i) => v / (node[i] ?? 1));
    log(`  cli: node -e 0 median ${median(node).toFixed(0)} ms`);
    return [
      { name: "CLI: node -e 0 (baseline)", unit: "ms", runs: node },
      { name: "CLI: praxmail --version", unit: "ms", runs: ms.version! },
      { name: "CLI: praxmail --help", unit: "ms", runs: ms.help! },
      { name: `CLI: praxmail list deliveries --json, ${DELIVERIES.toLocaleString("en")} deliveries`, unit: "ms", runs: ms.list! },
      { name: "CLI: praxmail send, 1 KiB file (defaults: level 3, mlkem768x25519)", unit: "ms", runs: ms.send! },
      { name: "CLI: --version / node -e 0 (target ≤ 3)", unit: "×", runs: ratio("version") },
      { name: "CLI: --help / node -e 0 (target ≤ 3)", unit: "×", runs: ratio("help") },
      { name: `CLI: list --json (${DELIVERIES.toLocaleString("en")}) / node -e 0 (target ≤ 6)`, unit: "×", runs: ratio("list") },
      { name: "CLI: send 1 KiB / node -e 0 (target ≤ 5)", unit: "×", runs: ratio("send") },
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

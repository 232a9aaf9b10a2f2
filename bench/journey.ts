// The patient's journeys, counted: runs test/portal.journey.actions.test.ts (real Chromium at
// 390×844, the real serve, approve and invite) with PRAXMAIL_JOURNEY_OUT set, and turns its
// counts into figures with the targets of issue 16. The counts do not vary between runs, so
// the section runs once.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import type { Counted } from "../test/portal.journey.actions.test.js";
import type { Figure } from "./stats.js";

const ROOT = resolve(import.meta.dirname, "../..");

/**
 * @param _runs - Ignored: the counts are the same every run.
 * @param log - Progress.
 * @returns One figure per journey: its actions, with the target in the name.
 */
export async function journeyBench(_runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-journey-"));
  try {
    const out = join(dir, "journey.json");
    await promisify(execFile)(join(ROOT, "node_modules/.bin/vitest"), ["run", "test/portal.journey.actions.test.ts"], {
      cwd: ROOT,
      env: { ...process.env, PRAXMAIL_JOURNEY_OUT: out, PRAXMAIL_REQUIRE_E2E: "1" },
      maxBuffer: 64 * 1024 * 1024,
    });
    const counted = JSON.parse(await readFile(out, "utf8")) as Counted[];
    for (const c of counted) log(`  ${c.journey}: ${c.steps.join(" → ")}`);
    return counted.map((c) => ({
      name: `${c.journey}: actions, ${c.typed} typed, ${c.waits === 0 ? "no wait" : `${c.waits} wait`} (target ≤ ${c.target})`,
      unit: "actions",
      runs: [c.actions],
      // A step's text goes into a Markdown table: no cell may end early.
      text: `${c.actions} (${c.steps.join(" → ").replaceAll("|", "/")})`,
    }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// External tools the tests drive (age, swaks, chromium, postfix). With PRAXMAIL_REQUIRE_E2E=1
// (CI) a missing tool fails the test run; otherwise its tests are skipped with a reason.
import { execFileSync } from "node:child_process";

/**
 * @param name - A command on PATH.
 * @returns Whether it can be run.
 */
export function hasTool(name: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v '${name}'`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * Decides whether the tests that need a tool run.
 *
 * @param name - The command.
 * @returns True to run; false to skip (and a note is printed).
 * @throws If the tool is missing and PRAXMAIL_REQUIRE_E2E=1.
 */
export function needTool(name: string): boolean {
  return needInstalled(name, hasTool(name), `apt-get install ${name}`);
}

/**
 * Decides whether the tests that need something installed run.
 *
 * @param what - What they need, for the message.
 * @param present - Whether it is installed.
 * @param install - How to install it.
 * @returns True to run; false to skip (and a note is printed).
 * @throws If it is missing and PRAXMAIL_REQUIRE_E2E=1.
 */
export function needInstalled(what: string, present: boolean, install: string): boolean {
  if (present) return true;
  if (process.env.PRAXMAIL_REQUIRE_E2E === "1") {
    throw new Error(`${what} is required (PRAXMAIL_REQUIRE_E2E=1) but not installed; .ci/run installs it`);
  }
  console.warn(`skipping tests that need ${what}: not installed (${install})`);
  return false;
}

/**
 * Decides whether tests that need root run (a Postfix instance, for one).
 *
 * @param why - What needs it, for the message.
 * @returns True when running as root.
 * @throws When not root and PRAXMAIL_REQUIRE_E2E=1.
 */
export function needRoot(why: string): boolean {
  if (process.getuid?.() === 0) return true;
  if (process.env.PRAXMAIL_REQUIRE_E2E === "1") throw new Error(`${why} needs root (PRAXMAIL_REQUIRE_E2E=1)`);
  console.warn(`skipping ${why}: not running as root`);
  return false;
}

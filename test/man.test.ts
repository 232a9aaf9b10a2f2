// The man page renders, and says the same as --help: the same commands and options.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { praxmail } from "./helpers/cli.js";
import { needTool } from "./helpers/tools.js";

const PAGE = resolve(import.meta.dirname, "../man/praxmail.1");
const source = readFileSync(PAGE, "utf8");
const plain = source.replace(/\\-/g, "-").replace(/\\e/g, "\\");

/** The man page's part about one command: from `.SS name` to the next `.SS` or `.SH`. */
function section(name: string): string {
  const start = plain.indexOf(`\n.SS ${name}\n`);
  if (start === -1) return "";
  const rest = plain.slice(start + 1);
  const end = rest.slice(1).search(/\n\.S[SH] /);
  return end === -1 ? rest : rest.slice(0, end + 1);
}

function longOptions(text: string): string[] {
  return [...new Set([...text.matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((m) => m[0]))];
}

const COMMON = ["--home", "--json", "--help"];

describe("man/praxmail.1", () => {
  if (needTool("man")) {
    it("renders with man -l without warnings", () => {
      const r = spawnSync("man", ["--warnings", "-l", PAGE], { env: { ...process.env, MANWIDTH: "80", MANPAGER: "cat", PAGER: "cat" }, encoding: "utf8" });
      expect(r.status).toBe(0);
      expect(r.stderr).toBe("");
      for (const h of ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENVIRONMENT", "FILES", "EXIT STATUS", "EXAMPLES"]) {
        expect(r.stdout).toMatch(new RegExp(`^${h}$`, "m"));
      }
      expect(execFileSync("man", ["-l", PAGE], { env: { ...process.env, MANWIDTH: "80" } }).toString()).toContain("PRAXMAIL(1)");
    });
  }

  it("documents exactly the commands that praxmail --help lists", async () => {
    const help = await praxmail(["--help"]);
    expect(help.code).toBe(0);
    const commands = [...help.stdout.matchAll(/^ {2}([a-z]+) /gm)].map((m) => m[1]!).filter((c) => c !== "help");
    expect(commands.length).toBeGreaterThanOrEqual(7);
    const documented = [...plain.matchAll(/^\.SS ([a-z]+)$/gm)].map((m) => m[1]);
    expect(documented).toEqual(commands);
  });

  it.each(["init", "serve", "send", "approve", "list", "revoke", "export", "audit", "gc", "migrate"])("documents every option of %s, and no other", async (cmd) => {
    const help = await praxmail([cmd, "--help"]);
    expect(help.code).toBe(0);
    const fromHelp = longOptions(help.stdout).filter((o) => !COMMON.includes(o));
    const fromMan = longOptions(section(cmd).split("\n").filter((l) => l.startsWith(".BI") || l.startsWith(".B ") || l.startsWith(".BR")).join("\n"));
    const documented = fromMan.filter((o) => !COMMON.includes(o));
    for (const o of fromHelp) expect(plain.includes(o) && section(cmd).includes(o), `${cmd} ${o} in the man page`).toBe(true);
    for (const o of documented) expect(fromHelp, `${cmd} ${o} from the man page in --help`).toContain(o);
    for (const env of help.stdout.match(/PRAXMAIL_[A-Z_]+/g) ?? []) expect(plain).toContain(`.B ${env}\n`);
  });
});

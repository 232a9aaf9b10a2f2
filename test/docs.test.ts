// SECURITY.md (and README.md where it promises something) links each claim to the test that
// proves it, as [“part of the test's name”](test/file). This keeps those links true: the file
// must exist and hold a test whose name contains the text.
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ON_BACKEND } from "./helpers/backends.js";

const ROOT = resolve(import.meta.dirname, "..");
const security = readFileSync(resolve(ROOT, "SECURITY.md"), "utf8");
const LINK = /\[“([^”]+)”\]\(([^)]+)\)/g;
const linksIn = (doc: string): { text: string; file: string }[] => [...doc.matchAll(LINK)].map((m) => ({ text: (m[1] ?? "").replace(/\s+/g, " "), file: m[2] ?? "" }));
const links = linksIn(security);
const readmeLinks = linksIn(readFileSync(resolve(ROOT, "README.md"), "utf8"));

/**
 * The names given to it/describe/test in a test file, as written (template parts included),
 * and those of describeBackends, once for each backend.
 */
function testNames(source: string): string[] {
  const names: string[] = [];
  const call = /\b(it|describe|describeBackends|test)(?:\.(?:each\([^)]*\)|runIf\([^)]*\)|skipIf\([^)]*\)))*\(\s*(["'`])((?:\\.|(?!\2)[^\\])*)\2/g;
  for (const m of source.matchAll(call)) {
    const name = (m[3] ?? "").replace(/\\(.)/g, "$1");
    if (m[1] === "describeBackends") names.push(...Object.values(ON_BACKEND).map((on) => `${name}, ${on}`));
    else names.push(name);
  }
  return names;
}

describe("SECURITY.md", () => {
  it("links its claims to tests: dozens of links, each to a test file", () => {
    expect(links.length).toBeGreaterThan(60);
    for (const l of links) expect(l.file, l.text).toMatch(/^test\/[\w.]+\.test\.ts$/);
  });

  it("every linked test exists under that name", () => {
    const missing = [...links, ...readmeLinks].filter((l) => {
      const path = resolve(ROOT, l.file);
      return !existsSync(path) || !testNames(readFileSync(path, "utf8")).some((n) => n.includes(l.text));
    });
    expect(missing.map((l) => `${l.file}: “${l.text}”`)).toEqual([]);
  });

  it("every row of the threat model's tables names a test", () => {
    const model = security.slice(security.indexOf("## Threat model"), security.indexOf("\n## ", security.indexOf("## Threat model") + 1));
    const rows = model.split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| what") && !l.startsWith("| event"));
    expect(rows.length).toBeGreaterThan(20);
    for (const row of rows) expect(row.includes("](test/") || row.includes("see above"), row.slice(0, 80)).toBe(true);
  });

  it("README.md links its claims to test files too", () => {
    expect(readmeLinks.length).toBeGreaterThanOrEqual(2);
    for (const l of readmeLinks) expect(l.file, l.text).toMatch(/^test\/[\w.]+\.test\.ts$/);
  });

  it("the check can fail: a name no test has is not found", () => {
    expect(testNames(readFileSync(resolve(ROOT, "test/docs.test.ts"), "utf8"))).toContain("every linked test exists under that name");
    expect(testNames(readFileSync(resolve(ROOT, "test/core.test.ts"), "utf8")).some((n) => n.includes("no such test name anywhere"))).toBe(false);
    // A suite of describeBackends is named once for each backend.
    expect(testNames(readFileSync(resolve(ROOT, "test/store.contract.test.ts"), "utf8"))).toContain(`store contract, ${ON_BACKEND.shared}`);
  });
});

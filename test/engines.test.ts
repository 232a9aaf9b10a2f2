// Every installed package must accept the Node version we promise (package.json engines).
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import semver from "semver";
import { describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "..");
const promised = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { engines: { node: string } }).engines.node;

function packages(dir: string, out: { name: string; node: string | undefined }[] = []): typeof out {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name.startsWith(".")) continue;
    const d = join(dir, e.name);
    if (e.name.startsWith("@")) {
      packages(d, out);
      continue;
    }
    const pj = join(d, "package.json");
    if (!existsSync(pj)) continue;
    const p = JSON.parse(readFileSync(pj, "utf8")) as { name: string; version: string; engines?: { node?: string } };
    out.push({ name: `${p.name}@${p.version}`, node: p.engines?.node });
    if (existsSync(join(d, "node_modules"))) packages(join(d, "node_modules"), out);
  }
  return out;
}

describe("dependencies", () => {
  it(`all accept the oldest Node we support (${promised})`, () => {
    const oldest = semver.minVersion(promised)?.version ?? "";
    expect(oldest).toBe("20.19.0");
    const all = packages(join(root, "node_modules"));
    expect(all.length).toBeGreaterThan(100);
    const refusing = all.filter((p) => p.node !== undefined && !semver.satisfies(oldest, p.node)).map((p) => `${p.name} wants node ${p.node ?? ""}`);
    expect(refusing).toEqual([]);
  });
});

// The vendored sample mails must stay identical to the shared ones they were copied from.
import { existsSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const ours = resolve(import.meta.dirname, "fixtures/mail");
const shared = resolve(import.meta.dirname, "../../shared/testdata/mail");

describe.runIf(existsSync(shared))("test/fixtures/mail", () => {
  it("holds exactly the shared sample mails, byte for byte", async () => {
    const names = (await readdir(shared)).filter((n) => n.endsWith(".eml")).sort();
    expect((await readdir(ours)).filter((n) => n.endsWith(".eml")).sort()).toEqual(names);
    for (const n of names) expect((await readFile(join(ours, n))).equals(await readFile(join(shared, n))), n).toBe(true);
  });
});

// How the CLI turns a failure into words and an exit code (src/commands/shared.ts).
import { describe, expect, it } from "vitest";
import { reportError } from "../src/commands/shared.js";
import { PraxmailError, cleanUpAfter } from "../src/core/index.js";
import type { Io } from "../src/commands/definitions.js";

function io(): { io: Io; text: () => string } {
  let err = "";
  return {
    io: { out: () => undefined, err: (t) => (err += t), interactive: false, env: {} },
    text: () => err,
  };
}

describe("reportError", () => {
  it("names the failure, its hint, and each cleanup step that failed after it", async () => {
    const failure = new PraxmailError("file", "cannot write /srv/export/befund.pdf", "free some space");
    const cleanupFailure = Object.assign(new Error("illegal operation on a directory, unlink"), { code: "EISDIR" });
    const e = await cleanUpAfter(failure, [
      () => {
        throw cleanupFailure;
      },
      () => undefined,
    ]);
    const r = io();
    expect(reportError(r.io, e)).toBe(1);
    expect(r.text().split("\n")).toEqual([
      "praxmail: error: cannot write /srv/export/befund.pdf",
      "praxmail: hint: free some space",
      "praxmail: warning: cleaning up after this failed too: Error EISDIR: illegal operation on a directory, unlink",
      "",
    ]);
  });

  it("says nothing of cleanup when every step succeeded, and a usage error exits 2", async () => {
    const e = await cleanUpAfter(new PraxmailError("usage", "--to is required"), [() => undefined]);
    const r = io();
    expect(reportError(r.io, e)).toBe(2);
    expect(r.text()).toBe("praxmail: error: --to is required\n");
  });
});

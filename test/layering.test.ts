// The layering of DESIGN.md §4 is a lint rule (eslint.config.js, no-restricted-imports per
// folder). This proves each refusal fires: it takes the rule exactly as `npm run lint`
// configures it for a file's folder, and lints a one-line import with it (no type
// information needed, so it is fast). The last block does the same for the function length rule.
import { resolve } from "node:path";
import { ESLint, type Linter } from "eslint";
import tseslint from "typescript-eslint";
import { describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "..");
const project = new ESLint({ cwd: ROOT });

/** The messages of the project's import rule for `code` as if it were the file `filePath`. */
async function lintImport(filePath: string, code: string): Promise<string[]> {
  const config = (await project.calculateConfigForFile(filePath)) as Linter.Config;
  const rules = Object.fromEntries(
    ["no-restricted-imports", "no-restricted-syntax"].flatMap((name) => (config.rules?.[name] === undefined ? [] : [[name, config.rules[name]]])),
  );
  expect(rules["no-restricted-imports"], `${filePath} has the layering rule`).toBeDefined();
  const eslint = new ESLint({ cwd: ROOT, overrideConfigFile: true, overrideConfig: { files: ["**/*.ts"], languageOptions: { parser: tseslint.parser }, rules } });
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).map((m) => `${m.ruleId ?? "parse"}: ${m.message}`);
}

/** ESLint's one message for a refused import in `code`, ending in the layering rule's text. */
const refusal = (code: string, text: string) => [
  `no-restricted-imports: '${/"([^"]+)"/.exec(code)?.[1] ?? ""}' import is restricted from being used by a pattern. ${text}`,
];

describe("layering lint rule (DESIGN.md §4)", () => {
  it.each([
    ["src/crypto/x.ts", 'import { formatSize } from "../mail/index.js";', "layering (DESIGN.md §4): src/crypto must not import src/mail."],
    ["src/crypto/x.ts", 'export { formatSize } from "../mail/index.js";', "layering (DESIGN.md §4): src/crypto must not import src/mail."],
    ["src/crypto/x.ts", 'import { Store } from "../store/index.js";', "layering (DESIGN.md §4): src/crypto must not import src/store."],
    ["src/core/x.ts", 'import { startPortal } from "../portal/index.js";', "layering (DESIGN.md §4): src/core must not import src/portal."],
    ["src/core/x.ts", 'import { formatSize } from "../mail/index.js";', "layering (DESIGN.md §4): src/core must not import src/mail."],
    ["src/store/x.ts", 'import type { Context } from "../core/index.js";', "layering (DESIGN.md §4): src/store must not import src/core."],
    ["src/store/x.ts", 'import { recipientOf } from "../crypto/index.js";', "layering (DESIGN.md §4): src/store must not import src/crypto."],
    ["src/mail/process.ts", 'import { renameDurably } from "../store/index.js";', "layering (DESIGN.md §4): src/mail must not import src/store."],
    ["src/mail/transport.ts", 'import { renameDurably } from "../store/index.js";', "layering (DESIGN.md §4): src/mail must not import src/store."],
    ["src/mail/x.ts", 'import { startRelay } from "../relay/server.js";', "layering (DESIGN.md §4): src/mail must not import src/relay."],
    ["src/portal/x.ts", 'import { trustLevel } from "../core/trust.js";', "layering (DESIGN.md §4): src/portal reaches src/core only through core/index.js."],
    ["src/portal/routes/x.ts", 'import { formatSize } from "../../mail/index.js";', "layering (DESIGN.md §4): src/portal must not import src/mail."],
    ["src/portal/x.ts", 'import { verifyPassword } from "../crypto/index.js";', "layering (DESIGN.md §4): src/portal must not import src/crypto."],
    ["src/portal/client/x.ts", 'import { recipientOf } from "../../crypto/index.js";', "layering (DESIGN.md §4): src/portal/client reaches src/crypto only through crypto/secupass.js or crypto/stream-open.js."],
    ["src/portal/client/x.ts", 'import type { Context } from "../../core/index.js";', "layering (DESIGN.md §4): src/portal/client must not import src/core."],
    ["src/relay/x.ts", 'import { startMilter } from "../milter/server.js";', "layering (DESIGN.md §4): src/relay must not import src/milter."],
    ["src/relay/x.ts", 'import { Store } from "../store/index.js";', "layering (DESIGN.md §4): src/relay must not import src/store."],
    ["src/milter/x.ts", 'import { startRelay } from "../relay/server.js";', "layering (DESIGN.md §4): src/milter must not import src/relay."],
    ["src/milter/x.ts", 'import { sourceKey } from "../mail/idempotency.js";', "layering (DESIGN.md §4): src/milter reaches src/mail only through mail/index.js or mail/notify.js."],
    ["src/commands/x.ts", 'import { prepareMessage } from "../mail/process.js";', "layering (DESIGN.md §4): src/commands reaches src/mail only through mail/index.js or mail/notify.js."],
    ["src/commands/x.ts", 'import { MilterSession } from "../milter/session.js";', "layering (DESIGN.md §4): src/commands reaches src/milter only through milter/server.js."],
    ["src/commands/x.ts", 'import { hashPassword } from "../crypto/password.js";', "layering (DESIGN.md §4): src/commands reaches src/crypto only through crypto/index.js."],
    ["src/cli.ts", 'import { Store } from "./store/index.js";', "layering (DESIGN.md §4): src/cli.ts must not import src/store."],
    ["src/core/x.ts", 'import { Counter } from "prom-client";', "metrics (issue 14): only src/commands/metrics.ts imports prom-client; report through the core's Meter (ctx.meter)."],
    ["src/store/x.ts", 'import { Histogram } from "prom-client";', "metrics (issue 14): only src/commands/metrics.ts imports prom-client; report through the core's Meter (ctx.meter)."],
    ["src/portal/x.ts", 'import { Registry } from "prom-client";', "metrics (issue 14): only src/commands/metrics.ts imports prom-client; report through the core's Meter (ctx.meter)."],
    ["src/relay/x.ts", 'import { Counter } from "prom-client";', "metrics (issue 14): only src/commands/metrics.ts imports prom-client; report through the core's Meter (ctx.meter)."],
    ["src/commands/serve.ts", 'import { Registry } from "prom-client";', "metrics (issue 14): only src/commands/metrics.ts imports prom-client; report through the core's Meter (ctx.meter)."],
    ["src/i18n/x.ts", 'import { levelRules } from "../core/index.js";', "layering (DESIGN.md §4): src/i18n must not import src/core."],
    ["src/portal/x.ts", 'import { de } from "../i18n/de.js";', "layering (DESIGN.md §4): src/portal reaches src/i18n only through i18n/index.js."],
  ])("%s: %s is refused", async (file, code, message) => {
    expect(await lintImport(file, code)).toEqual(refusal(code, message));
  });

  it("an import() that leaves its folder is refused, since the import rule cannot see it", async () => {
    expect(await lintImport("src/crypto/x.ts", 'export const m = import("../mail/index.js");')).toEqual([
      "no-restricted-syntax: layering (DESIGN.md §4): import another folder statically, so that the layering rule sees it.",
    ]);
    expect(await lintImport("src/portal/client/x.ts", 'export const m = import("./sodium.js");')).toEqual([]);
  });

  it.each([
    ["src/crypto/x.ts", 'import { recipientOf } from "./identity.js";'],
    ["src/core/x.ts", 'import { Store } from "../store/index.js";\nimport { recipientOf } from "../crypto/index.js";'],
    ["src/mail/transport.ts", 'import { renameDurably } from "../core/index.js";'],
    ["src/portal/routes/x.ts", 'import { PraxmailError } from "../../core/index.js";\nimport type { Store } from "../../store/index.js";'],
    ["src/portal/client/x.ts", 'import { openPayload } from "../../crypto/stream-open.js";'],
    ["src/relay/x.ts", 'import { prepareMessage } from "../mail/index.js";\nimport { verifyPassword } from "../crypto/index.js";'],
    ["src/milter/x.ts", 'import { markSent } from "../core/index.js";'],
    ["src/commands/x.ts", 'import { startRelay } from "../relay/server.js";\nimport { startPortal } from "../portal/index.js";'],
    ["src/cli.ts", 'import { serveCommand } from "./commands/serve.js";'],
    ["src/commands/metrics.ts", 'import { Counter } from "prom-client";\nimport type { Meter } from "../core/index.js";'],
    ["src/mail/x.ts", 'import { translator } from "../i18n/index.js";'],
  ])("%s: %s is allowed", async (file, code) => {
    expect(await lintImport(file, code)).toEqual([]);
  });
});

describe("named steps lint rule (issue 17)", () => {
  /** The project's max-lines-per-function rule for a file in src/, applied to `code`. */
  async function lintLength(code: string): Promise<string[]> {
    const filePath = "src/core/x.ts";
    const config = (await project.calculateConfigForFile(filePath)) as Linter.Config;
    const rule = config.rules?.["max-lines-per-function"];
    expect(rule, "src/ has the function length rule").toBeDefined();
    const eslint = new ESLint({ cwd: ROOT, overrideConfigFile: true, overrideConfig: { files: ["**/*.ts"], languageOptions: { parser: tseslint.parser }, rules: { "max-lines-per-function": rule } } });
    const [result] = await eslint.lintText(code, { filePath });
    return (result?.messages ?? []).map((m) => `${m.ruleId ?? "parse"}: ${m.message}`);
  }
  const body = (n: number): string => Array.from({ length: n }, (_, i) => `  total += ${i};`).join("\n");

  it("refuses a function of more than 60 lines, blank lines and comments not counted", async () => {
    expect(await lintLength(`export function long(): number {\n  let total = 0;\n${body(57)}\n  return total;\n}\n`)).toEqual([
      "max-lines-per-function: Function 'long' has too many lines (61). Maximum allowed is 60.",
    ]);
    expect(await lintLength(`export function short(): number {\n  let total = 0;\n\n  // counts\n${body(56)}\n  return total;\n}\n`)).toEqual([]);
  });
});

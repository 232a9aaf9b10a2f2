// @ts-check
import eslint from "@eslint/js";
import tseslint from "typescript-eslint";

/**
 * The layering of DESIGN.md §4 as lint rules: data flows one way, from the front doors
 * (commands, relay, milter, portal) through mail and core into store and crypto. Each area
 * names the areas it may import; every other area is refused, and an allowed area is reached
 * only through its door (its index.ts; the relay's and the milter's server.ts; mail's notify.ts
 * too, the notifications without the MIME pipeline, which commands that only notify import).
 * test/layering.test.ts proves that each refusal fires.
 */
const AREAS = ["cli", "commands", "relay", "milter", "portal", "mail", "core", "store", "crypto", "i18n"];
/** @type {Record<string, string[]>} */
const DOORS = { core: ["index.js"], crypto: ["index.js"], store: ["index.js"], mail: ["index.js", "notify.js"], portal: ["index.js"], relay: ["server.js"], milter: ["server.js"], i18n: ["index.js"] };
/** @type {Record<string, string[]>} */
const MAY_IMPORT = {
  crypto: [],
  store: [],
  i18n: [],
  core: ["crypto", "store", "i18n"],
  mail: ["core", "crypto", "i18n"],
  relay: ["mail", "core", "crypto"],
  milter: ["mail", "core"],
  portal: ["core", "store", "i18n"],
  commands: ["relay", "milter", "portal", "mail", "core", "store", "crypto", "i18n"],
  cli: ["commands"],
};
/** A relative import of `area` from anywhere in src/ (`../core/x.js`, `../../core/x.js`, `./core/x.js` from cli.ts). */
const into = (/** @type {string} */ area) => `^\\.{1,2}/(\\.\\./)*${area === "cli" ? "cli\\.js$" : `${area}/`}`;

/**
 * The no-restricted-imports rule for code in `from` that may import the areas `allowed`.
 * @param {string} from the folder, as src/… names it in the messages
 * @param {string[]} allowed
 * @param {Record<string, string[]>} [doors] the files of an allowed area this code may import, if not its door
 * @param {boolean} [metrics] whether this code may import prom-client (src/commands/metrics.ts only)
 */
function layer(from, allowed, doors = {}, metrics = false) {
  const patterns = [];
  if (!metrics) {
    patterns.push({ regex: "^prom-client(/|$)", message: "metrics (issue 14): only src/commands/metrics.ts imports prom-client; report through the core's Meter (ctx.meter)." });
  }
  for (const other of AREAS) {
    if (`src/${other}` === from) continue;
    if (!allowed.includes(other)) {
      patterns.push({ regex: into(other), message: `layering (DESIGN.md §4): ${from} must not import src/${other}.` });
      continue;
    }
    const open = doors[other] ?? DOORS[other] ?? [];
    if (open.length === 0) continue;
    patterns.push({
      regex: `${into(other)}(?!(${open.map((f) => f.replace(/\./g, "\\.")).join("|")})$)`,
      message: `layering (DESIGN.md §4): ${from} reaches src/${other} only through ${open.map((f) => `${other}/${f}`).join(" or ")}.`,
    });
  }
  return { "no-restricted-imports": ["error", { patterns }] };
}

/** One config block per area; later blocks replace the rule for the files they name. */
const layering = [
  ...Object.entries(MAY_IMPORT).map(([area, allowed]) => ({
    files: [area === "cli" ? "src/cli.ts" : `src/${area}/**/*.ts`],
    rules: layer(area === "cli" ? "src/cli.ts" : `src/${area}`, allowed),
  })),
  {
    // The browser bundle reuses crypto's isomorphic derivation and STREAM code (DESIGN.md §4)
    // and nothing else: no Node area, and not crypto/index.ts, which pulls in the keyring.
    files: ["src/portal/client/**/*.ts"],
    rules: layer("src/portal/client", ["crypto"], { crypto: ["secupass.js", "stream-open.js"] }),
  },
  {
    // The CLI's definitions are built on every start, before any command runs: they take the
    // few constants and parsers they show or call from leaf modules, not from a door that
    // would load the whole area (and with the bundle, its chunk) into every start.
    files: ["src/commands/definitions.ts"],
    rules: layer("src/commands", MAY_IMPORT.commands, { core: ["index.js", "defaults.js"], crypto: ["identity.js"], milter: ["listen.js"], portal: ["proxies.js"] }),
  },
  {
    // Metrics are an adapter concern: prom-client lives behind the core's Meter interface in
    // this one file, which serve loads only with --metrics.
    files: ["src/commands/metrics.ts"],
    rules: layer("src/commands", MAY_IMPORT.commands, {}, true),
  },
  {
    // no-restricted-imports does not see import(): an import that leaves its folder is static.
    files: ["src/**/*.ts"],
    rules: {
      "no-restricted-syntax": ["error", {
        selector: "ImportExpression[source.value=/^\\.\\./]",
        message: "layering (DESIGN.md §4): import another folder statically, so that the layering rule sees it.",
      }],
    },
  },
];

export default tseslint.config(
  { ignores: ["dist/", ".bench-dist/", "scripts/", "contrib/", "node_modules/", "coverage/", "test-results/", "bin/", "eslint.config.js"] },
  eslint.configs.recommended,
  tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true }],
    },
  },
  {
    // Issue 17: functions are named steps. One that must stay long says why, in a comment
    // on its eslint-disable line.
    files: ["src/**/*.ts"],
    rules: { "max-lines-per-function": ["error", { max: 60, skipBlankLines: true, skipComments: true }] },
  },
  {
    // Tests index into results they have just asserted on.
    files: ["test/**/*.ts", "bench/**/*.ts"],
    rules: { "@typescript-eslint/no-non-null-assertion": "off" },
  },
  ...layering,
);

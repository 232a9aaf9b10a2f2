// Bundles the CLI with esbuild: dist/cli.js holds the commands' definitions and what every
// start needs; each command's action is a chunk in dist/chunks/, loaded when it runs. One
// file per chunk instead of hundreds of modules is most of why `praxmail` starts quickly.
// Native modules and the server stack stay in node_modules, loaded only by the commands that
// use them (fastify and smtp-server by serve; PostgreSQL's client and the AWS SDK by a home
// on the shared backend; prom-client by serve --metrics; @simplewebauthn/server by the first
// passkey): test/cli.start.test.ts checks what each
// command loads. src/commands/definitions.ts must import no door: whatever it imports,
// with all that shares its chunk, loads on every start.
import { readFile, rm } from "node:fs/promises";
import { join, sep } from "node:path";
import { build } from "esbuild";

const root = join(import.meta.dirname, "..");
const src = join(root, "src") + sep;
const pkg = JSON.parse(await readFile(join(root, "package.json"), "utf8"));

/** Our modules have no side effects on import: a door's unused re-exports cost nothing. */
const pureSources = {
  name: "pure-sources",
  setup(b) {
    b.onResolve({ filter: /^\.\.?\// }, async (args) => {
      if (args.pluginData === pureSources || !args.importer.startsWith(src)) return undefined;
      const r = await b.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: pureSources });
      return r.errors.length > 0 || !r.path.startsWith(src) ? r : { ...r, sideEffects: false };
    });
  },
};

await rm(join(root, "dist"), { recursive: true, force: true });
await build({
  entryPoints: { cli: join(root, "src/cli.ts") },
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  splitting: true,
  outdir: join(root, "dist"),
  chunkNames: "chunks/[name]-[hash]",
  sourcemap: true,
  logLevel: "warning",
  define: { PRAXMAIL_VERSION: JSON.stringify(pkg.version) },
  external: ["better-sqlite3", "@napi-rs/keyring", "fastify", "@fastify/*", "smtp-server", "mailparser", "nodemailer", "pino", "postgres", "@aws-sdk/*", "prom-client", "@simplewebauthn/*"],
  // Bundled CommonJS packages call require() for Node's own modules.
  banner: { js: 'import { createRequire as __praxmailRequire } from "node:module";\nconst require = __praxmailRequire(import.meta.url);' },
  plugins: [pureSources],
});

// Builds the portal's browser bundle with esbuild and copies views and styles to dist/.
// The bundle is self-contained (age-encryption, libsodium, the Secu-Pass derivation, our
// code): no CDN.
import { appendFile, cp, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { build } from "esbuild";

const root = join(import.meta.dirname, "..");
const out = join(root, "dist", "portal");
await mkdir(join(out, "static"), { recursive: true });
await build({
  // derive.js is the Secu-Pass worker (client/derive-worker.ts); client/derive.ts starts it
  // from next to app.js.
  entryPoints: { app: join(root, "src/portal/client/main.ts"), derive: join(root, "src/portal/client/derive-worker.ts") },
  bundle: true,
  format: "esm",
  // libsodium (stream.ts imports it dynamically) becomes its own file, fetched only on
  // pages that decrypt files.
  splitting: true,
  target: "es2022",
  platform: "browser",
  minify: true,
  sourcemap: true,
  legalComments: "linked",
  outdir: join(out, "static"),
  entryNames: "[name]",
  chunkNames: "[name]-[hash]",
  logLevel: "warning",
});
// libsodium's ISC notice carries no /*! comment for esbuild to collect; it must travel too.
const sodium = await readFile(join(root, "node_modules/libsodium/LICENSE"), "utf8");
await appendFile(join(out, "static", "app.js.LEGAL.txt"), `\nlibsodium and libsodium-wrappers (sodium-*.js):\n${sodium}`);
await cp(join(root, "src/portal/views"), join(out, "views"), { recursive: true });
await cp(join(root, "src/portal/static"), join(out, "static"), { recursive: true });

// Builds the portal's browser bundle with esbuild and copies views and styles to dist/.
// The bundle is self-contained (age-encryption, the Secu-Pass derivation, our code): no CDN.
import { cp, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { build } from "esbuild";

const root = join(import.meta.dirname, "..");
const out = join(root, "dist", "portal");
await mkdir(join(out, "static"), { recursive: true });
await build({
  entryPoints: [join(root, "src/portal/client/main.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  minify: true,
  sourcemap: true,
  legalComments: "linked",
  outfile: join(out, "static", "app.js"),
  logLevel: "warning",
});
await cp(join(root, "src/portal/views"), join(out, "views"), { recursive: true });
await cp(join(root, "src/portal/static"), join(out, "static"), { recursive: true });

import { join, resolve } from "node:path";
import { exportDelivery } from "../core/index.js";
import { loadIdentityForCli } from "./approve.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { printJson, withContext } from "./shared.js";

export interface ExportFlags extends HomeOptions, JsonOptions {
  out: string;
  identity?: string;
}

/**
 * Runs `praxmail export` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param id - The argument.
 * @param flags - The parsed options.
 */
export async function exportAction(io: Io, id: string, flags: ExportFlags): Promise<void> {
  const r = await withContext(flags, (ctx) => exportDelivery(ctx, id, () => loadIdentityForCli(ctx, io, flags.identity), resolve(flags.out)));
  if (flags.json) printJson(io, r);
  else for (const f of r.files) io.out(`${join(r.dir, f.name)}\n`);
}

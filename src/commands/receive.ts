import { resolve } from "node:path";
import { receiveReply } from "../core/index.js";
import { loadIdentityForCli } from "./approve.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { printJson, withContext } from "./shared.js";

export interface ReceiveFlags extends HomeOptions, JsonOptions {
  out: string;
  identity?: string;
}

/**
 * Runs `praxmail receive` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param id - The argument.
 * @param flags - The parsed options.
 */
export async function receiveAction(io: Io, id: string, flags: ReceiveFlags): Promise<void> {
  const written = await withContext(flags, async (ctx) => receiveReply(ctx, id, await loadIdentityForCli(ctx, io, flags.identity), resolve(flags.out)));
  if (flags.json) printJson(io, { id, files: written });
  else for (const w of written) io.out(`${w}\n`);
}

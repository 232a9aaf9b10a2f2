import { join, resolve } from "node:path";
import { Command } from "commander";
import { exportDelivery } from "../core/index.js";
import { loadIdentityForCli } from "./approve.js";
import { common, printJson, withContext, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

interface ExportFlags extends HomeOptions, JsonOptions {
  out: string;
  identity?: string;
}

/** @returns The `export` command. */
export function exportCommand(io: Io): Command {
  return common(new Command("export"))
    .description("decrypt one delivery with the practice identity into a new folder, under the files' real names")
    .argument("<delivery>", "the delivery id (see praxmail list deliveries)")
    .requiredOption("--out <dir>", "a new or empty folder to write into (made mode 0700, files 0600)")
    .option("--identity <file>", "practice identity file (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .action(async (id: string, flags: ExportFlags) => {
      const r = await withContext(flags, (ctx) => exportDelivery(ctx, id, () => loadIdentityForCli(ctx, io, flags.identity), resolve(flags.out)));
      if (flags.json) printJson(io, r);
      else for (const f of r.files) io.out(`${join(r.dir, f.name)}\n`);
    });
}

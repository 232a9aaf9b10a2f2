import { resolve } from "node:path";
import { Command } from "commander";
import { receiveReply } from "../core/index.js";
import { loadIdentityForCli } from "./approve.js";
import { common, printJson, withContext, type HomeOptions, type Io, type JsonOptions } from "./shared.js";

interface ReceiveFlags extends HomeOptions, JsonOptions {
  out: string;
  identity?: string;
}

/** @returns The `receive` command. */
export function receiveCommand(io: Io): Command {
  return common(new Command("receive"))
    .description("decrypt a patient's reply with the practice identity into a folder")
    .argument("<reply-id>", "the reply (see praxmail inbox)")
    .requiredOption("--out <dir>", "folder to write message.txt and the files into (only there)")
    .option("--identity <file>", "practice identity file (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .action(async (id: string, flags: ReceiveFlags) => {
      const written = await withContext(flags, async (ctx) => receiveReply(ctx, id, await loadIdentityForCli(ctx, io, flags.identity), resolve(flags.out)));
      if (flags.json) printJson(io, { id, files: written });
      else for (const w of written) io.out(`${w}\n`);
    });
}

import QRCode from "qrcode";
import { PraxmailError, createInvite, listInvites, revokeInvite } from "../core/index.js";
import { loadIdentityForCli } from "./approve.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, printJson, printTable, shortTime, withContext } from "./shared.js";

export interface InviteFlags extends HomeOptions, JsonOptions {
  list?: boolean;
  revoke?: string;
  identity?: string;
}

/**
 * Runs `praxmail invite` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param email - The argument.
 * @param flags - The parsed options.
 */
export async function inviteAction(io: Io, email: string | undefined, flags: InviteFlags): Promise<void> {
  const modes = [email !== undefined, flags.list === true, flags.revoke !== undefined].filter(Boolean).length;
  if (modes !== 1) throw new PraxmailError("usage", "give an address, --list, or --revoke ID", "praxmail invite patient@example.org");
  await withContext(flags, async (ctx) => {
    if (flags.list) {
      const rows = await listInvites(ctx);
      if (flags.json) { printJson(io, rows); return; }
      printTable(io, ["ID", "EMAIL", "STATUS", "CREATED", "EXPIRES"], rows.map((i) => [i.id, i.email, i.status, shortTime(i.createdAt), shortTime(i.expiresAt)]));
      return;
    }
    if (flags.revoke !== undefined) {
      const i = await revokeInvite(ctx, flags.revoke);
      if (flags.json) { printJson(io, i); return; }
      io.out(`revoked ${i.id} (${i.email})\n`);
      return;
    }
    const inv = await createInvite(ctx, email ?? "", await loadIdentityForCli(ctx, io, flags.identity));
    // The QR code is for the patient at the counter: it carries the code too (in the
    // #fragment, which the browser never sends), so scanning it fills the whole form.
    const scan = `${inv.link}#code=${inv.code}`;
    if (flags.json) {
      printJson(io, { id: inv.id, email: inv.email, link: inv.link, code: inv.code, scanLink: scan, expiresAt: inv.expiresAt.toISOString() });
      return;
    }
    io.out(`link:    ${inv.link}\ncode:    ${inv.code}\nvalid:   until ${shortTime(inv.expiresAt.toISOString())} (once)\n`);
    if (io.interactive || io.env.PRAXMAIL_QR === "1") io.out(await QRCode.toString(scan, { type: "terminal", small: true }));
    note(io, "praxmail: hand the code (or show the QR code, which holds it) to the patient in person; only its hash is stored");
  });
}

import { PraxmailError, getDelivery, getPatient, revokeDelivery, revokePatient } from "../core/index.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { confirmOrYes, note, printJson, withContext } from "./shared.js";

export interface RevokeFlags extends HomeOptions, JsonOptions {
  patient?: string;
  yes?: boolean;
}

/**
 * Runs `praxmail revoke` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param id - The argument.
 * @param flags - The parsed options.
 */
export async function revokeAction(io: Io, id: string | undefined, flags: RevokeFlags): Promise<void> {
  if ((id === undefined) === (flags.patient === undefined)) {
    throw new PraxmailError("usage", "give either a delivery id or --patient EMAIL", "praxmail revoke d_… or praxmail revoke --patient EMAIL");
  }
  await withContext(flags, async (ctx) => {
    if (id !== undefined) {
      const d = await getDelivery(ctx, id);
      if (!(await confirmOrYes(io, `Revoke ${d.id} to ${d.recipient} and delete its files?`, flags.yes))) { note(io, "praxmail: nothing revoked"); return; }
      const after = await revokeDelivery(ctx, id);
      if (flags.json) { printJson(io, { revoked: [{ id: after.id, recipient: after.recipient, status: after.status }] }); return; }
      io.out(`revoked ${after.id}\n`);
      return;
    }
    const p = await getPatient(ctx, flags.patient ?? "");
    if (!(await confirmOrYes(io, `Revoke ${p.email} and delete all their deliveries?`, flags.yes))) { note(io, "praxmail: nothing revoked"); return; }
    const ids = await revokePatient(ctx, p.email);
    if (flags.json) { printJson(io, { patient: p.email, revoked: ids.map((x) => ({ id: x, recipient: p.email, status: "revoked" })) }); return; }
    io.out(`revoked ${p.email} and ${ids.length} ${ids.length === 1 ? "delivery" : "deliveries"}\n`);
  });
}

// The public door of src/portal.
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Context } from "../core/index.js";
import { buildPortal, defaultAssets, type Assets } from "./app.js";

export { buildPortal, defaultAssets, type Assets } from "./app.js";

/** A running portal. */
export interface RunningPortal {
  readonly address: { readonly host: string; readonly port: number };
  close(): Promise<void>;
}

/**
 * Starts the portal.
 *
 * @param ctx - The core context (its actor should be "portal").
 * @param listen - Address and port; port 0 picks a free one.
 * @param log - Structured log (routes and status codes only, never URLs with tokens).
 * @param assets - Views and static files.
 * @param trustProxy - The load balancers whose X-Forwarded-For is believed (see {@link buildPortal}).
 * @returns The running portal.
 */
export async function startPortal(ctx: Context, listen: { host: string; port: number }, log: Logger, assets: Assets = defaultAssets(), trustProxy: readonly string[] = []): Promise<RunningPortal> {
  const app = await buildPortal(ctx, log, assets, trustProxy);
  await app.listen({ host: listen.host, port: listen.port });
  const addr = app.server.address() as AddressInfo;
  return { address: { host: addr.address, port: addr.port }, close: () => app.close() };
}

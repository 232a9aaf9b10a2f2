// The milter listener: TCP (inet:host:port) or a unix socket, one session per connection.
import { rm } from "node:fs/promises";
import { createServer } from "node:net";
import { serveConnection, type MilterDeps } from "./session.js";
import type { MilterListen } from "./listen.js";

export type { MilterListen } from "./listen.js";

/** A running milter. */
export interface Milter {
  /** `inet:host:port` or `unix:path`, as Postfix's smtpd_milters wants it. */
  readonly address: string;
  readonly port: number | null;
  close(): Promise<void>;
}

/**
 * Starts the milter.
 *
 * @param deps - Core context, transport for reinjected copies, log.
 * @param listen - TCP address or unix socket path.
 * @returns The running milter.
 */
export async function startMilter(deps: MilterDeps, listen: MilterListen): Promise<Milter> {
  const server = createServer((socket) => {
    serveConnection(socket, deps);
  });
  server.maxConnections = 200;
  if ("path" in listen) await rm(listen.path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    const done = (): void => {
      server.off("error", reject);
      resolve();
    };
    if ("path" in listen) server.listen(listen.path, done);
    else server.listen(listen.port, listen.host, done);
  });
  server.on("error", (e) => {
    deps.log.error({ err: { message: e.message } }, "milter server error");
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? (addr).port : null;
  return {
    address: "path" in listen ? `unix:${listen.path}` : `inet:${listen.host}:${String(port)}`,
    port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => {
          resolve();
        });
      }),
  };
}

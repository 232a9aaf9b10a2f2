// Probes for a load balancer in front of several nodes: /healthz says the process answers,
// /readyz whether this node can serve (its database and its blobs answer). They carry no
// session, are never cached, and say only "ok" or "unavailable": the reason (a host, an
// error) goes to the log, once each time readiness changes, not to whoever asks.
import type { FastifyInstance } from "fastify";
import type { Portal } from "../app.js";

/** How long a probe waits for the database or the blobs before calling them unavailable. */
const PROBE_TIMEOUT_MS = 2000;

type Check = "ok" | "unavailable";

/**
 * @param work - A check.
 * @returns Null when it passed within the timeout, else why not.
 */
async function within(work: () => Promise<void>): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => {
    timer = setTimeout(() => {
      resolve(`no answer within ${PROBE_TIMEOUT_MS} ms`);
    }, PROBE_TIMEOUT_MS);
  });
  try {
    return await Promise.race([work().then(() => null), late]);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Registers /healthz and /readyz.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 */
export function probeRoutes(app: FastifyInstance, portal: Portal): void {
  let wasReady: boolean | null = null;
  app.get("/healthz", { config: { probe: true } }, (_req, reply) => reply.type("text/plain").send("ok\n"));
  app.get("/readyz", { config: { probe: true } }, async (_req, reply) => {
    const [database, blobs] = await Promise.all([within(() => portal.ctx.store.ping()), within(() => portal.ctx.store.blobs.ping())]);
    const ready = database === null && blobs === null;
    if (ready !== wasReady) {
      if (ready) portal.log.info({ ready }, "node ready");
      else portal.log.warn({ ready, database, blobs }, "node not ready");
      wasReady = ready;
    }
    const state = (why: string | null): Check => (why === null ? "ok" : "unavailable");
    return reply.code(ready ? 200 : 503).send({ ready, database: state(database), blobs: state(blobs) });
  });
}

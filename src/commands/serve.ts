import { pino } from "pino";
import { ensureWritableHome, initPractice, isInitialised, oneNodeAtATime, purgeSessions, resolveHome, sendReminders } from "../core/index.js";
import { createTransport } from "../mail/index.js";
import { startRelay, type Listen } from "../relay/server.js";
import { startMilter, type MilterListen } from "../milter/server.js";
import { defaultAssets, startPortal } from "../portal/index.js";
import type { HomeOptions, Io } from "./definitions.js";
import type { Metrics } from "./metrics.js";
import { note, openContext } from "./shared.js";

export interface ServeFlags extends HomeOptions {
  smtp: Listen;
  http: Listen;
  milter?: MilterListen;
  /** Prometheus metrics on a listener of their own; off when unset. */
  metrics?: Listen;
  /** Allow a --metrics address other than loopback. */
  metricsRemote?: boolean;
  /** The load balancers whose X-Forwarded-For names the client; nobody when unset. */
  trustProxy?: string[];
}

/** The metrics of --metrics, or null: prom-client loads only when they are asked for. */
async function metricsOf(flags: ServeFlags): Promise<Metrics | null> {
  if (!flags.metrics) return null;
  const { createMetrics } = await import("./metrics.js");
  return createMetrics(flags.metrics, flags.metricsRemote === true);
}

/**
 * Runs `praxmail serve` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param flags - The parsed options.
 */
export async function serveAction(io: Io, flags: ServeFlags): Promise<void> {
  const metrics = await metricsOf(flags);
  const log = pino({ base: { app: "praxmail", pid: process.pid } });
  const home = resolveHome(flags.home);
  if (!isInitialised(home)) {
    await ensureWritableHome(home);
    const r = await initPractice(home, { practiceName: "Praxis", practiceEmail: "praxis@praxis.localhost" });
    log.warn({ home, identity: r.identityStore.kind }, "home was not set up: created it on defaults; run praxmail init to set the practice's name, address and portal URL");
  }
  // Security alarms (src/core/trust.ts) become error lines with a greppable `alarm` field.
  const ctx = {
    ...(await openContext({ home }, "relay")),
    alarm: (event: string, fields: Readonly<Record<string, string | number>>) => {
      log.error({ ...fields, alarm: event }, `alarm: ${event}`);
    },
    ...(metrics ? { meter: metrics.meter } : {}),
  };
  // Before the relay: a metrics address that is taken stops serve before it takes mail.
  const scrape = metrics ? await metrics.listen() : null;
  const transport = createTransport(home, ctx.config.upstream);
  const relay = await startRelay(ctx, transport, flags.smtp, log);
  const portal = await startPortal({ ...ctx, actor: "portal" }, flags.http, log, defaultAssets(), flags.trustProxy ?? []);
  const milter = flags.milter ? await startMilter({ ctx: { ...ctx, actor: "milter" }, transport, log }, flags.milter) : null;
  note(io, `praxmail: relay listening on ${relay.address.host}:${relay.address.port}; mail goes to ${ctx.config.upstream ?? `${home}/outbox/`}`);
  note(io, `praxmail: portal listening on http://${portal.address.host}:${portal.address.port} (public URL ${ctx.config.portalUrl})`);
  if (flags.trustProxy?.length) note(io, `praxmail: portal takes the client's address from X-Forwarded-For of ${flags.trustProxy.join(", ")}`);
  if (milter) note(io, `praxmail: milter listening on ${milter.address}`);
  if (scrape) note(io, `praxmail: metrics listening on http://${scrape.address.host}:${scrape.address.port}/metrics`);
  log.info({ smtp: relay.address, http: portal.address, upstream: ctx.config.upstream !== null, home }, "started");
  // Expiry reminders (deliveries.remindBeforeDays) go out hourly; gc sends them too. Under
  // gc's lock: of several nodes (and a gc running meanwhile) one sends, the others skip.
  const reminders = setInterval(() => {
    oneNodeAtATime(ctx, () => sendReminders({ ...ctx, actor: "serve" })).catch((e: unknown) => {
      log.error({ err: { message: (e as Error).message } }, "reminders failed");
    });
  }, 60 * 60_000);
  // Ended sessions and attempt counters are deleted every 5 minutes; gc does it too.
  const purge = setInterval(() => {
    purgeSessions(ctx).catch((e: unknown) => {
      log.error({ err: { message: (e as Error).message } }, "session purge failed");
    });
  }, 5 * 60_000);
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, "stopping");
      clearInterval(reminders);
      clearInterval(purge);
      void Promise.all([relay.close(), portal.close(), milter?.close(), scrape?.close()])
        .then(() => ctx.store.close())
        .then(resolve);
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}

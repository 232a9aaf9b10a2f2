import { Command, InvalidArgumentError, Option } from "commander";
import { pino } from "pino";
import { ensureWritableHome, initPractice, isInitialised, purgeSessions, resolveHome, sendReminders } from "../core/index.js";
import { createTransport } from "../mail/index.js";
import { startRelay, type Listen } from "../relay/server.js";
import { parseMilterListen, startMilter, type MilterListen } from "../milter/server.js";
import { startPortal } from "../portal/index.js";
import { common, note, openContext, type HomeOptions, type Io } from "./shared.js";

interface ServeFlags extends HomeOptions {
  smtp: Listen;
  http: Listen;
  milter?: MilterListen;
}

function milterArg(v: string): MilterListen {
  try {
    return parseMilterListen(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/**
 * Parses `host:port`, `[v6]:port` or `:port`.
 *
 * @param v - The flag value.
 * @returns Host and port.
 * @throws InvalidArgumentError for anything else.
 */
export function parseListen(v: string): Listen {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new InvalidArgumentError("use HOST:PORT, e.g. 127.0.0.1:2525");
  return { host: m[1] ?? (m[2] || "127.0.0.1"), port };
}

/** @returns The `serve` command. */
export function serveCommand(io: Io): Command {
  return common(new Command("serve"), false)
    .description("run the SMTP relay, the patient portal and (with --milter) the Postfix milter; first run sets up home on defaults")
    .addOption(new Option("--smtp <host:port>", "SMTP relay listen address").env("PRAXMAIL_SMTP").argParser(parseListen).default(parseListen("127.0.0.1:2525"), "127.0.0.1:2525"))
    .addOption(new Option("--http <host:port>", "portal listen address").env("PRAXMAIL_HTTP").argParser(parseListen).default(parseListen("127.0.0.1:8080"), "127.0.0.1:8080"))
    .addOption(new Option("--milter <address>", "also run the Postfix milter on host:port or unix:/path (e.g. 127.0.0.1:8891)").env("PRAXMAIL_MILTER").argParser(milterArg))
    .action(async (flags: ServeFlags) => {
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
      };
      const transport = createTransport(home, ctx.config.upstream);
      const relay = await startRelay(ctx, transport, flags.smtp, log);
      const portal = await startPortal({ ...ctx, actor: "portal" }, flags.http, log);
      const milter = flags.milter ? await startMilter({ ctx: { ...ctx, actor: "milter" }, transport, log }, flags.milter) : null;
      note(io, `praxmail: relay listening on ${relay.address.host}:${relay.address.port}; mail goes to ${ctx.config.upstream ?? `${home}/outbox/`}`);
      note(io, `praxmail: portal listening on http://${portal.address.host}:${portal.address.port} (public URL ${ctx.config.portalUrl})`);
      if (milter) note(io, `praxmail: milter listening on ${milter.address}`);
      log.info({ smtp: relay.address, http: portal.address, upstream: ctx.config.upstream !== null, home }, "started");
      // Expiry reminders (deliveries.remindBeforeDays) go out hourly; gc sends them too.
      const reminders = setInterval(() => {
        sendReminders({ ...ctx, actor: "serve" }).catch((e: unknown) => {
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
          void Promise.all([relay.close(), portal.close(), milter?.close()])
            .then(() => ctx.store.close())
            .then(resolve);
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
    });
}

// The second door of src/mail: the notification mails and the transport that sends them,
// without the relay's MIME pipeline (process.ts and its parsers). The commands that only
// notify import this one, so they neither load nor compile that pipeline (bench "CLI").
import type { Config, Notifier } from "../core/index.js";
import type { Lang } from "../i18n/index.js";
import { renderNotification, withAccent } from "./templates.js";
import { createTransport, type Transport } from "./transport.js";

export { escapeHtml, formatSize, renderNotification, type RenderedMail } from "./templates.js";
export { createTransport, type Envelope, type OutgoingMail, type RawSink, type SentMail, type Transport } from "./transport.js";

/**
 * Creates the notifier the core sends its mails through.
 *
 * @param config - The practice configuration (name, address, the accent of its buttons).
 * @param transport - Where mail goes.
 * @param langOf - The language of a recipient, null while unknown (see {@link renderNotification}).
 * @returns The notifier.
 */
export function createNotifier(config: Config, transport: Transport, langOf: (email: string) => Promise<Lang | null>): Notifier {
  return {
    async send(n) {
      const r = withAccent(renderNotification(n, config.practiceName, await langOf(n.to)), config.portal.accent);
      await transport.send({ from: { name: config.practiceName, address: config.practiceEmail }, to: n.to, ...r });
    },
  };
}

/**
 * @param home - The praxmail home.
 * @param config - Its configuration.
 * @param langOf - The language of a recipient, null while unknown.
 * @returns A notifier over the configured upstream or the outbox.
 */
export function notifierFor(home: string, config: Config, langOf: (email: string) => Promise<Lang | null>): Notifier {
  return createNotifier(config, createTransport(home, config.upstream), langOf);
}

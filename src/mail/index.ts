// The public door of src/mail.
import type { Config, Notifier } from "../core/index.js";
import { renderNotification } from "./templates.js";
import { createTransport, type Transport } from "./transport.js";

export { escapeHtml, formatSize, renderNotification, type RenderedMail } from "./templates.js";
export { createTransport, type Envelope, type OutgoingMail, type RawSink, type SentMail, type Transport } from "./transport.js";

/**
 * Creates the notifier the core sends its mails through.
 *
 * @param config - The practice configuration (name, address).
 * @param transport - Where mail goes.
 * @returns The notifier.
 */
export function createNotifier(config: Config, transport: Transport): Notifier {
  return {
    async send(n) {
      const r = renderNotification(n, config.practiceName);
      await transport.send({ from: { name: config.practiceName, address: config.practiceEmail }, to: n.to, ...r });
    },
  };
}

/**
 * @param home - The praxmail home.
 * @param config - Its configuration.
 * @returns A notifier over the configured upstream or the outbox.
 */
export function notifierFor(home: string, config: Config): Notifier {
  return createNotifier(config, createTransport(home, config.upstream));
}
export { MailRejection, loggableReason } from "./errors.js";
export { applyPolicy, classify, isInternal, type Classification, type Policy } from "./classify.js";
export { deliverPrepared, prepareMessage, type Copy, type Prepared, type ProcessOptions } from "./process.js";

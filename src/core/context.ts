import type { Store } from "../store/index.js";
import type { Config } from "./config.js";
import type { Meter } from "./meter.js";

/** A file as the patient will see it. */
export interface FileSummary {
  readonly name: string;
  readonly size: number;
}

/** A mail the core asks to send; src/mail turns it into text and HTML (de + en). */
export type Notification =
  | {
      readonly kind: "new-delivery";
      readonly to: string;
      readonly level: number;
      readonly link: string;
      /** True when the recipient still has to register and be approved. */
      readonly firstTime: boolean;
      readonly files: readonly FileSummary[];
      readonly expiresAt: Date;
      /** Levels 1–3 only; never set at level 4. */
      readonly subject: string | null;
      readonly message: string | null;
    }
  | { readonly kind: "released"; readonly to: string; readonly loginUrl: string; readonly deliveries: number }
  /** To the patient, after registering. */
  | { readonly kind: "account-created"; readonly to: string; readonly loginUrl: string }
  /** To the patient, after setting the Secu-Pass-Key. */
  | { readonly kind: "secupass-activated"; readonly to: string; readonly safetyCode: string; readonly approved: boolean }
  /** To the patient: a one-time link to set a new Secu-Pass-Key. */
  | { readonly kind: "key-reset"; readonly to: string; readonly link: string; readonly expiresAt: Date }
  /** To the patient, after a new Secu-Pass-Key replaced the old one; the practice approves again. */
  | { readonly kind: "key-changed"; readonly to: string; readonly safetyCode: string }
  /** To the practice: a patient sent a secure reply. */
  | { readonly kind: "reply"; readonly to: string; readonly replyId: string }
  /** To the patient: a delivery expires soon and was never collected. */
  | { readonly kind: "reminder"; readonly to: string; readonly loginUrl: string; readonly expiresAt: Date }
  /** To the practice: a patient waits for approval. */
  | { readonly kind: "approval-needed"; readonly to: string; readonly patient: string; readonly safetyCode: string }
  /** To the practice: an approved patient's approval does not verify; deliveries to them wait. */
  | { readonly kind: "approval-invalid"; readonly to: string; readonly patient: string; readonly reason: string; readonly deliveries: number }
  /** To the practice: an invited patient set the key while older deliveries wait for `praxmail approve`. */
  | { readonly kind: "release-needed"; readonly to: string; readonly patient: string; readonly safetyCode: string; readonly waiting: number }
  /** To the practice, when `notifyOnDownload` is set. */
  | { readonly kind: "downloaded"; readonly to: string; readonly patient: string; readonly deliveryId: string; readonly at: Date };

/** Sends notifications (src/mail implements it). */
export interface Notifier {
  /**
   * @param n - What to send.
   * @throws If the mail was not accepted by upstream or written to the outbox.
   */
  send(n: Notification): Promise<void>;
}

/** What every core operation works with. */
export interface Context {
  readonly home: string;
  readonly config: Config;
  readonly store: Store;
  readonly notifier: Notifier;
  /** Who acts, for the audit log: `cli:<user>`, `relay`, `portal`. */
  readonly actor: string;
  readonly now: () => Date;
  /**
   * Reports a security alarm to the operator's log: an event name to grep for and fields
   * without secrets or addresses. Omitted, alarms go only to the audit log and the practice.
   */
  readonly alarm?: (event: string, fields: Readonly<Record<string, string | number>>) => void;
  /** Counts events for the operator's metrics (serve --metrics); omitted, nothing is counted. */
  readonly meter?: Meter;
}

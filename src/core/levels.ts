// The level policy: what each security level 0–4 means, in one table. Core, mail, the
// milter and `praxmail send` ask it; nothing else compares level numbers.

/** A security level: 0 untagged, 1 link, 2 login, 3 Secu-Pass-Key, 4 also subject and text. */
export type Level = 0 | 1 | 2 | 3 | 4;

/** What happens to the subject of an outgoing copy. */
export type SubjectRule = "unchanged" | "tag-removed" | "neutral";

/** The rules of one level. */
export interface LevelRules {
  readonly level: Level;
  /** Attachments are encrypted into a delivery. */
  readonly encryptsAttachments: boolean;
  /** The subject and the text are encrypted too (and file names stored neutral). */
  readonly encryptsContent: boolean;
  /** What the subject of the mail the recipient gets becomes. */
  readonly subject: SubjectRule;
  /** A neutral notice replaces the text of the mail. */
  readonly noticeReplacesText: boolean;
  /** A delivery is made even when the message has no attachments. */
  readonly deliveryWithoutAttachments: boolean;
  /** The delivery key D rides in the link's #fragment (else it is wrapped to the patient's own key). */
  readonly keyInLink: boolean;
  /** The patient's own key (Secu-Pass-Key) is needed, and the practice approves it first. */
  readonly patientKey: boolean;
  /** The patient logs in to the portal (with the Secu-Pass-Key). */
  readonly login: boolean;
}

/** The table of levels 0–4, indexed by level. */
export const LEVELS: readonly LevelRules[] = [
  { level: 0, encryptsAttachments: false, encryptsContent: false, subject: "unchanged", noticeReplacesText: false, deliveryWithoutAttachments: false, keyInLink: false, patientKey: false, login: false },
  { level: 1, encryptsAttachments: true, encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, deliveryWithoutAttachments: false, keyInLink: true, patientKey: false, login: false },
  { level: 2, encryptsAttachments: true, encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, deliveryWithoutAttachments: false, keyInLink: true, patientKey: false, login: true },
  { level: 3, encryptsAttachments: true, encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, deliveryWithoutAttachments: false, keyInLink: false, patientKey: true, login: true },
  { level: 4, encryptsAttachments: true, encryptsContent: true, subject: "neutral", noticeReplacesText: true, deliveryWithoutAttachments: true, keyInLink: false, patientKey: true, login: true },
];

/** The lowest level at which the patient logs in (for SQL filters in the store). */
export const LOGIN_FROM: Level = 2;
/** The lowest level at which the patient's own key is needed (for SQL filters in the store). */
export const PATIENT_KEY_FROM: Level = 3;

/**
 * The rules of a level.
 *
 * @param level - A level 0–4 (as stored or classified).
 * @throws Error for anything else: a level outside the table is a bug, never a guess.
 */
export function levelRules(level: number): LevelRules {
  const rules = Number.isInteger(level) ? LEVELS[level] : undefined;
  if (!rules) throw new Error(`unknown security level ${level}`);
  return rules;
}

/**
 * Whether a message at this level needs a delivery: never at level 0; at levels 1–3 only with
 * attachments (without, it passes with the tag removed and a warning); at level 4 always.
 *
 * @param level - The message's level.
 * @param hasAttachments - The message has attachments (or files, for `praxmail send`).
 */
export function needsDelivery(level: number, hasAttachments: boolean): boolean {
  const r = levelRules(level);
  return r.encryptsAttachments && (hasAttachments || r.deliveryWithoutAttachments);
}

/**
 * Whether a message that leaves without a delivery gets a warning: the sender tagged it
 * (levels 1–3 without attachments) and it left unencrypted, with the tag removed.
 */
export function warnsWithoutDelivery(level: number, hasAttachments: boolean): boolean {
  return levelRules(level).encryptsAttachments && !needsDelivery(level, hasAttachments);
}

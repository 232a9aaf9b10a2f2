// The catalogues by language. German names the keys; TypeScript refuses a catalogue that
// lacks one, and test/i18n.test.ts checks that each message has the same values.
import { ar } from "./ar.js";
import { de } from "./de.js";
import { en } from "./en.js";
import type { Lang } from "./lang.js";
import { pl } from "./pl.js";
import { ru } from "./ru.js";
import { tr } from "./tr.js";
import { uk } from "./uk.js";

/** The name of a message. */
export type MessageKey = keyof typeof de;

/** One language's messages. */
export type Catalogue = Readonly<Record<MessageKey, string>>;

/** Every catalogue. */
export const CATALOGUES: Readonly<Record<Lang, Catalogue>> = { de, en, tr, ru, uk, pl, ar };

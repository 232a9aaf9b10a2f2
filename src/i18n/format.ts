// Formats a message of a catalogue with FormatJS (ICU MessageFormat): plurals by the
// language's rules, dates in the practice's time zone. Each message is compiled once.
import { IntlMessageFormat, type PrimitiveType } from "intl-messageformat";
import { CATALOGUES, type MessageKey } from "./catalogues.js";
import { LOCALES, dirOf, type Lang } from "./lang.js";

/** The values a message may take. */
export type Values = Readonly<Record<string, PrimitiveType>>;

/** The time zone of every date a patient reads: the practice's. */
const TIME_ZONE = "Europe/Berlin";

/** Named date formats, usable in messages as `{d, date, long}` and by {@link formatDate}. */
const DATE_FORMATS = {
  numeric: { timeZone: TIME_ZONE, day: "numeric", month: "numeric", year: "numeric" },
  long: { timeZone: TIME_ZONE, day: "numeric", month: "long", year: "numeric" },
  stamp: { timeZone: TIME_ZONE, dateStyle: "long", timeStyle: "short" },
} as const satisfies Record<string, Intl.DateTimeFormatOptions>;

/** A named date format. */
export type DateStyle = keyof typeof DATE_FORMATS;

const FORMATS = { date: DATE_FORMATS, time: {}, number: {} };

const compiled = new Map<string, IntlMessageFormat>();

/**
 * Compiles a message once per language and source text.
 *
 * @param lang - The language (its locale picks the plural rules).
 * @param source - The ICU message.
 * @returns The compiled message.
 * @throws If the message is not valid ICU.
 */
export function compile(lang: Lang, source: string): IntlMessageFormat {
  const id = `${lang}\u0000${source}`;
  let mf = compiled.get(id);
  if (mf === undefined) {
    // ignoreTag: "<" in a text is a character, never markup.
    mf = new IntlMessageFormat(source, LOCALES[lang], FORMATS, { ignoreTag: true });
    compiled.set(id, mf);
  }
  return mf;
}

/**
 * Formats one message.
 *
 * @param lang - The language.
 * @param key - The message.
 * @param values - Its values.
 * @returns The text.
 * @throws If a value the message names is missing.
 */
export function format(lang: Lang, key: MessageKey, values?: Values): string {
  return String(compile(lang, CATALOGUES[lang][key]).format(values));
}

/**
 * @param lang - The language.
 * @param d - The date.
 * @param style - One of the named formats.
 * @returns The date as the language writes it, in the practice's time zone.
 */
export function formatDate(lang: Lang, d: Date, style: DateStyle): string {
  return new Intl.DateTimeFormat(LOCALES[lang], DATE_FORMATS[style]).format(d);
}

const UNITS = ["KB", "MB", "GB", "TB"];

/**
 * Formats a byte count for people.
 *
 * @param bytes - The size.
 * @param lang - The language (its decimal mark; bytes in its words).
 * @returns e.g. `16 Bytes`, `1,4 MB` or `1.4 MB`.
 */
export function formatSize(bytes: number, lang: Lang): string {
  if (bytes < 1000) return format(lang, "sizeBytes", { n: bytes });
  let v = bytes / 1000;
  let u = 0;
  while (v >= 1000 && u < UNITS.length - 1) {
    v /= 1000;
    u++;
  }
  return `${new Intl.NumberFormat(LOCALES[lang], { maximumFractionDigits: 1 }).format(v)} ${UNITS[u] ?? ""}`;
}

/** The texts of one language, as views and routes use them. */
export interface Translator {
  /** Formats a message of this language. */
  (key: MessageKey, values?: Values): string;
  readonly lang: Lang;
  readonly dir: "ltr" | "rtl";
  /** Formats a date (see {@link formatDate}). */
  date(d: Date | string, style: DateStyle): string;
  /** Formats a size (see {@link formatSize}). */
  size(bytes: number): string;
}

const translators = new Map<Lang, Translator>();

/**
 * @param lang - The language.
 * @returns Its translator (one per language).
 */
export function translator(lang: Lang): Translator {
  let t = translators.get(lang);
  if (t === undefined) {
    t = Object.assign((key: MessageKey, values?: Values) => format(lang, key, values), {
      lang,
      dir: dirOf(lang),
      date: (d: Date | string, style: DateStyle) => formatDate(lang, typeof d === "string" ? new Date(d) : d, style),
      size: (bytes: number) => formatSize(bytes, lang),
    });
    translators.set(lang, t);
  }
  return t;
}

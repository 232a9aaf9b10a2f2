// The languages, and how a request picks one.

/** The languages the portal and the patients' mails speak; German is the default. */
export const LANGS = ["de", "en", "tr", "ru", "uk", "pl", "ar"] as const;

/** A supported language. */
export type Lang = (typeof LANGS)[number];

/** The locale each language formats dates and numbers in. */
export const LOCALES: Readonly<Record<Lang, string>> = { de: "de-DE", en: "en-GB", tr: "tr-TR", ru: "ru-RU", uk: "uk-UA", pl: "pl-PL", ar: "ar" };

/** The languages written right to left. */
const RTL: ReadonlySet<Lang> = new Set(["ar"]);

/**
 * @param s - Anything, e.g. a cookie or a database value.
 * @returns Whether it names a supported language.
 */
export function isLang(s: unknown): s is Lang {
  return typeof s === "string" && (LANGS as readonly string[]).includes(s);
}

/**
 * @param lang - A language.
 * @returns Its writing direction, for `<html dir>`.
 */
export function dirOf(lang: Lang): "ltr" | "rtl" {
  return RTL.has(lang) ? "rtl" : "ltr";
}

/**
 * The best supported language of an Accept-Language header: by q-value (a missing q is 1,
 * q=0 means "not this"), then by order; a region tag (`tr-TR`) counts for its language.
 *
 * @param header - The header, if any.
 * @returns The language, or null when the header names none we speak.
 */
export function fromAcceptLanguage(header: string | undefined): Lang | null {
  let best: { lang: Lang; q: number } | null = null;
  for (const part of (header ?? "").split(",").slice(0, 32)) {
    const [range = "", ...params] = part.trim().split(";");
    const base = range.trim().toLowerCase().split("-")[0] ?? "";
    const qParam = params.map((p) => p.trim()).find((p) => /^q=/i.test(p));
    const q = qParam === undefined ? 1 : Number(qParam.slice(2));
    if (!isLang(base) || !Number.isFinite(q) || q <= 0 || q > 1) continue;
    if (best === null || q > best.q) best = { lang: base, q };
  }
  return best?.lang ?? null;
}

/**
 * Picks the language of a request: the patient's switch (cookie), then Accept-Language, then
 * German.
 *
 * @param cookie - The `lang` cookie, if set.
 * @param acceptLanguage - The request header.
 * @returns The language.
 */
export function pickLang(cookie: string | undefined, acceptLanguage: string | undefined): Lang {
  if (isLang(cookie)) return cookie;
  return fromAcceptLanguage(acceptLanguage) ?? "de";
}

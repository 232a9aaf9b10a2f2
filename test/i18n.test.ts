// The catalogues of src/i18n: every language has every message with the same values, every
// message compiles and covers its language's plural forms, plurals and dates follow each
// language's rules, and Accept-Language picks the language by q-value.
import { describe, expect, it } from "vitest";
import { CATALOGUES, LANGS, LOCALES, PRACTICE_CATALOGUES, compile, format, formatSize, pickLang, type Lang } from "../src/i18n/index.js";

type Element = ReturnType<ReturnType<typeof compile>["getAst"]>[number];

// The element types of @formatjs/icu-messageformat-parser's AST that name a value.
const KINDS: Readonly<Record<number, string>> = { 1: "argument", 2: "number", 3: "date", 4: "time", 5: "select", 6: "plural" };

/** Each value a message names, with how it is used (`n:plural`), and the option sets of its plurals. */
function valuesOf(lang: Lang, source: string): { values: string[]; plurals: string[][] } {
  const values = new Set<string>();
  const plurals: string[][] = [];
  const walk = (els: readonly Element[]): void => {
    for (const el of els) {
      const kind = KINDS[el.type];
      if (kind !== undefined && "value" in el) values.add(`${el.value}:${kind}`);
      if ("options" in el) {
        if (kind === "plural") plurals.push(Object.keys(el.options).sort());
        for (const o of Object.values(el.options) as { value: Element[] }[]) walk(o.value);
      }
    }
  };
  walk(compile(lang, source).getAst());
  return { values: [...values].sort(), plurals };
}

describe("the catalogues", () => {
  const keys = Object.keys(CATALOGUES.de).sort();

  it("hold 7 languages, German first", () => {
    expect(LANGS).toEqual(["de", "en", "tr", "ru", "uk", "pl", "ar"]);
    expect(keys.length).toBeGreaterThan(150);
  });

  it.each(LANGS.filter((l) => l !== "de"))("%s has every key of German and no other, each with the same ICU values", (lang) => {
    const cat = CATALOGUES[lang] as Readonly<Record<string, string>>;
    expect(Object.keys(cat).sort()).toEqual(keys);
    for (const k of keys) {
      expect(valuesOf(lang, cat[k] ?? "").values, `${lang}.${k}`).toEqual(valuesOf("de", CATALOGUES.de[k as keyof typeof CATALOGUES.de]).values);
      expect(cat[k]?.trim(), `${lang}.${k} is empty`).not.toBe("");
    }
  });

  it.each(LANGS)("every %s message compiles and each plural has every form of the language", (lang) => {
    const needed = new Intl.PluralRules(LOCALES[lang]).resolvedOptions().pluralCategories.slice().sort();
    for (const [k, source] of Object.entries(CATALOGUES[lang])) {
      for (const options of valuesOf(lang, source).plurals) {
        for (const c of needed) expect(options, `${lang}.${k} lacks the plural form ${c}`).toContain(c);
      }
    }
  });

  it("the practice's mails have the same keys and values in German and English", () => {
    expect(Object.keys(PRACTICE_CATALOGUES.en).sort()).toEqual(Object.keys(PRACTICE_CATALOGUES.de).sort());
    for (const [k, source] of Object.entries(PRACTICE_CATALOGUES.de)) {
      expect(valuesOf("en", PRACTICE_CATALOGUES.en[k as keyof typeof PRACTICE_CATALOGUES.en]).values, k).toEqual(valuesOf("de", source).values);
    }
  });

  it("a missing value is an error, not a hole in the text", () => {
    expect(() => format("de", "deliveryTitle")).toThrow(/sender/);
  });
});

describe("plurals by the language's rules", () => {
  const files = (lang: Lang, ns: number[]): string[] => ns.map((n) => format(lang, "fileCount", { n }));

  it("German and English have two forms", () => {
    expect(files("de", [1, 2])).toEqual(["1 Datei", "2 Dateien"]);
    expect(files("en", [1, 2])).toEqual(["1 file", "2 files"]);
  });

  it("Russian, Ukrainian and Polish have one, few and many", () => {
    expect(files("ru", [1, 2, 5, 21, 22, 25, 111])).toEqual(["1 файл", "2 файла", "5 файлов", "21 файл", "22 файла", "25 файлов", "111 файлов"]);
    expect(files("uk", [1, 3, 5, 21, 24, 11])).toEqual(["1 файл", "3 файли", "5 файлів", "21 файл", "24 файли", "11 файлів"]);
    expect(files("pl", [1, 2, 5, 21, 22, 12])).toEqual(["1 plik", "2 pliki", "5 plików", "21 plików", "22 pliki", "12 plików"]);
  });

  it("Arabic has zero, one, two, few, many and other", () => {
    // Digits as Node's ICU writes them for "ar".
    const d = (n: number): string => new Intl.NumberFormat("ar").format(n);
    expect(files("ar", [0, 1, 2, 3, 11, 100])).toEqual(["لا ملفات", "ملف واحد", "ملفان", `${d(3)} ملفات`, `${d(11)} ملفًا`, `${d(100)} ملف`]);
  });

  it("sizes: bytes in the language's words, then units after a localised number", () => {
    expect([formatSize(1, "de"), formatSize(16, "de"), formatSize(1400, "de"), formatSize(1_400_000, "en")]).toEqual(["1 Byte", "16 Bytes", "1,4 KB", "1.4 MB"]);
    expect([formatSize(2, "ru"), formatSize(5, "ru"), formatSize(3, "uk"), formatSize(5, "pl")]).toEqual(["2 байта", "5 байт", "3 байти", "5 bajtów"]);
  });
});

describe("dates in the practice's time zone", () => {
  // 23:30 UTC on New Year's Eve is already 1 January in Berlin.
  const date = new Date("2026-12-31T23:30:00Z");

  it.each([
    ["de", "Der Link ist gültig bis 1. Januar 2027."],
    ["en", "The link is valid until 1 January 2027."],
    ["tr", "Bağlantı şu tarihe kadar geçerlidir: 1 Ocak 2027."],
    ["ru", "Ссылка действует до 1 января 2027 г."],
    ["uk", "Посилання діє до 1 січня 2027 р."],
    ["pl", "Link jest ważny do 1 stycznia 2027."],
  ] as const)("%s", (lang, text) => {
    expect(format(lang, "linkValidUntil", { date })).toBe(text);
  });

  it("Arabic writes the month by name", () => {
    expect(format("ar", "linkValidUntil", { date })).toMatch(/^الرابط صالح حتى .*يناير.*\.$/);
  });
});

describe("Accept-Language", () => {
  it.each([
    [undefined, "de"],
    ["", "de"],
    ["fr-FR, es;q=0.8", "de"],
    ["tr-TR", "tr"],
    ["tr-TR,tr;q=0.9,en-US;q=0.8,en;q=0.7", "tr"],
    ["en;q=0.5, ru;q=0.9", "ru"],
    ["fr, pl;q=0.1", "pl"],
    ["de;q=0, en", "en"],
    ["ar-SY,ar;q=0.9", "ar"],
    ["UK-ua", "uk"],
    ["en;q=1.5, tr;q=0.2", "tr"],
    ["*", "de"],
  ] as const)("%j picks %s", (header, lang) => {
    expect(pickLang(undefined, header)).toBe(lang);
  });

  it("the patient's switch (cookie) wins; an unknown cookie value is ignored", () => {
    expect(pickLang("pl", "tr-TR")).toBe("pl");
    expect(pickLang("xx", "tr-TR")).toBe("tr");
  });
});

// The public door of src/i18n: the languages, their catalogues and the formatter.
export { CATALOGUES, type Catalogue, type MessageKey } from "./catalogues.js";
export { compile, format, formatDate, formatSize, translator, type DateStyle, type Translator, type Values } from "./format.js";
export { LANGS, LOCALES, dirOf, fromAcceptLanguage, isLang, pickLang, type Lang } from "./lang.js";
export { PRACTICE_CATALOGUES, formatPractice, type PracticeKey } from "./practice.js";

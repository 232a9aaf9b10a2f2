// Notification texts from the catalogues of src/i18n. A patient whose language is known
// reads that language only; until then German, with one line of English. Mails to the
// practice are German with English below. Subjects are neutral (no medical content) unless
// the practice chose a subject for a level 1–3 delivery.
import { levelRules, type FileSummary, type Notification } from "../core/index.js";
import { dirOf, formatPractice, translator, type Lang, type PracticeKey, type Translator, type Values } from "../i18n/index.js";

export { formatSize } from "../i18n/index.js";

/** A rendered mail. */
export interface RenderedMail {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** One paragraph: plain text, a link button or a list. */
type Block = string | { readonly button: string; readonly href: string } | { readonly list: readonly string[] };

/** Paragraphs in one language. */
interface Section {
  readonly lang: Lang;
  readonly blocks: readonly Block[];
}

/** What one language says: the subject and the paragraphs. */
interface Letter {
  readonly subject: string;
  readonly blocks: readonly Block[];
  /** The neutral subject, for the line of English (the practice's own subject is not ours to translate). */
  readonly neutral?: string;
}

/** The button colour when the practice chose no accent (the portal's own). */
const DEFAULT_ACCENT = "#0b5cad";
const BUTTON_STYLE = `display:inline-block;padding:12px 20px;background:${DEFAULT_ACCENT};color:#ffffff;text-decoration:none;border-radius:6px;font-weight:bold`;

/**
 * Gives a rendered mail's buttons the practice's accent colour (config `portal.accent`, a
 * checked `#rrggbb` with enough contrast to white text).
 *
 * @param mail - A rendered mail.
 * @param accent - The accent, or null to keep the default.
 * @returns The mail with its buttons in that colour.
 */
export function withAccent(mail: RenderedMail, accent: string | null): RenderedMail {
  if (accent === null) return mail;
  return { ...mail, html: mail.html.replaceAll(`background:${DEFAULT_ACCENT};`, `background:${accent};`) };
}

function renderText(blocks: readonly Block[]): string {
  return blocks
    .map((b) => {
      if (typeof b === "string") return b;
      if ("button" in b) return `${b.button}: ${b.href}`;
      return b.list.map((l) => `  - ${l}`).join("\n");
    })
    .join("\n\n");
}

function renderHtml(blocks: readonly Block[]): string {
  return blocks
    .map((b) => {
      if (typeof b === "string") return `<p>${escapeHtml(b).replace(/\n/g, "<br>")}</p>`;
      if ("button" in b) return `<p><a href="${escapeHtml(b.href)}" style="${BUTTON_STYLE}">${escapeHtml(b.button)}</a></p>`;
      return `<ul>${b.list.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>`;
    })
    .join("\n");
}

/** The sections as plain text, and as HTML where each later section carries its language. */
function renderSections(sections: readonly Section[]): { text: string; html: string } {
  const [first, ...rest] = sections;
  const text = sections.map((s) => renderText(s.blocks)).join("\n\n");
  const html = [
    first ? renderHtml(first.blocks) : "",
    ...rest.map((s) => `<div lang="${s.lang}" dir="${dirOf(s.lang)}">\n${renderHtml(s.blocks)}\n</div>`),
  ].join("\n");
  return { text, html };
}

/** A whole HTML mail: inline styles only, no external images. */
function htmlDocument(subject: string, lang: Lang, body: string): string {
  return `<!doctype html><html lang="${lang}" dir="${dirOf(lang)}"><head><meta charset="utf-8"><title>${escapeHtml(subject)}</title></head><body style="font-family:Arial,Helvetica,sans-serif;font-size:16px;line-height:1.5;color:#1a1a1a;max-width:40em">\n${body}\n</body></html>\n`;
}

function page(subject: string, sections: readonly Section[]): RenderedMail {
  const { text, html } = renderSections(sections);
  return { subject, text: `${text}\n`, html: htmlDocument(subject, sections[0]?.lang ?? "de", html) };
}

/**
 * The sections of a text to a patient: in their language when known; else German and one line
 * of English that says what the mail is and that the portal speaks their language.
 */
function patientSections(lang: Lang | null, write: (t: Translator) => Letter): { subject: string; sections: Section[] } {
  const letter = write(translator(lang ?? "de"));
  const sections: Section[] = [{ lang: lang ?? "de", blocks: letter.blocks }];
  if (lang === null) {
    const en = write(translator("en"));
    sections.push({ lang: "en", blocks: [translator("en")("mailOtherLanguages", { subject: en.neutral ?? en.subject })] });
  }
  return { subject: letter.subject, sections };
}

function patientMail(lang: Lang | null, write: (t: Translator) => Letter): RenderedMail {
  const { subject, sections } = patientSections(lang, (t) => {
    const letter = write(t);
    return { ...letter, blocks: [t("mailHello"), ...letter.blocks, t("mailFooter")] };
  });
  return page(subject, sections);
}

/** A mail to the practice: German, then English under a rule. */
function practiceMail(subject: [PracticeKey, Values], de: readonly Block[], en: readonly Block[]): RenderedMail {
  const title = formatPractice("de", ...subject);
  return {
    subject: title,
    text: `${renderText(de)}\n\n-- English --\n\n${renderText(en)}\n`,
    html: htmlDocument(title, "de", `${renderHtml(de)}\n<hr>\n<div lang="en">\n${renderHtml(en)}\n</div>`),
  };
}

function fileLines(files: readonly FileSummary[], t: Translator): string[] {
  return files.map((f) => `${f.name} (${t.size(f.size)})`);
}

/** How the patient gets at the files, by level and whether they have an account yet. */
function access(t: Translator, level: number, firstTime: boolean): string[] {
  const rules = levelRules(level);
  if (rules.patientKey) return [t(firstTime ? "accessFirstKey" : "accessKey")];
  if (rules.login) return [t(firstTime ? "accessFirstLogin" : "accessLogin")];
  return [];
}

type NewDelivery = Extract<Notification, { kind: "new-delivery" }>;

function newDelivery(n: NewDelivery, practice: string, lang: Lang | null): RenderedMail {
  const showContent = !levelRules(n.level).encryptsContent;
  return patientMail(lang, (t) => {
    const blocks: Block[] = [t("newDeliveryLead", { practice })];
    if (showContent && n.files.length > 0) blocks.push(t("newDeliveryFiles", { n: n.files.length }), { list: fileLines(n.files, t) });
    if (showContent && n.message) {
      blocks.push(n.message);
      if (lang !== null && lang !== "de") blocks.push(t("mailMessageLanguage"));
    }
    blocks.push({ button: t("download"), href: n.link }, t("linkValidUntil", { date: n.expiresAt }), ...access(t, n.level, n.firstTime));
    const neutral = t("newDeliverySubject", { practice });
    return { subject: showContent && n.subject ? n.subject : neutral, neutral, blocks };
  });
}

// Long for a good reason: one case per kind of notification, each naming only its messages.
/**
 * Renders a notification.
 *
 * @param n - What the core asked for.
 * @param practice - The practice's name, shown as the sender.
 * @param lang - The patient's language, or null while unknown (German and a line of English).
 *   Mails to the practice ignore it.
 * @returns Subject, text and HTML.
 */
// eslint-disable-next-line max-lines-per-function -- one case per kind of mail (see above)
export function renderNotification(n: Notification, practice: string, lang: Lang | null = null): RenderedMail {
  switch (n.kind) {
    case "new-delivery":
      return newDelivery(n, practice, lang);
    case "released":
      return patientMail(lang, (t) => ({
        subject: t("releasedSubject", { practice }),
        blocks: [t("releasedLead", { practice, n: n.deliveries }), t("releasedHow"), { button: t("login"), href: n.loginUrl }],
      }));
    case "account-created":
      return patientMail(lang, (t) => ({
        subject: t("accountCreatedSubject", { practice }),
        blocks: [t("accountCreatedLead", { practice }), t("accountCreatedNotYou"), { button: t("login"), href: n.loginUrl }],
      }));
    case "secupass-activated":
      return patientMail(lang, (t) => ({
        subject: t("activatedSubject", { practice }),
        blocks: [t(n.approved ? "activatedApproved" : "activatedPending"), t("activatedCode", { code: n.safetyCode }), t("activatedKeep")],
      }));
    case "key-reset":
      return patientMail(lang, (t) => ({
        subject: t("keyResetSubject", { practice }),
        blocks: [t("keyResetLead"), { button: t("secupassResetTitle"), href: n.link }, t("keyResetKeep")],
      }));
    case "key-changed":
      return patientMail(lang, (t) => ({
        subject: t("keyChangedSubject", { practice }),
        blocks: [t("keyChangedText"), t("activatedCode", { code: n.safetyCode }), t("keyChangedNotYou")],
      }));
    case "reminder":
      return patientMail(lang, (t) => ({
        subject: t("reminderSubject", { practice }),
        blocks: [t("reminderText", { practice, date: n.expiresAt }), { button: t("login"), href: n.loginUrl }],
      }));
    case "approval-needed": {
      const v = { patient: n.patient, code: n.safetyCode };
      const de = (k: PracticeKey): string => formatPractice("de", k, v);
      const en = (k: PracticeKey): string => formatPractice("en", k, v);
      return practiceMail(
        ["approvalNeededSubject", v],
        [de("approvalNeededLead"), de("safetyCode"), de("approvalNeededHow"), `praxmail approve ${n.patient}`],
        [en("approvalNeededLead"), en("safetyCode"), en("approvalNeededHow")],
      );
    }
    case "approval-invalid": {
      const v = { patient: n.patient, reason: n.reason, n: n.deliveries };
      const de = (k: PracticeKey): string => formatPractice("de", k, v);
      const en = (k: PracticeKey): string => formatPractice("en", k, v);
      return practiceMail(
        ["approvalInvalidSubject", v],
        [de("approvalInvalidLead"), de("approvalInvalidReason"), de("approvalInvalidWaiting"), de("approvalInvalidHow"), `praxmail approve ${n.patient}`],
        [en("approvalInvalidLead"), en("approvalInvalidReason"), en("approvalInvalidWaiting"), en("approvalInvalidHow")],
      );
    }
    case "release-needed": {
      const v = { patient: n.patient, code: n.safetyCode, n: n.waiting };
      const de = (k: PracticeKey): string => formatPractice("de", k, v);
      const en = (k: PracticeKey): string => formatPractice("en", k, v);
      return practiceMail(
        ["releaseNeededSubject", v],
        [de("releaseNeededLead"), de("safetyCode"), de("releaseNeededHow"), `praxmail approve ${n.patient}`],
        [en("releaseNeededLead"), en("safetyCode"), en("releaseNeededHow")],
      );
    }
    case "reply":
      return practiceMail(["replySubject", {}], [formatPractice("de", "replyLead"), formatPractice("de", "replyCommand", { id: n.replyId })], [formatPractice("en", "replyLead")]);
    case "downloaded": {
      const v = { patient: n.patient, id: n.deliveryId, at: n.at };
      return practiceMail(["downloadedSubject", v], [formatPractice("de", "downloadedLead", v)], [formatPractice("en", "downloadedLead", v)]);
    }
  }
}

/** What the block in a rewritten mail tells the recipient. */
export interface BlockInput {
  readonly practiceName: string;
  readonly level: number;
  readonly link: string;
  readonly files: readonly FileSummary[];
  readonly expiresAt: Date;
  readonly firstTime: boolean;
}

/**
 * The block that replaces the attachments in a rewritten mail (levels 1–3), with the files,
 * their sizes, the expiry date and the download link: in the recipient's language when
 * known, else German with one line of English.
 *
 * @param b - What to say.
 * @param lang - The recipient's language, or null while unknown.
 * @returns Plain text and an HTML fragment.
 */
export function renderBlock(b: BlockInput, lang: Lang | null = null): { text: string; html: string } {
  const { sections } = patientSections(lang, (t) => ({
    subject: t("newDeliverySubject", { practice: b.practiceName }),
    blocks: [
      t("blockLead", { practice: b.practiceName, n: b.files.length }),
      { list: fileLines(b.files, t) },
      { button: t("download"), href: b.link },
      [t("linkValidUntil", { date: b.expiresAt }), ...access(t, b.level, b.firstTime)].join(" "),
    ],
  }));
  const { text, html } = renderSections(sections);
  const rule = "-".repeat(60);
  const own = sections[0]?.lang ?? "de";
  return {
    text: `${rule}\n${text}\n${rule}\n`,
    html: `<div lang="${own}" dir="${dirOf(own)}" style="border:2px solid #0b5cad;border-radius:8px;padding:12px 16px;margin:0 0 16px 0;font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.45;color:#1a1a1a">\n${html}\n</div>\n`,
  };
}

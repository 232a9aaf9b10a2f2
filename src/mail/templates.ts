// Notification texts. German first, English below, in every mail; subjects are neutral
// (no medical content) unless the practice chose a subject for a level 1–3 delivery.
import { levelRules, type FileSummary, type Notification } from "../core/index.js";

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

/**
 * Formats a byte count for people.
 *
 * @param bytes - The size.
 * @param lang - de uses a decimal comma.
 * @returns e.g. `1,4 MB` or `1.4 MB`.
 */
export function formatSize(bytes: number, lang: "de" | "en"): string {
  const units = [lang === "de" ? "Bytes" : "bytes", "KB", "MB", "GB", "TB"];
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  const n = new Intl.NumberFormat(lang === "de" ? "de-DE" : "en-GB", { maximumFractionDigits: u === 0 ? 0 : 1 }).format(v);
  return `${n} ${units[u] ?? ""}`;
}

function formatDate(d: Date, lang: "de" | "en"): string {
  return d.toLocaleDateString(lang === "de" ? "de-DE" : "en-GB", {
    timeZone: "Europe/Berlin",
    day: "numeric",
    month: "long",
    year: "numeric",
  });
}

/** One language's paragraphs; a paragraph is plain text or a link button. */
type Block = string | { readonly button: string; readonly href: string } | { readonly list: readonly string[] };

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
      if ("button" in b) {
        return `<p><a href="${escapeHtml(b.href)}" style="display:inline-block;padding:12px 20px;background:#0b5cad;color:#ffffff;text-decoration:none;border-radius:6px;font-weight:bold">${escapeHtml(b.button)}</a></p>`;
      }
      return `<ul>${b.list.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>`;
    })
    .join("\n");
}

function compose(subject: string, de: readonly Block[], en: readonly Block[]): RenderedMail {
  const text = `${renderText(de)}\n\n-- English --\n\n${renderText(en)}\n`;
  const html = `<!doctype html><html lang="de"><head><meta charset="utf-8"><title>${escapeHtml(subject)}</title></head><body style="font-family:Arial,Helvetica,sans-serif;font-size:16px;line-height:1.5;color:#1a1a1a;max-width:40em">\n${renderHtml(de)}\n<hr>\n<div lang="en">\n${renderHtml(en)}\n</div>\n</body></html>\n`;
  return { subject, text, html };
}

function fileLines(files: readonly FileSummary[], lang: "de" | "en"): string[] {
  return files.map((f) => `${f.name} (${formatSize(f.size, lang)})`);
}

const FOOTER_DE = "Diese E-Mail wurde automatisch erzeugt. Bitte antworten Sie nicht darauf.";
const FOOTER_EN = "This e-mail was generated automatically. Please do not reply to it.";

type NewDelivery = Extract<Notification, { kind: "new-delivery" }>;

function newDelivery(n: NewDelivery, practiceName: string): RenderedMail {
  const neutral = `Neue sichere Nachricht von ${practiceName}`;
  const showContent = !levelRules(n.level).encryptsContent;
  const de: Block[] = ["Guten Tag,", `${practiceName} hat Ihnen eine verschlüsselte Nachricht gesendet.`];
  const en: Block[] = ["Hello,", `${practiceName} has sent you an encrypted message.`];
  if (showContent && n.files.length > 0) {
    de.push(n.files.length === 1 ? "Datei:" : "Dateien:", { list: fileLines(n.files, "de") });
    en.push(n.files.length === 1 ? "File:" : "Files:", { list: fileLines(n.files, "en") });
  }
  if (showContent && n.message) {
    de.push(n.message);
    en.push("(The practice's message above is in the language the practice wrote it in.)");
  }
  const [hintDe, hintEn] = access(n.level, n.firstTime);
  de.push({ button: "Herunterladen", href: n.link }, `Der Link ist gültig bis ${formatDate(n.expiresAt, "de")}.`);
  en.push({ button: "Download", href: n.link }, `The link is valid until ${formatDate(n.expiresAt, "en")}.`);
  if (hintDe && hintEn) {
    de.push(hintDe);
    en.push(hintEn);
  }
  de.push(FOOTER_DE);
  en.push(FOOTER_EN);
  return compose(showContent && n.subject ? n.subject : neutral, de, en);
}

// Long for a good reason: a catalogue, one case per kind of notification holding only its
// German and English text; split up, the texts would scatter.
/**
 * Renders a notification.
 *
 * @param n - What the core asked for.
 * @param practiceName - Shown as the sender.
 * @returns Subject, text and HTML.
 */
// eslint-disable-next-line max-lines-per-function -- a catalogue of texts (see above)
export function renderNotification(n: Notification, practiceName: string): RenderedMail {
  switch (n.kind) {
    case "new-delivery":
      return newDelivery(n, practiceName);
    case "released":
      return compose(
        `Zustellung freigegeben – ${practiceName}`,
        [
          "Guten Tag,",
          `${practiceName} hat Ihren Zugang freigegeben. ${n.deliveries === 1 ? "Eine Nachricht liegt" : `${n.deliveries} Nachrichten liegen`} für Sie bereit.`,
          "Melden Sie sich mit Ihrer E-Mail-Adresse und Ihrem Passwort an. Zum Öffnen der Dateien brauchen Sie Ihren Secu-Pass-Key.",
          { button: "Anmelden", href: n.loginUrl },
          FOOTER_DE,
        ],
        [
          "Hello,",
          `${practiceName} has approved your access. ${n.deliveries === 1 ? "One message is" : `${n.deliveries} messages are`} waiting for you.`,
          "Log in with your e-mail address and password. You need your Secu-Pass-Key to open the files.",
          { button: "Log in", href: n.loginUrl },
          FOOTER_EN,
        ],
      );
    case "account-created":
      return compose(
        `Konto angelegt – ${practiceName}`,
        [
          "Guten Tag,",
          `Ihr Konto für sichere Nachrichten von ${practiceName} ist angelegt. Sie melden sich künftig mit dieser E-Mail-Adresse und Ihrem Passwort an.`,
          "Falls Sie kein Konto angelegt haben, sagen Sie bitte Ihrer Praxis Bescheid.",
          { button: "Anmelden", href: n.loginUrl },
          FOOTER_DE,
        ],
        [
          "Hello,",
          `Your account for secure messages from ${practiceName} has been created. From now on you log in with this e-mail address and your password.`,
          "If you did not create an account, please tell your practice.",
          { button: "Log in", href: n.loginUrl },
          FOOTER_EN,
        ],
      );
    case "secupass-activated":
      return compose(
        `Secu-Pass aktiviert – ${practiceName}`,
        [
          "Guten Tag,",
          n.approved
            ? "Ihr Secu-Pass-Key ist aktiviert, und Ihr Zugang ist freigegeben. Sie können Ihre Nachrichten jetzt öffnen."
            : "Ihr Secu-Pass-Key ist aktiviert. Ihre Praxis gibt Ihren Zugang nun frei; Sie erhalten dann eine E-Mail.",
          `Ihr Sicherheitscode lautet ${n.safetyCode}. Die Praxis sieht denselben Code und kann ihn mit Ihnen vergleichen.`,
          "Bewahren Sie Ihren Secu-Pass-Key sicher auf. Die Praxis kann ihn nicht wiederherstellen.",
          FOOTER_DE,
        ],
        [
          "Hello,",
          n.approved
            ? "Your Secu-Pass-Key is active and your access is approved. You can open your messages now."
            : "Your Secu-Pass-Key is active. Your practice will now approve your access; you will get an e-mail.",
          `Your safety code is ${n.safetyCode}. The practice sees the same code and can compare it with you.`,
          "Keep your Secu-Pass-Key safe. The practice cannot recover it.",
          FOOTER_EN,
        ],
      );
    case "approval-needed":
      return compose(
        `Freigabe erforderlich: ${n.patient}`,
        [
          `${n.patient} hat einen Secu-Pass-Key angelegt und wartet auf die Freigabe.`,
          `Sicherheitscode: ${n.safetyCode}`,
          "Vergleichen Sie den Code mit dem, den die Patientin oder der Patient sieht (persönlich oder am Telefon), und geben Sie den Zugang dann frei:",
          `praxmail approve ${n.patient}`,
        ],
        [`${n.patient} has set a Secu-Pass-Key and waits for approval.`, `Safety code: ${n.safetyCode}`, "Compare the code with the one the patient sees, then run the command above."],
      );
    case "password-reset":
      return compose(
        `Passwort zurücksetzen – ${practiceName}`,
        [
          "Guten Tag,",
          "Sie haben ein neues Passwort für Ihr Konto angefordert. Der Link gilt 30 Minuten und nur einmal.",
          { button: "Neues Passwort festlegen", href: n.link },
          "Ihr Secu-Pass-Key bleibt dabei unverändert. Falls Sie nichts angefordert haben, können Sie diese E-Mail ignorieren.",
          FOOTER_DE,
        ],
        [
          "Hello,",
          "You asked for a new password for your account. The link is valid for 30 minutes and once only.",
          { button: "Set a new password", href: n.link },
          "Your Secu-Pass-Key stays as it is. If you did not ask for this, you can ignore this e-mail.",
          FOOTER_EN,
        ],
      );
    case "password-changed":
      return compose(
        `Passwort geändert – ${practiceName}`,
        ["Guten Tag,", "Das Passwort Ihres Kontos wurde geändert, und alle Anmeldungen wurden beendet. Falls Sie das nicht waren, sagen Sie bitte sofort Ihrer Praxis Bescheid.", FOOTER_DE],
        ["Hello,", "The password of your account was changed and every session was ended. If this was not you, please tell your practice at once.", FOOTER_EN],
      );
    case "reply":
      return compose(
        "Neue sichere Antwort eines Patienten",
        ["Eine Patientin oder ein Patient hat eine verschlüsselte Antwort gesendet. Öffnen mit:", `praxmail receive ${n.replyId} --out ORDNER`],
        ["A patient sent an encrypted reply. Open it with the command above (praxmail inbox lists all replies)."],
      );
    case "reminder":
      return compose(
        `Erinnerung: Nachricht von ${practiceName}`,
        [
          "Guten Tag,",
          `eine verschlüsselte Nachricht von ${practiceName} wartet noch auf Sie. Sie ist abrufbar bis ${formatDate(n.expiresAt, "de")}; danach wird sie gelöscht.`,
          { button: "Anmelden", href: n.loginUrl },
          FOOTER_DE,
        ],
        [
          "Hello,",
          `an encrypted message from ${practiceName} is still waiting for you. It can be collected until ${formatDate(n.expiresAt, "en")}; after that it is deleted.`,
          { button: "Log in", href: n.loginUrl },
          FOOTER_EN,
        ],
      );
    case "approval-invalid":
      return compose(
        `ALARM: Freigabe ungültig: ${n.patient}`,
        [
          `Die gespeicherte Freigabe von ${n.patient} lässt sich nicht prüfen: Der Schlüssel in der Datenbank ist nicht der, den die Praxis freigegeben hat, oder die Signatur fehlt. Jemand könnte die Datenbank verändert haben.`,
          `Grund: ${n.reason}`,
          `${n.deliveries === 1 ? "Eine Zustellung wird" : `${n.deliveries} Zustellungen werden`} nicht für den Schlüssel verschlüsselt und ${n.deliveries === 1 ? "wartet" : "warten"} auf Freigabe.`,
          "Prüfen Sie die Datenbank (praxmail audit --verify, praxmail doctor). Rufen Sie die Patientin oder den Patienten an, vergleichen Sie den Sicherheitscode und geben Sie erst dann wieder frei:",
          `praxmail approve ${n.patient}`,
        ],
        [
          `The stored approval of ${n.patient} does not verify: the key in the database is not the one the practice approved, or the signature is missing. Someone may have altered the database.`,
          `Reason: ${n.reason}`,
          `${n.deliveries} ${n.deliveries === 1 ? "delivery is" : "deliveries are"} not encrypted to that key and wait for approval.`,
          "Check the database, call the patient, compare the safety code, and only then run the command above.",
        ],
      );
    case "release-needed":
      return compose(
        `Freigabe erforderlich: ${n.patient} (${n.waiting} wartend)`,
        [
          `${n.patient} hat mit einer Einladung einen Secu-Pass-Key angelegt. ${n.waiting === 1 ? "Eine ältere Zustellung wartet" : `${n.waiting} ältere Zustellungen warten`} noch auf die Freigabe durch die Praxis.`,
          `Sicherheitscode: ${n.safetyCode}`,
          "Vergleichen Sie den Code mit dem, den die Patientin oder der Patient sieht, und geben Sie die Zustellungen frei:",
          `praxmail approve ${n.patient}`,
        ],
        [
          `${n.patient} has set a Secu-Pass-Key with an invite. ${n.waiting} older ${n.waiting === 1 ? "delivery waits" : "deliveries wait"} for the practice's approval.`,
          `Safety code: ${n.safetyCode}`,
          "Compare the code with the one the patient sees, then run the command above.",
        ],
      );
    case "downloaded":
      return compose(
        `Abgerufen: ${n.deliveryId}`,
        [`${n.patient} hat die Zustellung ${n.deliveryId} am ${formatDate(n.at, "de")} zum ersten Mal abgerufen.`],
        [`${n.patient} first downloaded delivery ${n.deliveryId} on ${formatDate(n.at, "en")}.`],
      );
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

function access(level: number, firstTime: boolean): [string | null, string | null] {
  const rules = levelRules(level);
  if (rules.patientKey && firstTime) {
    return [
      "Beim ersten Abruf legen Sie ein Konto und Ihren persönlichen Secu-Pass-Key an. Danach gibt Ihre Praxis Ihren Zugang frei; Sie erhalten dann eine E-Mail.",
      "The first time, you create an account and your personal Secu-Pass-Key. Your practice then approves your access, and you get an e-mail.",
    ];
  }
  if (rules.patientKey) return ["Zum Öffnen brauchen Sie Ihr Passwort und Ihren Secu-Pass-Key.", "You need your password and your Secu-Pass-Key to open them."];
  if (rules.login && firstTime) return ["Beim ersten Abruf legen Sie ein Konto mit Passwort an.", "The first time, you create an account with a password."];
  if (rules.login) return ["Zum Öffnen melden Sie sich mit Ihrer E-Mail-Adresse und Ihrem Passwort an.", "To open them, log in with your e-mail address and password."];
  return [null, null];
}

/**
 * The block that replaces the attachments in a rewritten mail (levels 1–3): German first,
 * English below, with the files, their sizes, the expiry date and the download link.
 *
 * @param b - What to say.
 * @returns Plain text and an HTML fragment.
 */
export function renderBlock(b: BlockInput): { text: string; html: string } {
  const n = b.files.length;
  const [hintDe, hintEn] = access(b.level, b.firstTime);
  const de: Block[] = [
    `${b.practiceName} hat ${n === 1 ? "die Datei" : `${n} Dateien`} dieser Nachricht verschlüsselt bereitgestellt:`,
    { list: fileLines(b.files, "de") },
    { button: "Herunterladen", href: b.link },
    `Der Link ist gültig bis ${formatDate(b.expiresAt, "de")}.${hintDe ? ` ${hintDe}` : ""}`,
  ];
  const en: Block[] = [
    `${b.practiceName} has made ${n === 1 ? "the file" : `${n} files`} of this message available in encrypted form:`,
    { list: fileLines(b.files, "en") },
    { button: "Download", href: b.link },
    `The link is valid until ${formatDate(b.expiresAt, "en")}.${hintEn ? ` ${hintEn}` : ""}`,
  ];
  const rule = "-".repeat(60);
  const text = `${rule}\n${renderText(de)}\n\n(English)\n${renderText(en)}\n${rule}\n`;
  const html = `<div style="border:2px solid #0b5cad;border-radius:8px;padding:12px 16px;margin:0 0 16px 0;font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.45;color:#1a1a1a">\n${renderHtml(de)}\n<hr>\n<div lang="en">\n${renderHtml(en)}\n</div>\n</div>\n`;
  return { text, html };
}


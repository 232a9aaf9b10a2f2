// Mails to the practice's staff: German, with English below for an admin who reads no German.
// Not for patients, so not in the seven patient languages.
import { compile, type Values } from "./format.js";

const de = {
  approvalNeededSubject: "Freigabe erforderlich: {patient}",
  approvalNeededLead: "{patient} hat einen Secu-Pass-Key angelegt und wartet auf die Freigabe.",
  safetyCode: "Sicherheitscode: {code}",
  approvalNeededHow: "Vergleichen Sie den Code mit dem, den die Patientin oder der Patient sieht (persönlich oder am Telefon), und geben Sie den Zugang dann frei:",
  approvalInvalidSubject: "ALARM: Freigabe ungültig: {patient}",
  approvalInvalidLead: "Die gespeicherte Freigabe von {patient} lässt sich nicht prüfen: Der Schlüssel in der Datenbank ist nicht der, den die Praxis freigegeben hat, oder die Signatur fehlt. Jemand könnte die Datenbank verändert haben.",
  approvalInvalidReason: "Grund: {reason}",
  approvalInvalidWaiting: "{n, plural, one {Eine Zustellung wird nicht für den Schlüssel verschlüsselt und wartet} other {# Zustellungen werden nicht für den Schlüssel verschlüsselt und warten}} auf Freigabe.",
  approvalInvalidHow: "Prüfen Sie die Datenbank (praxmail audit --verify, praxmail doctor). Rufen Sie die Patientin oder den Patienten an, vergleichen Sie den Sicherheitscode und geben Sie erst dann wieder frei:",
  releaseNeededSubject: "Freigabe erforderlich: {patient} ({n} wartend)",
  releaseNeededLead: "{patient} hat mit einer Einladung einen Secu-Pass-Key angelegt. {n, plural, one {Eine ältere Zustellung wartet} other {# ältere Zustellungen warten}} noch auf die Freigabe durch die Praxis.",
  releaseNeededHow: "Vergleichen Sie den Code mit dem, den die Patientin oder der Patient sieht, und geben Sie die Zustellungen frei:",
  replySubject: "Neue sichere Antwort eines Patienten",
  replyLead: "Eine Patientin oder ein Patient hat eine verschlüsselte Antwort gesendet. Öffnen mit:",
  replyCommand: "praxmail receive {id} --out ORDNER",
  downloadedSubject: "Abgerufen: {id}",
  downloadedLead: "{patient} hat die Zustellung {id} am {at, date, long} zum ersten Mal abgerufen.",
} as const;

/** The name of a message to the practice. */
export type PracticeKey = keyof typeof de;

const en: Readonly<Record<PracticeKey, string>> = {
  approvalNeededSubject: "Approval needed: {patient}",
  approvalNeededLead: "{patient} has set a Secu-Pass-Key and waits for approval.",
  safetyCode: "Safety code: {code}",
  approvalNeededHow: "Compare the code with the one the patient sees, then run the command above.",
  approvalInvalidSubject: "ALARM: approval invalid: {patient}",
  approvalInvalidLead: "The stored approval of {patient} does not verify: the key in the database is not the one the practice approved, or the signature is missing. Someone may have altered the database.",
  approvalInvalidReason: "Reason: {reason}",
  approvalInvalidWaiting: "{n, plural, one {# delivery is} other {# deliveries are}} not encrypted to that key and wait for approval.",
  approvalInvalidHow: "Check the database, call the patient, compare the safety code, and only then run the command above.",
  releaseNeededSubject: "Approval needed: {patient} ({n} waiting)",
  releaseNeededLead: "{patient} has set a Secu-Pass-Key with an invite. {n, plural, one {# older delivery waits} other {# older deliveries wait}} for the practice's approval.",
  releaseNeededHow: "Compare the code with the one the patient sees, then run the command above.",
  replySubject: "New secure reply from a patient",
  replyLead: "A patient sent an encrypted reply. Open it with the command above (praxmail inbox lists all replies).",
  replyCommand: "praxmail receive {id} --out FOLDER",
  downloadedSubject: "Downloaded: {id}",
  downloadedLead: "{patient} first downloaded delivery {id} on {at, date, long}.",
};

/** The practice's catalogues (test/i18n.test.ts checks that both have the same keys and values). */
export const PRACTICE_CATALOGUES: Readonly<Record<"de" | "en", Readonly<Record<PracticeKey, string>>>> = { de, en };

/**
 * Formats a message to the practice.
 *
 * @param lang - de or en.
 * @param key - The message.
 * @param values - Its values.
 * @returns The text.
 */
export function formatPractice(lang: "de" | "en", key: PracticeKey, values?: Values): string {
  return String(compile(lang, PRACTICE_CATALOGUES[lang][key]).format(values));
}

// The specification of security levels 0–4: one row per level (and per attachment case),
// every property of the level policy in src/core/levels.ts.
import { describe, expect, it } from "vitest";
import { LEVELS, LOGIN_FROM, PATIENT_KEY_FROM, levelRules, needsDelivery, warnsWithoutDelivery, type LevelRules } from "../src/core/index.js";

type Row = Omit<LevelRules, "level"> & { level: number; attachments: boolean; delivery: boolean; warning: boolean };

// prettier-ignore
const SPEC: Row[] = [
  // level attachments  delivery warning | encrypts att. content | subject        notice | key in link patient key login | delivery w/o att.
  { level: 0, attachments: false, delivery: false, warning: false, encryptsAttachments: false, encryptsContent: false, subject: "unchanged",   noticeReplacesText: false, keyInLink: false, patientKey: false, login: false, deliveryWithoutAttachments: false },
  { level: 0, attachments: true,  delivery: false, warning: false, encryptsAttachments: false, encryptsContent: false, subject: "unchanged",   noticeReplacesText: false, keyInLink: false, patientKey: false, login: false, deliveryWithoutAttachments: false },
  { level: 1, attachments: false, delivery: false, warning: true,  encryptsAttachments: true,  encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, keyInLink: true,  patientKey: false, login: false, deliveryWithoutAttachments: false },
  { level: 1, attachments: true,  delivery: true,  warning: false, encryptsAttachments: true,  encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, keyInLink: true,  patientKey: false, login: false, deliveryWithoutAttachments: false },
  { level: 2, attachments: false, delivery: false, warning: true,  encryptsAttachments: true,  encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, keyInLink: true,  patientKey: false, login: true,  deliveryWithoutAttachments: false },
  { level: 2, attachments: true,  delivery: true,  warning: false, encryptsAttachments: true,  encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, keyInLink: true,  patientKey: false, login: true,  deliveryWithoutAttachments: false },
  { level: 3, attachments: false, delivery: false, warning: true,  encryptsAttachments: true,  encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, keyInLink: false, patientKey: true,  login: true,  deliveryWithoutAttachments: false },
  { level: 3, attachments: true,  delivery: true,  warning: false, encryptsAttachments: true,  encryptsContent: false, subject: "tag-removed", noticeReplacesText: false, keyInLink: false, patientKey: true,  login: true,  deliveryWithoutAttachments: false },
  { level: 4, attachments: false, delivery: true,  warning: false, encryptsAttachments: true,  encryptsContent: true,  subject: "neutral",     noticeReplacesText: true,  keyInLink: false, patientKey: true,  login: true,  deliveryWithoutAttachments: true },
  { level: 4, attachments: true,  delivery: true,  warning: false, encryptsAttachments: true,  encryptsContent: true,  subject: "neutral",     noticeReplacesText: true,  keyInLink: false, patientKey: true,  login: true,  deliveryWithoutAttachments: true },
];

describe("level policy", () => {
  it.each(SPEC)("level $level, attachments $attachments: every rule as specified", ({ attachments, delivery, warning, ...rules }) => {
    expect(levelRules(rules.level)).toEqual(rules);
    expect(needsDelivery(rules.level, attachments)).toBe(delivery);
    expect(warnsWithoutDelivery(rules.level, attachments)).toBe(warning);
  });

  it("the table holds exactly levels 0–4, in order", () => {
    expect(LEVELS.map((r) => r.level)).toEqual([0, 1, 2, 3, 4]);
  });

  it("the SQL thresholds are the lowest levels with login and with the patient's key", () => {
    expect(LOGIN_FROM).toBe(LEVELS.find((r) => r.login)?.level);
    expect(PATIENT_KEY_FROM).toBe(LEVELS.find((r) => r.patientKey)?.level);
    for (const r of LEVELS) {
      expect(r.login).toBe(r.level >= LOGIN_FROM);
      expect(r.patientKey).toBe(r.level >= PATIENT_KEY_FROM);
      expect(r.keyInLink).toBe(r.encryptsAttachments && !r.patientKey);
    }
  });

  it.each([-1, 5, 2.5, Number.NaN])("refuses level %s", (level) => {
    expect(() => levelRules(level)).toThrow(/unknown security level/);
    expect(() => needsDelivery(level, true)).toThrow(/unknown security level/);
  });
});

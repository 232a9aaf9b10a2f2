import { describe, expect, it } from "vitest";
import { applyPolicy, classify, isInternal, MailRejection } from "../src/mail/index.js";

describe("classify", () => {
  it.each([
    ["[S3] Befund", [], 3, "Befund"],
    ["[s4] Befund", [], 4, "Befund"],
    ["Befund [SL3]", [], 3, "Befund"],
    ["[Stufe 3] Befund", [], 3, "Befund"],
    ["[STUFE2]Befund", [], 2, "Befund"],
    ["[sicher] Befund", [], 3, "Befund"],
    ["[ Sicher ] Befund", [], 3, "Befund"],
    ["Befund", ["3"], 3, "Befund"],
    ["[S1] Befund", [" 4 "], 4, "Befund"],
    ["[S4] Befund", ["2"], 4, "Befund"],
    ["Befund [S3] vom [S2] Labor", [], 3, "Befund vom Labor"],
    ["=?utf-8?q?=5BS3=5D_R=C3=BCckruf?=", [], 3, "Rückruf"],
    ["=?UTF-8?B?W1N0dWZlIDRdIELDtnNlcyBFcmdlYm5pcw==?=", [], 4, "Böses Ergebnis"],
    ["[S3] =?utf-8?q?R=C3=BCckruf?=", [], 3, "Rückruf"],
    ["Terminbestätigung", [], 0, "Terminbestätigung"],
    ["[S0] Termin", [], 0, "Termin"],
    ["[Sonnenschein] Termin [3]", [], 0, "[Sonnenschein] Termin [3]"],
  ])("%j with X-Praxmail-Level %j is level %i, subject %j", (subject, header, level, clean) => {
    expect(classify(subject, header)).toEqual({ level, subject: clean });
  });

  it("has no subject without a Subject header", () => {
    expect(classify(undefined, ["2"])).toEqual({ level: 2, subject: null });
  });

  it.each([
    [["7"], undefined, "unknown security level in X-Praxmail-Level; use 0 to 4"],
    [["drei"], undefined, 'X-Praxmail-Level must be a number from 0 to 4, not "drei"'],
    [["-1"], undefined, 'X-Praxmail-Level must be a number from 0 to 4, not "-1"'],
    [[], "[S5] Befund", "unknown security level in the subject tag [S5]; use 0 to 4"],
    [[], "=?utf-8?q?=5BStufe_9=5D?=", "unknown security level in the subject tag [Stufe 9]; use 0 to 4"],
  ])("refuses %j / %j with 554", (header, subject, message) => {
    let err: unknown;
    try {
      classify(subject, header);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MailRejection);
    expect(err).toMatchObject({ responseCode: 554, enhanced: "5.6.0", message });
  });
});

describe("applyPolicy", () => {
  it("only ever raises the level", () => {
    expect(applyPolicy(0, {}, true)).toBe(0);
    expect(applyPolicy(0, { minLevel: 1 }, false)).toBe(1);
    expect(applyPolicy(4, { minLevel: 1 }, false)).toBe(4);
    expect(applyPolicy(0, { minLevelWithAttachments: 3 }, false)).toBe(0);
    expect(applyPolicy(0, { minLevelWithAttachments: 3 }, true)).toBe(3);
    expect(applyPolicy(2, { minLevel: 1, minLevelWithAttachments: 3 }, true)).toBe(3);
  });
});

describe("isInternal", () => {
  it("matches the practice's domains and their subdomains, nothing else", () => {
    const domains = ["praxis-weber.example"];
    expect(isInternal("empfang@praxis-weber.example", domains)).toBe(true);
    expect(isInternal("Empfang@Praxis-Weber.Example", domains)).toBe(true);
    expect(isInternal("labor@mail.praxis-weber.example", domains)).toBe(true);
    expect(isInternal("x@evil-praxis-weber.example", domains)).toBe(false);
    expect(isInternal("x@praxis-weber.example.evil.org", domains)).toBe(false);
    expect(isInternal("praxis-weber.example@evil.org", domains)).toBe(false);
  });
});

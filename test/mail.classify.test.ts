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
    // Tags as the client shows them: NFKC (fullwidth forms) and without invisible characters.
    ["[S\uff13] Befund", [], 3, "Befund"],
    ["\uff3bS3\uff3d Befund", [], 3, "Befund"],
    ["\uff3b\uff33\uff54\uff55\uff46\uff45 \uff14\uff3d Befund", [], 4, "Befund"],
    ["[S\u200b3] Befund", [], 3, "Befund"],
    ["[\u200cS\u200d3\u2060] Befund", [], 3, "Befund"],
    ["[\ufeffS3] Befund", [], 3, "Befund"],
    ["[S\u00ad3] Befund", [], 3, "Befund"],
    ["[si\u00adcher] Befund", [], 3, "Befund"],
    ["Befund [S\u200b4]", [], 4, "Befund"],
    ["=?utf-8?q?=5BS=EF=BC=93=5D_Befund?=", [], 3, "Befund"],
    ["=?utf-8?B?W1PigIszXSBCZWZ1bmQ=?=", [], 3, "Befund"],
    // Only the tag goes; the rest of the subject is left as it was written.
    ["[S\uff13] \ufb01nale Gr\u00fc\u00dfe\u200b", [], 3, "\ufb01nale Gr\u00fc\u00dfe\u200b"],
    ["Befund", ["\uff13"], 3, "Befund"],
    ["Befund", ["3\u200b"], 3, "Befund"],
    ["Befund", ["=?utf-8?q?=EF=BC=94?="], 4, "Befund"],
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
    [[], "[S\uff19] Befund", "unknown security level in the subject tag [S9]; use 0 to 4"],
    [["\uff17"], undefined, "unknown security level in X-Praxmail-Level; use 0 to 4"],
    [[], "=?utf-7?q?+AFs-S3+AF0-?= Befund", "the subject has an encoded word in UTF-7, which praxmail does not read; send it in UTF-8"],
    [[], "Befund =?UNICODE-1-1-UTF-7*de?B?K0FGcy1TMytBRjAt?=", "the subject has an encoded word in UTF-7, which praxmail does not read; send it in UTF-8"],
    [["=?utf-7?q?+ADM-?="], "Befund", "X-Praxmail-Level has an encoded word in UTF-7, which praxmail does not read; send it in UTF-8"],
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

  it.each([
    "patient%patient.example@praxis-weber.example",
    "patient.example!patient@praxis-weber.example",
    '"patient@patient.example"@praxis-weber.example',
    '"empfang"@praxis-weber.example',
    "@praxis-weber.example:patient@praxis-weber.example",
    "patient\\@patient.example@praxis-weber.example",
  ])("never takes %j for internal: its local part routes", (address) => {
    expect(isInternal(address, ["praxis-weber.example"])).toBe(false);
  });
});

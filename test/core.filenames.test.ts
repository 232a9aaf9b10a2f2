// The one function every file name from outside goes through (mail attachments, files given
// to `praxmail send`, the names in a patient's reply), and the numbering of names that collide.
import { describe, expect, it } from "vitest";
import { cleanFileName, uniqueFileName } from "../src/core/validate.js";

const long = (n: number, ch = "a"): string => ch.repeat(n);

describe("cleanFileName", () => {
  it.each([
    // [what, given, expected]
    ["a plain name stays", "Befund.pdf", "Befund.pdf"],
    ["umlauts and spaces stay", "Blutbild März 2026.pdf", "Blutbild März 2026.pdf"],
    ["decomposed umlauts become composed (NFC)", "Ma\u0308rz.pdf", "März.pdf"],
    ["a right-to-left override goes, .exe stays visible at the end", "Befund\u202Efdp.exe", "Befundfdp.exe"],
    ["every bidi embedding and override goes", "a\u202Ab\u202Bc\u202Cd\u202De\u202E.pdf", "abcde.pdf"],
    ["bidi isolates go", "a\u2066b\u2067c\u2068d\u2069.pdf", "abcd.pdf"],
    ["bidi marks go", "a\u200Eb\u200Fc\u061C.pdf", "abc.pdf"],
    ["zero-width characters and the soft hyphen go", "Be\u200Bf\u200Cu\u200Dn\u2060d\uFEFF\u00AD.pdf", "Befund.pdf"],
    ["C0 controls go", "a\u0000b\u0001c\u001Fd.pdf", "abcd.pdf"],
    ["tab, CR and LF go", "a\tb\r\nc.pdf", "abc.pdf"],
    ["DEL and C1 controls go", "a\u007Fb\u0080c\u0085d\u009F.pdf", "abcd.pdf"],
    ["line and paragraph separators go", "a\u2028b\u2029.pdf", "ab.pdf"],
    ["a lone surrogate goes", "a\uD800b.pdf", "ab.pdf"],
    ["each character Windows forbids becomes _", 'a<b>c:d"e|f?g*h.pdf', "a_b_c_d_e_f_g_h.pdf"],
    ["of a path only the last part stays", "../../etc/passwd", "passwd"],
    ["of a Windows path only the last part stays", "C:\\Users\\x\\Befund.pdf", "Befund.pdf"],
    ["a name that ends in a separator gets a default", "Befunde/", "Anhang"],
    ["a bidi override cannot hide a separator", "a\u202E/..", "Anhang"],
    ["runs of white space become one space", "Befund.pdf            \u00A0\u3000 .exe", "Befund.pdf .exe"],
    ["trailing dots and spaces go", "Befund.pdf. . ", "Befund.pdf"],
    ["leading dots and spaces go", " ..versteckt.pdf", "versteckt.pdf"],
    ["an empty name gets a default", "", "Anhang"],
    ["only dots get a default", "...", "Anhang"],
    [". gets a default", ".", "Anhang"],
    [".. gets a default", "..", "Anhang"],
    ["only invisible characters get a default", "\u202E\u200B\u0000", "Anhang"],
    ["only spaces get a default", "   ", "Anhang"],
    ["CON gets a leading _", "CON", "_CON"],
    ["nul.txt gets a leading _", "nul.txt", "_nul.txt"],
    ["COM1.tar.gz gets a leading _", "COM1.tar.gz", "_COM1.tar.gz"],
    ["LPT9 with a trailing space before the extension gets a leading _", "lpt9 .pdf", "_lpt9 .pdf"],
    ["Aux with a trailing dot gets a leading _", "Aux.", "_Aux"],
    ["COM\u00B9 gets a leading _", "COM\u00B9.txt", "_COM\u00B9.txt"],
    ["CONOUT$ gets a leading _", "CONOUT$", "_CONOUT$"],
    ["a name that only starts like a device stays", "Console.pdf", "Console.pdf"],
    ["COM10 is no device", "COM10.pdf", "COM10.pdf"],
    ["a long name keeps its extension", `${long(300)}.pdf`, `${long(196)}.pdf`],
    ["a long name with a bidi override keeps .exe at the end", `Befund\u202E${long(300, "x")}fdp.exe`, `Befund${long(190, "x")}.exe`],
    ["a long name of multi-byte characters is cut in bytes, not in the middle of one", `${long(150, "ä")}.pdf`, `${long(98, "ä")}.pdf`],
    ["an emoji is not cut in half", `${long(195)}😀😀.pdf`, `${long(195)}.pdf`],
    ["a long name whose stem ends in spaces after the cut loses them", `${long(195)}    ${long(100)}.pdf`, `${long(195)}.pdf`],
    ["a 'extension' longer than 16 bytes is part of the stem", `a.${long(300)}`, `a.${long(198)}`],
  ])("%s", (_what, given, expected) => {
    const clean = cleanFileName(given);
    expect(clean).toBe(expected);
    expect(Buffer.byteLength(clean)).toBeLessThanOrEqual(200);
  });
});

describe("uniqueFileName", () => {
  it("numbers a taken name before its extension, without regard to case", () => {
    const taken = new Set(["message.txt"]);
    expect(["Befund.pdf", "befund.pdf", "BEFUND.pdf", "Message.txt", "Notiz"].map((n) => uniqueFileName(n, taken))).toEqual([
      "Befund.pdf",
      "befund (2).pdf",
      "BEFUND (3).pdf",
      "Message (2).txt",
      "Notiz",
    ]);
  });

  it("keeps a numbered long name within 200 bytes and its extension", () => {
    const taken = new Set<string>();
    const name = `${long(196)}.pdf`;
    expect(uniqueFileName(name, taken)).toBe(name);
    expect(uniqueFileName(name, taken)).toBe(`${long(192)} (2).pdf`);
    expect(uniqueFileName(name, taken)).toBe(`${long(192)} (3).pdf`);
  });
});

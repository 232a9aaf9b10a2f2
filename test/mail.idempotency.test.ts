// The retry key's rule (src/mail/idempotency.ts) as a table: which header changes leave a
// message the same message, and which make it another one.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { TRACE_FIELDS, hashHead, sourceKey } from "../src/mail/idempotency.js";

const BASE = [
  "From: Praxis Dr. Weber <praxis@praxis-weber.example>",
  "To: anna.schaefer@patient.example",
  "Subject: [S3] Befund",
  "Message-ID: <lab-3@praxis-weber.example>",
  "Content-Type: multipart/mixed; boundary=x",
];

function key(lines: readonly string[], eol = "\r\n"): string {
  const h = createHash("sha256");
  hashHead(h, Buffer.from(`${lines.join(eol)}${eol}${eol}`, "binary"));
  return h.digest("hex");
}

describe("the retry key's header rule", () => {
  it.each([
    ["a Received line on top (the sender's MTA)", ["Received: from pc-1 by mx.praxis.example (Postfix) with ESMTP id A1; Mon, 2 Nov 2026 09:30:00 +0000", ...BASE]],
    ["another folded Received line", ["Received: from pc-1\r\n\tby mx.praxis.example (Postfix) with ESMTP id B2;\r\n\tMon, 2 Nov 2026 09:31:00 +0000", ...BASE]],
    ["two Received lines", ["Received: by a id 1", "Received: by b id 2", ...BASE]],
    ["Return-Path", ["Return-Path: <praxis@praxis-weber.example>", ...BASE]],
    ["Delivered-To and X-Original-To", ["Delivered-To: anna@patient.example", "X-Original-To: anna@patient.example", ...BASE]],
    ["a DKIM signature with a new timestamp", ["DKIM-Signature: v=1; a=rsa-sha256; d=praxis-weber.example; s=mail; t=1798000000; b=abc", ...BASE]],
    ["ARC headers", ["ARC-Seal: i=1; cv=none; t=1", "ARC-Message-Signature: i=1; t=1; b=x", "ARC-Authentication-Results: i=1; mx; spf=pass", ...BASE]],
    ["Authentication-Results and Received-SPF", ["Authentication-Results: mx.example; dkim=pass", "Received-SPF: pass (mx.example)", ...BASE]],
    ["upper-case field names", ["RECEIVED: by c id 3", "return-PATH: <x@y.example>", ...BASE]],
    ["a Date that the MTA added (Postfix, for a client that sent none)", [...BASE, "Date: Mon, 30 Nov 2026 14:14:30 +0000 (UTC)"]],
    ["another Date", BASE.map((l) => l.replace("Subject:", "Date: Tue, 1 Dec 2026 08:00:00 +0100\r\nSubject:"))],
    ["a trace field between the sender's fields", [...BASE.slice(0, 2), "Received: by d id 4", ...BASE.slice(2)]],
    ["LF line ends instead of CRLF", BASE, "\n"],
  ] as const)("%s: the same message", (_what, lines, eol?: string) => {
    expect(key(lines, eol)).toBe(key(BASE));
  });

  it.each([
    ["another Subject", BASE.map((l) => l.replace("[S3] Befund", "[S3] Befund 2"))],
    ["another To", BASE.map((l) => l.replace("anna.schaefer", "jan.mueller"))],
    ["another Message-ID", BASE.map((l) => l.replace("lab-3@", "lab-4@"))],
    ["another MIME boundary", BASE.map((l) => l.replace("boundary=x", "boundary=y"))],
    ["an added X-Praxmail-Level", [...BASE, "X-Praxmail-Level: 4"]],
    ["fields in another order", [BASE[1] ?? "", BASE[0] ?? "", ...BASE.slice(2)]],
    ["a field only named like a trace field", ["X-Received: by e id 5", ...BASE]],
    ["a Resent-Date (the sender resent it on purpose)", ["Resent-Date: Mon, 2 Nov 2026 10:00:00 +0000", ...BASE]],
  ] as const)("%s: another message", (_what, lines) => {
    expect(key(lines)).not.toBe(key(BASE));
  });

  it("names exactly the fields that mail servers add in transit", () => {
    expect([...TRACE_FIELDS].sort()).toEqual([
      "arc-authentication-results",
      "arc-message-signature",
      "arc-seal",
      "authentication-results",
      "date",
      "delivered-to",
      "dkim-signature",
      "received",
      "received-spf",
      "return-path",
      "x-original-to",
    ]);
  });

  it("keys each recipient on its own, without regard to the address's case", () => {
    const c = key(BASE);
    expect(sourceKey("<m@x>", "praxis@praxis-weber.example", "Anna@Patient.Example", c)).toBe(sourceKey("<m@x>", "praxis@praxis-weber.example", "anna@patient.example", c));
    expect(sourceKey("<m@x>", "praxis@praxis-weber.example", "anna@patient.example", c)).not.toBe(sourceKey("<m@x>", "praxis@praxis-weber.example", "jan@patient.example", c));
    expect(sourceKey("<m@x>", "praxis@praxis-weber.example", "anna@patient.example", c)).not.toBe(sourceKey("<m@x>", "empfang@praxis-weber.example", "anna@patient.example", c));
  });
});

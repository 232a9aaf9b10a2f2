// Hostile attachment names through the real relay: a level-3 mail whose attachment name has a
// bidi override, characters Windows forbids or a device name. What the patient's mail lists,
// what is stored, and what `praxmail list deliveries --json` shows is the cleaned name.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { praxmail } from "./helpers/cli.js";
import { openByToken, tokens } from "./helpers/deliveries.js";
import { befundMail, submit, useRelayWithSink } from "./helpers/relay.js";

const FROM = "praxis@praxis-weber.example";
const TO = "patient@patient.example";
let seq = 0;

const env = useRelayWithSink();

describe("attachment names from a mail", () => {
  it.each([
    ["a right-to-left override (quoted UTF-8)", 'attachment; filename="Befund\u202Efdp.exe"', "Befundfdp.exe"],
    ["a right-to-left override (RFC 2231)", "attachment; filename*=utf-8''Befund%E2%80%AEfdp.exe", "Befundfdp.exe"],
    ["a right-to-left override (RFC 2047)", 'attachment; filename="=?utf-8?q?Befund=E2=80=AEfdp=2Eexe?="', "Befundfdp.exe"],
    ["characters Windows forbids and a path", 'attachment; filename="..\\\\Be<fund>|?*:.pdf"', "Be_fund_____.pdf"],
    ["a device name and trailing dots", 'attachment; filename="NUL.pdf..."', "_NUL.pdf"],
  ])("%s: the mail, the store and list --json show the cleaned name", async (_what, disposition, clean) => {
    const pdf = randomBytes(2000);
    const raw = befundMail({ from: FROM, to: TO, messageId: `n${++seq}@praxis-weber.example`, attachment: pdf });
    const hostile = Buffer.from(raw.toString("utf8").replace('attachment; filename="befund.pdf"', disposition));
    const r = await submit(env.relay.port, FROM, [TO], hostile);
    expect(r.text).toBe("250 2.0.0 accepted, 1 encrypted");
    const [m] = env.sink.messages;
    expect(m!.mail.text).toContain(`${clean} (2 KB)`);
    expect(`${m!.mail.text ?? ""}${m!.mail.html || ""}`).not.toMatch(/[\u202E<>|?*]/);

    const stored = await openByToken(env.relay.ctx.home, tokens(m!)[0]!);
    expect(stored.files.map((f) => f.name)).toEqual([clean]);
    expect(stored.files[0]!.data.equals(pdf)).toBe(true);

    const list = await praxmail(["list", "deliveries", "--json", "--home", env.relay.ctx.home]);
    expect(list.code).toBe(0);
    const id = m!.mail.headers.get("x-praxmail-delivery");
    const row = (JSON.parse(list.stdout) as { id: string; files: { name: string }[] }[]).find((d) => d.id === id);
    expect(row?.files.map((f) => f.name)).toEqual([clean]);
  });
});

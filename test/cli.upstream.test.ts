// Notifications through a real SMTP upstream, and what happens when it is down.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, initHome, outbox, praxmail, tempDir, walk } from "./helpers/cli.js";
import { startSink, type Sink } from "./helpers/sink.js";

let dir: string;
let sink: Sink;
let pdf: string;

beforeAll(async () => {
  dir = await tempDir();
  sink = await startSink();
  pdf = join(dir, "Befund.pdf");
  await writeFile(pdf, "%PDF-1.4 Befund\n");
});
afterAll(async () => {
  await sink.close();
  await cleanup(dir);
});

describe("send with an upstream", () => {
  it("mails each recipient their own link through upstream, and nothing to the outbox", async () => {
    const home = join(dir, "up");
    await initHome(home, ["--upstream", sink.url, "--portal-url", "https://portal.praxis.example/"]);
    const r = await praxmail(["send", "--home", home, "--to", "a@example.org", "--to", "b@example.org", "--level", "2", "--subject", "Ihre Unterlagen", "--message", "Anbei die Unterlagen.", pdf, "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const { deliveries } = JSON.parse(r.stdout) as { deliveries: { recipient: string; link: string; status: string }[] };
    expect(deliveries.map((d) => d.recipient)).toEqual(["a@example.org", "b@example.org"]);
    expect(deliveries[0]!.link).not.toBe(deliveries[1]!.link);
    expect(deliveries.every((d) => d.link.startsWith("https://portal.praxis.example/d/") && d.link.includes("#k=AGE-SECRET-KEY-PQ-1"))).toBe(true);
    expect(sink.messages.map((m) => m.to)).toEqual([["a@example.org"], ["b@example.org"]]);
    for (const [i, m] of sink.messages.entries()) {
      expect(m.from).toBe("praxis@praxis-weber.example");
      expect(m.mail.subject).toBe("Ihre Unterlagen");
      expect(m.mail.text).toContain(deliveries[i]!.link);
      expect(m.mail.text).toContain("Anbei die Unterlagen.");
      expect(m.mail.text).toContain("Befund.pdf (16 Bytes)");
      expect(m.raw.includes("%PDF-1.4 Befund")).toBe(false);
    }
    expect(await outbox(home)).toEqual([]);
  });

  it("upstream down: exit 1, and no delivery, blob or mail stays behind", async () => {
    const home = join(dir, "down");
    await initHome(home, ["--upstream", "smtp://127.0.0.1:9"]);
    const r = await praxmail(["send", "--home", home, "--to", "a@example.org", pdf]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^praxmail: error: the mail to a@example\.org could not be sent: .*ECONNREFUSED.*\npraxmail: hint: check upstream in config\.json\n$/);
    const list = await praxmail(["list", "--json", "--home", home]);
    expect(JSON.parse(list.stdout)).toEqual([]);
    expect(await walk(join(home, "blobs")).catch(() => [])).toEqual([]);
    const audit = await praxmail(["audit", "--json", "--home", home]);
    expect((JSON.parse(audit.stdout) as { action: string }[]).map((a) => a.action)).toEqual(["delivery.create", "delivery.discard"]);
  });
});

describe("revoke through the CLI", () => {
  it("revokes a delivery and then a patient, with --json output", async () => {
    const home = join(dir, "revoke");
    await initHome(home);
    const a = JSON.parse((await praxmail(["send", "--home", home, "--to", "r@example.org", pdf, "--json"])).stdout) as { deliveries: { id: string }[] };
    const r1 = await praxmail(["revoke", a.deliveries[0]!.id, "--yes", "--json", "--home", home]);
    expect(r1.code).toBe(0);
    expect(JSON.parse(r1.stdout)).toEqual({ revoked: [{ id: a.deliveries[0]!.id, recipient: "r@example.org", status: "revoked" }] });
    const again = await praxmail(["revoke", a.deliveries[0]!.id, "--yes", "--home", home]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`praxmail: error: delivery ${a.deliveries[0]!.id} is already revoked\n`);
    const list = JSON.parse((await praxmail(["list", "--json", "--home", home])).stdout) as { status: string; files: { blob: string | null }[] }[];
    expect(list).toMatchObject([{ status: "revoked", files: [{ blob: null }] }]);
  });
});

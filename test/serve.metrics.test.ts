// Prometheus metrics of `praxmail serve --metrics` (issue 14, item 5): a listener of their
// own, never the portal's; counters that move exactly with a level-3, a level-0 and a refused
// mail through the relay, a download and refusals in the portal; and no address, subject,
// file name or delivery id in any label.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, initHome, praxmail, tempDir } from "./helpers/cli.js";
import { patientAtPortal } from "./helpers/download.js";
import { registerThroughCore } from "./helpers/patient.js";
import { befundMail, submit } from "./helpers/relay.js";
import { startServe, type Served } from "./helpers/serve.js";

const PATIENT = "anna.weber@patient.example";
const SENDER = "dr.weber@praxis-weber.example";
const FILE = "Befund-Schilddruese-Weber.pdf";
const SUBJECT = "Ihr Befund vom Labor Sonnenberg";

/** Prometheus text format: `name{labels}` → value, comments left out. */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

/** What moved between two scrapes, for the praxmail_ series (process metrics always move). */
function moved(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) {
    if (!k.startsWith("praxmail_") || k.includes("_bucket{") || k.includes("_sum")) continue;
    const d = v - (before.get(k) ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

describe("praxmail serve --metrics", () => {
  let dir: string;
  let home: string;
  let served: Served;
  let metricsUrl: string;
  const scrape = async (): Promise<{ text: string; series: Map<string, number> }> => {
    const res = await fetch(metricsUrl);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    return { text, series: parse(text) };
  };

  beforeAll(async () => {
    dir = await tempDir("praxmail-metrics-");
    home = join(dir, "home");
    await initHome(home, ["--recipient-type", "x25519"]);
    await registerThroughCore(home, PATIENT, "Leuchtturm-Kaffee-7-Sonnenblume");
    const approved = await praxmail(["approve", PATIENT, "--yes", "--home", home]);
    expect(approved.code, approved.stderr).toBe(0);
    served = await startServe(home, 0, ["--metrics", "127.0.0.1:0"]);
    const port = /metrics listening on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(served.stderr())?.[1];
    expect(port, served.stderr()).toBeDefined();
    metricsUrl = `http://127.0.0.1:${port!}/metrics`;
  });
  afterAll(async () => {
    await served.stop();
    await cleanup(dir);
  });

  it("counts mails by level and answer, deliveries, downloads, portal answers and blob writes, exactly; no label carries patient data", async () => {
    const before = (await scrape()).series;
    const base = `http://127.0.0.1:${served.httpPort}`;

    // Through the relay: level 3 (one delivery, one blob), level 0 (passes through), and a
    // mail with a tag that names no level (refused with 554).
    const attachment = Buffer.from(`%PDF-1.4 TSH 2,1 mU/l ${"x".repeat(4000)}`);
    const l3 = await submit(served.smtpPort, SENDER, [PATIENT], befundMail({ from: SENDER, to: PATIENT, messageId: "l3@praxis-weber.example", attachment, subject: `[S3] ${SUBJECT}`, filename: FILE }));
    expect(l3.code, l3.text).toBe(250);
    const l0 = await submit(served.smtpPort, SENDER, [PATIENT], `From: ${SENDER}\r\nTo: ${PATIENT}\r\nSubject: ${SUBJECT}\r\nMessage-ID: <l0@praxis-weber.example>\r\n\r\nBitte rufen Sie uns an.\r\n`);
    expect(l0.code, l0.text).toBe(250);
    const bad = await submit(served.smtpPort, SENDER, [PATIENT], befundMail({ from: SENDER, to: PATIENT, messageId: "l9@praxis-weber.example", attachment, subject: `[S9] ${SUBJECT}`, filename: FILE }));
    expect(bad.code, bad.text).toBe(554);

    // Through the portal: the login page, its parameters and the login (200, 200, 200), the
    // delivery's page and its file (200, 200), a page that does not exist (404), a post
    // without its CSRF token (403), and /metrics (404).
    const patient = await patientAtPortal(base, PATIENT);
    expect(patient.login.status).toBe(200);
    const form = { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" } };
    const [d] = JSON.parse((await praxmail(["list", "deliveries", "--json", "--home", home])).stdout) as { id: string }[];
    const page = await patient.get(`/deliveries/${d!.id}`);
    expect(page.status).toBe(200);
    const data = JSON.parse(/<script type="application\/json" id="delivery-data">([^<]*)<\/script>/.exec(await page.text())![1]!) as { files: { url: string }[] };
    const file = await patient.get(data.files[0]!.url.replace(base, ""));
    expect(file.status).toBe(200);
    expect((await file.arrayBuffer()).byteLength).toBeGreaterThan(attachment.length);
    const missing = await patient.get("/no-such-page");
    expect(missing.status).toBe(404);
    expect(await missing.text()).toContain("Seite nicht gefunden");
    const badForm = await patient.get("/login", { ...form, body: "email=x" });
    expect(badForm.status).toBe(403);
    const onPortal = await patient.get("/metrics");
    expect(onPortal.status).toBe(404);
    expect(await onPortal.text()).not.toContain("praxmail_");

    const after = await scrape();
    expect(moved(before, after.series)).toEqual({
      'praxmail_mails_total{door="relay",level="3",answer="2xx"}': 1,
      'praxmail_mails_total{door="relay",level="0",answer="2xx"}': 1,
      'praxmail_mails_total{door="relay",level="unknown",answer="5xx"}': 1,
      'praxmail_mail_seconds_count{door="relay"}': 3,
      'praxmail_deliveries_created_total{level="3"}': 1,
      praxmail_downloads_total: 1,
      praxmail_blob_write_seconds_count: 1,
      'praxmail_http_responses_total{class="2xx"}': 5,
      'praxmail_http_responses_total{class="4xx"}': 3,
    });
    expect(after.series.get('praxmail_queue_waiting{queue="key-reset"}')).toBe(0);
    expect([...after.series.keys()].filter((k) => k.startsWith("praxmail_errors_total"))).toEqual([]);

    // Nothing that names a patient, a mail or a delivery, in any label or value.
    const secrets = [PATIENT, "anna", SENDER, SUBJECT, FILE, "Schilddruese", d!.id, "praxis-weber", ...patient.cookies.values()];
    for (const s of secrets) expect(after.text, s).not.toContain(s);
    const config = JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { practiceRecipient: string };
    expect(after.text).not.toContain(config.practiceRecipient);
  });

  it("the metrics listener answers 404 to anything but GET /metrics", async () => {
    const root = metricsUrl.replace(/\/metrics$/, "");
    for (const path of ["/", "/metrics/", "/metricsx", "/healthz", "/login"]) {
      const r = await fetch(root + path);
      expect(r.status, path).toBe(404);
      expect(await r.text()).toBe("not found\n");
    }
    expect((await fetch(metricsUrl, { method: "POST" })).status).toBe(404);
    expect((await fetch(`${metricsUrl}?name[]=praxmail_mails_total`)).status).toBe(200);
  });

  it("refuses an address other machines can reach unless --metrics-remote is given", async () => {
    const r = await praxmail(["serve", "--home", home, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--metrics", "0.0.0.0:9464"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      "praxmail: error: --metrics 0.0.0.0:9464 is not a loopback address\n" +
        "praxmail: hint: metrics show mail and download volumes (no patient data): listen on 127.0.0.1 and scrape through a tunnel or a proxy, or pass --metrics-remote and let only the Prometheus server reach that port\n",
    );
    const remote = await startServe(home, 0, ["--metrics", "0.0.0.0:0", "--metrics-remote"]);
    try {
      const port = /metrics listening on http:\/\/0\.0\.0\.0:(\d+)\/metrics/.exec(remote.stderr())?.[1];
      expect(port, remote.stderr()).toBeDefined();
      expect((await fetch(`http://127.0.0.1:${port!}/metrics`)).status).toBe(200);
    } finally {
      await remote.stop();
    }
    const help = await praxmail(["serve", "--help"]);
    expect(help.stdout).toMatch(/--metrics <host:port> +serve Prometheus metrics at \/metrics/);
    expect(help.stdout).toContain("default off");
  });
});

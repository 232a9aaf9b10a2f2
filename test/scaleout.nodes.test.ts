// Two `praxmail serve` nodes on one shared backend (PostgreSQL + Swift S3), as behind a load
// balancer: a level-3 mail comes in through node A's relay, and the patient's whole journey
// runs on node B's portal; sessions and the login limiter are the same on both nodes.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decryptStream, deriveSecuPass, newKdfParams, parseKdfParams, recipientOf, unwrapIdentity, type RecipientType } from "../src/crypto/index.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { startCluster, WebClient, type Cluster } from "./helpers/cluster.js";
import { tokens } from "./helpers/deliveries.js";

import { befundMail, submit } from "./helpers/relay.js";

import { startSink, type Sink } from "./helpers/sink.js";
import { readAll } from "./helpers/streams.js";

import { sharedEnginesInstalled } from "./helpers/backends.js";

const PATIENT = "anna.schaefer@patient.example";
const SECU_PASS = "Mein geheimer Secu-Pass-Key – Grüße";
const ENGINES =
  sharedEnginesInstalled();

/** The text an Eta `<%= %>` attribute holds, unescaped. */
const attribute = (html: string, name: string): string =>
  (new RegExp(`${name}="([^"]*)"`).exec(html)?.[1] ?? "").replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");

/** Logs in on a node as the login page does: parameters, derivation, credential. */
async function login(web: WebClient, node: string, secret: string): Promise<{ status: number; body: string }> {
  await web.get(`${node}/login`);
  const asked = await web.json(`${node}/login/params`, { email: PATIENT });
  const { kdf } = JSON.parse(asked.body) as { kdf: unknown };
  const { credential } = await deriveSecuPass(secret, parseKdfParams(kdf), PATIENT);
  return web.json(`${node}/login`, { email: PATIENT, credential, next: "/deliveries" });
}

describe.runIf(ENGINES)("two nodes on one shared backend", () => {
  let dir: string;
  let sink: Sink;
  let cluster: Cluster | undefined;
  let a: string;
  let b: string;

  beforeAll(async () => {
    dir = await tempDir("praxmail-nodes-");
    sink = await startSink();
    cluster = await startCluster(dir, { nodes: 2, upstream: sink.url });
    [a, b] = cluster.nodes.map((n) => n.portalUrl) as [string, string];
  }, 240_000);
  afterAll(async () => {
    await cluster?.stop();
    await sink.close();
    await cleanup(dir);
  });

  it("mail in through node A's relay; register, Secu-Pass-Key, login and download only on node B's portal (approved by praxmail approve on node A); the file decrypts to the bytes sent", { timeout: 120_000 }, async () => {
    const c = cluster!;
    const attachment = randomBytes(48 * 1024);
    const raw = befundMail({ from: "praxis@praxis-weber.example", to: `<${PATIENT}>`, messageId: `nodes-${randomBytes(4).toString("hex")}@praxis-weber.example`, attachment, filename: "Laborbefund.pdf" });
    const sent = await submit(c.nodes[0]!.smtpPort, "praxis@praxis-weber.example", [PATIENT], raw);
    expect([sent.code, sent.text]).toEqual([250, expect.stringContaining("accepted, 1 encrypted")]);
    const mail = sink.messages.find((m) => m.to.includes(PATIENT));
    expect(mail?.mail.attachments).toEqual([]);
    const [token] = tokens(mail!);
    expect(token).toBeDefined();

    const web = new WebClient();
    const link = await web.get(`${b}/d/${token!}`);
    expect(link.status).toBe(200);
    expect(link.body).toContain("<h1>Konto anlegen</h1>");
    // The page's script: fresh parameters, the derivation, one post with the key's public parts.
    const kdf = newKdfParams(attribute(link.body, "data-type") as RecipientType);
    const { identity, credential } = await deriveSecuPass(SECU_PASS, kdf, attribute(link.body, "data-address"));
    const registered = await web.json(`${b}/register`, { token: token!, kdf, recipient: await recipientOf(identity), credential });
    expect([registered.status, JSON.parse(registered.body)]).toEqual([200, { next: `/d/${token!}` }]);
    const waiting = await web.get(`${b}/waiting`);
    expect(waiting.status).toBe(200);
    const code = /\d{4} \d{4} \d{4}/.exec(waiting.body)?.[0];
    expect(code).toBeDefined();

    // The practice approves on node A, comparing the safety code node B showed.
    const approve = await c.praxmail(0, ["approve", PATIENT, "--code", code!, "--yes", "--json"]);
    expect(approve.code, approve.stderr).toBe(0);
    expect(JSON.parse(approve.stdout)).toEqual({ approved: [{ email: PATIENT, deliveries: 1 }] });

    expect((await web.post(`${b}/logout`, { _csrf: web.csrf })).location).toBe("/login?m=out");
    const again = await login(web, b, SECU_PASS);
    expect([again.status, JSON.parse(again.body)]).toEqual([200, { next: "/deliveries" }]);
    const list = await web.get(`${b}/deliveries`);
    expect(list.status).toBe(200);
    expect(list.body).toContain("Meine Nachrichten");
    const id = /href="\/deliveries\/([^"/]+)"/.exec(list.body)?.[1];
    expect(id).toBeDefined();
    const delivery = await web.get(`${b}/deliveries/${id!}`);
    expect(delivery.status).toBe(200);
    expect(delivery.body).toContain("Laborbefund.pdf");
    const data = JSON.parse(/<script type="application\/json" id="delivery-data">([^<]*)<\/script>/.exec(delivery.body)?.[1]?.replace(/\\u003c/g, "<") ?? "null") as {
      files: { url: string; kind: string }[];
      wrapUrl: string;
    };
    const file = data.files.find((f) => f.kind === "attachment");
    const [blob, wrap] = await Promise.all([web.get(`${b}${file!.url}`), web.get(`${b}${data.wrapUrl}`)]);
    expect([blob.status, wrap.status]).toEqual([200, 200]);
    const d = await unwrapIdentity(wrap.bytes, identity);
    const plain = await readAll(await decryptStream(new Blob([blob.bytes]).stream(), [d]));
    expect(plain.equals(attachment)).toBe(true);
    // Node A sees what happened on node B.
    const listed = JSON.parse((await c.praxmail(0, ["list", "deliveries", "--json"])).stdout) as { id: string; status: string }[];
    expect(listed).toEqual([expect.objectContaining({ id, status: "downloaded" })]);
  });

  it("a session made on node A is valid on node B, and logging out on B ends it on A", { timeout: 60_000 }, async () => {
    const web = new WebClient();
    const onA0 = await login(web, a, SECU_PASS);
    expect([onA0.status, JSON.parse(onA0.body)]).toEqual([200, { next: "/deliveries" }]);
    const onB = await web.get(`${b}/deliveries`);
    expect(onB.status).toBe(200);
    expect(onB.body).toContain("Meine Nachrichten");
    expect((await web.post(`${b}/logout`, { _csrf: web.csrf })).location).toBe("/login?m=out");
    const onA = await web.get(`${a}/deliveries`);
    expect(onA.status).toBe(303);
    expect(onA.location).toMatch(/^\/login/);
  });

  it("the login limiter counts failed attempts on both nodes together", { timeout: 60_000 }, async () => {
    const web = new WebClient();
    // Five wrong keys, alternating between the nodes: each is refused as wrong.
    for (const [i, node] of [a, b, a, b, a].entries()) {
      const r = await login(web, node, `ein falscher Secu-Pass-Key ${String(i)}`);
      expect(r.status, `attempt ${String(i + 1)} on ${node}`).toBe(401);
      expect(r.body).toContain("E-Mail-Adresse oder Secu-Pass-Key ist falsch.");
    }
    // The sixth, on node B, is refused before the credential is even checked, the right one too.
    const limited = await login(web, b, SECU_PASS);
    expect(limited.status).toBe(429);
    expect(limited.body).toContain("Zu viele Versuche. Bitte warten Sie 15 Minuten und versuchen Sie es dann erneut.");
  });
});

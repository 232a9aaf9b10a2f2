// Nothing lost when a node dies: 10 senders send 10 level-3 mails each to node A of two nodes
// on one shared backend (PostgreSQL + Swift S3); node A is killed with SIGKILL part way, and
// each sender sends every mail that did not get 250 again to node B, with the same
// Message-ID, as an MTA with a fallback relay does. Then every message that got 250 is
// upstream once, as one delivery that the patient's key opens; no attachment byte is in
// clear in the bucket's storage or upstream; the audit chain verifies; and after gc no
// orphaned blob or unfinished multipart upload is left in the bucket.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { ListMultipartUploadsCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { decryptStream, unwrapIdentity } from "../src/crypto/index.js";
import { cleanup, tempDir, walk } from "./helpers/cli.js";
import { startCluster, type Cluster, type ClusterNode } from "./helpers/cluster.js";
import { sleep, startCrashSink, submitUntilAnswered, type Attempt, type CrashSink, type Upstreamed } from "./helpers/crash.js";
import { registerThroughCore } from "./helpers/patient.js";

import { befundMail, submit } from "./helpers/relay.js";

import { readAll } from "./helpers/streams.js";

import { sharedEnginesInstalled } from "./helpers/backends.js";

const SENDERS = 10;
const PER_SENDER = 10;
const TOTAL = SENDERS * PER_SENDER;
/** Node A dies once this many messages got 250 (from it). */
const KILL_AFTER = 30;
/**
 * (sender, message) of the 12 MiB attachments, more than one 8 MiB part of the shared
 * backend's multipart upload. Their first attempt on node A sends 85% of the mail (about
 * 10 MiB of attachment, past the first part) and then holds until node A is dead: node A
 * dies in the middle of each such upload, whatever the machine's speed.
 */
const LARGE: readonly (readonly [number, number])[] = [[0, 4], [1, 5], [2, 6], [3, 7], [4, 8], [5, 9]];
const HOLD_AT = 0.85;
/** The SMTP client's waits: generous, so that only a dead node ends an attempt early. */
const CLIENT = { ignoreTLS: true, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 60_000 };
const SECU_PASS = "Secu-Pass-Key der Patientin 2026";
const ENGINES =
  sharedEnginesInstalled();

interface Sent {
  readonly messageId: string;
  readonly from: string;
  readonly to: string;
  readonly attachment: Buffer;
  readonly raw: Buffer;
  /** Whether its first attempt on node A holds part way (see LARGE). */
  readonly large: boolean;
  readonly attempts: Attempt[];
  /** The index of its first attempt on node B, or null if node A took it. */
  firstOnB: number | null;
}

const patient = (s: number): string => `patient${String(s)}@patient.example`;

function message(s: number, m: number, run: string): Sent {
  const messageId = `<failover-${run}-s${String(s)}-m${String(m)}@praxis-weber.example>`;
  const from = `mfa${String(s)}@praxis-weber.example`;
  const to = patient(s);
  const large = LARGE.some(([ls, lm]) => ls === s && lm === m);
  const attachment = randomBytes(large ? 12 << 20 : 4096 + ((s * PER_SENDER + m) % 7) * 16 * 1024);
  const raw = befundMail({ from, to: `<${to}>`, messageId: messageId.slice(1, -1), attachment, subject: `[S3] Befund ${String(s)}-${String(m)}`, filename: `befund-${String(s)}-${String(m)}.pdf` });
  return { messageId, from, to, attachment, raw, large, attempts: [], firstOnB: null };
}

/** The mail as a stream that stops after HOLD_AT of its bytes until `gate` settles. */
function held(raw: Buffer, gate: Promise<void>, onHold: () => void): Readable {
  const at = Math.floor(raw.length * HOLD_AT);
  return Readable.from(
    (async function* () {
      yield raw.subarray(0, at);
      onHold();
      await gate;
      yield raw.subarray(at);
    })(),
  );
}

describe.runIf(ENGINES)(`kill -9 of one of two nodes (${String(SENDERS)} senders × ${String(PER_SENDER)} level-3 mails)`, () => {
  let dir: string;
  let sink: CrashSink;
  let cluster: Cluster | undefined;
  const identities = new Map<string, string>();

  beforeAll(async () => {
    dir = await tempDir("praxmail-failover-");
    sink = await startCrashSink();
    cluster = await startCluster(dir, { nodes: 2, upstream: sink.url });
    // The patients are approved before the mail comes: each delivery gets its wrap[U] at once.
    for (const [k, v] of Object.entries(cluster.env)) vi.stubEnv(k, v);
    for (let s = 0; s < SENDERS; s++) identities.set(patient(s), await registerThroughCore(cluster.nodes[0]!.home, patient(s), `${SECU_PASS} ${String(s)}`));
    const approved = await cluster.praxmail(0, ["approve", ...identities.keys(), "--yes", "--json"]);
    if (approved.code !== 0) throw new Error(`approve failed: ${approved.stderr}`);
  }, 240_000);
  afterAll(async () => {
    vi.unstubAllEnvs();
    await cluster?.stop();
    await sink.close();
    await cleanup(dir);
  });

  it("every message that got 250 is upstream once as one delivery that the patient's key opens; nothing in clear; audit verifies; gc leaves no orphan and no upload", { timeout: 600_000 }, async ({ onTestFailed }) => {
    const c = cluster!;
    const [nodeA, nodeB] = c.nodes as [ClusterNode, ClusterNode];
    onTestFailed(() => {
      console.error(`--- node A ---\n${nodeA.output().slice(-4000)}\n--- node B ---\n${nodeB.output().slice(-4000)}`);
    });
    const began = performance.now();
    // What went upstream before (the patients' account mails) is not under test.
    const earlier = sink.messages.length;
    const run = randomBytes(4).toString("hex");
    const senders = Array.from({ length: SENDERS }, (_, s) => Array.from({ length: PER_SENDER }, (_, m) => message(s, m, run)));
    const all = senders.flat();
    const broken: { error: Error | null } = { error: null };
    let acceptedOnA = 0;
    // When SIGKILL was sent, when node A was gone, and the uploads it left open.
    const kill: { sent: number; at: number | null; open: string[] } = { sent: Infinity, at: null, open: [] };
    const s3 = c.s3.client();
    const openUploads = async (): Promise<string[]> => ((await s3.send(new ListMultipartUploadsCommand({ Bucket: c.bucket }))).Uploads ?? []).map((u) => u.Key ?? "");
    // Node A dies once KILL_AFTER messages got 250 from it and one large mail holds part way
    // (see LARGE), with its multipart upload open: in the middle of traffic and of an upload.
    // The held mails go on (to a dead node) once it is gone.
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let holding = 0;
    let killed: Promise<void> = Promise.resolve();
    const killDuringUpload = async (): Promise<void> => {
      const waitUntil = performance.now() + 120_000;
      while (holding === 0 || (await openUploads()).length === 0) {
        if (performance.now() > waitUntil) throw new Error(`node A opened no multipart upload within 120 s of the kill threshold (${String(holding)} large mails holding)`);
        await sleep(10);
      }
      kill.sent = performance.now();
      await nodeA.kill("SIGKILL");
      kill.at = performance.now();
      kill.open = await openUploads();
    };

    try {
      await Promise.all(
        senders.map(async (msgs) => {
          // A sender sends to node A until an attempt there fails, then everything to node B.
          let onA = true;
          for (const msg of msgs) {
            if (onA) {
              const start = performance.now();
              const raw = msg.large ? held(msg.raw, gate, () => holding++) : msg.raw;
              const r = await submit(nodeA.smtpPort, msg.from, [msg.to], raw, CLIENT);
              msg.attempts.push({ start, end: performance.now(), code: r.code, text: r.text });
              if (r.code === 250) {
                if (++acceptedOnA === KILL_AFTER) {
                  killed = killDuringUpload()
                    .catch((e: unknown) => {
                      broken.error = e as Error;
                    })
                    .finally(release);
                }
                continue;
              }
              onA = false;
            }
            msg.firstOnB = msg.attempts.length;
            if (!(await submitUntilAnswered(nodeB.smtpPort, msg, [msg.to], broken))) return;
          }
        }),
      );
      await killed;
    } finally {
      s3.destroy();
    }
    if (broken.error) throw broken.error;
    // What the dead node left: at least the upload it was streaming.
    expect(kill.open.length).toBeGreaterThan(0);
    const ranMs = performance.now() - began;
    expect(kill.at).not.toBeNull();
    const killedAt = kill.at ?? 0;

    const violations: string[] = [];
    const byMessage = new Map<string, Upstreamed[]>();
    const upstream = sink.messages.slice(earlier);
    for (const u of upstream) byMessage.set(u.messageId, [...(byMessage.get(u.messageId) ?? []), u]);
    const deliveryOf = new Map<Sent, string>();
    for (const msg of all) {
      const last = msg.attempts.at(-1);
      if (last?.code !== 250) {
        violations.push(`${msg.messageId}: never got 250 (${String(msg.attempts.length)} attempts, last ${String(last?.code)} ${last?.text ?? ""})`);
        continue;
      }
      const copies = byMessage.get(msg.messageId) ?? [];
      const ids = [...new Set(copies.map((u) => u.deliveryId))];
      if (copies.length === 0 || ids.length !== 1 || ids[0] === null) {
        violations.push(`${msg.messageId}: got 250, and ${String(copies.length)} copies upstream announce ${String(ids.length)} deliveries`);
        continue;
      }
      deliveryOf.set(msg, ids[0] as string);
      for (const u of copies) {
        if (u.to.length !== 1 || u.to[0] !== msg.to) violations.push(`${msg.messageId}: a copy went to ${u.to.join(", ")}`);
        if (u.mail.attachments.length !== 0) violations.push(`${msg.messageId}: a copy carries an attachment`);
        if (u.at > last.end) violations.push(`${msg.messageId}: a copy reached upstream after the client had its 250`);
      }
      // A second copy is right only for a message node A had sent upstream when it died,
      // before it could answer 250 or record the copy as sent: node B announces the same
      // delivery again rather than lose the mail.
      const cutOnA = msg.firstOnB !== null && msg.attempts.slice(0, msg.firstOnB).some((a) => a.code === -1 && a.end >= kill.sent);
      if (copies.length > 1 && !(copies.length === 2 && cutOnA && (copies[0]?.at ?? Infinity) <= killedAt)) {
        const t = (x: number): string => `${String(Math.round(x - kill.sent))} ms`;
        violations.push(`${msg.messageId}: ${String(copies.length)} copies upstream at ${copies.map((u) => t(u.at)).join(", ")} after SIGKILL (gone at ${t(killedAt)}); attempts ${JSON.stringify(msg.attempts.map((a) => [a.code, t(a.start), t(a.end)]))}, first on B: ${String(msg.firstOnB)}`);
      }
    }
    const unknown = [...byMessage.keys()].filter((id) => !all.some((m) => m.messageId === id));
    if (unknown.length) violations.push(`upstream got messages nobody sent: ${unknown.join(", ")}`);

    // One visible delivery per message, each ready for its patient, whose key opens its file.
    const listed = await c.praxmail(1, ["list", "deliveries", "--json"]);
    expect(listed.code, listed.stderr).toBe(0);
    const rows = JSON.parse(listed.stdout) as { id: string; recipient: string; level: number; status: string; files: { blob: string }[] }[];
    if (rows.length !== TOTAL) violations.push(`${String(rows.length)} visible deliveries for ${String(TOTAL)} messages`);
    if (new Set(deliveryOf.values()).size !== deliveryOf.size) violations.push("two messages share a delivery");
    const store = await c.store();
    try {
      for (const [msg, id] of deliveryOf) {
        const row = rows.find((r) => r.id === id);
        if (row?.recipient !== msg.to || row.level !== 3 || row.status !== "ready") {
          violations.push(`${msg.messageId}: delivery ${id} is ${JSON.stringify(row)}`);
          continue;
        }
        const wrap = await store.records.wrap(id, "patient");
        const [file] = (await store.records.files(id)).filter((f) => f.kind === "attachment");
        if (!wrap || !file?.blob) {
          violations.push(`${msg.messageId}: delivery ${id} has no patient wrap or no attachment blob`);
          continue;
        }
        const d = await unwrapIdentity(wrap.ciphertext, identities.get(msg.to) ?? "");
        const plain = await readAll(await decryptStream(store.blobs.read(file.blob), [d]));
        if (!plain.equals(msg.attachment)) violations.push(`${msg.messageId}: the patient's key opens delivery ${id} to other bytes`);
      }
    } finally {
      await store.close();
    }

    // No attachment byte in clear: not in any file of the object store's disk (objects,
    // multipart segments, container databases), not in a node's home, not upstream.
    const needles = all.map((m) => ({ id: m.messageId, raw: m.attachment.subarray(1024, 1056), b64: m.attachment.subarray(0, 57).toString("base64") }));
    for (const f of [...(await walk(join(dir, "s3", "srv"))), ...(await walk(nodeA.home)), ...(await walk(nodeB.home))]) {
      const bytes = await readFile(f);
      for (const n of needles) if (bytes.includes(n.raw) || bytes.includes(n.b64)) violations.push(`${n.id}: attachment bytes in clear in ${f}`);
    }
    for (const u of upstream) for (const n of needles) if (u.raw.includes(n.raw) || u.raw.includes(n.b64)) violations.push(`${n.id}: attachment bytes in clear upstream`);

    const audit = await c.praxmail(1, ["audit", "--verify"]);
    expect(audit.code, audit.stderr).toBe(0);
    expect(audit.stdout).toMatch(/^audit chain intact: \d+ rows\n$/);

    const gc = await c.praxmail(1, ["gc", "--grace", "0", "--json"]);
    expect(gc.code, gc.stderr).toBe(0);
    const report = JSON.parse(gc.stdout) as { unsent: number; orphanBlobs: number; tempFiles: number };
    // The upload node A was streaming when it died is aborted by gc, with what else it left.
    expect(report.tempFiles).toBeGreaterThanOrEqual(1);
    // After gc the bucket holds exactly the referenced blobs (under blobs/), and no unfinished upload.
    const after = c.s3.client();
    try {
      const objects = await after.send(new ListObjectsV2Command({ Bucket: c.bucket, Prefix: `${c.prefix}blobs/` }));
      const keys = (objects.Contents ?? []).map((o) => o.Key ?? "").sort();
      const referenced = rows.flatMap((r) => r.files.map((f) => c.prefix + f.blob)).sort();
      expect(objects.IsTruncated).toBe(false);
      expect(keys).toEqual(referenced);
      const uploads = await after.send(new ListMultipartUploadsCommand({ Bucket: c.bucket }));
      expect(uploads.Uploads ?? []).toEqual([]);
    } finally {
      after.destroy();
    }

    const onB = all.filter((m) => m.firstOnB !== null).length;
    const twice = [...byMessage.values()].filter((u) => u.length > 1).length;
    console.log(
      `scaleout.failover: node A killed after ${String(acceptedOnA)} accepted, ${String(kill.open.length)} uploads open; ${String(onB)} messages went to node B, ${String(twice)} upstream twice; ` +
        `gc: ${JSON.stringify(report)}; run ${String(Math.round(ranMs))} ms, total ${String(Math.round(performance.now() - began))} ms`,
    );
    expect(violations).toEqual([]);
  });
});

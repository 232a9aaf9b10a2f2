// Crash safety of the relay (issue 8): concurrent senders submit level-3 messages to the real
// `praxmail serve`, which is SIGKILLed at seeded moments and started again on the same port;
// the clients retry until they get 250. Then: every message is upstream with one delivery
// whose blob decrypts, nothing was delivered twice as two deliveries, gc leaves no temp file
// or half row, and the audit chain verifies.
//
// Kills come in two kinds: at a random moment (receiving, encrypting, writing blobs or rows,
// talking to upstream, answering), and at the worst one: upstream has taken the message but
// the relay has not seen its 250. The relay cannot know that upstream accepted, so it must
// send again on the retry (nothing lost); the patient then gets the same delivery twice,
// and every link works. A second delivery for one message is a failure.
//
// Default size fits `npm test`; PRAXMAIL_CRASH_FULL=1 (npm run crash) runs 20 × 25 with 6
// kills. PRAXMAIL_CRASH_SEED=<n> replays a kill plan.
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, initHome, praxmail, tempDir, walk } from "./helpers/cli.js";
import {
  ageDecrypt,
  crashSeed,
  crashServe,
  pool,
  seeded,
  sleep,
  startCrashSink,
  storeViolations,
  submitUntilAnswered,
  type CrashServe,
  type Attempt,
  type CrashSink,
  type Upstreamed,
} from "./helpers/crash.js";
import { openByToken } from "./helpers/deliveries.js";
import { befundMail, patchConfig } from "./helpers/relay.js";
import { freePort } from "./helpers/serve.js";
import { needTool } from "./helpers/tools.js";

const FULL = process.env.PRAXMAIL_CRASH_FULL === "1";
const SENDERS = FULL ? 20 : 5;
const PER_SENDER = FULL ? 25 : 6;
const KILLS = FULL ? 6 : 2;
const TOTAL = SENDERS * PER_SENDER;

const SEED = crashSeed(0x8c1a55);

type KillMode = "random" | "upstream-accepted";

/** One planned kill: once `after` messages got 250, kill (after `delayMs`, or when upstream takes the next message). */
interface PlannedKill {
  readonly after: number;
  readonly mode: KillMode;
  readonly delayMs: number;
  /** How long the relay stays down before it is started again. */
  readonly downMs: number;
}

/** A kill that happened. */
interface Kill {
  readonly mode: KillMode;
  /** performance.now() once the killed process had exited. */
  readonly at: number;
  /** For upstream-accepted: the message upstream had just taken. */
  readonly messageId: string | null;
}

interface Sent {
  readonly messageId: string;
  readonly from: string;
  readonly to: string;
  readonly attachment: Buffer;
  readonly raw: Buffer;
  readonly attempts: Attempt[];
}

function planKills(rng: () => number): PlannedKill[] {
  // Half of each kind (odd counts favour random), in a seeded order.
  const modes: KillMode[] = Array.from({ length: KILLS }, (_, i) => (i % 2 === 0 ? "random" : "upstream-accepted"));
  for (let i = modes.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [modes[i], modes[j]] = [modes[j] as KillMode, modes[i] as KillMode];
  }
  const step = TOTAL / (KILLS + 1);
  return modes.map((mode, i) => ({
    // Spread over the run, jittered by up to a quarter step either way.
    after: Math.max(1, Math.min(TOTAL - 2, Math.round(step * (i + 1) + (rng() - 0.5) * step * 0.5))),
    mode,
    delayMs: Math.floor(rng() * 250),
    downMs: Math.floor(rng() * 300),
  }));
}

function message(s: number, m: number, run: string, attachment: Buffer): Sent {
  const messageId = `<crash-${run}-s${s}-m${m}@praxis-weber.example>`;
  const from = `mfa${s}@praxis-weber.example`;
  const to = `patient${s}@patient.example`;
  const raw = befundMail({
    from,
    to: `<${to}>`,
    messageId: messageId.slice(1, -1),
    attachment,
    subject: `[S3] Befund ${s}-${m}`,
    text: `Anbei der Befund ${s}-${m}.`,
    filename: `befund-${s}-${m}.pdf`,
  });
  return { messageId, from, to, attachment, raw, attempts: [] };
}

let dir: string;
let home: string;
let sink: CrashSink;
let serve: CrashServe;

beforeAll(async () => {
  dir = await tempDir("praxmail-crash-");
  home = join(dir, "home");
  await initHome(home, ["--recipient-type", "x25519"]);
  sink = await startCrashSink();
  await patchConfig(home, { upstream: sink.url });
  serve = crashServe(home, await freePort());
});

afterAll(async () => {
  await serve.kill();
  await sink.close();
  await cleanup(dir);
});

describe(`relay crash safety (${SENDERS} senders × ${PER_SENDER} level-3 messages, ${KILLS} kills, seed ${SEED})`, () => {
  it("messages that got 250 are upstream once as one delivery that decrypts, retries duplicate nothing, gc leaves nothing half, the audit chain holds", { timeout: FULL ? 900_000 : 120_000 }, async ({ onTestFailed }) => {
    onTestFailed(() => {
      console.error(`relay.crash: failed with PRAXMAIL_CRASH_SEED=${SEED} (${SENDERS}×${PER_SENDER}, ${KILLS} kills)\n--- last serve output ---\n${serve.tail()}`);
    });
    const began = performance.now();
    const rng = seeded(SEED);
    const plan = planKills(rng);
    const run = randomBytes(4).toString("hex");
    const senders: Sent[][] = Array.from({ length: SENDERS }, (_, s) =>
      Array.from({ length: PER_SENDER }, (_, m) => message(s, m, run, randomBytes(1024 + Math.floor(rng() * 200 * 1024)))),
    );
    const all = senders.flat();

    // The kill driver: arms the next planned kill once enough messages got 250.
    const kills: Kill[] = [];
    let accepted = 0;
    let next = 0;
    let busy = false;
    // Set when stopping or starting serve failed: the clients give up and the test fails.
    const broken: { error: Error | null } = { error: null };
    const restart = async (k: PlannedKill): Promise<void> => {
      await sleep(k.downMs);
      await serve.start();
      busy = false;
      arm();
    };
    const arm = (): void => {
      const k = plan[next];
      if (busy || broken.error || !k || accepted < k.after) return;
      next++;
      busy = true;
      const fail = (e: unknown): void => {
        broken.error ??= e instanceof Error ? e : new Error(String(e));
      };
      if (k.mode === "random") {
        setTimeout(() => {
          serve
            .kill()
            .then(() => {
              kills.push({ mode: k.mode, at: performance.now(), messageId: null });
              return restart(k);
            })
            .catch(fail);
        }, k.delayMs);
      } else {
        // Upstream has the whole message and will answer 250 once the relay is dead.
        sink.onNextMessage = async (m: Upstreamed) => {
          await serve.kill();
          kills.push({ mode: k.mode, at: performance.now(), messageId: m.messageId });
          void restart(k).catch(fail);
        };
      }
    };

    await serve.start();
    await Promise.all(
      senders.map(async (msgs) => {
        for (const msg of msgs) {
          if (await submitUntilAnswered(serve.port, msg, [msg.to], broken)) {
            accepted++;
            arm();
          }
          if (broken.error) return;
        }
      }),
    );
    const ranMs = performance.now() - began;
    if (broken.error) throw broken.error;
    // A kill armed after the last 250 would never fire; the plan keeps them earlier.
    expect(kills.map((k) => k.mode)).toEqual(plan.map((k) => k.mode));
    await sleep(100);
    expect(await serve.stop()).toBe(0);

    const violations: string[] = [];
    const byMessage = new Map<string, Upstreamed[]>();
    for (const u of sink.messages) byMessage.set(u.messageId, [...(byMessage.get(u.messageId) ?? []), u]);
    const unknown = [...byMessage.keys()].filter((id) => !all.some((m) => m.messageId === id));
    if (unknown.length) violations.push(`upstream got messages nobody sent: ${unknown.join(", ")}`);

    const deliveryOf = new Map<Sent, string>();
    let reannounced = 0;
    for (const msg of all) {
      const last = msg.attempts.at(-1);
      const id = msg.messageId;
      if (last?.code !== 250) {
        violations.push(`${id}: never got 250 (${msg.attempts.length} attempts, last ${String(last?.code)} ${last?.text ?? ""})`);
        continue;
      }
      // A retry that announces an earlier attempt's delivery again still reports it.
      if (!last.text.includes("accepted, 1 encrypted")) violations.push(`${id}: 250 without "1 encrypted": ${last.text}`);
      const copies = byMessage.get(id) ?? [];
      if (copies.length === 0) {
        violations.push(`${id}: got 250 but is not upstream`);
        continue;
      }
      const ids = [...new Set(copies.map((c) => c.deliveryId))];
      if (ids.length !== 1 || ids[0] === null) {
        violations.push(`${id}: ${copies.length} copies upstream announce ${ids.length} deliveries (${ids.join(", ")})`);
        continue;
      }
      deliveryOf.set(msg, ids[0] as string);
      for (const c of copies) {
        if (!c.to.includes(msg.to) || c.to.length !== 1) violations.push(`${id}: a copy went to ${c.to.join(", ")}`);
        if (c.mail.attachments.length !== 0) violations.push(`${id}: a copy carries an attachment`);
        if (c.tokens.length !== 1) violations.push(`${id}: a copy has ${c.tokens.length} links`);
        if (c.at > last.end) violations.push(`${id}: a copy reached upstream after the client had its 250`);
      }
      // A second copy is only right when the relay was killed after upstream took the one
      // before it and before it could record that: a kill must have ended between the two
      // (a copy that arrived while SIGKILL was on its way counts as before).
      for (let i = 1; i < copies.length; i++) {
        const [a, b] = [copies[i - 1] as Upstreamed, copies[i] as Upstreamed];
        if (!kills.some((k) => k.at >= a.at && k.at <= b.at)) violations.push(`${id}: sent upstream again without a crash in between (copy ${i + 1} of ${copies.length})`);
      }
      if (copies.length > 1) reannounced++;
    }
    // Upstream had taken these when the relay died: the relay could not know, so the retry
    // must have sent them again (nothing lost), as the same delivery (checked above).
    for (const k of kills.filter((x) => x.mode === "upstream-accepted")) {
      const n = byMessage.get(k.messageId ?? "")?.length ?? 0;
      if (n < 2) violations.push(`${String(k.messageId)}: upstream took it as the relay was killed, but it was not sent again on retry (${n} copies)`);
    }

    // The rows as the relay left them (before gc).
    const before = { temp: (await walk(join(home, "blobs", "tmp")).catch(() => [])).length };
    const db = new Database(join(home, "praxmail.db"), { readonly: true });
    const rows = db.prepare("SELECT id, recipient, level, sent_at AS sentAt FROM deliveries").all() as { id: string; recipient: string; level: number; sentAt: string | null }[];
    const unsentBefore = rows.filter((r) => r.sentAt === null).length;
    db.close();

    const gc = await praxmail(["gc", "--home", home, "--grace", "0", "--json"]);
    expect(gc.stderr).toBe("");
    expect(gc.code).toBe(0);
    const gcReport = JSON.parse(gc.stdout) as { unsent: number; orphanBlobs: number; tempFiles: number };

    // After gc: no temp file, no half row, every blob referenced, the audit log agrees.
    violations.push(...(await storeViolations(home)));
    const db2 = new Database(join(home, "praxmail.db"), { readonly: true });
    try {
      const visible = db2.prepare("SELECT id, recipient, level, status FROM deliveries WHERE sent_at IS NOT NULL").all() as { id: string; recipient: string; level: number; status: string }[];
      if (visible.length !== TOTAL) violations.push(`${visible.length} visible deliveries for ${TOTAL} messages`);
      const byId = new Map(visible.map((v) => [v.id, v]));
      const seen = new Set<string>();
      for (const [msg, id] of deliveryOf) {
        const v = byId.get(id);
        if (!v) violations.push(`${msg.messageId}: its delivery ${id} is not in the store`);
        else if (v.recipient !== msg.to || v.level !== 3 || v.status !== "pending-approval") violations.push(`${msg.messageId}: delivery ${id} is ${JSON.stringify(v)}`);
        if (seen.has(id)) violations.push(`${msg.messageId}: delivery ${id} also belongs to another message`);
        seen.add(id);
      }
    } finally {
      db2.close();
    }

    // Every link in every copy opens the message's delivery, and its file is what was sent:
    // through the project's crypto, and through the Go age CLI when installed.
    const goAge = needTool("age");
    const scratch = join(dir, "keys");
    await mkdir(scratch, { mode: 0o700 });
    const listed = await praxmail(["list", "deliveries", "--home", home, "--json"]);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toHaveLength(TOTAL);
    await pool([...deliveryOf], 4, async ([msg, id]) => {
      for (const c of byMessage.get(msg.messageId) ?? []) {
        for (const token of c.tokens) {
          try {
            const opened = await openByToken(home, token);
            const file = opened.files.find((f) => f.kind === "attachment");
            if (opened.email !== msg.to || opened.files.length !== 1 || !file?.data.equals(msg.attachment)) {
              violations.push(`${msg.messageId}: link of delivery ${id} does not open the attachment sent`);
            }
          } catch (e) {
            violations.push(`${msg.messageId}: a link in a copy upstream does not work: ${(e as Error).message}`);
          }
        }
      }
      if (!goAge) return;
      const plain = await ageDecrypt(home, id, scratch);
      if (!plain.equals(msg.attachment)) violations.push(`${msg.messageId}: age -d of delivery ${id}'s file is not the attachment sent`);
    });

    const audit = await praxmail(["audit", "--verify", "--home", home]);
    // Nothing signed a checkpoint here (serve never holds P): the chain holds, unconfirmed.
    expect(audit.stderr).toMatch(/^praxmail: no signed checkpoint yet: .*\npraxmail: \d+ rows unconfirmed \(rows 1–\d+\): .*\n$/);
    expect(audit.code).toBe(0);
    expect(audit.stdout).toMatch(/^audit chain intact: \d+ rows\n$/);

    const retried = all.filter((m) => m.attempts.length > 1).length;
    const attempts = all.reduce((n, m) => n + m.attempts.length, 0);
    console.log(
      `relay.crash seed=${SEED} ${SENDERS}×${PER_SENDER}: ${kills.length} kills (${kills.map((k) => k.mode).join(", ")}), ${attempts} attempts, ` +
        `${retried} messages retried, ${reannounced} re-sent after upstream had them; before gc: ${unsentBefore} unsent rows, ${before.temp} temp files; ` +
        `gc: ${JSON.stringify(gcReport)}; run ${Math.round(ranMs)} ms, total ${Math.round(performance.now() - began)} ms`,
    );
    expect(violations).toEqual([]);
  });
});

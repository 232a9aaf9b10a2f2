// Crash safety of the milter (issue 13): concurrent senders submit level-3 mail to a real
// Postfix with `praxmail serve --milter` as its milter; a third of the messages go to three
// patients, so their copies leave through the reinjection smtpd. serve is SIGKILLed at
// seeded moments and started again on the same ports. While it is down, or when it dies
// during a message, Postfix defers (milter_default_action = tempfail) and the senders retry
// until they get 250. Then: every message Postfix accepted reached the sink once per patient
// as one delivery, with no attachment byte in clear; every delivery's file decrypts with the
// Go age CLI and the practice identity; gc leaves nothing half; the audit chain holds.
//
// A second copy of a delivery is right only for a message one of whose attempts a kill cut
// off: Postfix may have queued (or the reinjection smtpd taken) a copy of that attempt, and
// the milter cannot know, so the retry carries the same delivery again. Two deliveries for
// one patient of one message are a failure.
//
// Default size fits `npm test`; PRAXMAIL_CRASH_FULL=1 (npm run crash) runs 12 × 15 with 6
// kills. PRAXMAIL_CRASH_SEED=<n> replays a kill plan.
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, initHome, praxmail, tempDir } from "./helpers/cli.js";
import { ageDecrypt, crashSeed, crashServe, pool, seeded, sleep, startCrashSink, storeViolations, submitUntilAnswered, type Attempt, type CrashServe, type CrashSink, type Upstreamed } from "./helpers/crash.js";
import { openByToken } from "./helpers/deliveries.js";
import { startPostfix, type TestPostfix } from "./helpers/postfix.js";
import { befundMail } from "./helpers/relay.js";
import { freePort } from "./helpers/serve.js";
import { needRoot, needTool } from "./helpers/tools.js";

const FULL = process.env.PRAXMAIL_CRASH_FULL === "1";
const SENDERS = FULL ? 12 : 4;
const PER_SENDER = FULL ? 15 : 5;
const KILLS = FULL ? 6 : 3;
const TOTAL = SENDERS * PER_SENDER;
const SEED = crashSeed(0x3f1e7d);

interface Sent {
  readonly messageId: string;
  readonly from: string;
  readonly to: readonly string[];
  readonly attachment: Buffer;
  readonly raw: Buffer;
  readonly attempts: Attempt[];
}

/** From the moment serve was told to die until it listened again. */
interface Outage {
  /** random, copy-arrived (with the message that arrived), or copy-arrived fallback. */
  readonly how: string;
  readonly from: number;
  to: number;
}

function message(s: number, m: number, run: string, attachment: Buffer): Sent {
  const messageId = `<mcrash-${run}-s${s}-m${m}@praxis-weber.example>`;
  const from = `mfa${s}@praxis-weber.example`;
  // Every third message to three patients: one copy each, through the reinjection smtpd.
  const to = m % 3 === 1 ? ["a", "b", "c"].map((p) => `patient${s}${p}@patient.example`) : [`patient${s}a@patient.example`];
  const raw = befundMail({
    from,
    to: to.map((a) => `<${a}>`).join(", "),
    messageId: messageId.slice(1, -1),
    attachment,
    subject: `[S3] Befund ${s}-${m}`,
    text: `Anbei der Befund ${s}-${m}.`,
    filename: `befund-${s}-${m}.pdf`,
  });
  return { messageId, from, to, attachment, raw, attempts: [] };
}

/** Pieces of an attachment as they would appear in clear: raw bytes, and a base64 line of befundMail. */
function clearPieces(attachment: Buffer): Buffer[] {
  const mid = Math.floor(attachment.length / 2);
  const b64 = attachment.toString("base64");
  return [attachment.subarray(mid, mid + 40), Buffer.from(b64.slice(76 + 10, 76 + 50))];
}

let dir: string;
let home: string;
let sink: CrashSink;
let serve: CrashServe;
let pf: TestPostfix | undefined;

describe.runIf(needRoot("the Postfix test instance") && needTool("postfix"))(
  `milter crash safety in Postfix (${SENDERS} senders × ${PER_SENDER} level-3 messages, ${KILLS} kills, seed ${SEED})`,
  () => {
    beforeAll(async () => {
      dir = await tempDir("praxmail-mcrash-");
      home = join(dir, "home");
      sink = await startCrashSink();
      const ports = { smtp: await freePort(), reinject: await freePort(), milter: await freePort(), sink: Number(new URL(sink.url).port) };
      await initHome(home, ["--recipient-type", "x25519", "--upstream", `smtp://127.0.0.1:${ports.reinject}`]);
      serve = crashServe(home, await freePort(), ports.milter);
      await serve.start();
      pf = await startPostfix(join(dir, "postfix"), ports);
    });

    afterAll(async () => {
      await pf?.stop();
      await serve.kill();
      await sink.close();
      await cleanup(dir);
    });

    it("every message Postfix accepted reaches each patient as one delivery, no attachment in clear, every file opens with age, gc leaves nothing half", { timeout: FULL ? 900_000 : 120_000 }, async ({ onTestFailed }) => {
      const postfix = pf as TestPostfix;
      onTestFailed(async () => {
        console.error(`milter.crash: failed with PRAXMAIL_CRASH_SEED=${SEED} (${SENDERS}×${PER_SENDER}, ${KILLS} kills)\n--- last serve output ---\n${serve.tail()}\n--- maillog ---\n${(await postfix.log()).slice(-4000)}`);
      });
      const began = performance.now();
      const rng = seeded(SEED);
      const step = TOTAL / (KILLS + 1);
      // Half the kills (the odd one too) when the sink gets the first patient's copy of a
      // message to three: the milter is then reinjecting the others or answering Postfix, the
      // moment where it cannot know what Postfix kept. The other half at a random moment.
      const plan = Array.from({ length: KILLS }, (_, i) => ({
        after: Math.max(1, Math.min(TOTAL - 2, Math.round(step * (i + 1) + (rng() - 0.5) * step * 0.5))),
        mode: i % 2 === 0 ? "copy-arrived" : "random",
        delayMs: Math.floor(rng() * 250),
        downMs: Math.floor(rng() * 400),
      }));
      const run = randomBytes(4).toString("hex");
      const senders: Sent[][] = Array.from({ length: SENDERS }, (_, s) =>
        Array.from({ length: PER_SENDER }, (_, m) => message(s, m, run, randomBytes(1024 + Math.floor(rng() * 200 * 1024)))),
      );
      const all = senders.flat();

      // The kill driver: once enough messages got 250, kill after a delay, wait, start again.
      const outages: Outage[] = [];
      const broken: { error: Error | null } = { error: null };
      let accepted = 0;
      let next = 0;
      let busy = false;
      const settled = (): boolean => !busy && next >= plan.length;
      const arm = (): void => {
        const k = plan[next];
        if (busy || broken.error || !k || accepted < k.after) return;
        next++;
        busy = true;
        const kill = (how: string): void => {
          const o: Outage = { how, from: performance.now(), to: Infinity };
          outages.push(o);
          serve
            .kill()
            .then(() => sleep(k.downMs))
            .then(() => serve.start())
            .then(() => {
              o.to = performance.now();
              busy = false;
              arm();
            })
            .catch((e: unknown) => {
              broken.error ??= e instanceof Error ? e : new Error(String(e));
            });
        };
        if (k.mode === "random") {
          setTimeout(() => {
            kill("random");
          }, k.delayMs);
          return;
        }
        const hook = (u: Upstreamed): Promise<void> => {
          const msg = all.find((m) => m.messageId === u.messageId);
          if (msg && msg.to.length > 1 && u.to[0] === msg.to[0]) kill(`copy-arrived ${msg.messageId}`);
          else sink.onNextMessage = hook;
          return Promise.resolve();
        };
        sink.onNextMessage = hook;
        // Near the end no message to three may be left: then kill anyway.
        setTimeout(() => {
          if (sink.onNextMessage !== hook) return;
          sink.onNextMessage = null;
          kill("copy-arrived fallback");
        }, 2000);
      };

      await Promise.all(
        senders.map(async (msgs) => {
          for (const msg of msgs) {
            // 4xx (Postfix deferring while the milter is gone) means try again.
            if (await submitUntilAnswered(postfix.smtpPort, msg, [...msg.to], broken)) {
              accepted++;
              arm();
            }
            if (broken.error) return;
          }
        }),
      );
      // A kill armed by the last messages may still be under way: let it finish.
      for (;;) {
        if (broken.error) throw broken.error;
        if (settled()) break;
        await sleep(50);
      }
      expect(outages).toHaveLength(KILLS);
      const ranMs = performance.now() - began;

      // Postfix delivers from its queue on its own time: wait for a copy per patient.
      const expected = all.reduce((n, m) => n + m.to.length, 0);
      const copiesOf = (msg: Sent, rcpt: string): Upstreamed[] => sink.messages.filter((u) => u.messageId === msg.messageId && u.to.includes(rcpt));
      const until = Date.now() + 60_000;
      while (all.some((m) => m.attempts.at(-1)?.code === 250 && m.to.some((r) => copiesOf(m, r).length === 0)) && Date.now() < until) await sleep(200);
      // And a moment more, for a surplus copy still in Postfix's queue.
      await sleep(1500);
      expect(await serve.stop()).toBe(0);

      const violations: string[] = [];
      const unknown = sink.messages.filter((u) => !all.some((m) => m.messageId === u.messageId));
      if (unknown.length) violations.push(`the sink got messages nobody sent: ${unknown.map((u) => `${u.messageId} to ${u.to.join(",")}`).join("; ")}`);
      const cut = (a: Attempt): boolean => outages.some((o) => a.start <= o.to && a.end >= o.from);
      const deliveryOf = new Map<string, { msg: Sent; rcpt: string; id: string; copies: Upstreamed[] }>();
      let again = 0;
      for (const msg of all) {
        const id = msg.messageId;
        const last = msg.attempts.at(-1);
        if (last?.code !== 250) {
          violations.push(`${id}: never got 250 (${msg.attempts.length} attempts, last ${String(last?.code)} ${last?.text ?? ""})`);
          continue;
        }
        const failed = msg.attempts.filter((a) => a.code !== 250);
        for (const a of failed) if (!cut(a)) violations.push(`${id}: Postfix answered ${a.code} without a kill: ${a.text}`);
        for (const rcpt of msg.to) {
          const copies = copiesOf(msg, rcpt);
          if (copies.length === 0) {
            violations.push(`${id}: Postfix accepted it, but ${rcpt} got nothing`);
            continue;
          }
          const ids = [...new Set(copies.map((c) => c.deliveryId))];
          if (ids.length !== 1 || ids[0] === null) {
            violations.push(`${id}: ${copies.length} copies to ${rcpt} announce ${ids.length} deliveries (${ids.join(", ")})`);
            continue;
          }
          // One copy per attempt at most, and more than one only if a kill cut an attempt off.
          if (copies.length > 1 + failed.length) violations.push(`${id}: ${copies.length} copies to ${rcpt} for ${failed.length} failed attempts`);
          if (copies.length > 1) again++;
          for (const c of copies) {
            if (c.to.length !== 1) violations.push(`${id}: a copy went to ${c.to.join(", ")}`);
            if (c.mail.attachments.length !== 0) violations.push(`${id}: a copy to ${rcpt} carries an attachment`);
            if (c.tokens.length !== 1) violations.push(`${id}: a copy to ${rcpt} has ${c.tokens.length} links`);
          }
          deliveryOf.set(ids[0] as string, { msg, rcpt, id: ids[0] as string, copies });
        }
      }
      // No byte of any attachment in clear anywhere at the sink.
      for (const u of sink.messages) {
        const msg = all.find((m) => m.messageId === u.messageId);
        if (msg && clearPieces(msg.attachment).some((p) => u.raw.includes(p))) {
          violations.push(`${u.messageId}: attachment bytes in clear at the sink`);
        }
      }
      if (deliveryOf.size !== expected) violations.push(`${deliveryOf.size} deliveries announced for ${expected} patient recipients`);

      const gc = await praxmail(["gc", "--home", home, "--grace", "0", "--json"]);
      expect(gc.stderr).toBe("");
      expect(gc.code).toBe(0);
      violations.push(...(await storeViolations(home)));
      const db = new Database(join(home, "praxmail.db"), { readonly: true });
      const visible = db.prepare("SELECT id, recipient, level, status FROM deliveries WHERE sent_at IS NOT NULL").all() as { id: string; recipient: string; level: number; status: string }[];
      db.close();
      if (visible.length !== expected) violations.push(`${visible.length} visible deliveries for ${expected} patient recipients`);
      for (const v of visible) {
        const d = deliveryOf.get(v.id);
        if (!d) violations.push(`delivery ${v.id} to ${v.recipient} was announced to nobody`);
        else if (v.recipient !== d.rcpt || v.level !== 3 || v.status !== "pending-approval") violations.push(`${d.msg.messageId}: delivery ${v.id} is ${JSON.stringify(v)}`);
      }

      // Every link in every copy opens its delivery with the attachment sent; and the Go age
      // CLI alone, with the practice identity, opens every delivery's file.
      const goAge = needTool("age");
      const scratch = join(dir, "keys");
      await mkdir(scratch, { mode: 0o700 });
      await pool([...deliveryOf.values()], 4, async ({ msg, rcpt, id, copies }) => {
        for (const c of copies) {
          for (const token of c.tokens) {
            try {
              const opened = await openByToken(home, token);
              if (opened.email !== rcpt || opened.files.length !== 1 || !opened.files[0]?.data.equals(msg.attachment)) {
                violations.push(`${msg.messageId}: a link to ${rcpt} does not open the attachment sent`);
              }
            } catch (e) {
              violations.push(`${msg.messageId}: a link to ${rcpt} does not work: ${(e as Error).message}`);
            }
          }
        }
        if (goAge && !(await ageDecrypt(home, id, scratch)).equals(msg.attachment)) violations.push(`${msg.messageId}: age -d of delivery ${id}'s file is not the attachment sent`);
      });

      const audit = await praxmail(["audit", "--verify", "--home", home]);
      expect(audit.code).toBe(0);
      expect(audit.stdout).toMatch(/^audit chain intact: \d+ rows\n$/);

      const attempts = all.reduce((n, m) => n + m.attempts.length, 0);
      const retried = all.filter((m) => m.attempts.length > 1).length;
      console.log(
        `milter.crash seed=${SEED} ${SENDERS}×${PER_SENDER} (${expected} patient copies): ${outages.length} kills (${outages.map((o) => o.how).join(", ")}), ${attempts} attempts, ${retried} messages retried, ` +
          `${again} deliveries carried again after a kill; run ${Math.round(ranMs)} ms, total ${Math.round(performance.now() - began)} ms`,
      );
      expect(violations).toEqual([]);
    });
  },
);

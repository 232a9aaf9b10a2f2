// The specification of the retry rules (src/core/retry.ts): every pair of state and event,
// legal or not; what a retry does with the delivery an earlier attempt left; what an attempt's
// outcome discards. Then the same rules where core/deliveries.ts asks them, on a real store of
// each backend.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Intake,
  NEEDS_PATIENT_KEY,
  TRANSITIONS,
  createDelivery,
  deliveryState,
  discardDelivery,
  discardedBy,
  initPractice,
  loadConfig,
  markSent,
  nextState,
  reaches,
  retryAction,
  type AttemptOutcome,
  type Context,
  type DeliveryEvent,
  type DeliveryState,
  type RetryAction,
} from "../src/core/index.js";
import type { DeliveryStatus } from "../src/store/index.js";
import { describeBackends } from "./helpers/backends.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { collect } from "./helpers/store.js";
import { streamOf } from "./helpers/streams.js";

const STATES: DeliveryState[] = ["created", "announced", "sent", "discarded"];
const EVENTS: DeliveryEvent[] = ["accepted", "refused", "failed", "announce-again", "replace", "abandoned"];

// Every pair; null: illegal. At level 3, where every event is allowed by level.
// prettier-ignore
const SPEC: Record<DeliveryState, Record<DeliveryEvent, DeliveryState | null>> = {
  //          accepted  refused      failed       announce-again announce     replace      abandoned
  created:   { accepted: "sent", refused: "discarded", failed: "discarded", "announce-again": null,        replace: null,        abandoned: null },
  announced: { accepted: "sent", refused: "announced", failed: "announced", "announce-again": "announced", replace: "discarded", abandoned: "discarded" },
  sent:      { accepted: "sent", refused: "sent",      failed: "sent",      "announce-again": "sent",      replace: "discarded", abandoned: null },
  discarded: { accepted: null,   refused: null,        failed: null,        "announce-again": null,        replace: null,        abandoned: null },
};

const PAIRS = STATES.flatMap((from) => EVENTS.map((event) => ({ from, event, to: SPEC[from][event] })));

describe("retry transitions", () => {
  it.each(PAIRS.filter((p) => p.to !== null))("$from --$event--> $to", ({ from, event, to }) => {
    expect(nextState(from, event, 3)).toBe(to);
    expect(TRANSITIONS[from][event]).toBe(to);
  });

  it.each(PAIRS.filter((p) => p.to === null))("$from --$event--> refused", ({ from, event }) => {
    expect(() => nextState(from, event, 3)).toThrow(`illegal retry transition: a ${from} delivery cannot take "${event}"`);
    expect(TRANSITIONS[from][event]).toBeUndefined();
  });

  it("the table holds exactly these transitions", () => {
    const legal = PAIRS.filter((p) => p.to !== null).map((p) => `${p.from} ${p.event} ${p.to}`);
    const table = Object.entries(TRANSITIONS).flatMap(([from, events]) => Object.entries(events).map(([event, to]) => `${from} ${event} ${to}`));
    expect(table.sort()).toEqual(legal.sort());
  });

  it.each([
    { level: 1, ok: false },
    { level: 2, ok: false },
    { level: 3, ok: true },
    { level: 4, ok: true },
    { level: null, ok: false },
  ])("announce-again at level $level: allowed $ok (a level 1–2 link holds the delivery's key)", ({ level, ok }) => {
    expect(NEEDS_PATIENT_KEY).toEqual(new Set(["announce-again"]));
    for (const from of ["announced", "sent"] as const) {
      if (ok) expect(nextState(from, "announce-again", level)).toBe(from);
      else expect(() => nextState(from, "announce-again", level)).toThrow(`illegal retry transition: a level ${String(level)} delivery cannot take "announce-again"; its link holds its key`);
    }
    // Other events do not depend on the level.
    expect(nextState("announced", "replace", level)).toBe("discarded");
  });

  it.each([
    { from: "created", to: "discarded", reaches: true },
    { from: "announced", to: "discarded", reaches: true },
    { from: "sent", to: "discarded", reaches: true },
    { from: "discarded", to: "discarded", reaches: false },
    { from: "sent", to: "announced", reaches: false },
    { from: "discarded", to: "sent", reaches: false },
  ] as const)("$from reaches $to: $reaches", ({ from, to, reaches: r }) => {
    expect(reaches(from, to)).toBe(r);
  });

  it.each([
    { row: undefined, state: "discarded" },
    { row: { sentAt: null }, state: "announced" },
    { row: { sentAt: "2026-11-30T09:00:00.000Z" }, state: "sent" },
  ] as const)("a stored row $row is $state", ({ row, state }) => {
    expect(deliveryState(row)).toBe(state);
  });
});

interface Found {
  readonly sentAt: string | null;
  readonly status: DeliveryStatus;
  readonly level: number;
}
const SENT = "2026-11-30T09:00:00.000Z";
const unsent = (level: number, status: DeliveryStatus = "ready"): Found => ({ sentAt: null, status, level });
const sent = (level: number, status: DeliveryStatus = "ready"): Found => ({ sentAt: SENT, status, level });

// prettier-ignore
const RETRIES: { found: Found | undefined; level: number; sentIsFinal: boolean; action: RetryAction; why: string }[] = [
  { found: undefined,                         level: 3, sentIsFinal: true,  action: "create",         why: "no earlier attempt" },
  { found: undefined,                         level: 1, sentIsFinal: false, action: "create",         why: "no earlier attempt" },
  { found: unsent(3),                         level: 3, sentIsFinal: true,  action: "announce-again", why: "its mail may be out; its link must keep working" },
  { found: unsent(4, "pending-approval"),     level: 4, sentIsFinal: true,  action: "announce-again", why: "its mail may be out; its link must keep working" },
  { found: unsent(3),                         level: 3, sentIsFinal: false, action: "announce-again", why: "its mail may be out; its link must keep working" },
  { found: unsent(1),                         level: 1, sentIsFinal: true,  action: "replace",        why: "the key rode in the first attempt's link" },
  { found: unsent(2),                         level: 2, sentIsFinal: false, action: "replace",        why: "the key rode in the first attempt's link" },
  { found: unsent(3),                         level: 4, sentIsFinal: true,  action: "replace",        why: "another level" },
  { found: sent(3),                           level: 3, sentIsFinal: true,  action: "skip",           why: "the relay's sent is upstream's 250" },
  { found: sent(1),                           level: 1, sentIsFinal: true,  action: "skip",           why: "the relay's sent is upstream's 250" },
  { found: sent(3, "revoked"),                level: 4, sentIsFinal: true,  action: "skip",           why: "the relay's sent is upstream's 250" },
  { found: sent(3),                           level: 3, sentIsFinal: false, action: "announce-again", why: "Postfix may have deferred the edited message" },
  { found: sent(4, "pending-approval"),       level: 4, sentIsFinal: false, action: "announce-again", why: "Postfix may have deferred the edited message" },
  { found: sent(2),                           level: 2, sentIsFinal: false, action: "replace",        why: "Postfix may have deferred it, and the key rode in its link" },
  { found: sent(3),                           level: 4, sentIsFinal: false, action: "replace",        why: "another level" },
  { found: sent(3, "downloaded"),             level: 3, sentIsFinal: false, action: "skip",           why: "the patient opened it, so it left" },
  { found: sent(2, "downloaded"),             level: 2, sentIsFinal: false, action: "skip",           why: "the patient opened it, so it left" },
  { found: sent(3, "expired"),                level: 3, sentIsFinal: false, action: "skip",           why: "it ended after it left" },
  { found: sent(3, "revoked"),                level: 3, sentIsFinal: false, action: "skip",           why: "the practice revoked it after it left" },
];

describe("what a retry does with the delivery an earlier attempt left", () => {
  it.each(RETRIES)("$found at level $level, sent final $sentIsFinal: $action ($why)", ({ found, level, sentIsFinal, action }) => {
    expect(retryAction(found, level, sentIsFinal)).toBe(action);
  });

  it("refuses a level outside the table", () => {
    expect(() => retryAction(unsent(3), 7, true)).toThrow(/unknown security level 7/);
  });
});

// prettier-ignore
const OUTCOMES: { outcome: AttemptOutcome; created: string[]; carried: string[]; accepted: string[]; discarded: string[] }[] = [
  { outcome: "accepted", created: ["d_a", "d_b"], carried: ["d_c"], accepted: ["d_a", "d_b", "d_c"], discarded: [] },
  { outcome: "refused",  created: ["d_a", "d_b"], carried: ["d_c"], accepted: [],                    discarded: ["d_a", "d_b"] },
  { outcome: "refused",  created: ["d_a", "d_b"], carried: ["d_c"], accepted: ["d_a"],               discarded: ["d_b"] },
  { outcome: "refused",  created: [],             carried: ["d_c"], accepted: [],                    discarded: [] },
  { outcome: "failed",   created: ["d_a"],        carried: ["d_c"], accepted: [],                    discarded: ["d_a"] },
  { outcome: "failed",   created: ["d_a", "d_b"], carried: ["d_c"], accepted: ["d_b", "d_c"],        discarded: ["d_a"] },
];

describe("what an attempt's outcome discards", () => {
  it.each(OUTCOMES)("$outcome, created $created, carried again $carried, accepted $accepted: discards $discarded", ({ outcome, created, carried, accepted, discarded }) => {
    expect(discardedBy(outcome, { created, carried, accepted: new Set(accepted) })).toEqual(discarded);
  });

  it("refuses a delivery that is both created and carried again", () => {
    expect(() => discardedBy("refused", { created: ["d_a"], carried: ["d_a"] })).toThrow("delivery d_a was both created and carried again");
  });
});

describeBackends("core/deliveries.ts asks the rules", (backend) => {
  let home: string;
  let ctx: Context;

  beforeAll(async () => {
    home = await tempDir();
    await initPractice(home, { practiceName: "Praxis Dr. Weber", practiceEmail: "praxis@praxis-weber.example", recipientType: "x25519", keyring: false });
    ctx = { home, config: loadConfig(home), store: await backend.open(home), notifier: { send: () => Promise.resolve() }, actor: "test", now: () => new Date() };
  });
  afterAll(async () => {
    await ctx.store.close();
    await cleanup(home);
  });

  const discards = async (id: string): Promise<number> => (await collect(ctx.store.auditRows())).filter((r) => r.action === "delivery.discard" && r.subject === id).length;
  const delivery = (level: number) => createDelivery(ctx, { recipient: "anna@patient.example", level, files: [{ name: "befund.pdf", open: () => streamOf(Buffer.from("%PDF")) }] });

  it("a discarded delivery is neither discarded again nor marked sent, and the audit log has one discard", async () => {
    const d = await delivery(3);
    // Two discards racing (gc and a failed attempt, or two nodes): the second finds it gone
    // and does nothing, so neither fails and the audit log says it once.
    await Promise.all([discardDelivery(ctx, d.id, "upstream refused"), discardDelivery(ctx, d.id, "abandoned")]);
    await discardDelivery(ctx, d.id, "milter failed");
    await expect(markSent(ctx, [d.id])).rejects.toThrow('illegal retry transition: a discarded delivery cannot take "accepted"');
    expect(await discards(d.id)).toBe(1);
    expect(await ctx.store.records.delivery(d.id)).toBeUndefined();
  });

  it("marking sent is all or nothing, and a delivery sent again keeps its first sent time", async () => {
    const [a, b, c] = [await delivery(3), await delivery(3), await delivery(3)];
    await discardDelivery(ctx, b.id, "upstream refused");
    await expect(markSent(ctx, [a.id, b.id])).rejects.toThrow(/a discarded delivery cannot take "accepted"/);
    expect((await ctx.store.records.delivery(a.id))?.sentAt).toBeNull();
    await markSent(ctx, [a.id, c.id]);
    const first = (await ctx.store.records.delivery(a.id))?.sentAt;
    expect(first).toEqual(expect.any(String));
    await new Promise((r) => setTimeout(r, 5));
    await markSent(ctx, [a.id]);
    expect((await ctx.store.records.delivery(a.id))?.sentAt).toBe(first);
  });

  it.each([1, 2])("a level %i delivery cannot be announced again, and the intake stays unchanged", async (level) => {
    const d = await delivery(level);
    const row = await ctx.store.records.delivery(d.id);
    const intake = await Intake.open(ctx, ["anna@patient.example"]);
    await expect(intake.announceAgain(row!)).rejects.toThrow(`illegal retry transition: a level ${level} delivery cannot take "announce-again"`);
    expect(intake.recipients).toEqual(["anna@patient.example"]);
    expect((await collect(ctx.store.auditRows())).filter((r) => r.action === "delivery.announce-again" && r.subject === d.id)).toEqual([]);
    await intake.abort();
  });

  it("a level 3 delivery is announced again with a new link; one that was discarded is not", async () => {
    const d = await delivery(3);
    const row = (await ctx.store.records.delivery(d.id))!;
    const intake = await Intake.open(ctx, ["anna@patient.example"]);
    const again = await intake.announceAgain(row);
    expect(again).toMatchObject({ id: d.id, level: 3 });
    expect(again.link).not.toBe(d.link);
    await discardDelivery(ctx, d.id, "retried");
    const later = await Intake.open(ctx, ["anna@patient.example"]);
    await expect(later.announceAgain(row)).rejects.toThrow('illegal retry transition: a discarded delivery cannot take "announce-again"');
    expect((await collect(ctx.store.auditRows())).filter((r) => r.action === "delivery.announce-again" && r.subject === d.id)).toHaveLength(1);
    await intake.abort();
    await later.abort();
  });
});

// When cleanup after a failure throws too, the first failure is what the caller gets; the
// cleanup failures travel with it for the adapter's one log line.
import { describe, expect, it } from "vitest";
import { cleanUpAfter, cleanupFailures, type Context } from "../src/core/index.js";
import { MailRejection, deliverPrepared, type Prepared, type Transport } from "../src/mail/index.js";

/** A prepared level-3 mail of one copy to one patient, carrying delivery d_1. */
const prepared = (): Prepared => ({
  level: 3,
  attachments: 1,
  original: null,
  copies: [{ recipients: ["a@patient.example"], bytes: Buffer.from("x"), deliveries: ["d_1"] }],
  deliveries: ["d_1"],
  announcedAgain: [],
  alreadyDelivered: [],
  warnings: [],
});

describe("cleanup after a failure", () => {
  it("runs every step, rethrows the first failure and keeps the failed steps with it", async () => {
    const first = Object.assign(new Error("no space left on device"), { code: "ENOSPC" });
    const ran: string[] = [];
    const e = await cleanUpAfter(first, [
      () => {
        ran.push("a");
        throw new Error("database is locked, open '/srv/praxmail/data.db'");
      },
      () => {
        ran.push("b");
      },
      () => {
        ran.push("c");
        return Promise.reject(Object.assign(new Error("permission denied"), { code: "EACCES" }));
      },
    ]);
    expect(e).toBe(first);
    expect(ran).toEqual(["a", "b", "c"]);
    expect(cleanupFailures(e)).toEqual({
      cleanup: [
        { name: "Error", code: null, message: "database is locked, open '<path>'" },
        { name: "Error", code: "EACCES", message: "permission denied" },
      ],
    });
    expect(cleanupFailures(await cleanUpAfter(new Error("x"), [() => undefined]))).toEqual({});
  });

  it("deliverPrepared: upstream down and the discard failing still answers 451 with upstream's reason", async () => {
    // A unit test of process.ts alone: the store refuses every transaction, upstream refuses.
    const ctx = {
      store: {
        transaction: () => {
          throw Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" });
        },
      },
    } as unknown as Context;
    const transport = { sendRaw: () => Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })) } as unknown as Transport;
    const e: unknown = await deliverPrepared(ctx, transport, { from: "praxis@praxis-weber.example", to: ["a@patient.example"] }, prepared()).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MailRejection);
    expect(e).toMatchObject({ responseCode: 451, enhanced: "4.4.1", message: "upstream did not accept the message (ECONNREFUSED); try again later" });
    expect(cleanupFailures(e)).toEqual({ cleanup: [{ name: "Error", code: "SQLITE_BUSY", message: "database is locked" }] });
  });

  it("deliverPrepared: a copy upstream accepted whose recording fails keeps its delivery, and the store's error is what the caller gets", async () => {
    // A unit test of process.ts alone: upstream takes the copy, then the database connection
    // is gone (test/scaleout.failures.test.ts restarts a real one). The mail with the link is
    // out, so its delivery must not be discarded: the sender's retry announces it again.
    const lost = Object.assign(new Error("write CONNECTION_CLOSED 127.0.0.1:5432"), { code: "CONNECTION_CLOSED" });
    const transactions: number[] = [];
    const ctx = {
      now: () => new Date(),
      store: {
        transaction: () => {
          transactions.push(1);
          return Promise.reject(lost);
        },
      },
    } as unknown as Context;
    const sent: string[][] = [];
    const transport = { sendRaw: (env: { to: string[] }) => Promise.resolve(sent.push(env.to)) } as unknown as Transport;
    const e: unknown = await deliverPrepared(ctx, transport, { from: "praxis@praxis-weber.example", to: ["a@patient.example"] }, prepared()).catch((x: unknown) => x);
    expect(sent).toEqual([["a@patient.example"]]);
    // Not "upstream did not accept": upstream did; the relay answers its 451 4.3.0 for this.
    expect(e).toBe(lost);
    // markSent's transaction only: no discard of the delivery whose link is out.
    expect(transactions).toHaveLength(1);
    expect(cleanupFailures(e)).toEqual({});
  });
});

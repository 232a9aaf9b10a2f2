// The relay fails closed, retries do not duplicate, and it is not an open relay.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Context } from "../src/core/index.js";
import { hashPassword } from "../src/crypto/index.js";
import { cleanup, tempDir, walk } from "./helpers/cli.js";
import { captureLog } from "./helpers/log.js";
import { befundMail, startTestRelay, submit, type TestRelay } from "./helpers/relay.js";
import { freePort } from "./helpers/serve.js";
import { startSink, type Sink } from "./helpers/sink.js";

const FROM = "praxis@praxis-weber.example";

const message = (id: string, attachment: Buffer, subject?: string): Buffer =>
  befundMail({ from: FROM, to: "patient@patient.example", messageId: `${id}@praxis-weber.example`, attachment, subject });

let dir: string;
let sink: Sink;
let relay: TestRelay | undefined;
let n = 0;

beforeAll(async () => {
  dir = await tempDir();
  sink = await startSink();
});
afterEach(async () => {
  await relay?.close();
  relay = undefined;
  sink.messages.length = 0;
  sink.refuse.clear();
});
afterAll(async () => {
  await sink.close();
  await cleanup(dir);
});

const home = (): string => join(dir, `home-${++n}`);

async function visible(ctx: Context): Promise<string[]> {
  return (await ctx.store.records.deliveries()).map((d) => d.recipient);
}

async function blobs(ctx: Context): Promise<string[]> {
  return walk(join(ctx.home, "blobs")).catch(() => []);
}

describe("fail closed", () => {
  it("upstream down: 451, the sink stays empty, and no delivery or blob is left", async () => {
    relay = await startTestRelay(home(), { upstream: `smtp://127.0.0.1:${await freePort()}` });
    const r = await submit(relay.port, FROM, ["patient@patient.example"], message("down", randomBytes(5000)));
    expect(r.code).toBe(451);
    expect(r.text).toMatch(/^451 4\.4\.1 upstream did not accept the message \((?:ESOCKET|ECONNREFUSED)\); try again later/);
    expect(sink.messages).toEqual([]);
    expect(await visible(relay.ctx)).toEqual([]);
    expect(await blobs(relay.ctx)).toEqual([]);
  });

  it("the store failing mid-message: 451, nothing sent, nothing left", async () => {
    let fail = true;
    relay = await startTestRelay(home(), { upstream: sink.url }, (ctx) => {
      const write = ctx.store.blobs.write.bind(ctx.store.blobs);
      ctx.store.blobs.write = async (data) => {
        if (!fail) return write(data);
        const reader = data.getReader();
        await reader.read();
        await reader.cancel();
        throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" });
      };
      return ctx;
    });
    const raw = message("store", randomBytes(300_000));
    const r = await submit(relay.port, FROM, ["patient@patient.example"], raw);
    expect(r.code).toBe(451);
    expect(r.text).toMatch(/^451 4\.3\.0 /);
    expect(sink.messages).toEqual([]);
    expect(await visible(relay.ctx)).toEqual([]);
    expect(await blobs(relay.ctx)).toEqual([]);
    fail = false;
    expect((await submit(relay.port, FROM, ["patient@patient.example"], raw)).code).toBe(250);
    expect(await visible(relay.ctx)).toEqual(["patient@patient.example"]);
  });

  it("each 451 is logged once with its reason, without addresses or subjects", async () => {
    const down = captureLog();
    relay = await startTestRelay(home(), { upstream: `smtp://127.0.0.1:${await freePort()}` }, undefined, down.log);
    expect((await submit(relay.port, FROM, ["patient@patient.example"], message("logdown", randomBytes(100), "[S3] Befund Weber"))).code).toBe(451);
    const refused = down.lines().filter((l) => l.msg === "message refused");
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ level: 40, outcome: 451, reason: expect.stringMatching(/^4\.4\.1 upstream did not accept the message \((?:ESOCKET|ECONNREFUSED)\)/) as unknown });
    await relay.close();

    const store = captureLog();
    relay = await startTestRelay(home(), { upstream: sink.url }, (ctx) => {
      ctx.store.blobs.write = () => Promise.reject(Object.assign(new Error("no space left on device, write '/srv/praxmail/blobs/ab/cd'"), { code: "ENOSPC" }));
      ctx.store.blobs.remove = () => Promise.reject(Object.assign(new Error("permission denied, unlink '/srv/praxmail/blobs/ab/ef'"), { code: "EACCES" }));
      return ctx;
    }, store.log);
    expect((await submit(relay.port, FROM, ["patient@patient.example"], message("logstore", randomBytes(100), "[S3] Befund Weber"))).code).toBe(451);
    const failed = store.lines().filter((l) => l.msg === "message failed");
    expect(failed).toHaveLength(1);
    // The cleanup that failed after it is on the same line; the store's error is what is reported.
    expect(failed[0]).toMatchObject({ level: 50, err: { code: "ENOSPC", message: "no space left on device, write '<path>'" } });
    const cleanup = failed[0]?.cleanup as unknown[];
    expect(cleanup.length).toBeGreaterThan(0);
    for (const c of cleanup) expect(c).toEqual({ name: "Error", code: "EACCES", message: "permission denied, unlink '<path>'" });
    expect(store.lines().filter((l) => l.level === 40 || l.level === 50)).toHaveLength(1);
    for (const text of [down.text(), store.text()]) {
      expect(text).not.toMatch(/patient@|praxis@|Befund|\/srv\//);
    }
  });

  it("a client outside the allowlist gets 554 and cannot send", async () => {
    relay = await startTestRelay(home(), { upstream: sink.url, relay: { allow: ["10.20.30.0/24"] } });
    const r = await submit(relay.port, FROM, ["patient@patient.example"], message("ip", randomBytes(100)));
    expect(r.code).toBe(554);
    expect(r.text).toContain("5.7.1 client not allowed");
    expect(sink.messages).toEqual([]);
  });

  it("an oversized message gets 552, is not kept, and the relay goes on working", async () => {
    relay = await startTestRelay(home(), { upstream: sink.url, relay: { maxSize: 1024 * 1024 } });
    const big = await submit(relay.port, FROM, ["patient@patient.example"], message("big", randomBytes(4 * 1024 * 1024)));
    expect(big.code).toBe(552);
    expect(big.text).toMatch(/^552 5\.3\.4 /);
    expect(sink.messages).toEqual([]);
    expect(await visible(relay.ctx)).toEqual([]);
    expect(await blobs(relay.ctx)).toEqual([]);
    expect((await submit(relay.port, FROM, ["patient@patient.example"], message("small", randomBytes(1000)))).code).toBe(250);
  });

  it("an unknown level is refused for good with the reason", async () => {
    relay = await startTestRelay(home(), { upstream: sink.url });
    const r = await submit(relay.port, FROM, ["patient@patient.example"], message("lvl", randomBytes(100), "[S7] Befund"));
    expect(r.code).toBe(554);
    expect(r.text).toContain("5.6.0 unknown security level in the subject tag [S7]; use 0 to 4");
    expect(sink.messages).toEqual([]);
  });

  it("limits the recipients per message", async () => {
    relay = await startTestRelay(home(), { upstream: sink.url, relay: { maxRecipients: 2 } });
    const r = await submit(relay.port, FROM, ["a@patient.example", "b@patient.example", "c@patient.example"], message("rcpt", randomBytes(100)));
    expect(r.code).toBe(250);
    expect(r.rejected).toEqual(["c@patient.example"]);
    expect(sink.messages.map((m) => m.to[0]).sort()).toEqual(["a@patient.example", "b@patient.example"]);
  });
});

describe("retries", () => {
  it("the same message after a 451 yields exactly one delivery; a third send adds nothing", async () => {
    const h = home();
    relay = await startTestRelay(h, { upstream: `smtp://127.0.0.1:${await freePort()}` });
    const raw = message("retry", randomBytes(20_000));
    expect((await submit(relay.port, FROM, ["patient@patient.example"], raw)).code).toBe(451);
    await relay.close();
    relay = await startTestRelay(h, { upstream: sink.url });
    expect((await submit(relay.port, FROM, ["patient@patient.example"], raw)).code).toBe(250);
    expect(await visible(relay.ctx)).toEqual(["patient@patient.example"]);
    expect(sink.messages).toHaveLength(1);
    // The client did not see our 250 and sends again: nothing new is created or sent.
    expect((await submit(relay.port, FROM, ["patient@patient.example"], raw)).code).toBe(250);
    expect(await visible(relay.ctx)).toEqual(["patient@patient.example"]);
    expect(sink.messages).toHaveLength(1);
    // Same Message-ID but other content is another message.
    expect((await submit(relay.port, FROM, ["patient@patient.example"], message("retry", randomBytes(20_000)))).code).toBe(250);
    expect(await visible(relay.ctx)).toHaveLength(2);
  });

  it("the same message again through the sender's mail server (new Received and DKIM lines) adds nothing", async () => {
    const h = home();
    relay = await startTestRelay(h, { upstream: `smtp://127.0.0.1:${await freePort()}` });
    const raw = message("trace", randomBytes(20_000));
    // Each attempt through the practice's own MTA carries that attempt's trace on top.
    const via = (id: string): Buffer =>
      Buffer.concat([Buffer.from(`DKIM-Signature: v=1; d=praxis-weber.example; s=mail; t=17980${id.length}; b=${id}\r\nReceived: from pc-1 by mx.praxis-weber.example (Postfix) with ESMTP id ${id}\r\n`), raw]);
    expect((await submit(relay.port, FROM, ["patient@patient.example"], via("A1B2"))).code).toBe(451);
    await relay.close();
    relay = await startTestRelay(h, { upstream: sink.url });
    expect((await submit(relay.port, FROM, ["patient@patient.example"], via("C3D4E5"))).code).toBe(250);
    expect((await submit(relay.port, FROM, ["patient@patient.example"], via("F6G7H8I9"))).code).toBe(250);
    expect(await visible(relay.ctx)).toEqual(["patient@patient.example"]);
    expect(sink.messages).toHaveLength(1);
  });

  it("when upstream refuses one patient's copy: 451; the accepted copy stays, and the retry sends only the other", async () => {
    relay = await startTestRelay(home(), { upstream: sink.url });
    sink.refuse.add("b@patient.example");
    const raw = message("partial", randomBytes(10_000));
    const first = await submit(relay.port, FROM, ["a@patient.example", "b@patient.example"], raw);
    expect(first.code).toBe(451);
    expect(sink.messages.map((m) => m.to)).toEqual([["a@patient.example"]]);
    expect(await visible(relay.ctx)).toEqual(["a@patient.example"]);
    sink.refuse.clear();
    expect((await submit(relay.port, FROM, ["a@patient.example", "b@patient.example"], raw)).code).toBe(250);
    expect(sink.messages.map((m) => m.to)).toEqual([["a@patient.example"], ["b@patient.example"]]);
    expect((await visible(relay.ctx)).sort()).toEqual(["a@patient.example", "b@patient.example"]);
  });
});

describe("authentication over TLS", () => {
  it("asks for AUTH after STARTTLS only, refuses wrong passwords, and relays for a user", async () => {
    const key = join(dir, "relay.key");
    const cert = join(dir, "relay.crt");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"], { stdio: "ignore" });
    relay = await startTestRelay(home(), {
      upstream: sink.url,
      relay: { tls: { cert, key }, users: [{ user: "mfa", password: await hashPassword("richtig-und-lang") }] },
    });
    const raw = message("auth", randomBytes(1000));
    const plain = await submit(relay.port, FROM, ["patient@patient.example"], raw);
    expect(plain.code).toBe(530);
    const tls = { requireTLS: true, tls: { rejectUnauthorized: false } };
    const wrong = await submit(relay.port, FROM, ["patient@patient.example"], raw, { ...tls, auth: { user: "mfa", pass: "falsch" } });
    expect(wrong.code).toBe(535);
    const ok = await submit(relay.port, FROM, ["patient@patient.example"], raw, { ...tls, auth: { user: "mfa", pass: "richtig-und-lang" } });
    expect(ok.code).toBe(250);
    expect(sink.messages).toHaveLength(1);
  });
});

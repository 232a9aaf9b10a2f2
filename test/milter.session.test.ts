// One milter connection through its lifecycle, and a fuzz test: random, truncated and
// oversized packets only ever close that connection; the server goes on serving.
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import libmime from "libmime";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openContext } from "../src/commands/shared.js";
import type { Context, Meter } from "../src/core/index.js";
import { createTransport } from "../src/mail/index.js";
import { Cmd, Step, decode, encode, type Packet } from "../src/milter/protocol.js";
import { startMilter, type Milter } from "../src/milter/server.js";
import { headerEdits } from "../src/milter/session.js";
import { cleanup, initHome, tempDir } from "./helpers/cli.js";
import { captureLog } from "./helpers/log.js";
import { collect } from "./helpers/store.js";
import { freePort } from "./helpers/serve.js";

let dir: string;
let ctx: Context;
let milter: Milter;

beforeAll(async () => {
  dir = await tempDir();
  const home = join(dir, "home");
  await initHome(home, ["--recipient-type", "x25519"]);
  ctx = await openContext({ home }, "milter");
  milter = await startMilter({ ctx, transport: createTransport(home, null), log: pino({ level: "silent" }), progressMs: 50 }, { host: "127.0.0.1", port: 0 });
});
afterAll(async () => {
  await milter.close();
  await ctx.store.close();
  await cleanup(dir);
});

/** A minimal MTA side of the protocol. */
class Mta {
  private buf: Buffer = Buffer.alloc(0);
  private waiting: ((p: Packet) => void)[] = [];
  private got: Packet[] = [];
  readonly closed: Promise<void>;
  constructor(readonly socket: Socket) {
    socket.on("data", (d: Buffer) => {
      const r = decode(Buffer.concat([this.buf, d]), 1 << 20);
      this.buf = r.rest;
      for (const p of r.packets) {
        const w = this.waiting.shift();
        if (w) w(p);
        else this.got.push(p);
      }
    });
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        resolve();
      });
    });
  }
  static async open(to: Milter = milter): Promise<Mta> {
    const s = connect(to.port ?? 0, "127.0.0.1");
    await new Promise((r) => s.once("connect", r));
    return new Mta(s);
  }
  send(cmd: string, data: Buffer | string = Buffer.alloc(0)): void {
    this.socket.write(encode(cmd, typeof data === "string" ? Buffer.from(data) : data));
  }
  next(): Promise<Packet> {
    const p = this.got.shift();
    if (p) return Promise.resolve(p);
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  /** Replies until the final one of end of message. */
  async untilFinal(): Promise<Packet[]> {
    const out: Packet[] = [];
    for (;;) {
      const p = await this.next();
      out.push(p);
      if ("acdrty".includes(p.cmd)) return out;
    }
  }
  async negotiate(): Promise<{ actions: number; protocol: number }> {
    const d = Buffer.alloc(12);
    d.writeUInt32BE(6, 0);
    d.writeUInt32BE(0x1ff, 4);
    d.writeUInt32BE(0x1fffff, 8);
    this.send(Cmd.OPTNEG, d);
    const r = await this.next();
    expect(r.cmd).toBe("O");
    return { actions: r.data.readUInt32BE(4), protocol: r.data.readUInt32BE(8) };
  }
  /** MAIL, RCPT, headers, EOH (no replies: we negotiated NR for those), body, EOB. */
  async message(to: string[], headers: [string, string][], body: string): Promise<Packet[]> {
    this.send(Cmd.MAIL, "<praxis@praxis-weber.example>\0");
    for (const r of to) this.send(Cmd.RCPT, `<${r}>\0`);
    for (const [k, v] of headers) this.send(Cmd.HEADER, `${k}\0${v}\0`);
    this.send(Cmd.EOH);
    this.send(Cmd.BODY, body);
    expect((await this.next()).cmd).toBe("c");
    this.send(Cmd.BODYEOB);
    return this.untilFinal();
  }
}

describe("a milter connection", () => {
  it("negotiates only what it uses, skips the rest, and serves several messages on one connection", async () => {
    const mta = await Mta.open();
    const { actions, protocol } = await mta.negotiate();
    expect(actions).toBe(0x1f);
    expect(protocol & (Step.NOCONNECT | Step.NOHELO | Step.NOUNKNOWN | Step.NODATA)).toBe(0x303);
    expect(protocol & (Step.NR_MAIL | Step.NR_RCPT | Step.NR_HDR | Step.NR_EOH)).toBe(Step.NR_MAIL | Step.NR_RCPT | Step.NR_HDR | Step.NR_EOH);
    expect(protocol & (Step.NOBODY | Step.NOHDRS)).toBe(0);

    const untagged = await mta.message(["a@patient.example"], [["Subject", "Termin"], ["Message-ID", "<t1@x>"]], "Ihr Termin.\r\n");
    expect(untagged.map((p) => p.cmd)).toEqual(["c"]);

    // An aborted message leaves nothing, and the connection carries on.
    mta.send(Cmd.MAIL, "<praxis@praxis-weber.example>\0");
    mta.send(Cmd.RCPT, "<b@patient.example>\0");
    mta.send(Cmd.HEADER, "Subject\0[S3] x\0");
    mta.send(Cmd.EOH);
    mta.send(Cmd.BODY, "Content-Type: text/plain\r\n\r\nhalb");
    expect((await mta.next()).cmd).toBe("c");
    mta.send(Cmd.ABORT);

    const tagged = await mta.message(
      ["c@patient.example"],
      [["Subject", "[S3] Befund"], ["Message-ID", "<t2@x>"], ["MIME-Version", "1.0"], ["Content-Type", 'multipart/mixed; boundary="b"']],
      "--b\r\nContent-Type: text/plain\r\n\r\nAnbei.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-geheim\r\n--b--\r\n",
    );
    const kinds = tagged.map((p) => p.cmd);
    expect(kinds.at(-1)).toBe("c");
    expect(kinds).toContain("m");
    expect(kinds).toContain("b");
    // Header edits come before the first body chunk.
    expect(kinds.lastIndexOf("m")).toBeLessThan(kinds.indexOf("b"));
    const body = Buffer.concat(tagged.filter((p) => p.cmd === "b").map((p) => p.data)).toString();
    expect(body).not.toContain("%PDF-geheim");
    expect(body).toContain("a.pdf");
    expect((await ctx.store.records.deliveries()).map((d) => d.recipient)).toEqual(["c@patient.example"]);

    mta.send(Cmd.QUIT);
    await mta.closed;
  });

  it("answers a refused message with its reply code", async () => {
    const mta = await Mta.open();
    await mta.negotiate();
    const r = await mta.message(["d@patient.example"], [["Subject", "[S9] x"]], "x\r\n");
    expect(r.map((p) => p.cmd)).toEqual(["y"]);
    expect(r[0]!.data.toString()).toBe("554 5.6.0 unknown security level in the subject tag [S9]; use 0 to 4\0");
    mta.socket.destroy();
  });

  it("answers a second Subject header with 554: a tag in it would otherwise be missed", async () => {
    const mta = await Mta.open();
    await mta.negotiate();
    const r = await mta.message(["e@patient.example"], [["Subject", "Befund"], ["Subject", "[S3] Befund"]], "x\r\n");
    expect(r.map((p) => p.cmd)).toEqual(["y"]);
    expect(r[0]!.data.toString()).toBe("554 5.6.0 message has more than one Subject header; praxmail cannot tell which one the recipient sees, so it was not sent\0");
    mta.socket.destroy();
  });

  it("never passes a tagged mail unchanged to a quoted local part at the practice's domain", async () => {
    const mta = await Mta.open();
    await mta.negotiate();
    const r = await mta.message(
      ['"f@patient.example"@praxis-weber.example'],
      [["Subject", "[S3] Befund"], ["MIME-Version", "1.0"], ["Content-Type", 'multipart/mixed; boundary="b"']],
      "--b\r\nContent-Type: text/plain\r\n\r\nAnbei.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-geheim\r\n--b--\r\n",
    );
    expect(r.map((p) => p.cmd)).toEqual(["y"]);
    expect(r[0]!.data.toString()).toBe('554 5.6.0 not an e-mail address: "\\"f@patient.example\\"@praxis-weber.example"\0');
    mta.socket.destroy();
  });
});

describe("failures are logged once", () => {
  it("upstream down and the discards failing: 451 with upstream's reason, and one line that names the failed cleanup", async () => {
    const captured = captureLog();
    const down = await startMilter({ ctx, transport: createTransport(ctx.home, `smtp://127.0.0.1:${await freePort()}`), log: captured.log, progressMs: 50 }, { host: "127.0.0.1", port: 0 });
    const remove = ctx.store.blobs.remove.bind(ctx.store.blobs);
    ctx.store.blobs.remove = () => Promise.reject(Object.assign(new Error("permission denied, unlink '/srv/praxmail/blobs/ab/cd'"), { code: "EACCES" }));
    const mta = await Mta.open(down);
    try {
      await mta.negotiate();
      // Two recipients: the copies leave by reinjection, which fails.
      const r = await mta.message(
        ["g@patient.example", "h@patient.example"],
        [["Subject", "[S3] Befund Weber"], ["Message-ID", "<fail1@x>"], ["MIME-Version", "1.0"], ["Content-Type", 'multipart/mixed; boundary="b"']],
        "--b\r\nContent-Type: text/plain\r\n\r\nAnbei.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=weber.pdf\r\n\r\n%PDF-geheim\r\n--b--\r\n",
      );
      // Progress packets ('p', every 50 ms here) may come first on a busy machine; then one verdict.
      const answers = r.filter((p) => p.cmd !== "p");
      expect(answers.map((p) => p.cmd)).toEqual(["y"]);
      expect(answers[0]!.data.toString()).toMatch(/^451 4\.4\.1 upstream did not accept the message \((?:ESOCKET|ECONNREFUSED)\); try again later\0$/);
      const lines = captured.lines().filter((l) => (l.level as number) >= 40);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ msg: "milter message refused", outcome: 451, reason: expect.stringMatching(/^4\.4\.1 upstream did not accept/) as unknown });
      const cleanups = lines[0]?.cleanup as unknown[];
      expect(cleanups.length).toBeGreaterThanOrEqual(2);
      for (const c of cleanups) expect(c).toEqual({ name: "Error", code: "EACCES", message: "permission denied, unlink '<path>'" });
      expect(captured.text()).not.toMatch(/patient\.example|praxis-weber|Befund|weber\.pdf|\/srv\//);
    } finally {
      mta.socket.destroy();
      ctx.store.blobs.remove = remove;
      await down.close();
    }
  });
});

describe("metrics", () => {
  it("reports each answer with its level and code, deliveries, blob writes and an internal failure's code to the context's meter", async () => {
    const calls: unknown[][] = [];
    const seconds: number[] = [];
    const meter: Meter = {
      mail: (door, level, answer, s) => {
        calls.push(["mail", door, level, answer]);
        seconds.push(s);
      },
      deliveriesCreated: (level, count) => calls.push(["deliveries", level, count]),
      downloaded: () => calls.push(["downloaded"]),
      response: (status) => calls.push(["response", status]),
      blobWritten: (s) => {
        calls.push(["blob"]);
        seconds.push(s);
      },
      failed: (source, code) => calls.push(["failed", source, code]),
      queue: (name) => calls.push(["queue", name]),
    };
    const metered = await startMilter({ ctx: { ...ctx, meter }, transport: createTransport(ctx.home, null), log: pino({ level: "silent" }), progressMs: 60_000 }, { host: "127.0.0.1", port: 0 });
    const write = ctx.store.blobs.write.bind(ctx.store.blobs);
    const mta = await Mta.open(metered);
    const tagged = (to: string, id: string): Promise<Packet[]> =>
      mta.message(
        [to],
        [["Subject", "[S3] Befund"], ["Message-ID", `<${id}@x>`], ["MIME-Version", "1.0"], ["Content-Type", 'multipart/mixed; boundary="b"']],
        "--b\r\nContent-Type: text/plain\r\n\r\nAnbei.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-geheim\r\n--b--\r\n",
      );
    try {
      await mta.negotiate();
      expect((await mta.message(["m@patient.example"], [["Subject", "Termin"], ["Message-ID", "<m0@x>"]], "Ihr Termin.\r\n")).map((p) => p.cmd)).toEqual(["c"]);
      expect((await tagged("n@patient.example", "m3")).at(-1)?.cmd).toBe("c");
      expect((await mta.message(["o@patient.example"], [["Subject", "[S9] x"]], "x\r\n")).map((p) => p.cmd)).toEqual(["y"]);
      ctx.store.blobs.write = () => Promise.reject(Object.assign(new Error("permission denied, open '/srv/praxmail/blobs/ab'"), { code: "EACCES" }));
      expect((await tagged("p@patient.example", "m4")).map((p) => p.cmd)).toEqual(["t"]);
    } finally {
      ctx.store.blobs.write = write;
      mta.socket.destroy();
      await metered.close();
    }
    expect(calls).toEqual([
      ["mail", "milter", 0, 250],
      ["blob"],
      ["deliveries", 3, 1],
      ["mail", "milter", 3, 250],
      ["mail", "milter", null, 554],
      ["failed", "blob", "EACCES"],
      ["mail", "milter", null, 451],
      ["failed", "milter", "EACCES"],
    ]);
    for (const s of seconds) expect(s).toBeGreaterThanOrEqual(0);
  });
});

describe("retry rules", () => {
  it("upstream down: each delivery the attempt created is discarded once, and nothing else is cleaned up", async () => {
    const captured = captureLog();
    const down = await startMilter({ ctx, transport: createTransport(ctx.home, `smtp://127.0.0.1:${await freePort()}`), log: captured.log, progressMs: 60_000 }, { host: "127.0.0.1", port: 0 });
    const seen = (await collect(ctx.store.auditRows())).length;
    const mta = await Mta.open(down);
    try {
      await mta.negotiate();
      // Two recipients: the copies leave by reinjection, which fails.
      const r = await mta.message(
        ["k@patient.example", "l@patient.example"],
        [["Subject", "[S3] Befund"], ["Message-ID", "<once1@x>"], ["MIME-Version", "1.0"], ["Content-Type", 'multipart/mixed; boundary="b"']],
        "--b\r\nContent-Type: text/plain\r\n\r\nAnbei.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-geheim\r\n--b--\r\n",
      );
      expect(r.map((p) => p.cmd)).toEqual(["y"]);
      expect(r[0]!.data.toString()).toMatch(/^451 4\.4\.1 upstream did not accept the message/);
      const rows = (await collect(ctx.store.auditRows())).slice(seen);
      const created = rows.filter((a) => a.action === "delivery.create").map((a) => a.subject);
      expect(created).toHaveLength(2);
      const discarded = rows.filter((a) => a.action === "delivery.discard");
      expect(discarded.map((a) => a.subject).sort()).toEqual([...created].sort());
      expect(discarded.map((a) => JSON.parse(a.details) as unknown)).toEqual([{ reason: "upstream refused" }, { reason: "upstream refused" }]);
      for (const id of created) expect(await ctx.store.records.delivery(id ?? "")).toBeUndefined();
      const lines = captured.lines().filter((l) => (l.level as number) >= 40);
      expect(lines).toHaveLength(1);
      expect(lines[0]).not.toHaveProperty("cleanup");
    } finally {
      mta.socket.destroy();
      await down.close();
    }
  });
});

describe("header edits", () => {
  const hex = (h: string): string => h.replace(/\s+/g, "");

  it("hand folded values to CHGHEADER and ADDHEADER with LF-only folds, byte for byte", () => {
    const copy = Buffer.from(
      'Subject: =?UTF-8?Q?Ihr_Befund_=C3=BCber_die?=\r\n =?UTF-8?Q?_Blutwerte?=\r\nContent-Type: multipart/alternative;\r\n boundary="b"\r\nX-Praxmail-Delivery: d1\r\n\r\n',
    );
    const edits = headerEdits(
      [
        { name: "Subject", value: "[S3] Ihr Befund über die Blutwerte" },
        { name: "Content-Type", value: "text/plain" },
        { name: "X-Praxmail-Level", value: "3" },
      ],
      copy,
    );
    expect(edits.map((b) => b.toString("hex"))).toEqual([
      // CHGHEADER 1 Subject: the encoded words, folded with LF SP.
      hex("0000004a 6d 00000001 5375626a656374 00 3d3f5554462d383f513f4968725f426566756e645f3d43333d42436265725f6469653f3d 0a 20 3d3f5554462d383f513f5f426c757477657274653f3d 00"),
      // CHGHEADER 1 Content-Type: multipart/alternative; LF SP boundary="b".
      hex("00000037 6d 00000001 436f6e74656e742d54797065 00 6d756c7469706172742f616c7465726e61746976653b 0a 20 626f756e646172793d226222 00"),
      // CHGHEADER 1 X-Praxmail-Level with an empty value: deleted.
      hex("00000017 6d 00000001 582d507261786d61696c2d4c6576656c 00 00"),
      // ADDHEADER X-Praxmail-Delivery: d1.
      hex("00000018 68 582d507261786d61696c2d44656c6976657279 00 6431 00"),
    ]);
    for (const b of edits) expect(b.includes(0x0d)).toBe(false);
  });

  it("a long subject with umlauts reaches the MTA as a CHGHEADER without a CR, every LF a fold", async () => {
    const mta = await Mta.open();
    await mta.negotiate();
    const subject = "Ihr Befund über die Blutwerte, die Schilddrüse und die Leberwerte vom 28.10.: größtenteils unauffällig";
    const r = await mta.message(
      ["g@patient.example"],
      [["Subject", `[S3] ${subject}`], ["Message-ID", "<fold@x>"], ["MIME-Version", "1.0"], ["Content-Type", 'multipart/mixed;\n boundary="b"']],
      "--b\r\nContent-Type: text/plain\r\n\r\nAnbei.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-geheim\r\n--b--\r\n",
    );
    const edits = r.filter((p) => p.cmd === "m" || p.cmd === "h");
    expect(edits.map((p) => p.cmd)).toContain("h");
    for (const p of edits) expect(p.data.includes(0x0d)).toBe(false);
    const chg = edits.find((p) => p.cmd === "m" && p.data.subarray(4).toString().startsWith("Subject\0"))!;
    const value = chg.data.subarray(4 + "Subject\0".length, -1).toString();
    expect(value.split("\n").length).toBeGreaterThan(1);
    expect(value).not.toMatch(/\n(?![ \t])/);
    expect(libmime.decodeWords(value.replace(/\n(?=[ \t])/g, ""))).toBe(subject);
    mta.socket.destroy();
  });
});

describe("fuzzing", () => {
  it("random, truncated and oversized packets close only that connection, never the server", async () => {
    let seed = 0x5eed;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const rssBefore = process.memoryUsage().rss;
    for (let round = 0; round < 200; round++) {
      const mta = await Mta.open();
      const kind = round % 4;
      let bytes: Buffer;
      if (kind === 0) bytes = randomBytes(1 + Math.floor(rand() * 300));
      else if (kind === 1) {
        // A valid start, then a packet cut short, then garbage.
        bytes = Buffer.concat([encode("O", Buffer.alloc(12)), encode("M", Buffer.from("<a@b>\0")).subarray(0, 4), randomBytes(50)]);
      } else if (kind === 2) {
        // A length far beyond the limit: closed at once, without waiting for the bytes.
        bytes = Buffer.from([0x7f, 0xff, 0xff, 0xff, 0x42]);
      } else {
        // Well-formed packets in a wrong order or with broken fields.
        const cmds = "ABCDEHKLMNORTUQZ";
        bytes = Buffer.concat(Array.from({ length: 5 }, () => encode(cmds[Math.floor(rand() * cmds.length)]!, randomBytes(Math.floor(rand() * 20)))));
      }
      mta.socket.write(bytes);
      if (kind === 2) {
        const timeout = new Promise<boolean>((r) => {
          setTimeout(() => {
            r(false);
          }, 2000);
        });
        const closed = await Promise.race([mta.closed.then(() => true), timeout]);
        expect(closed).toBe(true);
      } else {
        mta.socket.end();
        await mta.closed;
      }
    }
    // The server still serves a well-behaved connection.
    const ok = await Mta.open();
    expect((await ok.negotiate()).actions).toBe(0x1f);
    ok.socket.destroy();
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(200 * 1024 * 1024);
  });
});

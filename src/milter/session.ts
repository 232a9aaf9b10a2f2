// One milter connection: option negotiation, then per message the envelope, the headers and
// the body streamed into prepareMessage, and at end of message the edits Postfix applies.
// Any failure answers TEMPFAIL; a broken packet closes the connection.
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import { Headers } from "@zone-eu/mailsplit";
import type { Logger } from "pino";
import { cleanUpAfter, cleanupFailures, discardDelivery, discardedBy, errorFields, levelRules, markSent, type Context } from "../core/index.js";
import { MailRejection, deliverPrepared, loggableReason, prepareMessage, type Copy, type Prepared, type RawSink, type Transport } from "../mail/index.js";
import {
  Action,
  Cmd,
  MAX_BODY_CHUNK,
  ProtocolError,
  Step,
  decode,
  parseAddress,
  parseHeader,
  parseOptneg,
  reply,
  type Packet,
} from "./protocol.js";

/** The largest packet we accept: body chunks are at most 64 KiB, headers far less. */
export const MAX_PACKET = 1024 * 1024;

const WANT_ACTIONS = Action.ADDHDRS | Action.CHGHDRS | Action.CHGBODY | Action.ADDRCPT | Action.DELRCPT;
// Skip what we do not need; do not wait for our replies where we always continue.
const WANT_STEPS = Step.NOCONNECT | Step.NOHELO | Step.NOUNKNOWN | Step.NODATA | Step.NR_MAIL | Step.NR_RCPT | Step.NR_HDR | Step.NR_EOH;
// Headers that describe the path through the MTA; a rewritten copy keeps them.
const TRACE = new Set(["received", "return-path"]);

/** What a session needs. */
export interface MilterDeps {
  readonly ctx: Context;
  readonly transport: Transport;
  readonly log: Logger;
  /** How often to tell Postfix we are still working at end of message. */
  readonly progressMs?: number;
}

interface Message {
  from: string;
  to: string[];
  headers: { name: string; value: string }[];
  input: PassThrough | null;
  prepared: Promise<Prepared> | null;
}

const nullSink: RawSink = {
  write: () => Promise.resolve(),
  end: () => Promise.resolve({}),
  abort: () => undefined,
};

/** The header edits that turn the original headers into the copy's. */
export function headerEdits(original: readonly { name: string; value: string }[], copyHead: Buffer): Buffer[] {
  const copy = new Headers(copyHead).getList().map((h) => ({
    name: h.line.slice(0, h.line.indexOf(":")).trim(),
    value: h.line.replace(/^[^:]*:[ \t]*/, "").replace(/\r?\n$/, ""),
  }));
  const byName = (list: readonly { name: string; value: string }[]): Map<string, string[]> => {
    const m = new Map<string, string[]>();
    for (const h of list) m.set(h.name.toLowerCase(), [...(m.get(h.name.toLowerCase()) ?? []), h.value.replace(/^[ \t]+/, "")]);
    return m;
  };
  const was = byName(original);
  const will = byName(copy);
  const edits: Buffer[] = [];
  const names = new Set([...was.keys(), ...will.keys()]);
  for (const name of names) {
    const o = was.get(name) ?? [];
    const c = will.get(name) ?? [];
    const display = [...original, ...copy].find((h) => h.name.toLowerCase() === name)?.name ?? name;
    // Highest index first, so that deleting does not renumber what is still to come.
    for (let i = Math.max(o.length, c.length) - 1; i >= 0; i--) {
      const ov = o[i];
      const cv = c[i];
      if (ov !== undefined && cv === undefined) {
        if (!TRACE.has(name)) edits.push(reply.chgHeader(i + 1, display, ""));
      } else if (ov === undefined && cv !== undefined) edits.push(reply.addHeader(display, cv));
      else if (ov !== undefined && cv !== undefined && ov.replace(/\r?\n/g, "\n") !== cv.replace(/\r?\n/g, "\n")) {
        edits.push(reply.chgHeader(i + 1, display, cv));
      }
    }
  }
  return edits;
}

/**
 * Serves one milter connection until it closes.
 *
 * @param socket - The connection from Postfix.
 * @param deps - Core context, transport for copies, log.
 */
export function serveConnection(socket: Socket, deps: MilterDeps): void {
  new Connection(socket, deps).start();
}

/** One milter connection: its packets handled in order, and the message in progress. */
class Connection {
  private buf: Buffer = Buffer.alloc(0);
  private readonly queue: Packet[] = [];
  private busy = false;
  private steps = 0;
  private msg: Message | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly deps: MilterDeps,
  ) {}

  /** Reads packets until the connection closes. */
  start(): void {
    this.socket.on("data", (chunk: Buffer) => {
      this.received(chunk);
    });
    this.socket.on("error", () => undefined);
    this.socket.on("close", () => {
      this.queue.length = 0;
      void this.abortMessage();
    });
  }

  private received(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let packets: Packet[];
    try {
      ({ packets, rest: this.buf } = decode(this.buf, MAX_PACKET));
    } catch (e) {
      this.close((e as Error).message);
      return;
    }
    this.queue.push(...packets);
    // Stop reading while we are behind: memory stays bounded by a few packets.
    if (this.queue.length >= 32) this.socket.pause();
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    while (this.queue.length > 0 && !this.socket.destroyed) {
      const p = this.queue.shift();
      if (!p) break;
      try {
        await this.handle(p);
      } catch (e) {
        this.close(e instanceof ProtocolError ? e.message : `error: ${(e as Error).message}`);
        this.queue.length = 0;
      }
      if (this.queue.length < 8 && this.socket.isPaused()) this.socket.resume();
    }
    this.busy = false;
  }

  private send(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  private close(why: string): void {
    this.deps.log.warn({ remote: this.socket.remoteAddress ?? "unix" }, `milter connection closed: ${why}`);
    void this.abortMessage();
    this.socket.destroy();
  }

  private async abortMessage(): Promise<void> {
    const m = this.msg;
    this.msg = null;
    if (!m?.input) return;
    m.input.destroy(new Error("aborted"));
    // The MTA gave up on the message, so its failure is no news; a failed cleanup is.
    await m.prepared?.catch((e: unknown) => {
      const failed = cleanupFailures(e);
      if (failed.cleanup) this.deps.log.warn(failed, "milter message aborted: cleanup failed");
    });
  }

  /** Commands outside a message: negotiation, macros, the steps we skip, abort and quit. */
  private async handle(p: Packet): Promise<void> {
    switch (p.cmd) {
      case Cmd.OPTNEG:
        this.negotiate(p.data);
        return;
      case Cmd.MACRO:
        return;
      case Cmd.CONNECT:
      case Cmd.HELO:
      case Cmd.DATA:
      case Cmd.UNKNOWN:
        this.send(reply.continue());
        return;
      case Cmd.ABORT:
        await this.abortMessage();
        return;
      case Cmd.QUIT_NC:
        await this.abortMessage();
        this.steps = 0;
        return;
      case Cmd.QUIT:
        await this.abortMessage();
        this.socket.end();
        return;
      default:
        await this.messageCommand(p);
    }
  }

  private negotiate(data: Buffer): void {
    const offer = parseOptneg(data);
    if (offer.version < 6) throw new ProtocolError(`milter protocol ${offer.version} is too old`);
    this.steps = WANT_STEPS & offer.protocol;
    const actions = WANT_ACTIONS & offer.actions;
    if (actions !== WANT_ACTIONS) this.deps.log.warn({ offered: offer.actions }, "the MTA does not offer every milter action we use");
    this.send(reply.optneg(actions, this.steps));
  }

  /** The commands of a message: envelope, headers, body chunks and end of message. */
  private async messageCommand(p: Packet): Promise<void> {
    switch (p.cmd) {
      case Cmd.MAIL:
        await this.abortMessage();
        this.msg = { from: parseAddress(p.data), to: [], headers: [], input: null, prepared: null };
        if (!(this.steps & Step.NR_MAIL)) this.send(reply.continue());
        return;
      case Cmd.RCPT:
        this.current("RCPT").to.push(parseAddress(p.data));
        if (!(this.steps & Step.NR_RCPT)) this.send(reply.continue());
        return;
      case Cmd.HEADER:
        this.current("header").headers.push(parseHeader(p.data));
        if (!(this.steps & Step.NR_HDR)) this.send(reply.continue());
        return;
      case Cmd.EOH:
        this.startBody(this.current("end of headers"));
        if (!(this.steps & Step.NR_EOH)) this.send(reply.continue());
        return;
      case Cmd.BODY:
        await this.write(this.current("body"), p.data);
        this.send(reply.continue());
        return;
      case Cmd.BODYEOB: {
        const m = this.current("end of message");
        this.msg = null;
        await this.endOfMessage(m, p.data);
        return;
      }
      default:
        throw new ProtocolError(`unknown command ${JSON.stringify(p.cmd)}`);
    }
  }

  /** @throws {@link ProtocolError} when `what` came before MAIL. */
  private current(what: string): Message {
    if (!this.msg) throw new ProtocolError(`${what} before MAIL`);
    return this.msg;
  }

  private startBody(m: Message): PassThrough {
    if (m.input) return m.input;
    const { ctx } = this.deps;
    const input = new PassThrough();
    m.input = input;
    const head = m.headers.map((h) => `${h.name}: ${h.value.replace(/^[ \t]+/, "").replace(/\r?\n/g, "\r\n")}\r\n`).join("") + "\r\n";
    input.write(head);
    m.prepared = prepareMessage(ctx, { from: m.from, to: m.to }, input, { policy: ctx.config.policy, openOriginal: () => nullSink, sentIsFinal: false });
    // Refused early (a bad tag, say): stop taking the body, so it is not buffered.
    m.prepared.catch(() => {
      input.destroy();
    });
    return input;
  }

  private async write(m: Message, chunk: Buffer): Promise<void> {
    const input = this.startBody(m);
    if (input.destroyed) return;
    if (!input.write(chunk)) await Promise.race([new Promise((r) => input.once("drain", r)), m.prepared?.then(() => undefined, () => undefined)]);
  }

  private async endOfMessage(m: Message, last: Buffer): Promise<void> {
    if (last.length) await this.write(m, last);
    const input = this.startBody(m);
    input.end();
    const timer = setInterval(() => {
      this.send(reply.progress());
    }, this.deps.progressMs ?? 10_000);
    const { log, ctx } = this.deps;
    const started = Date.now();
    const answered = (level: number | null, code: number): void => ctx.meter?.mail("milter", level, code, (Date.now() - started) / 1000);
    try {
      const p = await (m.prepared ?? Promise.reject(new Error("no message")));
      for (const b of await this.finish(m, p)) this.send(b);
      log.info({ level: p.level, recipients: m.to.length, deliveries: p.deliveries.length, copies: p.copies.length, outcome: "accepted" }, "milter message");
      answered(p.level, 250);
    } catch (failure) {
      // What did not leave was discarded where it failed (prepareMessage, deliverPrepared, inPlace).
      if (failure instanceof MailRejection) {
        this.send(reply.replyCode(String(failure.responseCode), `${failure.enhanced} ${failure.message}`));
        log.warn({ recipients: m.to.length, outcome: failure.responseCode, reason: loggableReason(failure), ...cleanupFailures(failure) }, "milter message refused");
        answered(null, failure.responseCode);
      } else {
        const err = errorFields(failure);
        log.error({ err, ...cleanupFailures(failure) }, "milter message failed");
        this.send(reply.tempfail());
        answered(null, 451);
        ctx.meter?.failed("milter", err.code);
      }
    } finally {
      clearInterval(timer);
    }
  }

  /** Applies a prepared message: in place for a single recipient, by reinjection otherwise. */
  private async finish(m: Message, p: Prepared): Promise<Buffer[]> {
    // Untagged (also when a policy looked): the original is what leaves.
    if (!levelRules(p.level).encryptsAttachments || (p.copies.length === 0 && p.alreadyDelivered.length === 0)) return [reply.continue()];
    const [only] = p.copies;
    const all = new Set(m.to.map((r) => r.toLowerCase()));
    if (p.copies.length === 1 && only && p.alreadyDelivered.length === 0 && only.recipients.length === all.size && only.recipients.every((r) => all.has(r.toLowerCase()))) {
      return this.inPlace(m, p, only);
    }
    await deliverPrepared(this.deps.ctx, this.deps.transport, { from: m.from, to: m.to }, p);
    const handled = new Set([...p.copies.flatMap((c) => c.recipients), ...p.alreadyDelivered].map((r) => r.toLowerCase()));
    const out = m.to.filter((r) => handled.has(r.toLowerCase())).map((r) => reply.delRcpt(r));
    out.push(m.to.every((r) => handled.has(r.toLowerCase())) ? reply.discard() : reply.continue());
    return out;
  }

  /**
   * The edits that make the message its one copy; its deliveries are marked sent. On failure
   * what this attempt created is discarded, as the retry rules say (deliverPrepared does the
   * same for reinjected copies).
   */
  private async inPlace(m: Message, p: Prepared, only: Copy): Promise<Buffer[]> {
    const { ctx } = this.deps;
    try {
      const split = only.bytes.indexOf("\r\n\r\n");
      const head = only.bytes.subarray(0, split + 2);
      const body = only.bytes.subarray(split + 4);
      const out = headerEdits(m.headers, head);
      for (let i = 0; i < body.length; i += MAX_BODY_CHUNK) out.push(reply.replBody(body.subarray(i, i + MAX_BODY_CHUNK)));
      if (body.length === 0) out.push(reply.replBody(Buffer.alloc(0)));
      await markSent(ctx, only.deliveries);
      out.push(reply.continue());
      return out;
    } catch (e) {
      const discard = discardedBy("failed", { created: p.deliveries, carried: p.announcedAgain });
      throw await cleanUpAfter(e, discard.map((id) => () => discardDelivery(ctx, id, "milter failed")));
    }
  }
}

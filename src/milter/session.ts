// One milter connection: option negotiation, then per message the envelope, the headers and
// the body streamed into prepareMessage, and at end of message the edits Postfix applies.
// Any failure answers TEMPFAIL; a broken packet closes the connection.
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import { Headers } from "@zone-eu/mailsplit";
import type { Logger } from "pino";
import { cleanUpAfter, cleanupFailures, discardDelivery, errorFields, levelRules, markSent, type Context } from "../core/index.js";
import { MailRejection, deliverPrepared, loggableReason, prepareMessage, type Prepared, type RawSink, type Transport } from "../mail/index.js";
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
  const { ctx, transport, log } = deps;
  let buf: Buffer = Buffer.alloc(0);
  const queue: Packet[] = [];
  let busy = false;
  let steps = 0;
  let msg: Message | null = null;

  const send = (b: Buffer): void => {
    if (!socket.destroyed) socket.write(b);
  };
  const close = (why: string): void => {
    log.warn({ remote: socket.remoteAddress ?? "unix" }, `milter connection closed: ${why}`);
    void abortMessage();
    socket.destroy();
  };
  const abortMessage = async (): Promise<void> => {
    const m = msg;
    msg = null;
    if (!m?.input) return;
    m.input.destroy(new Error("aborted"));
    // The MTA gave up on the message, so its failure is no news; a failed cleanup is.
    await m.prepared?.catch((e: unknown) => {
      const failed = cleanupFailures(e);
      if (failed.cleanup) log.warn(failed, "milter message aborted: cleanup failed");
    });
  };

  const startBody = (m: Message): PassThrough => {
    if (m.input) return m.input;
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
  };

  const write = async (m: Message, chunk: Buffer): Promise<void> => {
    const input = startBody(m);
    if (input.destroyed) return;
    if (!input.write(chunk)) await Promise.race([new Promise((r) => input.once("drain", r)), m.prepared?.then(() => undefined, () => undefined)]);
  };

  /** Applies a prepared message: in place for a single recipient, by reinjection otherwise. */
  const finish = async (m: Message, p: Prepared): Promise<Buffer[]> => {
    // Untagged (also when a policy looked): the original is what leaves.
    if (!levelRules(p.level).encryptsAttachments || (p.copies.length === 0 && p.alreadyDelivered.length === 0)) return [reply.continue()];
    const [only] = p.copies;
    const all = new Set(m.to.map((r) => r.toLowerCase()));
    if (p.copies.length === 1 && only && p.alreadyDelivered.length === 0 && only.recipients.length === all.size && only.recipients.every((r) => all.has(r.toLowerCase()))) {
      const split = only.bytes.indexOf("\r\n\r\n");
      const head = only.bytes.subarray(0, split + 2);
      const body = only.bytes.subarray(split + 4);
      const out = headerEdits(m.headers, head);
      for (let i = 0; i < body.length; i += MAX_BODY_CHUNK) out.push(reply.replBody(body.subarray(i, i + MAX_BODY_CHUNK)));
      if (body.length === 0) out.push(reply.replBody(Buffer.alloc(0)));
      await markSent(ctx, only.deliveries);
      out.push(reply.continue());
      return out;
    }
    await deliverPrepared(ctx, transport, { from: m.from, to: m.to }, p);
    const handled = new Set([...p.copies.flatMap((c) => c.recipients), ...p.alreadyDelivered].map((r) => r.toLowerCase()));
    const out = m.to.filter((r) => handled.has(r.toLowerCase())).map((r) => reply.delRcpt(r));
    out.push(m.to.every((r) => handled.has(r.toLowerCase())) ? reply.discard() : reply.continue());
    return out;
  };

  const endOfMessage = async (m: Message, last: Buffer): Promise<void> => {
    if (last.length) await write(m, last);
    const input = startBody(m);
    input.end();
    const timer = setInterval(() => {
      send(reply.progress());
    }, deps.progressMs ?? 10_000);
    let created: readonly string[] = [];
    try {
      const p = await (m.prepared ?? Promise.reject(new Error("no message")));
      created = p.deliveries;
      for (const b of await finish(m, p)) send(b);
      log.info({ level: p.level, recipients: m.to.length, deliveries: p.deliveries.length, copies: p.copies.length, outcome: "accepted" }, "milter message");
    } catch (e) {
      // Whatever did not leave stays invisible; remove it now rather than at the next gc.
      const unsent: string[] = [];
      for (const id of created) if ((await ctx.store.records.delivery(id))?.sentAt == null) unsent.push(id);
      const failure = await cleanUpAfter(e, unsent.map((id) => () => discardDelivery(ctx, id, "milter failed")));
      if (failure instanceof MailRejection) {
        send(reply.replyCode(String(failure.responseCode), `${failure.enhanced} ${failure.message}`));
        log.warn({ recipients: m.to.length, outcome: failure.responseCode, reason: loggableReason(failure), ...cleanupFailures(failure) }, "milter message refused");
      } else {
        log.error({ err: errorFields(failure), ...cleanupFailures(failure) }, "milter message failed");
        send(reply.tempfail());
      }
    } finally {
      clearInterval(timer);
    }
  };

  const handle = async (p: Packet): Promise<void> => {
    switch (p.cmd) {
      case Cmd.OPTNEG: {
        const offer = parseOptneg(p.data);
        if (offer.version < 6) throw new ProtocolError(`milter protocol ${offer.version} is too old`);
        steps = WANT_STEPS & offer.protocol;
        const actions = WANT_ACTIONS & offer.actions;
        if (actions !== WANT_ACTIONS) log.warn({ offered: offer.actions }, "the MTA does not offer every milter action we use");
        send(reply.optneg(actions, steps));
        return;
      }
      case Cmd.MACRO:
        return;
      case Cmd.CONNECT:
      case Cmd.HELO:
      case Cmd.DATA:
      case Cmd.UNKNOWN:
        send(reply.continue());
        return;
      case Cmd.MAIL:
        await abortMessage();
        msg = { from: parseAddress(p.data), to: [], headers: [], input: null, prepared: null };
        if (!(steps & Step.NR_MAIL)) send(reply.continue());
        return;
      case Cmd.RCPT:
        if (!msg) throw new ProtocolError("RCPT before MAIL");
        msg.to.push(parseAddress(p.data));
        if (!(steps & Step.NR_RCPT)) send(reply.continue());
        return;
      case Cmd.HEADER:
        if (!msg) throw new ProtocolError("header before MAIL");
        msg.headers.push(parseHeader(p.data));
        if (!(steps & Step.NR_HDR)) send(reply.continue());
        return;
      case Cmd.EOH:
        if (!msg) throw new ProtocolError("end of headers before MAIL");
        startBody(msg);
        if (!(steps & Step.NR_EOH)) send(reply.continue());
        return;
      case Cmd.BODY:
        if (!msg) throw new ProtocolError("body before MAIL");
        await write(msg, p.data);
        send(reply.continue());
        return;
      case Cmd.BODYEOB: {
        if (!msg) throw new ProtocolError("end of message before MAIL");
        const m = msg;
        msg = null;
        await endOfMessage(m, p.data);
        return;
      }
      case Cmd.ABORT:
        await abortMessage();
        return;
      case Cmd.QUIT_NC:
        await abortMessage();
        steps = 0;
        return;
      case Cmd.QUIT:
        await abortMessage();
        socket.end();
        return;
      default:
        throw new ProtocolError(`unknown command ${JSON.stringify(p.cmd)}`);
    }
  };

  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    while (queue.length > 0 && !socket.destroyed) {
      const p = queue.shift();
      if (!p) break;
      try {
        await handle(p);
      } catch (e) {
        close(e instanceof ProtocolError ? e.message : `error: ${(e as Error).message}`);
        queue.length = 0;
      }
      if (queue.length < 8 && socket.isPaused()) socket.resume();
    }
    busy = false;
  };

  socket.on("data", (chunk: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    let packets: Packet[];
    try {
      ({ packets, rest: buf } = decode(buf, MAX_PACKET));
    } catch (e) {
      close((e as Error).message);
      return;
    }
    queue.push(...packets);
    // Stop reading while we are behind: memory stays bounded by a few packets.
    if (queue.length >= 32) socket.pause();
    void pump();
  });
  socket.on("error", () => undefined);
  socket.on("close", () => {
    queue.length = 0;
    void abortMessage();
  });
}

// The Sendmail milter protocol, version 6: packets of a 32-bit big-endian length, a command
// byte and data. Pure functions, no I/O. Reference: libmilter's mfdef.h and Postfix's
// milter8.c (MILTER_README).

/** Commands from the MTA. */
export const Cmd = {
  ABORT: "A",
  BODY: "B",
  CONNECT: "C",
  MACRO: "D",
  BODYEOB: "E",
  HELO: "H",
  QUIT_NC: "K",
  HEADER: "L",
  MAIL: "M",
  EOH: "N",
  OPTNEG: "O",
  QUIT: "Q",
  RCPT: "R",
  DATA: "T",
  UNKNOWN: "U",
} as const;

/** Replies and actions from the milter. */
export const Reply = {
  ADDRCPT: "+",
  DELRCPT: "-",
  ACCEPT: "a",
  REPLBODY: "b",
  CONTINUE: "c",
  DISCARD: "d",
  ADDHEADER: "h",
  CHGHEADER: "m",
  PROGRESS: "p",
  REJECT: "r",
  TEMPFAIL: "t",
  REPLYCODE: "y",
  OPTNEG: "O",
} as const;

/** Actions the milter may take (SMFIF_*). */
export const Action = { ADDHDRS: 0x01, CHGBODY: 0x02, ADDRCPT: 0x04, DELRCPT: 0x08, CHGHDRS: 0x10 } as const;

/** Protocol steps the milter may skip or not answer (SMFIP_*). */
export const Step = {
  NOCONNECT: 0x01,
  NOHELO: 0x02,
  NOMAIL: 0x04,
  NORCPT: 0x08,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_EOH: 0x40000,
  HDR_LEADSPC: 0x100000,
} as const;

/** The protocol version we speak. */
export const VERSION = 6;

/** The largest body chunk in one SMFIR_REPLBODY (and what Postfix sends in SMFIC_BODY). */
export const MAX_BODY_CHUNK = 65_535;

/** A decoded packet. */
export interface Packet {
  readonly cmd: string;
  readonly data: Buffer;
}

/** A packet that breaks the protocol; the connection is closed. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * Splits a buffer into complete packets.
 *
 * @param buf - Bytes read so far.
 * @param maxLength - The largest packet (command byte + data) we accept.
 * @returns The complete packets and the bytes of an incomplete one.
 * @throws {@link ProtocolError} for a zero or oversized length.
 */
export function decode(buf: Buffer, maxLength: number): { packets: Packet[]; rest: Buffer } {
  const packets: Packet[] = [];
  let at = 0;
  while (buf.length - at >= 4) {
    const len = buf.readUInt32BE(at);
    if (len === 0) throw new ProtocolError("packet without a command");
    if (len > maxLength) throw new ProtocolError(`packet of ${len} bytes is larger than ${maxLength}`);
    if (buf.length - at - 4 < len) break;
    packets.push({ cmd: String.fromCharCode(buf[at + 4] ?? 0), data: buf.subarray(at + 5, at + 4 + len) });
    at += 4 + len;
  }
  return { packets, rest: buf.subarray(at) };
}

/**
 * Encodes one packet.
 *
 * @param cmd - The command or reply character.
 * @param data - Its data.
 * @returns The bytes on the wire.
 */
export function encode(cmd: string, data: Uint8Array = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(5 + data.length);
  out.writeUInt32BE(1 + data.length, 0);
  out.write(cmd, 4, "latin1");
  out.set(data, 5);
  return out;
}

/** NUL-terminated strings in a row (MAIL/RCPT arguments, headers, macros). */
export function strings(data: Buffer): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < data.length) {
    const end = data.indexOf(0, at);
    if (end === -1) throw new ProtocolError("string without its NUL terminator");
    out.push(data.toString("utf8", at, end));
    at = end + 1;
  }
  return out;
}

const z = (...parts: string[]): Buffer => Buffer.concat(parts.map((p) => Buffer.from(`${p}\0`, "utf8")));

/**
 * Reads SMFIC_OPTNEG.
 *
 * @param data - The packet data.
 * @returns The MTA's version and what it offers.
 * @throws {@link ProtocolError} when it is not 12 bytes.
 */
export function parseOptneg(data: Buffer): { version: number; actions: number; protocol: number } {
  if (data.length < 12) throw new ProtocolError("option negotiation is too short");
  return { version: data.readUInt32BE(0), actions: data.readUInt32BE(4), protocol: data.readUInt32BE(8) };
}

/**
 * Reads SMFIC_HEADER.
 *
 * @param data - The packet data.
 * @returns Name and value.
 */
export function parseHeader(data: Buffer): { name: string; value: string } {
  const [name, value] = strings(data);
  if (name === undefined || value === undefined || name === "") throw new ProtocolError("header without name or value");
  return { name, value };
}

/**
 * Reads SMFIC_MAIL or SMFIC_RCPT: the address without its angle brackets.
 *
 * @param data - The packet data.
 * @returns The address ("" for the null sender).
 */
export function parseAddress(data: Buffer): string {
  const [first] = strings(data);
  if (first === undefined) throw new ProtocolError("address missing");
  return first.replace(/^<(.*)>$/, "$1");
}

/**
 * A header value for SMFIR_ADDHEADER or SMFIR_CHGHEADER (and any other header edit): folded
 * with a bare LF before the space or tab. libmilter's smfi_addheader and smfi_chgheader say
 * the line feed of a fold must not be preceded by a carriage return, the MTA adds it;
 * Postfix's cleanup stores each line of the value and ends it with CRLF, so a CR kept
 * before the LF leaves as CR CR LF, which strict parsers read as the end of the headers.
 *
 * @param name - The header's name, for the error.
 * @param value - The value as it stands in a message, folded with CRLF or LF.
 * @returns The value with LF-only folds.
 * @throws RangeError for a CR, LF or NUL that is not part of a fold: a bare CR, a line
 *   break without a space or tab after it (a new header, or the end of the headers), or a
 *   NUL (the end of the string on the wire). The value is not quoted: it may be a subject.
 */
function headerValue(name: string, value: string): string {
  const v = value.replace(/\r\n/g, "\n");
  if (/[\r\0]|\n(?![ \t])/.test(v)) throw new RangeError(`the value of the ${name} header has a CR, LF or NUL that is not a fold`);
  return v;
}

/** Replies, as bytes on the wire. */
export const reply = {
  optneg: (actions: number, protocol: number): Buffer => {
    const d = Buffer.alloc(12);
    d.writeUInt32BE(VERSION, 0);
    d.writeUInt32BE(actions, 4);
    d.writeUInt32BE(protocol, 8);
    return encode(Reply.OPTNEG, d);
  },
  continue: (): Buffer => encode(Reply.CONTINUE),
  accept: (): Buffer => encode(Reply.ACCEPT),
  tempfail: (): Buffer => encode(Reply.TEMPFAIL),
  discard: (): Buffer => encode(Reply.DISCARD),
  progress: (): Buffer => encode(Reply.PROGRESS),
  /** e.g. code "451", text "4.3.0 try again later". */
  replyCode: (code: string, text: string): Buffer => encode(Reply.REPLYCODE, z(`${code} ${text.replace(/[\r\n%]/g, " ")}`)),
  /** value may be folded with CRLF or LF; it goes out with LF-only folds ({@link headerValue}). */
  addHeader: (name: string, value: string): Buffer => encode(Reply.ADDHEADER, z(name, headerValue(name, value))),
  /** index is 1-based among headers of that name; an empty value deletes the header; folds as in addHeader. */
  chgHeader: (index: number, name: string, value: string): Buffer => {
    const i = Buffer.alloc(4);
    i.writeUInt32BE(index, 0);
    return encode(Reply.CHGHEADER, Buffer.concat([i, z(name, headerValue(name, value))]));
  },
  addRcpt: (rcpt: string): Buffer => encode(Reply.ADDRCPT, z(`<${rcpt}>`)),
  delRcpt: (rcpt: string): Buffer => encode(Reply.DELRCPT, z(`<${rcpt}>`)),
  replBody: (chunk: Uint8Array): Buffer => {
    if (chunk.length > MAX_BODY_CHUNK) throw new RangeError("body chunk larger than 65535 bytes");
    return encode(Reply.REPLBODY, chunk);
  },
};

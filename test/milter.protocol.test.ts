// The milter codec against byte-exact packets for every command and reply we use.
import { describe, expect, it } from "vitest";
import {
  Action,
  ProtocolError,
  Step,
  decode,
  parseAddress,
  parseHeader,
  parseOptneg,
  reply,
  strings,
} from "../src/milter/protocol.js";

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");
const MAX = 1024 * 1024;

describe("decode: commands from the MTA", () => {
  it.each([
    ["SMFIC_OPTNEG", "0000000d 4f 00000006 000001ff 001fffff", "O", "00000006000001ff001fffff"],
    ["SMFIC_MACRO", "0000000a 44 4d 7b 69 7d 00 41 42 43 00", "D", "4d7b697d0041424300"],
    ["SMFIC_MAIL", "00000013 4d 3c 61 40 62 2e 65 78 61 6d 70 6c 65 3e 00 53 3d 31 00", "M", "3c6140622e6578616d706c653e00533d3100"],
    ["SMFIC_RCPT", "0000000f 52 3c 63 40 64 2e 65 78 61 6d 70 6c 65 3e 00", "R", "3c6340642e6578616d706c653e00"],
    ["SMFIC_HEADER", "0000000e 4c 53 75 62 6a 65 63 74 00 5b 53 33 5d 00", "L", "5375626a656374005b53335d00"],
    ["SMFIC_EOH", "00000001 4e", "N", ""],
    ["SMFIC_BODY", "00000006 42 48 61 6c 6c 6f", "B", "48616c6c6f"],
    ["SMFIC_BODYEOB", "00000001 45", "E", ""],
    ["SMFIC_ABORT", "00000001 41", "A", ""],
    ["SMFIC_QUIT", "00000001 51", "Q", ""],
    ["SMFIC_QUIT_NC", "00000001 4b", "K", ""],
    ["SMFIC_CONNECT", "00000002 43 00", "C", "00"],
  ])("%s", (_name, wire, cmd, data) => {
    const { packets, rest } = decode(hex(wire), MAX);
    expect(packets).toEqual([{ cmd, data: hex(data) }]);
    expect(rest.length).toBe(0);
  });

  it("reads the fields of OPTNEG, MAIL, RCPT and HEADER", () => {
    expect(parseOptneg(hex("00000006 000001ff 001fffff"))).toEqual({ version: 6, actions: 0x1ff, protocol: 0x1fffff });
    expect(parseAddress(Buffer.from("<a@b.example>\0SIZE=1\0"))).toBe("a@b.example");
    expect(parseAddress(Buffer.from("<>\0"))).toBe("");
    expect(parseHeader(Buffer.from("Subject\0[S3] Befund\0"))).toEqual({ name: "Subject", value: "[S3] Befund" });
    expect(strings(Buffer.from("{i}\0ABC\0j\0host\0"))).toEqual(["{i}", "ABC", "j", "host"]);
  });

  it("keeps an incomplete packet for later, in any split", () => {
    const wire = Buffer.concat([hex("00000001 4e"), hex("00000006 42 48 61 6c 6c 6f"), hex("00000001 45")]);
    for (let cut = 0; cut <= wire.length; cut++) {
      const a = decode(wire.subarray(0, cut), MAX);
      const b = decode(Buffer.concat([a.rest, wire.subarray(cut)]), MAX);
      expect([...a.packets, ...b.packets].map((p) => p.cmd)).toEqual(["N", "B", "E"]);
    }
  });

  it("refuses a zero length, an oversized length, and strings without their NUL", () => {
    expect(() => decode(hex("00000000 41"), MAX)).toThrow(ProtocolError);
    expect(() => decode(hex("00100001"), MAX)).toThrow("packet of 1048577 bytes is larger than 1048576");
    expect(() => strings(Buffer.from("Subject"))).toThrow("string without its NUL terminator");
    expect(() => parseOptneg(hex("00000006"))).toThrow("option negotiation is too short");
    expect(() => parseHeader(Buffer.from("\0x\0"))).toThrow(ProtocolError);
  });
});

describe("replies to the MTA", () => {
  it.each([
    ["SMFIR_CONTINUE", reply.continue(), "00000001 63"],
    ["SMFIR_ACCEPT", reply.accept(), "00000001 61"],
    ["SMFIR_TEMPFAIL", reply.tempfail(), "00000001 74"],
    ["SMFIR_DISCARD", reply.discard(), "00000001 64"],
    ["SMFIR_PROGRESS", reply.progress(), "00000001 70"],
    ["SMFIR_OPTNEG", reply.optneg(0x1f, 0x4c3c3), "0000000d 4f 00000006 0000001f 0004c3c3"],
    ["SMFIR_ADDHEADER", reply.addHeader("X-A", "1"), "00000007 68 58 2d 41 00 31 00"],
    ["SMFIR_CHGHEADER (delete)", reply.chgHeader(2, "Bcc", ""), "0000000a 6d 00000002 42 63 63 00 00"],
    ["SMFIR_CHGHEADER", reply.chgHeader(1, "Subject", "Hi"), "00000010 6d 00000001 53 75 62 6a 65 63 74 00 48 69 00"],
    // Folds leave with a bare LF: the MTA writes CRLF for it, so a CR of ours would be doubled.
    [
      "SMFIR_CHGHEADER (a CRLF fold goes out as LF)",
      reply.chgHeader(1, "Content-Type", 'multipart/alternative;\r\n boundary="b"'),
      "00000037 6d 00000001 436f6e74656e742d54797065 00 6d756c7469706172742f616c7465726e61746976653b 0a 20 626f756e646172793d 22 62 22 00",
    ],
    ["SMFIR_CHGHEADER (an LF fold stays)", reply.chgHeader(2, "X-A", "1\n 2"), "0000000e 6d 00000002 58 2d 41 00 31 0a 20 32 00"],
    ["SMFIR_ADDHEADER (a CRLF fold with a tab goes out as LF)", reply.addHeader("X-A", "1\r\n\t2"), "0000000a 68 58 2d 41 00 31 0a 09 32 00"],
    ["SMFIR_ADDRCPT", reply.addRcpt("a@b.example"), "0000000f 2b 3c 61 40 62 2e 65 78 61 6d 70 6c 65 3e 00"],
    ["SMFIR_DELRCPT", reply.delRcpt("a@b.example"), "0000000f 2d 3c 61 40 62 2e 65 78 61 6d 70 6c 65 3e 00"],
    ["SMFIR_REPLBODY", reply.replBody(Buffer.from("Hallo")), "00000006 62 48 61 6c 6c 6f"],
    ["SMFIR_REPLYCODE", reply.replyCode("451", "4.3.0 später"), "00000013 79 34 35 31 20 34 2e 33 2e 30 20 73 70 c3 a4 74 65 72 00"],
  ])("%s", (_name, bytes, wire) => {
    expect(bytes.toString("hex")).toBe(hex(wire).toString("hex"));
  });

  it("refuses a body chunk over 65535 bytes, and keeps line breaks and % out of reply texts", () => {
    expect(() => reply.replBody(Buffer.alloc(65_536))).toThrow(RangeError);
    expect(reply.replBody(Buffer.alloc(65_535)).length).toBe(65_540);
    expect(reply.replyCode("554", "5.6.0 a\r\nb 100%").subarray(5).toString()).toBe("554 5.6.0 a  b 100 \0");
  });

  it("refuses a header value with a CR, LF or NUL that is not part of a fold, and does not quote the value", () => {
    for (const v of ["a\rb", "a\r\r\n b", "a\r\nb", "a\nb", "a\r\n", "a\0b"]) {
      expect(() => reply.chgHeader(1, "Subject", v)).toThrow(new RangeError("the value of the Subject header has a CR, LF or NUL that is not a fold"));
      expect(() => reply.addHeader("X-A", v)).toThrow(new RangeError("the value of the X-A header has a CR, LF or NUL that is not a fold"));
    }
  });

  it("names the flags as libmilter does", () => {
    expect(Action).toEqual({ ADDHDRS: 0x01, CHGBODY: 0x02, ADDRCPT: 0x04, DELRCPT: 0x08, CHGHDRS: 0x10 });
    expect(Step.NOCONNECT | Step.NOHELO | Step.NOUNKNOWN | Step.NODATA).toBe(0x303);
    expect(Step.NR_HDR).toBe(0x80);
    expect(Step.HDR_LEADSPC).toBe(0x100000);
  });
});

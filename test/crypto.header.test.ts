// The X25519 header on node:crypto, checked against age-encryption (an independent
// implementation) both ways, and its refusals. The cctv vectors (crypto.cctv.test.ts) run
// through the same parser for every X25519 identity.
import { randomBytes } from "node:crypto";
import { Decrypter, Encrypter, generateX25519Identity, identityToRecipient } from "age-encryption";
import { describe, expect, it } from "vitest";
import { openHeader, parseHeader, x25519Identity, x25519Recipient } from "../src/crypto/header.js";
import { decryptStream, encryptStream, generateIdentity, recipientOf } from "../src/crypto/index.js";
import { readAll, streamOf } from "./helpers/streams.js";

function headerOf(file: Uint8Array): Uint8Array {
  const buf = Buffer.from(file);
  return buf.subarray(0, buf.indexOf("\n", buf.indexOf("\n---") + 1) + 1);
}

describe("X25519 header on node:crypto", () => {
  it("derives the same recipient as age-encryption", async () => {
    for (let i = 0; i < 20; i++) {
      const id = await generateX25519Identity();
      expect(await recipientOf(id)).toBe(await identityToRecipient(id));
    }
  });

  it("writes files that age-encryption opens, and opens files it writes", async () => {
    const id = generateIdentity("x25519");
    const data = randomBytes(70_000);
    const ours = await readAll(await encryptStream(streamOf(data), [await recipientOf(id)]));
    expect(ours.toString("latin1")).toMatch(/^age-encryption\.org\/v1\n-> X25519 [A-Za-z0-9+/]{43}\n[A-Za-z0-9+/]{43}\n--- [A-Za-z0-9+/]{43}\n/);
    const d = new Decrypter();
    d.addIdentity(id);
    expect(Buffer.from(await d.decrypt(ours)).equals(data)).toBe(true);

    const e = new Encrypter();
    e.addRecipient(await recipientOf(id));
    const theirs = await e.encrypt(data);
    expect((await readAll(await decryptStream(streamOf(theirs), [id]))).equals(data)).toBe(true);
  });

  it("mixes recipient types: age-encryption writes the header, each identity opens it", async () => {
    const classic = generateIdentity("x25519");
    const hybrid = generateIdentity("mlkem768x25519");
    const data = randomBytes(1000);
    const ct = await readAll(await encryptStream(streamOf(data), [await recipientOf(classic), await recipientOf(hybrid)]));
    expect(ct.toString("latin1")).toContain("\n-> mlkem768x25519 ");
    expect(ct.toString("latin1")).toContain("\n-> X25519 ");
    for (const id of [classic, hybrid]) expect((await readAll(await decryptStream(streamOf(ct), [id]))).equals(data)).toBe(true);
  });

  it("tells X25519 keys from other kinds, and refuses a bad checksum", async () => {
    expect(x25519Recipient(await recipientOf(generateIdentity("mlkem768x25519")))).toBeNull();
    expect(x25519Identity(generateIdentity("mlkem768x25519"))).toBeNull();
    const r = await recipientOf(generateIdentity("x25519"));
    expect(x25519Recipient(r)).toHaveLength(32);
    const broken = r.slice(0, -1) + (r.endsWith("q") ? "p" : "q");
    expect(() => x25519Recipient(broken)).toThrow();
  });

  it("names the failure: no match, bad MAC, malformed stanza", async () => {
    const id = generateIdentity("x25519");
    const other = x25519Identity(generateIdentity("x25519"))!;
    const mine = x25519Identity(id)!;
    const header = headerOf(await readAll(await encryptStream(streamOf(Buffer.from("x")), [await recipientOf(id)])));
    expect(openHeader(header, [mine])).toHaveLength(16);
    expect(() => openHeader(header, [other])).toThrow(/no identity matched/);

    const text = Buffer.from(header).toString("latin1");
    const macAt = text.indexOf("--- ") + 4;
    const badMac = text.slice(0, macAt) + (text[macAt] === "A" ? "B" : "A") + text.slice(macAt + 1);
    expect(() => openHeader(Buffer.from(badMac, "latin1"), [mine])).toThrow(/invalid header HMAC/);

    const extraArg = text.replace(/^-> X25519 (\S+)$/m, "-> X25519 $1 extra");
    expect(() => openHeader(Buffer.from(extraArg, "latin1"), [mine])).toThrow(/invalid X25519 stanza/);
    const crlf = text.replace("age-encryption.org/v1\n", "age-encryption.org/v1\r\n");
    expect(() => parseHeader(Buffer.from(crlf, "latin1"))).toThrow(/malformed header/);
    const padded = text.replace(/^-> X25519 (\S+)$/m, "-> X25519 $1=");
    expect(() => openHeader(Buffer.from(padded, "latin1"), [mine])).toThrow(/base64/);
  });
});

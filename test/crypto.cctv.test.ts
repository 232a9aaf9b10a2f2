// Every cctv-age vector through our decryption path (src/crypto decryptStream), asserting
// the expected outcome: success with the payload hash, or the specific kind of failure.
import { inflateSync } from "node:zlib";
import * as vectors from "cctv-age";
import { describe, expect, it } from "vitest";
import { dearmor, decryptStream } from "../src/crypto/index.js";
import { sha256, streamOf } from "./helpers/streams.js";

interface Vector {
  expect: string;
  payload?: string;
  identities: string[];
  passphrases: string[];
  armored: boolean;
  body: Uint8Array;
}

function parse(raw: Uint8Array): Vector {
  const buf = Buffer.from(raw);
  const split = buf.indexOf("\n\n");
  const head = buf.subarray(0, split).toString("utf8");
  let body: Uint8Array = buf.subarray(split + 2);
  const v: Vector = { expect: "", identities: [], passphrases: [], armored: false, body };
  for (const line of head.split("\n")) {
    const [k, ...rest] = line.split(": ");
    const value = rest.join(": ");
    if (k === "expect") v.expect = value;
    else if (k === "payload") v.payload = value;
    else if (k === "identity") v.identities.push(value);
    else if (k === "passphrase") v.passphrases.push(value);
    else if (k === "armored") v.armored = value === "yes";
    else if (k === "compressed" && value === "zlib") body = inflateSync(body);
  }
  v.body = body;
  return v;
}

type Outcome =
  | { kind: "success"; out: Buffer }
  | { kind: "armor"; error: Error }
  | { kind: "header"; error: Error }
  | { kind: "payload"; out: Buffer; error: Error };

async function run(v: Vector, piece: number): Promise<Outcome> {
  let ct = v.body;
  if (v.armored) {
    try {
      ct = await dearmor(Buffer.from(v.body).toString("latin1"));
    } catch (e) {
      return { kind: "armor", error: e as Error };
    }
  }
  let plain: ReadableStream<Uint8Array>;
  try {
    plain = await decryptStream(streamOf(ct, piece), v.identities, v.passphrases);
  } catch (e) {
    return { kind: "header", error: e as Error };
  }
  const parts: Uint8Array[] = [];
  try {
    for await (const c of plain as unknown as AsyncIterable<Uint8Array>) parts.push(c);
  } catch (e) {
    return { kind: "payload", out: Buffer.concat(parts), error: e as Error };
  }
  return { kind: "success", out: Buffer.concat(parts) };
}

// Each vector in one piece, in 4 KiB pieces, and (when small) one byte at a time: the
// header and chunk boundaries must not depend on how the input is split.
const all = Object.entries(vectors as Record<string, Uint8Array>).flatMap(([name, raw]) => {
  const v = parse(raw);
  const pieces = [v.body.length || 1, 4096, ...(v.body.length < 200_000 ? [1] : [])];
  return pieces.map((piece) => ({ name, piece, v }));
});

describe("cctv-age vectors through decryptStream", () => {
  it("has the full vector set", () => {
    expect(new Set(all.map((x) => x.name)).size).toBeGreaterThanOrEqual(143);
  });

  it.each(all)("$name in pieces of $piece", async ({ v, piece }) => {
    const r = await run(v, piece);
    switch (v.expect) {
      case "success":
        expect(r.kind).toBe("success");
        if (r.kind === "success") expect(sha256(r.out)).toBe(v.payload);
        break;
      case "payload failure":
        expect(r.kind).toBe("payload");
        if (r.kind === "payload") expect(sha256(r.out)).toBe(v.payload);
        break;
      case "armor failure":
        expect(r.kind).toBe("armor");
        break;
      case "no match":
        expect(r.kind).toBe("header");
        if (r.kind === "header") expect(r.error.message).toMatch(/no identity matched/i);
        break;
      case "HMAC failure":
        expect(r.kind).toBe("header");
        if (r.kind === "header") expect(r.error.message).toMatch(/hmac/i);
        break;
      case "header failure":
        expect(r.kind).toBe("header");
        if (r.kind === "header") expect(r.error.message).not.toMatch(/no identity matched|hmac/i);
        break;
      default:
        throw new Error(`unknown expectation ${v.expect}`);
    }
  });
});

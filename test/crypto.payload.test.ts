// The node:crypto STREAM payload, both ways: standard age v1 files that the Go age CLI opens
// and that open files the Go CLI wrote, at the chunk boundaries, and refusing damage.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decryptStream, encryptStream, generateIdentity, recipientOf } from "../src/crypto/index.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { readAll, streamOf } from "./helpers/streams.js";
import { needTool } from "./helpers/tools.js";

const KiB = 1024;
const SIZES = [0, 1, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 128 * KiB, 3 * 64 * KiB + 17];

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await cleanup(dir);
});

async function roundTrip(data: Buffer, piece: number, type: "x25519" | "mlkem768x25519"): Promise<Buffer> {
  const id = generateIdentity(type);
  const ct = await readAll(await encryptStream(streamOf(data, piece), [await recipientOf(id)]));
  return readAll(await decryptStream(streamOf(ct, 7919), [id]));
}

describe("our payload", () => {
  it.each(SIZES)("round-trips %i bytes, whatever the input pieces", async (size) => {
    const data = randomBytes(size);
    for (const piece of [1000, 64 * KiB, 65 * KiB]) expect((await roundTrip(data, piece, "x25519")).equals(data)).toBe(true);
    expect((await roundTrip(data, 4096, "mlkem768x25519")).equals(data)).toBe(true);
  });

  it("writes one header per file with a fresh file key and nonce", async () => {
    const r = await recipientOf(generateIdentity("x25519"));
    const a = await readAll(await encryptStream(streamOf(Buffer.from("gleich")), [r]));
    const b = await readAll(await encryptStream(streamOf(Buffer.from("gleich")), [r]));
    expect(a.subarray(0, 22).toString()).toBe("age-encryption.org/v1\n");
    expect(a.equals(b)).toBe(false);
    // header ‖ 16-byte nonce ‖ one final chunk of 6 + 16 bytes
    expect(a.length - (a.indexOf("\n---") + 1) - "--- ".length - 43 - 1).toBe(16 + 6 + 16);
  });

  it("encrypts to several recipients, each able to open it", async () => {
    const ids = [generateIdentity("x25519"), generateIdentity("x25519")];
    const data = randomBytes(100_000);
    const ct = await readAll(await encryptStream(streamOf(data), await Promise.all(ids.map((i) => recipientOf(i)))));
    for (const id of ids) expect((await readAll(await decryptStream(streamOf(ct), [id]))).equals(data)).toBe(true);
  });

  it("refuses a truncated or tampered last chunk", async () => {
    const id = generateIdentity("x25519");
    const data = randomBytes(64 * KiB + 100);
    const ct = await readAll(await encryptStream(streamOf(data), [await recipientOf(id)]));
    const truncated = ct.subarray(0, ct.length - 1);
    await expect(readAll(await decryptStream(streamOf(truncated), [id]))).rejects.toThrow(/chunk 1 failed to authenticate/);
    const cut = ct.subarray(0, ct.length - 116);
    await expect(readAll(await decryptStream(streamOf(cut), [id]))).rejects.toThrow(/no final chunk/);
    const tampered = Buffer.from(ct);
    tampered[tampered.length - 20]! ^= 1;
    await expect(readAll(await decryptStream(streamOf(tampered), [id]))).rejects.toThrow(/failed to authenticate/);
  });
});

describe.runIf(needTool("age"))("interop with the Go age CLI, byte for byte", () => {
  it.each(SIZES)("%i bytes: we encrypt, age -d decrypts; age encrypts, we decrypt", async (size) => {
    const id = generateIdentity("x25519");
    const keyFile = join(dir, `key-${size}.txt`);
    await writeFile(keyFile, `${id}\n`);
    const data = randomBytes(size);
    const ours = join(dir, `ours-${size}.age`);
    await writeFile(ours, await readAll(await encryptStream(streamOf(data), [await recipientOf(id)])));
    expect(execFileSync("age", ["-d", "-i", keyFile, ours], { maxBuffer: 1 << 24 }).equals(data)).toBe(true);

    const plain = join(dir, `plain-${size}`);
    const theirs = join(dir, `theirs-${size}.age`);
    await writeFile(plain, data);
    execFileSync("age", ["-r", await recipientOf(id), "-o", theirs, plain]);
    expect((await readAll(await decryptStream(streamOf(await readFile(theirs)), [id]))).equals(data)).toBe(true);
  });
});

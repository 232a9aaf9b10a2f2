// Secu-Pass-Key → patient identity (DESIGN.md §3), checked against independent code:
// a seed computed with Python's hashlib.scrypt (OpenSSL), node:crypto's scrypt, and the Go
// age-keygen, which must accept the identity and derive the same recipient.
import { execFileSync } from "node:child_process";
import { scryptSync } from "node:crypto";
import { bech32 } from "@scure/base";
import { describe, expect, it } from "vitest";
import {
  deriveSecuPassIdentity,
  identityType,
  newKdfParams,
  parseKdfParams,
  recipientOf,
  recipientType,
  safetyCode,
  type KdfParams,
} from "../src/crypto/index.js";
import { needTool } from "./helpers/tools.js";

const KEY = "Grüße aus der Praxis – 2026";
const SALT = "cHJheG1haWwtdGVzdC1zYWx0IQ==";
// hashlib.scrypt(NFC(KEY), salt, n=2**17, r=8, p=1, dklen=32) in Python 3.11.
const PYTHON_SEED = "3e62772d54f1849309e0c49e8efdb568c1169aca0847ef63468c264b70d53682";

const params = (type: KdfParams["type"], logN = 17): KdfParams => ({ alg: "scrypt", logN, r: 8, p: 1, salt: SALT, type });

function seedOf(identity: string): string {
  const { bytes } = bech32.decodeToBytes(identity.toLowerCase());
  return Buffer.from(bytes).toString("hex");
}

describe("deriveSecuPassIdentity", () => {
  it("matches an independent scrypt at the production cost (N=2^17, r=8, p=1)", async () => {
    const identity = await deriveSecuPassIdentity(KEY, params("x25519"));
    expect(identity).toMatch(/^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/);
    expect(seedOf(identity)).toBe(PYTHON_SEED);
  });

  it("encodes the same seed as a hybrid identity", async () => {
    const identity = await deriveSecuPassIdentity(KEY, params("mlkem768x25519"));
    expect(identityType(identity)).toBe("mlkem768x25519");
    expect(seedOf(identity)).toBe(PYTHON_SEED);
    const recipient = await recipientOf(identity);
    expect(recipientType(recipient)).toBe("mlkem768x25519");
    expect(recipient.length).toBe(1959);
  });

  it("normalises to NFC: composed and decomposed umlauts give the same identity", async () => {
    const composed = "Grüße";
    const decomposed = "Gru\u0308ße";
    expect(composed).not.toBe(decomposed);
    const p = params("x25519", 15);
    expect(await deriveSecuPassIdentity(decomposed, p)).toBe(await deriveSecuPassIdentity(composed, p));
    const viaNode = scryptSync(composed.normalize("NFC"), Buffer.from(SALT, "base64"), 32, { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
    expect(seedOf(await deriveSecuPassIdentity(decomposed, p))).toBe(viaNode.toString("hex"));
  });

  it("depends on the salt and on every character of the key", async () => {
    const p = params("x25519", 15);
    const other = { ...p, salt: Buffer.from("another-salt-16b").toString("base64") };
    const a = await deriveSecuPassIdentity("schluessel", p);
    expect(await deriveSecuPassIdentity("schluessel", other)).not.toBe(a);
    expect(await deriveSecuPassIdentity("Schluessel", p)).not.toBe(a);
  });

  it("reports progress from 0 to 1", async () => {
    const seen: number[] = [];
    await deriveSecuPassIdentity("x", params("x25519", 15), (f) => seen.push(f));
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.at(-1)).toBe(1);
  });

  it("refuses an empty key", async () => {
    await expect(deriveSecuPassIdentity("", params("x25519", 15))).rejects.toThrow("secu-pass-key is empty");
  });

  if (needTool("age-keygen")) {
    it("gives an identity that the Go age-keygen accepts, with the same recipient", async () => {
      const identity = await deriveSecuPassIdentity(KEY, params("x25519"));
      const goRecipient = execFileSync("age-keygen", ["-y"], { input: `${identity}\n` }).toString().trim();
      expect(goRecipient).toBe(await recipientOf(identity));
    });
  }
});

describe("parseKdfParams", () => {
  it("accepts what newKdfParams makes, with a fresh 16-byte salt each time", () => {
    const a = newKdfParams("mlkem768x25519");
    const b = newKdfParams("mlkem768x25519");
    expect(parseKdfParams(a)).toEqual({ alg: "scrypt", logN: 17, r: 8, p: 1, salt: a.salt, type: "mlkem768x25519" });
    expect(Buffer.from(a.salt, "base64")).toHaveLength(16);
    expect(a.salt).not.toBe(b.salt);
  });

  it.each([
    [{ ...params("x25519"), alg: "argon2" }, "unsupported kdf"],
    [{ ...params("x25519"), logN: 10 }, "kdf cost out of range"],
    [{ ...params("x25519"), logN: 30 }, "kdf cost out of range"],
    [{ ...params("x25519"), r: 1 }, "kdf cost out of range"],
    [{ ...params("x25519"), p: 1.5 }, "kdf cost out of range"],
    [{ ...params("x25519"), salt: undefined }, "kdf salt missing"],
    [{ ...params("x25519"), salt: "c2hvcnQ=" }, "kdf salt too short"],
    [{ ...params("x25519"), salt: "!!!" }, "kdf salt is not base64"],
    [{ ...params("x25519"), type: "rsa" }, "unsupported identity type"],
    [null, "kdf params must be an object"],
  ])("rejects %j", (value, message) => {
    expect(() => parseKdfParams(value)).toThrow(message);
  });
});

describe("safetyCode", () => {
  it("is 12 digits in three groups, stable, and differs between recipients", async () => {
    const r1 = await recipientOf(await deriveSecuPassIdentity("eins", params("x25519", 15)));
    const r2 = await recipientOf(await deriveSecuPassIdentity("zwei", params("x25519", 15)));
    expect(safetyCode(r1)).toMatch(/^\d{4} \d{4} \d{4}$/);
    expect(safetyCode(r1)).toBe(safetyCode(r1));
    expect(safetyCode(r1)).not.toBe(safetyCode(r2));
  });
});

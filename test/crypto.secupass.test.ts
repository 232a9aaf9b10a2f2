// Secu-Pass-Key → patient identity (DESIGN.md §3), checked against independent code:
// a seed computed with Python's hashlib.scrypt (OpenSSL), node:crypto's scrypt, and the Go
// age-keygen, which must accept the identity and derive the same recipient.
import { execFileSync } from "node:child_process";
import { createHash, hkdfSync, scryptSync } from "node:crypto";
import { bech32 } from "@scure/base";
import { describe, expect, it } from "vitest";
import {
  KdfParamsError,
  deriveSecuPass,
  generateIdentity,
  identityType,
  newKdfParams,
  parseKdfParams,
  parseNewKeyKdfParams,
  recipientOf,
  recipientType,
  safetyCode,
  secupassSalt,
  type KdfParams,
} from "../src/crypto/index.js";
import { needTool } from "./helpers/tools.js";

const KEY = "Grüße aus der Praxis – 2026";
const SALT = "cHJheG1haWwtdGVzdC1zYWx0IQ==";
const ADDRESS = "anna.schmidt@patient.example";
// Python 3.11 (OpenSSL), for legacy parameters (no version, the salt as stored):
//   hashlib.scrypt(NFC(KEY), salt=b64decode(SALT), n=2**17, r=8, p=1, dklen=32)
const PYTHON_SEED = "3e62772d54f1849309e0c49e8efdb568c1169aca0847ef63468c264b70d53682";
// Python 3.11 (OpenSSL), for version 2 (the address mixed into the salt):
//   salt2 = hashlib.sha256(b"praxmail secupass v2" + b"\0" + NFC(ADDRESS.lower()).encode() + b"\0" + b64decode(SALT)).digest()
//   hashlib.scrypt(NFC(KEY), salt=salt2, n=2**17, r=8, p=1, dklen=32, maxmem=2**28)
const PYTHON_SALT_V2 = "1292a94e179b0f3614897572ea2c84023e016bf15d868666ee831a34bfe5bd5d";
const PYTHON_SEED_V2 = "85c98af3ac8c77848c6b10f126cec93ad8d54e29ab840e1367c6637e61a75aa6";

/** Legacy parameters (stored before version 2) at the production cost. */
const params = (type: KdfParams["type"], logN = 17): KdfParams => ({ alg: "scrypt", logN, r: 8, p: 1, salt: SALT, type });
/** Version 2 parameters at the production cost. */
const v2 = (type: KdfParams["type"] = "x25519"): KdfParams => ({ ...params(type), v: 2 });
/** Version 3 parameters (every new key) at the production cost. */
const v3 = (type: KdfParams["type"] = "x25519"): KdfParams => ({ ...params(type), v: 3 });
/** HKDF-SHA256 with node:crypto (OpenSSL), empty salt, 32 bytes. */
const nodeHkdf = (seed: Buffer, info: string): Buffer => Buffer.from(hkdfSync("sha256", seed, Buffer.alloc(0), info, 32));
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

function seedOf(identity: string): string {
  const { bytes } = bech32.decodeToBytes(identity.toLowerCase());
  return Buffer.from(bytes).toString("hex");
}

// Every derivation here runs at the production cost (about 1–2 s each), so results are shared.
let legacyIdentity: Promise<string> | undefined;
const legacy = (): Promise<string> => (legacyIdentity ??= deriveSecuPass(KEY, params("x25519"), ADDRESS).then((k) => k.identity));

describe("deriveSecuPass", () => {
  it("matches an independent scrypt at the production cost (N=2^17, r=8, p=1) for stored legacy parameters (no version; the address unused)", async () => {
    const identity = await legacy();
    expect(identity).toMatch(/^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/);
    expect(seedOf(identity)).toBe(PYTHON_SEED);
    expect(hex(secupassSalt(params("x25519"), "jemand.anders@example.org"))).toBe(Buffer.from(SALT, "base64").toString("hex"));
  });

  it("version 2 mixes the address into the salt and matches Python's hashlib.scrypt byte for byte", async () => {
    expect(hex(secupassSalt(v2(), ADDRESS))).toBe(PYTHON_SALT_V2);
    const identity = (await deriveSecuPass(KEY, v2(), ADDRESS)).identity;
    expect(seedOf(identity)).toBe(PYTHON_SEED_V2);
    expect(seedOf(identity)).not.toBe(PYTHON_SEED);
  });

  it("version 3 has its own salt label; U and the login credential are HKDF-SHA256 of the seed with distinct labels, as node:crypto (OpenSSL) computes them", async () => {
    const salt3 = createHash("sha256").update(Buffer.concat([Buffer.from(`praxmail secupass v3\0${ADDRESS}\0`), Buffer.from(SALT, "base64")])).digest();
    expect(hex(secupassSalt(v3(), ADDRESS))).toBe(salt3.toString("hex"));
    expect(salt3.toString("hex")).not.toBe(PYTHON_SALT_V2);
    const seed = scryptSync(KEY.normalize("NFC"), salt3, 32, { N: 2 ** 17, r: 8, p: 1, maxmem: 256 * 1024 * 1024 });
    const keys = await deriveSecuPass(KEY, v3(), ADDRESS);
    expect(seedOf(keys.identity)).toBe(nodeHkdf(seed, "praxmail identity v3").toString("hex"));
    expect(Buffer.from(keys.credential, "base64url").toString("hex")).toBe(nodeHkdf(seed, "praxmail login v3").toString("hex"));
    expect(keys.credential).toMatch(/^[\w-]{43}$/);
    // Neither is the seed, nor each other.
    expect(seedOf(keys.identity)).not.toBe(seed.toString("hex"));
    expect(Buffer.from(keys.credential, "base64url").equals(seed)).toBe(false);
  });

  it("keys set before version 3 keep U as the seed itself (no delivery needs a new wrap) and get their credential from the same HKDF label", async () => {
    const keys = await deriveSecuPass(KEY, v2(), ADDRESS);
    expect(seedOf(keys.identity)).toBe(PYTHON_SEED_V2);
    expect(Buffer.from(keys.credential, "base64url").toString("hex")).toBe(nodeHkdf(Buffer.from(PYTHON_SEED_V2, "hex"), "praxmail login v3").toString("hex"));
  });

  it("version 2: the address is lowercased and NFC-normalised; other addresses give other salts", () => {
    const salt = hex(secupassSalt(v2(), ADDRESS));
    expect(hex(secupassSalt(v2(), "Anna.Schmidt@Patient.EXAMPLE"))).toBe(salt);
    expect(hex(secupassSalt(v2(), "ju\u0308rgen@praxis.example"))).toBe(hex(secupassSalt(v2(), "JÜRGEN@praxis.example")));
    expect(hex(secupassSalt(v2(), "anna.schmidt@patient.exampla"))).not.toBe(salt);
    // The separators keep address and random salt apart: no other split gives the same input.
    const manual = createHash("sha256").update(Buffer.concat([Buffer.from("praxmail secupass v2\0anna.schmidt@patient.example\0"), Buffer.from(SALT, "base64")])).digest("hex");
    expect(manual).toBe(salt);
    expect(() => secupassSalt(v2(), "")).toThrow("secu-pass address is empty or malformed");
  });

  it("encodes the same seed as a hybrid identity", async () => {
    const identity = (await deriveSecuPass(KEY, params("mlkem768x25519"), ADDRESS)).identity;
    expect(identityType(identity)).toBe("mlkem768x25519");
    expect(seedOf(identity)).toBe(PYTHON_SEED);
    const recipient = await recipientOf(identity);
    expect(recipientType(recipient)).toBe("mlkem768x25519");
    expect(recipient.length).toBe(1959);
  });

  it("normalises the key to NFC: a decomposed umlaut derives what node:crypto's scrypt gives for the composed one", async () => {
    const composed = "Grüße";
    const decomposed = "Gru\u0308ße";
    expect(composed).not.toBe(decomposed);
    const viaNode = scryptSync(composed, secupassSalt(v2(), ADDRESS), 32, { N: 2 ** 17, r: 8, p: 1, maxmem: 256 * 1024 * 1024 });
    expect(seedOf((await deriveSecuPass(decomposed, v2(), ADDRESS)).identity)).toBe(viaNode.toString("hex"));
  });

  it("depends on the salt and on every character of the key", async () => {
    const p = v2();
    const other = { ...p, salt: Buffer.from("another-salt-16b").toString("base64") };
    const a = (await deriveSecuPass("schluessel", p, ADDRESS)).identity;
    expect((await deriveSecuPass("schluessel", other, ADDRESS)).identity).not.toBe(a);
    expect((await deriveSecuPass("Schluessel", p, ADDRESS)).identity).not.toBe(a);
  });

  it("reports progress from 0 to 1", async () => {
    const seen: number[] = [];
    await deriveSecuPass("x", v2(), ADDRESS, (f) => seen.push(f));
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.at(-1)).toBe(1);
  });

  it("refuses an empty key, weak parameters and a version 2 derivation without an address, before any work", async () => {
    await expect(deriveSecuPass("", v2(), ADDRESS)).rejects.toThrow("secu-pass-key is empty");
    const weak = deriveSecuPass("schluessel", { ...v2(), logN: 15 }, ADDRESS);
    await expect(weak).rejects.toThrow(KdfParamsError);
    await expect(weak).rejects.toMatchObject({ reason: "weak", message: "kdf cost below the minimum N=2^17, r=8, p=1" });
    await expect(deriveSecuPass("schluessel", v2(), "")).rejects.toThrow("secu-pass address is empty or malformed");
  });

  if (needTool("age-keygen")) {
    it("gives an identity that the Go age-keygen accepts, with the same recipient", async () => {
      const identity = await legacy();
      const goRecipient = execFileSync("age-keygen", ["-y"], { input: `${identity}\n` }).toString().trim();
      expect(goRecipient).toBe(await recipientOf(identity));
    });
  }
});

describe("parseKdfParams", () => {
  it("accepts what newKdfParams makes: version 3, the production cost, a fresh 16-byte salt each time", () => {
    const a = newKdfParams("mlkem768x25519");
    const b = newKdfParams("mlkem768x25519");
    expect(parseKdfParams(a)).toEqual({ alg: "scrypt", v: 3, logN: 17, r: 8, p: 1, salt: a.salt, type: "mlkem768x25519" });
    expect(parseNewKeyKdfParams(a)).toEqual(a);
    expect(Buffer.from(a.salt, "base64")).toHaveLength(16);
    expect(a.salt).not.toBe(b.salt);
  });

  it("accepts legacy parameters (no version, version 2) to unlock existing keys, but not for setting a new key", () => {
    for (const old of [params("x25519"), v2()]) {
      expect(parseKdfParams(old)).toEqual(old);
      expect(() => parseNewKeyKdfParams(old)).toThrow(KdfParamsError);
      expect(() => parseNewKeyKdfParams(old)).toThrow("kdf params are not the current version; new keys need v3");
    }
  });

  it.each([
    [{ ...v3(), logN: 16 }],
    [{ ...v2(), logN: 15 }],
    [{ ...v2(), logN: 10 }],
    [{ ...v3(), r: 7 }],
    [{ ...v2(), r: 1 }],
    [{ ...v2(), p: 0 }],
    [{ ...params("x25519"), logN: 15 }],
  ])("refuses weak cost %j, for unlocking and for new keys", (value) => {
    for (const parse of [parseKdfParams, parseNewKeyKdfParams]) {
      let caught: unknown;
      try {
        parse(value);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(KdfParamsError);
      expect(caught).toMatchObject({ reason: "weak", message: "kdf cost below the minimum N=2^17, r=8, p=1" });
    }
  });

  it.each([
    [{ ...params("x25519"), alg: "argon2" }, "unsupported kdf"],
    [{ ...params("x25519"), v: 4 }, "unsupported kdf version"],
    [{ ...params("x25519"), v: "2" }, "unsupported kdf version"],
    [{ ...params("x25519"), logN: 30 }, "kdf cost out of range"],
    [{ ...params("x25519"), r: 64 }, "kdf cost out of range"],
    [{ ...params("x25519"), p: 1.5 }, "kdf cost out of range"],
    [{ ...params("x25519"), salt: undefined }, "kdf salt missing"],
    [{ ...params("x25519"), salt: "c2hvcnQ=" }, "kdf salt too short"],
    [{ ...params("x25519"), salt: "!!!" }, "kdf salt is not base64"],
    [{ ...params("x25519"), type: "rsa" }, "unsupported identity type"],
    [null, "kdf params must be an object"],
  ])("rejects %j", (value, message) => {
    expect(() => parseKdfParams(value)).toThrow(message);
    expect(() => parseKdfParams(value)).toThrow(KdfParamsError);
  });
});

describe("safetyCode", () => {
  it("is 12 digits in three groups, stable, and differs between recipients", async () => {
    const r1 = await recipientOf(generateIdentity("x25519"));
    const r2 = await recipientOf(generateIdentity("x25519"));
    expect(safetyCode(r1)).toMatch(/^\d{4} \d{4} \d{4}$/);
    expect(safetyCode(r1)).toBe(safetyCode(r1));
    expect(safetyCode(r1)).not.toBe(safetyCode(r2));
  });
});

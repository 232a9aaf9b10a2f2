// Ed25519 statements signed with the key derived from the practice identity.
import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { generateIdentity } from "../src/crypto/identity.js";
import { keyFingerprint, practiceSigningKey, signStatement, signingKeyFromSeed, statement, verifyStatement } from "../src/crypto/sign.js";

describe("practice signing key", () => {
  const p = generateIdentity("x25519");
  const key = practiceSigningKey(p);
  const text = statement("praxmail approval v1", ["anna@example.org", "age1xyz", "ABCD-EFGH", "2026-11-30T12:00:00.000Z"]);

  it("is derived the same way every time, and differs between identities", () => {
    expect(practiceSigningKey(p).publicKey).toBe(key.publicKey);
    expect(key.publicKey).toMatch(/^ed25519:[A-Za-z0-9+/]{43}=$/);
    expect(practiceSigningKey(generateIdentity("x25519")).publicKey).not.toBe(key.publicKey);
    expect(practiceSigningKey(generateIdentity("mlkem768x25519")).publicKey).toMatch(/^ed25519:/);
  });

  it("verifies exactly the signed statement under exactly this key", () => {
    const sig = signStatement(key, text);
    expect(verifyStatement(key.publicKey, text, sig)).toBe(true);
    expect(verifyStatement(key.publicKey, text.replace("anna", "anne"), sig)).toBe(false);
    expect(verifyStatement(practiceSigningKey(generateIdentity("x25519")).publicKey, text, sig)).toBe(false);
    const other = signingKeyFromSeed(new Uint8Array(32).fill(7));
    expect(verifyStatement(key.publicKey, text, signStatement(other, text))).toBe(false);
  });

  it("answers false, never throws, for malformed keys and signatures", () => {
    const sig = signStatement(key, text);
    for (const [pub, s] of [
      ["", sig],
      ["ed25519:", sig],
      ["ed25519:AAAA", sig],
      [key.publicKey.replace("ed25519:", "x25519:"), sig],
      [key.publicKey, ""],
      [key.publicKey, "not base64!"],
      [key.publicKey, sig.slice(4)],
    ] as const) {
      expect(verifyStatement(pub, text, s)).toBe(false);
    }
    const { publicKey } = generateKeyPairSync("ed25519");
    const raw = publicKey.export({ format: "der", type: "spki" }).subarray(12).toString("base64");
    expect(verifyStatement(`ed25519:${raw}`, text, sig)).toBe(false);
  });

  it("refuses a field with a line break, so that statements cannot be confused", () => {
    expect(() => statement("praxmail approval v1", ["a@example.org\nage1evil"])).toThrow(/line break/);
    expect(() => statement("k", ["x\ry"])).toThrow(/line break/);
  });

  it("refuses anything that is not a native age identity", () => {
    expect(() => practiceSigningKey("AGE-SECRET-KEY-1NOPE")).toThrow();
    expect(() => signingKeyFromSeed(new Uint8Array(31))).toThrow(/32 bytes/);
  });

  it("prints a fingerprint in OpenSSH's style", () => {
    expect(keyFingerprint(key.publicKey)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect(keyFingerprint(key.publicKey)).not.toBe(keyFingerprint(signingKeyFromSeed(new Uint8Array(32)).publicKey));
  });
});

// Secu-Pass-Key → patient identity (DESIGN.md §3). This module runs unchanged in Node and in
// the browser bundle, so it may import only isomorphic code: no node:* modules.
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { base64 } from "@scure/base";
import { identityFromSeed, isRecipientType, type RecipientType } from "./identity.js";

/** The KDF parameters stored per patient, so that the cost can be raised for new keys later. */
export interface KdfParams {
  readonly alg: "scrypt";
  /** log2 of scrypt's N. */
  readonly logN: number;
  readonly r: number;
  readonly p: number;
  /** 16 random bytes, base64. */
  readonly salt: string;
  /** The identity type the seed is encoded as. */
  readonly type: RecipientType;
}

/** scrypt cost of DESIGN.md §3: N = 2^17, r = 8, p = 1 (128 MiB). */
export const SECUPASS_COST = { logN: 17, r: 8, p: 1 } as const;

/**
 * Creates fresh KDF parameters with a random salt.
 *
 * @param type - The identity type for the patient.
 * @param cost - scrypt cost; defaults to {@link SECUPASS_COST}.
 * @returns Parameters to store with the patient.
 */
export function newKdfParams(
  type: RecipientType,
  cost: { logN: number; r: number; p: number } = SECUPASS_COST,
): KdfParams {
  const salt = base64.encode(crypto.getRandomValues(new Uint8Array(16)));
  return { alg: "scrypt", logN: cost.logN, r: cost.r, p: cost.p, salt, type };
}

/**
 * Checks untrusted KDF parameters (from the database or from the server, in the browser).
 *
 * @param v - The parsed JSON value.
 * @returns The same value, typed.
 * @throws If a field is missing or out of range; the bounds keep a hostile server from
 *   asking for a weak or a memory-exhausting derivation.
 */
export function parseKdfParams(v: unknown): KdfParams {
  if (typeof v !== "object" || v === null) throw new Error("kdf params must be an object");
  const o = v as Record<string, unknown>;
  const int = (x: unknown, lo: number, hi: number): x is number =>
    typeof x === "number" && Number.isInteger(x) && x >= lo && x <= hi;
  if (o.alg !== "scrypt") throw new Error("unsupported kdf");
  if (!int(o.logN, 15, 22) || !int(o.r, 8, 32) || !int(o.p, 1, 4)) throw new Error("kdf cost out of range");
  if (typeof o.salt !== "string") throw new Error("kdf salt missing");
  let salt: Uint8Array;
  try {
    salt = base64.decode(o.salt);
  } catch {
    throw new Error("kdf salt is not base64");
  }
  if (salt.length < 16) throw new Error("kdf salt too short");
  if (!isRecipientType(o.type)) throw new Error("unsupported identity type");
  return { alg: "scrypt", logN: o.logN, r: o.r, p: o.p, salt: o.salt, type: o.type };
}

/**
 * Derives the patient identity U from a Secu-Pass-Key:
 * `seed = scrypt(NFC(key), salt, N, r, p, 32)`, encoded as an age identity.
 *
 * @param secuPassKey - The key the patient typed.
 * @param params - The patient's stored KDF parameters.
 * @param onProgress - Called with 0…1 while scrypt runs.
 * @returns The age identity string.
 * @throws If the key is empty or the parameters are invalid.
 */
export async function deriveSecuPassIdentity(
  secuPassKey: string,
  params: KdfParams,
  onProgress?: (fraction: number) => void,
): Promise<string> {
  const p = parseKdfParams(params);
  const key = secuPassKey.normalize("NFC");
  if (key.length === 0) throw new Error("secu-pass-key is empty");
  const seed = await scryptAsync(new TextEncoder().encode(key), base64.decode(p.salt), {
    N: 2 ** p.logN,
    r: p.r,
    p: p.p,
    dkLen: 32,
    maxmem: 2 ** p.logN * p.r * 128 * 2,
    ...(onProgress ? { onProgress } : {}),
  });
  try {
    return identityFromSeed(seed, p.type);
  } finally {
    seed.fill(0);
  }
}

/**
 * The safety code both the patient and the practice see: 12 digits from SHA-256 of U's
 * recipient, so reception can compare them by phone before approving.
 *
 * @param recipient - U's age recipient.
 * @returns e.g. `"0421 7735 9902"`.
 */
export function safetyCode(recipient: string): string {
  const digest = sha256(new TextEncoder().encode(`praxmail safety code v1\n${recipient}`));
  let n = 0n;
  for (const b of digest.subarray(0, 8)) n = (n << 8n) | BigInt(b);
  const digits = (n % 10n ** 12n).toString().padStart(12, "0");
  return `${digits.slice(0, 4)} ${digits.slice(4, 8)} ${digits.slice(8)}`;
}

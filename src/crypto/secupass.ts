// Secu-Pass-Key → patient identity (DESIGN.md §3). This module runs unchanged in Node and in
// the browser bundle, so it may import only isomorphic code: no node:* modules.
import { hkdf } from "@noble/hashes/hkdf.js";
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { base64, base64urlnopad } from "@scure/base";
import { identityFromSeed, isRecipientType, type RecipientType } from "./identity.js";

/**
 * The KDF parameters stored per patient, so that the cost can be raised for new keys later.
 * Version 3 (every new key) and version 2 bind the salt to the patient's address (see
 * {@link secupassSalt}); parameters without `v` are the first version, where scrypt took the
 * stored salt as it is. Version 3 also derives U through HKDF, next to the login credential
 * (see {@link deriveSecuPass}).
 */
export interface KdfParams {
  readonly alg: "scrypt";
  /** 3 for every new key; 2 or absent on keys set before (they keep their derivation). */
  readonly v?: 2 | 3;
  /** log2 of scrypt's N. */
  readonly logN: number;
  readonly r: number;
  readonly p: number;
  /** 16 random bytes, base64. */
  readonly salt: string;
  /** The identity type the seed is encoded as. */
  readonly type: RecipientType;
}

/** scrypt cost of DESIGN.md §3: N = 2^17, r = 8, p = 1 (128 MiB); also the least accepted. */
export const SECUPASS_COST = { logN: 17, r: 8, p: 1 } as const;

/** Why KDF parameters were refused: too cheap, not bound to the address, or malformed. */
export type KdfRefusal = "weak" | "legacy" | "invalid";

/** Refused KDF parameters; the browser branches on `reason` to tell the patient why. */
export class KdfParamsError extends Error {
  /**
   * @param reason - What is wrong with them.
   * @param message - Lowercase, for logs.
   */
  constructor(
    readonly reason: KdfRefusal,
    message: string,
  ) {
    super(message);
    this.name = "KdfParamsError";
  }
}

/**
 * Creates fresh KDF parameters: version 3, the cost of {@link SECUPASS_COST}, a random salt.
 *
 * @param type - The identity type for the patient.
 * @returns Parameters to store with the patient.
 */
export function newKdfParams(type: RecipientType): KdfParams {
  const salt = base64.encode(crypto.getRandomValues(new Uint8Array(16)));
  return { alg: "scrypt", v: 3, ...SECUPASS_COST, salt, type };
}

/**
 * Checks untrusted KDF parameters (from the database or from the server, in the browser).
 *
 * @param v - The parsed JSON value.
 * @returns The same value, typed.
 * @throws {@link KdfParamsError} `weak` below N=2^17, r=8, p=1 (a hostile server must not be
 *   able to ask for a cheap derivation), `invalid` if a field is missing, unknown or so large
 *   that the derivation would exhaust memory.
 */
export function parseKdfParams(v: unknown): KdfParams {
  const invalid = (message: string): KdfParamsError => new KdfParamsError("invalid", message);
  if (typeof v !== "object" || v === null) throw invalid("kdf params must be an object");
  const o = v as Record<string, unknown>;
  const int = (x: unknown): x is number => typeof x === "number" && Number.isInteger(x);
  if (o.alg !== "scrypt") throw invalid("unsupported kdf");
  if (o.v !== undefined && o.v !== 2 && o.v !== 3) throw invalid("unsupported kdf version");
  if (!int(o.logN) || !int(o.r) || !int(o.p)) throw invalid("kdf cost out of range");
  if (o.logN < SECUPASS_COST.logN || o.r < SECUPASS_COST.r || o.p < SECUPASS_COST.p) {
    throw new KdfParamsError("weak", "kdf cost below the minimum N=2^17, r=8, p=1");
  }
  if (o.logN > 22 || o.r > 32 || o.p > 4) throw invalid("kdf cost out of range");
  if (typeof o.salt !== "string") throw invalid("kdf salt missing");
  let salt: Uint8Array;
  try {
    salt = base64.decode(o.salt);
  } catch {
    throw invalid("kdf salt is not base64");
  }
  if (salt.length < 16) throw invalid("kdf salt too short");
  if (!isRecipientType(o.type)) throw invalid("unsupported identity type");
  return { alg: "scrypt", ...(o.v === 2 || o.v === 3 ? { v: o.v } : {}), logN: o.logN, r: o.r, p: o.p, salt: o.salt, type: o.type };
}

/**
 * Checks KDF parameters for setting a new key (registration, Secu-Pass reset): as
 * {@link parseKdfParams}, and they must be the current version 3 (address-bound salt, U and
 * the login credential both through HKDF).
 *
 * @param v - The parsed JSON value.
 * @returns The parameters.
 * @throws {@link KdfParamsError} as parseKdfParams, and `legacy` for parameters without `v: 3`.
 */
export function parseNewKeyKdfParams(v: unknown): KdfParams {
  const p = parseKdfParams(v);
  if (p.v !== 3) throw new KdfParamsError("legacy", "kdf params are not the current version; new keys need v3");
  return p;
}

const SALT_LABELS = { 2: "praxmail secupass v2", 3: "praxmail secupass v3" } as const;
const IDENTITY_INFO = "praxmail identity v3";
const LOGIN_INFO = "praxmail login v3";

/**
 * The salt scrypt gets. Versions 2 and 3:
 * `SHA-256(label ‖ 0x00 ‖ NFC(lowercase(address)) ‖ 0x00 ‖ salt)` with the label
 * `praxmail secupass v2` or `praxmail secupass v3`, so that no single precomputation fits
 * every patient, even if two salts were the same. Without a version, the stored salt itself
 * (keys set before version 2 keep their derivation).
 *
 * @param params - Checked KDF parameters.
 * @param address - The patient's e-mail address.
 * @returns The scrypt salt.
 * @throws If a version 2 derivation gets an empty address or one with a NUL.
 */
export function secupassSalt(params: KdfParams, address: string): Uint8Array {
  const salt = base64.decode(params.salt);
  if (params.v === undefined) return salt;
  const addr = address.toLowerCase().normalize("NFC");
  if (addr === "" || addr.includes("\0")) throw new Error("secu-pass address is empty or malformed");
  const enc = new TextEncoder();
  const label = enc.encode(SALT_LABELS[params.v]);
  const a = enc.encode(addr);
  const input = new Uint8Array(label.length + 1 + a.length + 1 + salt.length);
  input.set(label, 0);
  input.set(a, label.length + 1);
  input.set(salt, label.length + 1 + a.length + 1);
  return sha256(input);
}

/** What a Secu-Pass-Key gives: the patient identity U and the login credential. */
export interface SecuPassKeys {
  /** U, `AGE-SECRET-KEY-…` (or the post-quantum form): never leaves the browser. */
  readonly identity: string;
  /** 32 bytes, base64url: what the browser sends to log in; the server keeps only a hash of it. */
  readonly credential: string;
}

/**
 * Derives U and the login credential from a Secu-Pass-Key:
 * `seed = scrypt(NFC(key), secupassSalt(params, address), N, r, p, 32)`, then
 * `credential = HKDF-SHA256(seed, info "praxmail login v3", 32)` for every version, and U
 * encoded from `HKDF-SHA256(seed, info "praxmail identity v3", 32)` for version 3, or from the
 * seed itself for keys set before (so their deliveries need no new wrap). Neither output
 * tells anything about the other.
 *
 * @param secuPassKey - The key the patient typed.
 * @param params - The patient's stored KDF parameters.
 * @param address - The patient's address; versions 2 and 3 mix it in.
 * @param onProgress - Called with 0…1 while scrypt runs.
 * @returns U and the credential.
 * @throws If the key is empty; {@link KdfParamsError} if the parameters are weak or invalid.
 */
export async function deriveSecuPass(
  secuPassKey: string,
  params: KdfParams,
  address: string,
  onProgress?: (fraction: number) => void,
): Promise<SecuPassKeys> {
  const p = parseKdfParams(params);
  const key = secuPassKey.normalize("NFC");
  if (key.length === 0) throw new Error("secu-pass-key is empty");
  const seed = await scryptAsync(new TextEncoder().encode(key), secupassSalt(p, address), {
    N: 2 ** p.logN,
    r: p.r,
    p: p.p,
    dkLen: 32,
    maxmem: 2 ** p.logN * p.r * 128 * 2,
    ...(onProgress ? { onProgress } : {}),
  });
  const enc = new TextEncoder();
  const login = hkdf(sha256, seed, undefined, enc.encode(LOGIN_INFO), 32);
  const idSeed = p.v === 3 ? hkdf(sha256, seed, undefined, enc.encode(IDENTITY_INFO), 32) : seed;
  try {
    return { identity: identityFromSeed(idSeed, p.type), credential: base64urlnopad.encode(login) };
  } finally {
    seed.fill(0);
    idSeed.fill(0);
    login.fill(0);
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

// The login with the Secu-Pass-Key (DESIGN.md §3, "One secret"): the browser asks for the
// account's KDF parameters, derives U and the login credential, and sends only the
// credential. The server keeps a hash of it. Accounts from before (a password, a Secu-Pass
// recipient, no credential) prove their key once by opening a challenge encrypted to U, and
// move over.
import { createHash, createHmac, hkdfSync, randomBytes } from "node:crypto";
import { SECUPASS_COST, encryptBytes, generateIdentity, parseKdfParams, recipientOf, type KdfParams } from "../crypto/index.js";
import type { PatientRow } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { CREDENTIAL, credentialHash } from "./keys.js";
import { patientView, type PatientView } from "./patients.js";
import { hashToken, sameSecret } from "./tokens.js";
import { loadPortalKey } from "./trust.js";
import { normaliseEmail } from "./validate.js";

/** How long a login challenge can be answered. */
const CHALLENGE_MINUTES = 5;
/** What the login page gets before it derives: the parameters and a challenge. */
export interface LoginParams {
  readonly kdf: KdfParams;
  /** An age file (base64) holding a nonce; only an account that moves over can open it. */
  readonly challenge: string;
}

/** Decoy keys by home and pinned portal key: the key file is read once per process, not per ask. */
const decoyKeys = new Map<string, Buffer>();

/**
 * The key for decoy parameters, derived from the portal signing key (every node of a shared
 * backend has the same one): HKDF, so the signing key itself is never used for this.
 *
 * @param ctx - The core context.
 * @returns 32 bytes.
 * @throws {@link PraxmailError} `identity` when the home has no portal key matching the pinned one.
 */
function decoyKey(ctx: Context): Buffer {
  const id = `${ctx.home}\0${ctx.config.portalKey ?? ""}`;
  const known = decoyKeys.get(id);
  if (known) return known;
  const key = loadPortalKey(ctx.home, ctx.config.portalKey);
  if (!key) throw new PraxmailError("identity", "the portal key is missing or not the pinned one", "run praxmail init again on this home to create it, or copy it from another node");
  const derived = Buffer.from(hkdfSync("sha256", key.privateKey.export({ format: "der", type: "pkcs8" }), Buffer.alloc(0), "praxmail login decoy v1", 32));
  decoyKeys.set(id, derived);
  return derived;
}

/**
 * Parameters for an address without a usable account: version 3, a salt that an HMAC of the
 * address gives, so that every ask gets the same answer, on every node.
 */
function decoyParams(ctx: Context, address: string): KdfParams {
  const salt = createHmac("sha256", decoyKey(ctx)).update(`salt\0${address}`).digest().subarray(0, 16).toString("base64");
  return { alg: "scrypt", v: 3, ...SECUPASS_COST, salt, type: ctx.config.crypto.recipientType };
}

/** An account that logs in with its Secu-Pass-Key: one that has a key, and is not revoked. */
const canLogIn = (p: PatientRow | undefined): p is PatientRow & { recipient: string; kdf: string } => p !== undefined && p.status !== "revoked" && p.recipient !== null && p.kdf !== null;

/**
 * The KDF parameters and a challenge for the login page. Unknown addresses, revoked
 * accounts and accounts without a key get decoy parameters, the same on every ask; the
 * challenge is always an age file of one size, encrypted to a throwaway recipient unless the
 * account still has to move over (then to its recipient, and remembered for a few minutes).
 *
 * @param ctx - The core context.
 * @param email - The address as typed.
 * @returns The parameters and the challenge.
 */
export async function loginParams(ctx: Context, email: string): Promise<LoginParams> {
  let addr: string;
  try {
    addr = normaliseEmail(email);
  } catch {
    addr = email.trim().toLowerCase();
  }
  const p = await ctx.store.records.patient(addr);
  const kdf = canLogIn(p) ? parseKdfParams(JSON.parse(p.kdf)) : decoyParams(ctx, addr);
  const nonce = randomBytes(32).toString("base64url");
  let to = await recipientOf(generateIdentity(kdf.type));
  if (canLogIn(p) && p.credentialHash === null) {
    to = p.recipient;
    const now = ctx.now();
    await ctx.store.accounts.insertChallenge(
      { hash: hashToken(nonce), email: p.email, expiresAt: new Date(now.getTime() + CHALLENGE_MINUTES * 60_000).toISOString(), usedAt: null },
      now.toISOString(),
    );
  }
  return { kdf, challenge: Buffer.from(await encryptBytes(nonce, [to])).toString("base64") };
}

// Compared against when there is nothing to compare, so every path does the same work.
const DECOY = createHash("sha256").update("praxmail login decoy").digest("hex");

/**
 * Checks a login: the address and the credential derived from the Secu-Pass-Key. An account
 * without a credential yet (from before) that answers its challenge moves over: its
 * credential's hash is stored and its password's hash cleared, in one transaction with an
 * audit row `patient.login-moved`. Every failure looks the same to the caller.
 *
 * @param ctx - The core context.
 * @param email - The address as typed.
 * @param credential - The credential, base64url.
 * @param nonce - The opened challenge, or null.
 * @returns The patient, or null for a wrong address, credential or challenge (or a revoked account).
 */
export async function authenticatePatient(ctx: Context, email: string, credential: string, nonce: string | null): Promise<PatientView | null> {
  let addr: string | null;
  try {
    addr = normaliseEmail(email);
  } catch {
    addr = null;
  }
  const p = addr === null ? undefined : await ctx.store.records.patient(addr);
  let given: string | null;
  try {
    given = credentialHash(credential);
  } catch {
    given = null;
  }
  const matches = sameSecret(given ?? DECOY, p?.credentialHash ?? DECOY);
  if (!canLogIn(p) || given === null) return null;
  if (p.credentialHash !== null) return matches ? patientView(p) : null;
  if (nonce === null || !CREDENTIAL.test(nonce)) return null;
  const now = ctx.now();
  const moved = await ctx.store.transaction(async (tx) => {
    const current = await tx.records.patient(p.email);
    // Revoked, moved or given another key meanwhile: this challenge no longer counts.
    if (!canLogIn(current) || current.credentialHash !== null || current.recipient !== p.recipient) return null;
    if (!(await tx.accounts.useChallenge(hashToken(nonce), p.email, now.toISOString()))) return null;
    const next: PatientRow = { ...current, credentialHash: given, passwordHash: null };
    await tx.records.updatePatient(next);
    await tx.audit({ actor: ctx.actor, action: "patient.login-moved", subject: p.email }, now);
    return next;
  });
  return moved === null ? null : patientView(moved);
}

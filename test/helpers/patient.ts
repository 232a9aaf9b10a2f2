// Registers a patient with a Secu-Pass-Key through src/core, as the portal does (the browser's
// part, deriving U and the login credential, done here in Node), and remembers each key so
// that a test client can log in with it (helpers/portal.ts).
import { openContext } from "../../src/commands/shared.js";
import { approvePatients, registerPatient, setSecuPassRecipient, type Context } from "../../src/core/index.js";
import { deriveSecuPass, hashPassword, newKdfParams, recipientOf, safetyCode, type KdfParams, type SecuPassKeys } from "../../src/crypto/index.js";
import type { PatientRow } from "../../src/store/index.js";

const keys = new Map<string, string>();
const derived = new Map<string, Promise<SecuPassKeys>>();

/**
 * The Secu-Pass derivation at full cost, once per (address, key, parameters) in this test file.
 *
 * @param secuPass - The key.
 * @param kdf - The parameters.
 * @param email - The address (mixed into the salt).
 * @returns U and the login credential.
 */
export function deriveCached(secuPass: string, kdf: KdfParams, email: string): Promise<SecuPassKeys> {
  const id = JSON.stringify([email.trim().toLowerCase(), secuPass, kdf]);
  let d = derived.get(id);
  if (!d) {
    d = deriveSecuPass(secuPass, kdf, email.trim());
    derived.set(id, d);
  }
  return d;
}

/**
 * @param email - A patient registered by {@link registerThroughCore} or {@link newKey} in this test file.
 * @returns The Secu-Pass-Key they were given.
 * @throws If there is none.
 */
export function keyOf(email: string): string {
  const k = keys.get(email.trim().toLowerCase());
  if (k === undefined) throw new Error(`no secu-pass-key known for ${email}`);
  return k;
}

/**
 * A new key as the browser posts it (fresh version 3 parameters), remembered for {@link keyOf}.
 *
 * @param email - The patient's address.
 * @param secuPass - The Secu-Pass-Key.
 * @param type - The identity type.
 * @returns The body's key fields and U.
 */
export async function newKey(email: string, secuPass: string, type: KdfParams["type"] = "x25519"): Promise<{ kdf: KdfParams; recipient: string; credential: string; identity: string }> {
  const kdf = newKdfParams(type);
  const { identity, credential } = await deriveCached(secuPass, kdf, email);
  keys.set(email.trim().toLowerCase(), secuPass);
  return { kdf, recipient: await recipientOf(identity), credential, identity };
}

/**
 * Registers a patient with a Secu-Pass-Key on an open context, as the registration link does.
 *
 * @param ctx - The context.
 * @param email - The patient's address.
 * @param secuPass - The Secu-Pass-Key.
 * @returns The derived patient identity U.
 */
export async function registerOn(ctx: Context, email: string, secuPass: string): Promise<string> {
  const key = await newKey(email, secuPass, ctx.config.crypto.recipientType);
  await registerPatient(ctx, email, key);
  await setSecuPassRecipient(ctx, email, key.recipient);
  return key.identity;
}

/**
 * @param home - An initialised home.
 * @param email - The patient's address.
 * @param secuPass - The Secu-Pass-Key.
 * @returns The derived patient identity U.
 */
export async function registerThroughCore(home: string, email: string, secuPass: string): Promise<string> {
  const ctx = await openContext({ home });
  try {
    return await registerOn(ctx, email, secuPass);
  } finally {
    await ctx.store.close();
  }
}

/**
 * Writes a patient row as an account from before the login with the Secu-Pass-Key left it: a
 * portal password, version 2 parameters, and, with a key, its recipient (status
 * pending-approval); without one, status pending-secupass. No credential hash.
 *
 * @param ctx - An open context.
 * @param email - The patient's address.
 * @param password - The old portal password (scrypt-hashed as then).
 * @param secuPass - The Secu-Pass-Key, or none.
 * @returns U, or null without a key.
 */
export async function legacyPatient(ctx: Context, email: string, password: string, secuPass?: string): Promise<string | null> {
  const kdf: KdfParams = { ...newKdfParams(ctx.config.crypto.recipientType), v: 2 };
  const at = ctx.now().toISOString();
  const identity = secuPass === undefined ? null : (await deriveCached(secuPass, kdf, email)).identity;
  const recipient = identity === null ? null : await recipientOf(identity);
  if (secuPass !== undefined) keys.set(email.toLowerCase(), secuPass);
  const row: PatientRow = {
    email,
    status: recipient === null ? "pending-secupass" : "pending-approval",
    passwordHash: await hashPassword(password),
    credentialHash: null,
    kdf: JSON.stringify(kdf),
    recipient,
    safetyCode: recipient === null ? null : safetyCode(recipient),
    registeredAt: at,
    secupassAt: recipient === null ? null : at,
    approvedAt: null,
    revokedAt: null,
    invitedAt: null,
    approval: null,
    inviteId: null,
    inviteSession: null,
    alarmedAt: null,
    lang: null,
  };
  await ctx.store.transaction((tx) => tx.records.insertPatient(row));
  return identity;
}

/**
 * Approves patients as reception does once the safety codes match: each with the code its
 * account shows.
 *
 * @param ctx - The core context.
 * @param emails - The patients.
 * @param practice - The practice identity.
 */
export async function approveWithTheirCodes(ctx: Context, emails: readonly string[], practice: string): Promise<void> {
  const targets = await Promise.all(emails.map(async (email) => ({ email, safetyCode: (await ctx.store.records.patient(email))?.safetyCode ?? "" })));
  await approvePatients(ctx, targets, practice);
}

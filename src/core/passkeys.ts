// Passkeys for known devices (WebAuthn, issue 16): after an unlock the patient may register
// this device's authenticator; later one tap logs them in. The server keeps each credential's
// public key and counter, and U sealed in the browser under a key from the authenticator's PRF
// output: the server cannot open it, and without the authenticator nobody can. A challenge is
// a row, single use and short-lived, so that any node can check it and none can twice.
import { randomBytes } from "node:crypto";
import type {
  AuthenticationResponseJSON,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
  RegistrationResponseJSON,
} from "@simplewebauthn/server";
import type { PasskeyChallengeRow, PatientRow } from "../store/index.js";
import type { Context } from "./context.js";
import { PraxmailError } from "./errors.js";
import { mustGetActivePatient } from "./patients.js";
import { hashToken, sameSecret } from "./tokens.js";

/**
 * @simplewebauthn/server (and the ASN.1 and X.509 code under it, about 1.8 MB) is loaded
 * the first time a passkey is used, not by every command that opens the core.
 */
const webauthn = (): Promise<typeof import("@simplewebauthn/server")> => import("@simplewebauthn/server");

/** How long a challenge may be answered. */
const CHALLENGE_MS = 2 * 60_000;
/** U sealed by the browser: `v1.` salt (32 bytes), IV (12 bytes) and AES-GCM ciphertext, base64url. */
const SEALED = /^v1\.[\w-]{43}\.[\w-]{16}\.[\w-]{40,1400}$/;

/** A passkey as the devices page shows it. */
export interface PasskeyView {
  /** The credential id (base64url). */
  readonly id: string;
  readonly label: string;
  readonly createdAt: string;
  readonly lastUsed: string | null;
  /** Whether it unlocks as well as logs in (U sealed under its PRF output). */
  readonly prf: boolean;
}

/** What a registration sends besides the authenticator's answer. */
export interface NewPasskey {
  readonly response: RegistrationResponseJSON;
  /** U sealed under the PRF output, or null when the authenticator has no PRF. */
  readonly sealed: string | null;
  /** The device's name as the browser describes it. */
  readonly label: string;
}

/** A passkey login that passed. */
export interface PasskeyLogin {
  readonly email: string;
  readonly credentialId: string;
  readonly sealed: string | null;
}


/**
 * The relying party is the portal: its host name is the RP id, its origin the only one accepted.
 *
 * @param ctx - The core context.
 * @returns RP id and origin.
 */
function relyingParty(ctx: Context): { id: string; origin: string } {
  const url = new URL(ctx.config.portalUrl);
  return { id: url.hostname, origin: url.origin };
}

const refused = (why: string): PraxmailError => new PraxmailError("wrong-state", why, "log in with your address instead");

/** A patient who may add a device: has a key, and is approved or waiting for approval. */
function mayHavePasskeys(p: PatientRow): void {
  if (p.status !== "approved" && p.status !== "pending-approval") throw new PraxmailError("wrong-state", `patient ${p.email} is ${p.status}`);
}

/**
 * The challenge an answer carries, from its client data.
 *
 * @param clientDataJSON - base64url, as the browser sent it.
 * @returns The challenge.
 * @throws {@link PraxmailError} `invalid-input` when it cannot be read.
 */
function challengeOf(clientDataJSON: unknown): string {
  try {
    const c = (JSON.parse(Buffer.from(String(clientDataJSON), "base64url").toString("utf8")) as { challenge?: unknown }).challenge;
    if (typeof c === "string" && /^[\w-]{43}$/.test(c)) return c;
  } catch {
    // Refused below with one answer.
  }
  throw new PraxmailError("invalid-input", "the passkey answer carries no challenge");
}

/**
 * Takes the challenge an answer names, once, and checks what it was handed out for.
 *
 * @param ctx - The core context.
 * @param clientDataJSON - The answer's client data.
 * @param kind - What the challenge must be for.
 * @param binding - The session (register) or visitor token (login) it must belong to.
 * @returns The challenge's row.
 * @throws {@link PraxmailError} `wrong-state` for an unknown, used, expired or foreign challenge.
 */
async function takeChallenge(ctx: Context, clientDataJSON: unknown, kind: PasskeyChallengeRow["kind"], binding: string): Promise<PasskeyChallengeRow> {
  const row = await ctx.store.passkeys.takeChallenge(challengeOf(clientDataJSON), ctx.now().toISOString());
  if (row?.kind !== kind || !sameSecret(row.binding, hashToken(binding))) throw refused("the passkey challenge is unknown, used, expired or not this visitor's");
  return row;
}

async function newChallenge(ctx: Context, row: Omit<PasskeyChallengeRow, "binding" | "expiresAt">, binding: string): Promise<void> {
  const now = ctx.now();
  await ctx.store.passkeys.insertChallenge({ ...row, binding: hashToken(binding), expiresAt: new Date(now.getTime() + CHALLENGE_MS).toISOString() }, now.toISOString());
}

/**
 * The options to create a passkey for a logged-in patient on this device: a discoverable
 * credential with user verification, never one the patient has already (excludeCredentials).
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @param session - SHA-256 of the session's id: only this session may answer.
 * @returns The options for the browser.
 * @throws {@link PraxmailError} `wrong-state` unless the patient is approved or waiting for approval.
 */
export async function passkeyRegistrationOptions(ctx: Context, email: string, session: string): Promise<PublicKeyCredentialCreationOptionsJSON> {
  const p = await mustGetActivePatient(ctx.store, email);
  mayHavePasskeys(p);
  const existing = await ctx.store.passkeys.passkeysOf(p.email);
  // One random handle per patient: what the authenticator keeps about them is not the address.
  const userHandle = existing[0]?.userHandle ?? randomBytes(32).toString("base64url");
  const options = await (await webauthn()).generateRegistrationOptions({
    rpName: ctx.config.practiceName,
    rpID: relyingParty(ctx).id,
    userName: p.email,
    userID: Buffer.from(userHandle, "base64url"),
    attestationType: "none",
    excludeCredentials: existing.map((k) => ({ id: k.credentialId, transports: JSON.parse(k.transports) as string[] })),
    authenticatorSelection: { residentKey: "required", userVerification: "required" },
    timeout: CHALLENGE_MS,
  });
  await newChallenge(ctx, { challenge: options.challenge, kind: "register", email: p.email, userHandle }, session);
  return options;
}

/**
 * Stores a new passkey after checking the authenticator's answer.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @param session - SHA-256 of the session's id.
 * @param input - The answer, U sealed (or null) and the device's label.
 * @returns The new passkey.
 * @throws {@link PraxmailError} `wrong-state` for a used, expired or foreign challenge or a
 *   patient who may not add one, `invalid-input` for an answer that does not verify.
 */
export async function registerPasskey(ctx: Context, email: string, session: string, input: NewPasskey): Promise<PasskeyView> {
  if (input.sealed !== null && !SEALED.test(input.sealed)) throw new PraxmailError("invalid-input", "the sealed identity is malformed");
  const challenge = await takeChallenge(ctx, input.response.response.clientDataJSON, "register", session);
  if (challenge.email !== email || challenge.userHandle === null) throw refused("the passkey challenge is another patient's");
  const rp = relyingParty(ctx);
  let verified;
  try {
    verified = await (await webauthn()).verifyRegistrationResponse({ response: input.response, expectedChallenge: challenge.challenge, expectedOrigin: rp.origin, expectedRPID: rp.id, requireUserVerification: true });
  } catch {
    throw new PraxmailError("invalid-input", "the passkey answer does not verify");
  }
  if (!verified.verified) throw new PraxmailError("invalid-input", "the passkey answer does not verify");
  const { credential } = verified.registrationInfo;
  const now = ctx.now().toISOString();
  const label = input.label.slice(0, 80);
  const userHandle = challenge.userHandle;
  await ctx.store.transaction(async (tx) => {
    mayHavePasskeys(await mustGetActivePatient(tx, email));
    if (await tx.passkeys.passkey(credential.id)) throw new PraxmailError("wrong-state", "this passkey is registered already");
    await tx.passkeys.insertPasskey({
      credentialId: credential.id,
      email,
      userHandle,
      publicKey: credential.publicKey,
      counter: credential.counter,
      transports: JSON.stringify(credential.transports ?? []),
      label,
      createdAt: now,
      lastUsed: null,
      sealed: input.sealed,
    });
    await tx.audit({ actor: ctx.actor, action: "patient.passkey-add", subject: email, details: { label, prf: input.sealed !== null } }, ctx.now());
  });
  return { id: credential.id, label, createdAt: now, lastUsed: null, prf: input.sealed !== null };
}

/**
 * The options for a passkey login: no address, no credential list (the authenticator offers
 * the patient's discoverable credential), user verification required.
 *
 * @param ctx - The core context.
 * @param visitor - The visitor's CSRF token: only this visitor may answer.
 * @returns The options for the browser.
 */
export async function passkeyLoginOptions(ctx: Context, visitor: string): Promise<PublicKeyCredentialRequestOptionsJSON> {
  const options = await (await webauthn()).generateAuthenticationOptions({ rpID: relyingParty(ctx).id, userVerification: "required", timeout: CHALLENGE_MS });
  await newChallenge(ctx, { challenge: options.challenge, kind: "login", email: null, userHandle: null }, visitor);
  return options;
}

/**
 * Checks a passkey login: a challenge of this visitor, used once; a known credential of a
 * patient who is not revoked; the signature over this origin with the user verified; and a
 * counter that moved on (a cloned authenticator's does not).
 *
 * With `sessionOf`, it is no login but an unlock within that patient's live session: a
 * passkey of anyone else is refused before its counter moves.
 *
 * @param ctx - The core context.
 * @param visitor - The visitor's CSRF token.
 * @param response - The authenticator's answer.
 * @param sessionOf - The logged-in patient, for an unlock; absent for a login.
 * @returns Whom it logs in (or unlocks for), and their sealed U.
 * @throws {@link PraxmailError} `wrong-state` or `invalid-input`: one answer for the visitor.
 */
export async function authenticatePasskey(ctx: Context, visitor: string, response: AuthenticationResponseJSON, sessionOf?: string): Promise<PasskeyLogin> {
  const challenge = await takeChallenge(ctx, response.response.clientDataJSON, "login", visitor);
  const key = await ctx.store.passkeys.passkey(response.id);
  if (!key) throw refused("no such passkey");
  if (sessionOf !== undefined && key.email !== sessionOf) throw refused("the passkey is another patient's");
  if (response.response.userHandle !== undefined && !sameSecret(response.response.userHandle, key.userHandle)) throw refused("the passkey names another user");
  const patient = await ctx.store.records.patient(key.email);
  if (!patient || patient.status === "revoked") throw refused("the passkey's patient may not log in");
  const rp = relyingParty(ctx);
  let verified;
  try {
    verified = await (await webauthn()).verifyAuthenticationResponse({
      response,
      expectedChallenge: challenge.challenge,
      expectedOrigin: rp.origin,
      expectedRPID: rp.id,
      credential: { id: key.credentialId, publicKey: new Uint8Array(key.publicKey), counter: key.counter, transports: JSON.parse(key.transports) as string[] },
      requireUserVerification: true,
    });
  } catch {
    throw new PraxmailError("invalid-input", "the passkey answer does not verify");
  }
  if (!verified.verified) throw new PraxmailError("invalid-input", "the passkey answer does not verify");
  const now = ctx.now();
  await ctx.store.transaction(async (tx) => {
    await mustGetActivePatient(tx, key.email);
    // Moved from the value read above, or another login with this counter came first.
    if (!(await tx.passkeys.usePasskey(key.credentialId, key.counter, verified.authenticationInfo.newCounter, now.toISOString()))) throw refused("the passkey was used or removed meanwhile");
    await tx.audit({ actor: ctx.actor, action: sessionOf === undefined ? "patient.passkey-login" : "patient.passkey-unlock", subject: key.email, details: { label: key.label } }, now);
  });
  return { email: key.email, credentialId: key.credentialId, sealed: key.sealed };
}

/**
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @returns The patient's passkeys, oldest first.
 */
export async function listPasskeys(ctx: Context, email: string): Promise<PasskeyView[]> {
  return (await ctx.store.passkeys.passkeysOf(email)).map((k) => ({ id: k.credentialId, label: k.label, createdAt: k.createdAt, lastUsed: k.lastUsed, prf: k.sealed !== null }));
}

/**
 * Removes one of the patient's passkeys: it logs nobody in afterwards.
 *
 * @param ctx - The core context.
 * @param email - The logged-in patient.
 * @param id - The credential id.
 * @returns The label of the removed passkey.
 * @throws {@link PraxmailError} `wrong-state` when the patient has no such passkey.
 */
export async function removePasskey(ctx: Context, email: string, id: string): Promise<string> {
  const now = ctx.now();
  return ctx.store.transaction(async (tx) => {
    const key = await tx.passkeys.passkey(id);
    if (key?.email !== email || !(await tx.passkeys.deletePasskey(email, id))) throw new PraxmailError("wrong-state", "no such passkey of this patient");
    await tx.audit({ actor: ctx.actor, action: "patient.passkey-remove", subject: email, details: { label: key.label } }, now);
    return key.label;
  });
}

// Registers a patient and sets the Secu-Pass recipient through src/core, as the portal does.
import { openContext } from "../../src/commands/shared.js";
import { registerPatient, setSecuPassRecipient } from "../../src/core/index.js";
import { deriveSecuPass, recipientOf } from "../../src/crypto/index.js";

/**
 * @param home - An initialised home.
 * @param email - The patient's address.
 * @param secuPass - The Secu-Pass-Key; omit to stop after registration.
 * @param password - The portal password.
 * @returns The derived patient identity U, or null without a Secu-Pass-Key.
 */
export async function registerThroughCore(
  home: string,
  email: string,
  secuPass?: string,
  password = "ein gutes Passwort 2026",
): Promise<string | null> {
  const ctx = await openContext({ home });
  try {
    const { kdf } = await registerPatient(ctx, email, password);
    if (secuPass === undefined) return null;
    const identity = (await deriveSecuPass(secuPass, kdf, email)).identity;
    await setSecuPassRecipient(ctx, email, await recipientOf(identity));
    return identity;
  } finally {
    await ctx.store.close();
  }
}

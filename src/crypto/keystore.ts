// Where the practice identity P lives: the OS keyring (Secret Service) when one answers,
// otherwise an age identity file under home, optionally passphrase-protected in age's own
// scrypt format so that `age -d` opens it too.
import { open, readFile, rename, rm } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import { randomBytes } from "node:crypto";
import { AsyncEntry } from "@napi-rs/keyring";
import { dearmor, decryptBytes } from "./stream.js";
import { recipientOf } from "./header.js";
import { identityType } from "./identity.js";

const KEYRING_SERVICE = "praxmail";

/** Thrown when an identity file needs a passphrase and none was given. */
export class PassphraseRequiredError extends Error {
  constructor() {
    super("identity file is passphrase-protected");
    this.name = "PassphraseRequiredError";
  }
}

/**
 * Formats an identity as age-keygen does.
 *
 * @param identity - The secret.
 * @param created - Creation time.
 * @returns The text of an identity file.
 */
export async function formatIdentityFile(identity: string, created: Date): Promise<string> {
  return `# created: ${created.toISOString().replace(/\.\d+Z$/, "Z")}\n# public key: ${await recipientOf(identity)}\n${identity}\n`;
}

/**
 * Writes a file atomically with mode 0600: temp name, fsync, rename, fsync of the folder.
 *
 * @param path - The final path.
 * @param data - The content.
 */
export async function writeSecretFile(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
  const dir = await open(dirname(path), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/**
 * Writes an identity file, encrypted with a passphrase when one is given.
 *
 * @param path - Where to write it (mode 0600).
 * @param identity - The secret.
 * @param passphrase - Optional; the file is then an armored age file with an scrypt stanza.
 * @param created - Creation time for the comment line.
 */
export async function writeIdentityFile(path: string, identity: string, passphrase: string | undefined, created: Date): Promise<void> {
  const text = await formatIdentityFile(identity, created);
  if (passphrase === undefined) return writeSecretFile(path, text);
  const { armor, Encrypter } = await import("age-encryption");
  const e = new Encrypter();
  e.setPassphrase(passphrase);
  return writeSecretFile(path, armor.encode(await e.encrypt(text)));
}

/**
 * Tells whether an identity file's bytes are an age-encrypted (passphrase-protected) file.
 *
 * @param data - The file content.
 * @returns True for binary or armored age files.
 */
export function isEncryptedIdentityFile(data: Uint8Array): boolean {
  const head = new TextDecoder().decode(data.subarray(0, 40)).trimStart();
  return head.startsWith("age-encryption.org/v1") || head.startsWith("-----BEGIN AGE ENCRYPTED FILE-----");
}

/**
 * Reads the first native identity from an identity file.
 *
 * @param path - The file.
 * @param getPassphrase - Asked only when the file is encrypted.
 * @returns The identity string.
 * @throws {@link PassphraseRequiredError} if encrypted and no passphrase is available, or
 *   `Error` if the passphrase is wrong or no identity is in the file.
 */
export async function readIdentityFile(
  path: string,
  getPassphrase: () => Promise<string | undefined>,
): Promise<string> {
  let data: Uint8Array = await readFile(path);
  if (isEncryptedIdentityFile(data)) {
    const passphrase = await getPassphrase();
    if (passphrase === undefined) throw new PassphraseRequiredError();
    const text = new TextDecoder().decode(data).trimStart();
    const binary = text.startsWith("-----BEGIN") ? await dearmor(text) : data;
    try {
      data = await decryptBytes(binary, [], [passphrase]);
    } catch (e) {
      throw new Error("wrong passphrase for the identity file", { cause: e });
    }
  }
  return parseIdentityText(new TextDecoder().decode(data));
}

/**
 * Finds the identity line in identity-file text (comments and blank lines are skipped).
 *
 * @param text - The file text.
 * @returns The identity string.
 * @throws If there is no native age identity.
 */
export function parseIdentityText(text: string): string {
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (identityType(line) !== null) return line;
    throw new Error("identity file holds no native age identity");
  }
  throw new Error("identity file holds no native age identity");
}

function keyringEntry(account: string): AsyncEntry {
  // Pinned to the Secret Service on Linux: the kernel keyring fallback is lost at reboot.
  return new AsyncEntry(KEYRING_SERVICE, account, { linux: { store: "secret-service" } });
}

/**
 * Stores an identity in the OS keyring and reads it back.
 *
 * @param account - The keyring account name.
 * @param identity - The secret.
 * @returns Null if the keyring holds it now; otherwise why not, with the keyring's error as
 *   its cause (it never quotes the secret).
 */
export async function saveToKeyring(account: string, identity: string): Promise<Error | null> {
  try {
    const entry = keyringEntry(account);
    await entry.setPassword(identity);
    return (await entry.getPassword()) === identity ? null : new Error("the OS keyring gave back another value");
  } catch (e) {
    return new Error(`the OS keyring did not answer: ${(e as Error).message.split("\n")[0] ?? ""}`, { cause: e });
  }
}

/**
 * Loads an identity from the OS keyring.
 *
 * @param account - The keyring account name.
 * @returns The identity.
 * @throws If the keyring does not answer or holds no identity under that name.
 */
export async function loadFromKeyring(account: string): Promise<string> {
  let value: string | null;
  try {
    value = await keyringEntry(account).getPassword();
  } catch (e) {
    throw new Error(`the OS keyring did not answer: ${(e as Error).message.split("\n")[0] ?? ""}`, { cause: e });
  }
  if (value === null || identityType(value) === null) throw new Error("the OS keyring holds no practice identity");
  return value;
}

import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";

// 32 MiB per hash: enough to slow offline guessing, cheap enough for a login under load.
const COST = { N: 2 ** 15, r: 8, p: 1 };

function scryptAsync(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize("NFC"), salt, 32, { ...opts, maxmem: 256 * (opts.N ?? 0) * (opts.r ?? 0) }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

/**
 * Hashes a portal password with scrypt. The password never derives a key.
 *
 * @param password - The password as typed.
 * @returns `scrypt$logN$r$p$salt$hash`, base64 parts.
 */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, COST);
  return ["scrypt", Math.log2(COST.N), COST.r, COST.p, salt.toString("base64"), key.toString("base64")].join("$");
}

/**
 * Checks a password against a stored hash in constant time.
 *
 * @param password - The password as typed.
 * @param stored - A value from {@link hashPassword}.
 * @returns True if it matches.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [alg, logN, r, p, salt, hash] = stored.split("$");
  if (alg !== "scrypt" || !logN || !r || !p || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64");
  const key = await scryptAsync(password, Buffer.from(salt, "base64"), { N: 2 ** Number(logN), r: Number(r), p: Number(p) });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

import { chmod, mkdir, open, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import envPaths from "env-paths";
import { PraxmailError } from "./errors.js";

/**
 * Picks the home folder: the flag, then PRAXMAIL_HOME, then the user's data folder.
 *
 * @param flag - The value of `--home`, if given.
 * @param env - The environment.
 * @returns An absolute path.
 */
export function resolveHome(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const chosen = flag ?? env.PRAXMAIL_HOME;
  return resolve(chosen !== undefined && chosen !== "" ? chosen : envPaths("praxmail", { suffix: "" }).data);
}

/**
 * Makes sure home exists, is private (no permission for group or others, whatever the
 * umask), and can be written, by creating and deleting a probe file.
 *
 * @param home - The folder.
 * @throws {@link PraxmailError} `home-not-writable` naming the system error.
 */
export async function ensureWritableHome(home: string): Promise<void> {
  const probe = join(home, `.probe-${randomBytes(6).toString("hex")}`);
  try {
    await mkdir(home, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw notWritable(home, e);
  }
  // A home that exists already (made by hand, by an installer, or under umask 0022) is
  // tightened to 0700 here: group and other bits go, the owner's stay (a read-only home
  // stays read-only).
  const st = await stat(home);
  if ((st.mode & 0o077) !== 0) {
    try {
      await chmod(home, st.mode & 0o700);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? "unknown error";
      throw new PraxmailError("home-not-writable", `cannot make home ${home} private (chmod 700: ${code})`, "run praxmail as the owner of home, or chmod 700 it");
    }
  }
  try {
    const fh = await open(probe, "wx", 0o600);
    await fh.close();
    await rm(probe);
  } catch (e) {
    throw notWritable(home, e);
  }
}

function notWritable(home: string, e: unknown): PraxmailError {
  const code = (e as NodeJS.ErrnoException).code ?? "unknown error";
  return new PraxmailError("home-not-writable", `home ${home} is not writable (${code})`, "check its owner and permissions, or pass --home DIR");
}

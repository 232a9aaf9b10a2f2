// A real Secret Service for tests: gnome-keyring, unlocked, on a private D-Bus session.
import { spawnSync } from "node:child_process";

/**
 * Runs a shell command in a private D-Bus session with gnome-keyring unlocked; the keyring
 * persists in userHome, so a later session sees what an earlier one stored.
 *
 * @param userHome - HOME for the session (the keyring lives under it).
 * @param command - A sh command line.
 * @returns Exit status and output.
 */
export function inKeyringSession(userHome: string, command: string): { status: number | null; stdout: string; stderr: string } {
  const script = `set -e; mkdir -p "$HOME"; printf 'keyring-test' | gnome-keyring-daemon --unlock --components=secrets >/dev/null; ${command}`;
  return spawnSync("dbus-run-session", ["--", "sh", "-c", script], {
    env: { PATH: process.env.PATH, HOME: userHome, NO_COLOR: "1" },
    encoding: "utf8",
    timeout: 60_000,
  });
}

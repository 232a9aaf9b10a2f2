// Drives the real binary on a real terminal (tmux), for the wizard, prompts and progress.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { BIN } from "./cli.js";

/** A program running in a private tmux server. */
export class Terminal {
  private readonly socket = `praxmail-test-${randomBytes(4).toString("hex")}`;

  /**
   * Starts `praxmail ...args` on an 120×40 terminal.
   *
   * @param args - Shell-quoted arguments.
   * @param env - Extra environment.
   */
  constructor(args: string, env: Record<string, string> = {}) {
    const vars = Object.entries({ NO_COLOR: "1", ...env }).map(([k, v]) => `${k}='${v}'`).join(" ");
    const cmd = `env ${vars} '${process.execPath}' '${BIN}' ${args}; echo "[exit $?]"; sleep 600`;
    this.tmux("new-session", "-d", "-x", "120", "-y", "40", "-s", "t", cmd);
  }

  private tmux(...args: string[]): string {
    return execFileSync("tmux", ["-L", this.socket, ...args], { encoding: "utf8" });
  }

  /** @returns What the terminal shows now. */
  screen(): string {
    return this.tmux("capture-pane", "-p", "-t", "t");
  }

  /**
   * Waits until the screen shows text.
   *
   * @param text - A substring or pattern.
   * @param timeoutMs - How long to wait.
   * @returns The screen.
   * @throws With the last screen if it never appears.
   */
  async waitFor(text: string | RegExp, timeoutMs = 30_000): Promise<string> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = this.screen();
      if (typeof text === "string" ? s.includes(text) : text.test(s)) return s;
      if (Date.now() > until) throw new Error(`timed out waiting for ${String(text)}; screen:\n${s}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Types keys (tmux key names such as `Enter`, `Space`, `Down`, or literal text).
   *
   * @param keys - The keys.
   */
  keys(...keys: string[]): void {
    this.tmux("send-keys", "-t", "t", ...keys);
  }

  /**
   * Waits for the program to exit.
   *
   * @returns Its exit code and the final screen.
   */
  async exit(): Promise<{ code: number; screen: string }> {
    const s = await this.waitFor(/\[exit \d+\]/);
    return { code: Number(/\[exit (\d+)\]/.exec(s)?.[1]), screen: s };
  }

  /** Stops the tmux server. */
  close(): void {
    try {
      this.tmux("kill-server");
    } catch {
      // already gone
    }
  }
}

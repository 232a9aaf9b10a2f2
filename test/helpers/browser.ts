// Real Chromium (Debian's /usr/bin/chromium) driven by playwright-core.
import { chromium, type Browser } from "playwright-core";
import { needTool } from "./tools.js";

/** Where Debian installs Chromium. */
export const CHROMIUM = "/usr/bin/chromium";

/**
 * @returns Whether the browser tests run (Chromium installed), failing when required.
 */
export function needChromium(): boolean {
  return needTool(CHROMIUM);
}

/**
 * Starts a headless Chromium with the flags this machine needs (no sandbox as root, no
 * background network: the machine has no internet).
 *
 * @returns The browser.
 */
export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
}

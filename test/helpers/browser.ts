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
 * With PRAXMAIL_TEST_SLOW_PAGES=<ms>, every portal page that the page fetches itself
 * (client/nav.ts: links, GET forms, back/forward) arrives that much later. A test that acts
 * on the next page before it is shown then fails every time instead of now and then.
 *
 * @returns The browser.
 */
export async function launch(): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
  const slow = Number(process.env["PRAXMAIL_TEST_SLOW_PAGES"] ?? 0);
  if (slow > 0) {
    const newContext = browser.newContext.bind(browser);
    browser.newContext = async (options) => {
      const context = await newContext(options);
      await context.route("**/*", async (route) => {
        const req = route.request();
        if (req.resourceType() === "fetch" && req.method() === "GET" && (req.headers()["accept"] ?? "").startsWith("text/html")) await new Promise((ok) => setTimeout(ok, slow));
        await route.fallback();
      });
      return context;
    };
  }
  return browser;
}

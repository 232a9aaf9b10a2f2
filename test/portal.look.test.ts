// The practice's look (issue 16, item 8): a logo and an accent colour from the config. init
// checks both before it writes anything (a PNG or SVG within 200 KiB, #rrggbb with a WCAG 2.1
// contrast of at least 4.5:1), doctor checks them again, and the portal shows them with its
// CSP as strict as before: the logo and the colour are files of its own origin, no inline style.
import { execFileSync } from "node:child_process";
import { readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LANGS, type Lang } from "../src/i18n/index.js";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, praxmail, tempDir, type Run } from "./helpers/cli.js";
import { keyOf, registerThroughCore } from "./helpers/patient.js";
import { Client, usePortal } from "./helpers/portal.js";

const PRACTICE = "Praxis Dr. Weber";
/** A real 1×1 PNG. */
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==", "base64");
/** A wide logo, as many practices have: 5:1. */
const SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="600" height="120" viewBox="0 0 600 120"><rect width="600" height="120" fill="#0a6e5a"/><text x="10" y="80" font-size="60" fill="#fff">Praxis Weber</text></svg>\n';
const ACCENT = "#0a6e5a";

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
  await writeFile(join(dir, "logo.png"), PNG);
  await writeFile(join(dir, "logo.svg"), SVG);
});
afterAll(async () => {
  await cleanup(dir);
});

const init = (home: string, extra: string[]): Promise<Run> =>
  praxmail(["init", "--home", home, "--yes", "--no-keyring", "--recipient-type", "x25519", "--practice-name", PRACTICE, "--practice-email", "praxis@praxis-weber.example", ...extra]);
const configOf = async (home: string): Promise<{ portal: Record<string, unknown> }> => JSON.parse(await readFile(join(home, "config.json"), "utf8")) as { portal: Record<string, unknown> };
let n = 0;
const freshHome = (): string => join(dir, `home-${n++}`);

describe("init --logo --accent", () => {
  it("copies a PNG logo into the home (mode 0600) and writes both into config.json", async () => {
    const home = freshHome();
    const r = await init(home, ["--logo", join(dir, "logo.png"), "--accent", "#0A6E5A"]);
    expect(r.stderr).toContain("praxmail: initialised");
    expect(r.code).toBe(0);
    expect((await configOf(home)).portal).toMatchObject({ logo: "logo.png", accent: ACCENT });
    expect(await readFile(join(home, "logo.png"))).toEqual(PNG);
    expect((await stat(join(home, "logo.png"))).mode & 0o777).toBe(0o600);
    // A re-run with an SVG replaces the PNG: the home keeps only the configured logo.
    const again = await init(home, ["--logo", join(dir, "logo.svg")]);
    expect(again.code).toBe(0);
    expect((await configOf(home)).portal).toMatchObject({ logo: "logo.svg", accent: ACCENT });
    expect(await readFile(join(home, "logo.svg"), "utf8")).toBe(SVG);
    expect(await readdir(home)).not.toContain("logo.png");
  });

  it.each([
    ["red;}body{display:none", 'the accent colour must be #rrggbb, not "red;}body{display:none"'],
    ["#0a6e5", 'the accent colour must be #rrggbb, not "#0a6e5"'],
    ["#0a6e5a;", 'the accent colour must be #rrggbb, not "#0a6e5a;"'],
    ["#77aaff", "the accent colour #77aaff has a contrast of 2.15:1 against a card's background; WCAG 2.1 AA needs 4.5:1"],
    ["#ffffff", "the accent colour #ffffff has a contrast of 1.00:1 against white button text; WCAG 2.1 AA needs 4.5:1"],
  ])("refuses the accent %j with a precise error and writes nothing", async (accent, message) => {
    const home = freshHome();
    const r = await init(home, ["--accent", accent]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`praxmail: error: ${message}`);
    expect(await readdir(home).catch(() => [])).toEqual([]);
  });

  it("names a darker shade that passes, and init takes it", async () => {
    const home = freshHome();
    const r = await init(home, ["--accent", "#2e8b57"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("praxmail: error: the accent colour #2e8b57 has a contrast of 3.91:1 against a card's background; WCAG 2.1 AA needs 4.5:1");
    const shade = /use a darker shade, e.g\. --accent '(#[0-9a-f]{6})' \((\d+\.\d\d):1\)/.exec(r.stderr);
    expect(shade, r.stderr).not.toBeNull();
    expect(Number(shade![2])).toBeGreaterThanOrEqual(4.5);
    expect((await init(home, ["--accent", shade![1]!])).code).toBe(0);
    expect((await configOf(home)).portal.accent).toBe(shade![1]);
  });

  it("refuses a logo that is missing, too large or neither PNG nor SVG, and leaves a configured home as it was", async () => {
    const home = freshHome();
    expect((await init(home, ["--logo", join(dir, "logo.png"), "--accent", ACCENT])).code).toBe(0);
    const before = await readFile(join(home, "config.json"), "utf8");
    const big = join(dir, "big.png");
    await writeFile(big, Buffer.concat([PNG, Buffer.alloc(200 * 1024)]));
    const text = join(dir, "logo.html");
    await writeFile(text, "<html><script>alert(1)</script></html>");
    const fifo = join(dir, "logo.fifo");
    execFileSync("mkfifo", [fifo]);
    for (const [file, why] of [
      [join(dir, "nowhere.png"), `the logo ${join(dir, "nowhere.png")} cannot be read (ENOENT)`],
      [big, `the logo ${big} has ${PNG.length + 200 * 1024} bytes, more than 204800`],
      [text, `the logo ${text} is neither a PNG nor an SVG`],
      [dir, `the logo ${dir} is not a file`],
      [fifo, `the logo ${fifo} is not a file`],
    ] as const) {
      const r = await init(home, ["--logo", file, "--accent", "#123456"]);
      expect(r.code, file).toBe(1);
      expect(r.stderr).toContain(`praxmail: error: ${why}`);
      expect(r.stderr).toContain("praxmail: hint: give a PNG or SVG file of at most 200 KiB");
      expect(await readFile(join(home, "config.json"), "utf8")).toBe(before);
      expect((await readdir(home)).filter((f) => f.startsWith("logo"))).toEqual(["logo.png"]);
    }
  });

  it("--help and --join name the two options", async () => {
    const help = await praxmail(["init", "--help"]);
    const flat = help.stdout.replace(/\s+/g, " ");
    expect(flat).toContain("--logo <file> the practice's logo in the portal's header: a PNG or SVG of at most 200 KiB, copied into home");
    expect(flat).toContain("--accent <colour> the portal's accent colour #rrggbb (buttons, links, header); needs a WCAG contrast of at least 4.5:1 on white and on the portal's cards");
    const join_ = await praxmail(["init", "--home", freshHome(), "--join", dir, "--accent", ACCENT]);
    expect(join_.code).toBe(2);
    expect(join_.stderr).toContain("--join takes every setting from the other node's home");
  });
});

interface DoctorCheck {
  name: string;
  status: string;
  reason: string;
  hint?: string;
}
async function doctorLook(home: string): Promise<{ code: number; checks: DoctorCheck[] }> {
  const r = await praxmail(["doctor", "--home", home, "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--timeout", "1", "--json"]);
  return { code: r.code, checks: (JSON.parse(r.stdout) as { checks: DoctorCheck[] }).checks };
}
const look = (checks: DoctorCheck[]): DoctorCheck | undefined => checks.find((c) => c.name === "look");

describe("doctor", () => {
  it("says ok for a logo within limits and an accent with enough contrast", async () => {
    const home = freshHome();
    expect((await init(home, ["--logo", join(dir, "logo.png"), "--accent", ACCENT])).code).toBe(0);
    expect(look((await doctorLook(home)).checks)).toEqual({ name: "look", status: "ok", reason: `logo logo.png (${PNG.length} bytes), accent ${ACCENT} (contrast 5.71:1)` });
  });

  it("fails on an accent edited into config.json below 4.5:1, and on a missing logo", async () => {
    const home = freshHome();
    expect((await init(home, ["--logo", join(dir, "logo.png"), "--accent", ACCENT])).code).toBe(0);
    const config = await configOf(home);
    await writeFile(join(home, "config.json"), JSON.stringify({ ...config, portal: { ...config.portal, accent: "#77aaff" } }), { mode: 0o600 });
    const low = await doctorLook(home);
    expect(low.code).toBe(1);
    expect(look(low.checks)).toMatchObject({ status: "fail", reason: "the accent colour #77aaff has a contrast of 2.15:1 against a card's background; WCAG 2.1 AA needs 4.5:1" });
    expect(look(low.checks)?.hint).toMatch(/^run praxmail init --accent '#[0-9a-f]{6}' \(or a darker shade\)$/);
    await writeFile(join(home, "config.json"), JSON.stringify(config), { mode: 0o600 });
    await rm(join(home, "logo.png"));
    const gone = await doctorLook(home);
    expect(gone.code).toBe(1);
    expect(look(gone.checks)).toMatchObject({ status: "fail", reason: `the logo ${join(home, "logo.png")} cannot be read (ENOENT): the portal shows the practice's name instead` });
  });

  it("refuses a config.json whose logo points outside the home, or whose accent is not a colour", async () => {
    const home = freshHome();
    expect((await init(home, [])).code).toBe(0);
    const config = await configOf(home);
    for (const [portal, why] of [
      [{ logo: "../../etc/passwd" }, "config.json: portal.logo must be logo.png or logo.svg (a file in the home, as init --logo puts it there), or null"],
      [{ logo: "/etc/passwd" }, "config.json: portal.logo must be logo.png or logo.svg (a file in the home, as init --logo puts it there), or null"],
      [{ accent: "red;}body{display:none" }, "config.json: portal.accent must be a colour #rrggbb, or null"],
    ] as const) {
      await writeFile(join(home, "config.json"), JSON.stringify({ ...config, portal: { ...config.portal, ...portal } }), { mode: 0o600 });
      const d = await doctorLook(home);
      expect(d.code).toBe(1);
      expect(d.checks.find((c) => c.name === "config")).toMatchObject({ status: "fail", reason: why });
      expect(look(d.checks)?.status).toBe("skip");
    }
  });
});

describe("the portal with a logo and an accent", () => {
  const portal = usePortal({
    beforeOpen: async (home) => {
      await writeFile(join(home, "..", "logo.svg"), SVG);
      const r = await praxmail(["init", "--home", home, "--yes", "--no-keyring", "--logo", join(home, "..", "logo.svg"), "--accent", ACCENT]);
      if (r.code !== 0) throw new Error(r.stderr);
      await registerThroughCore(home, "anna@patient.example", "Annas Secu-Pass-Key");
    },
    listen: true,
  });

  it("shows the logo in the header with the practice's name as its alt text, and loads the accent as a style sheet of its own", async () => {
    for (const path of ["/", "/login", "/help", "/nowhere"]) {
      const res = await new Client(portal.app).get(path);
      expect(res.body).toContain(`<img class="logo" src="/look/logo" alt="${PRACTICE}">`);
      expect(res.body).toContain('<link rel="stylesheet" href="/look/accent.css">');
      // The CSP is unchanged: no inline style, no nonce.
      expect(String(res.headers["content-security-policy"])).toContain("style-src 'self';");
      expect(String(res.headers["content-security-policy"])).not.toContain("unsafe-inline");
      expect(res.body).not.toMatch(/<style|style=/);
    }
    const css = await new Client(portal.app).get("/look/accent.css");
    expect(css.statusCode).toBe(200);
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");
    expect(css.body).toBe(":root { --accent: #0a6e5a; --accent-dark: #085848; }\n");
    expect(css.headers["cache-control"]).toBe("public, max-age=300");
    expect(css.headers["x-content-type-options"]).toBe("nosniff");
    expect(css.headers["set-cookie"]).toBeUndefined();
  });

  it("serves the SVG logo as an image with a sandboxing CSP of its own, cacheable, and no session", async () => {
    const res = await new Client(portal.app).get("/look/logo");
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("image/svg+xml");
    expect(res.body).toBe(SVG);
    expect(res.headers["content-security-policy"]).toBe("default-src 'none'; style-src 'unsafe-inline'; sandbox");
    expect(res.headers["cache-control"]).toBe("public, max-age=300");
    expect(res.headers["x-content-type-options"]).toBe("nosniff");
    expect(res.headers["cross-origin-resource-policy"]).toBe("same-origin");
    expect(res.headers["set-cookie"]).toBeUndefined();
  });

  describe.runIf(needChromium())("in Chromium at 360 px", () => {
    let chromium: Browser;
    beforeAll(async () => {
      chromium = await launch();
    });
    afterAll(async () => {
      await chromium.close();
    });

    it.each(["de", "ar"] as Lang[])("%s: the header with a wide logo stays one line; buttons and the header wear the accent", async (lang) => {
      expect(LANGS).toContain(lang);
      const page = await (await chromium.newContext({ viewport: { width: 360, height: 740 }, locale: lang })).newPage();
      await page.goto(`http://127.0.0.1:${String(portal.port)}/login`);
      await page.locator("#email").fill("anna@patient.example");
      await page.locator("#login-key").fill(keyOf("anna@patient.example"));
      await page.locator("#login-form button[type=submit]").click();
      await page.waitForURL(/\/deliveries$/);
      const box = async (selector: string): Promise<{ top: number; bottom: number; left: number; right: number }> => {
        const b = (await page.locator(selector).first().boundingBox())!;
        return { top: b.y, bottom: b.y + b.height, left: b.x, right: b.x + b.width };
      };
      // The logo loads (img-src 'self'), at its own width: 600 px.
      expect(await page.evaluate('(async () => { const i = document.querySelector("header.top img.logo"); await i.decode(); return i.naturalWidth; })()')).toBe(600);
      const header = await box("header.top");
      expect(header.bottom - header.top).toBeLessThan(2 * 44);
      for (const part of ["header.top img.logo", "header.top select", "header.top form.lang button", "header.top form.inline button"]) {
        const p = await box(part);
        expect(p.top, part).toBeGreaterThanOrEqual(header.top);
        expect(p.bottom, part).toBeLessThanOrEqual(header.bottom);
        expect(p.left, part).toBeGreaterThanOrEqual(0);
        expect(p.right, part).toBeLessThanOrEqual(360);
      }
      const styles = await page.evaluate(
        '({ header: getComputedStyle(document.querySelector("header.top")).backgroundColor, accent: getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() })',
      );
      expect(styles).toEqual({ header: "rgb(8, 88, 72)", accent: ACCENT });
      await page.context().close();
    });
  });
});

describe("the portal when the configured logo is gone", () => {
  const portal = usePortal({
    beforeOpen: async (home) => {
      await writeFile(join(home, "..", "logo.png"), PNG);
      const r = await praxmail(["init", "--home", home, "--yes", "--no-keyring", "--logo", join(home, "..", "logo.png")]);
      if (r.code !== 0) throw new Error(r.stderr);
      await rm(join(home, "logo.png"));
    },
  });

  it("renders every page with the practice's name instead, and /look/logo is a 404", async () => {
    const page = await new Client(portal.app).get("/login");
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain(`<span class="brand-name">${PRACTICE}</span>`);
    expect(page.body).not.toContain("/look/");
    expect((await new Client(portal.app).get("/look/logo")).statusCode).toBe(404);
    expect((await new Client(portal.app).get("/look/accent.css")).statusCode).toBe(404);
  });
});

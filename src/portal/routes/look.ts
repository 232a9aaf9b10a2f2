// The practice's look: its logo (/look/logo) and its accent colour (/look/accent.css), from
// config `portal.logo` and `portal.accent`. Both are files of our own origin, so the CSP
// stays as strict as it is (style-src 'self', img-src 'self'): no inline style, no nonce.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { LOGO_MAX_BYTES, darker, isLogoFile } from "../../core/index.js";
import type { Portal } from "../app.js";

/** What the layout needs to know of the look. */
export interface Look {
  /** Whether the header shows the logo (it was readable when the portal started). */
  readonly logo: boolean;
  /** Whether the pages load /look/accent.css. */
  readonly accent: boolean;
}

/** How much of each channel the hover and header shade keeps. */
const DARK = 0.8;

/**
 * Reads the configured logo once, at start. A logo that is missing, too large or of the wrong
 * kind is logged and left out: the pages render with the practice's name instead.
 *
 * @param portal - Shared portal state.
 * @returns The logo's bytes and type, or null.
 */
async function loadLogo(portal: Portal): Promise<{ bytes: Buffer; type: string } | null> {
  const file = portal.ctx.config.portal.logo;
  if (file === null || !isLogoFile(file)) return null;
  try {
    const bytes = await readFile(join(portal.ctx.home, file));
    if (bytes.length > LOGO_MAX_BYTES) throw new Error(`${bytes.length} bytes, more than ${LOGO_MAX_BYTES}`);
    return { bytes, type: file.endsWith(".svg") ? "image/svg+xml" : "image/png" };
  } catch (e) {
    portal.log.warn({ file, err: (e as NodeJS.ErrnoException).code ?? (e as Error).message }, "logo left out");
    return null;
  }
}

/**
 * Registers /look/logo and /look/accent.css, each only when configured (else they are 404s).
 * They are assets (no session, cacheable); the logo gets a sandboxing CSP of its own, so
 * that an SVG opened directly runs nothing either.
 *
 * @param app - The fastify app.
 * @param portal - Shared portal state.
 * @returns What the layout shows.
 */
export async function lookRoutes(app: FastifyInstance, portal: Portal): Promise<Look> {
  const logo = await loadLogo(portal);
  const accent = portal.ctx.config.portal.accent;
  if (logo) app.get("/look/logo", { config: { asset: true, sandbox: true } }, (_req, reply) => reply.type(logo.type).send(logo.bytes));
  if (accent !== null) {
    // accent is #rrggbb (config.ts checks it): nothing else can reach the style sheet.
    const css = `:root { --accent: ${accent}; --accent-dark: ${darker(accent, DARK)}; }\n`;
    app.get("/look/accent.css", { config: { asset: true } }, (_req, reply) => reply.type("text/css; charset=utf-8").send(css));
  }
  return { logo: logo !== null, accent: accent !== null };
}

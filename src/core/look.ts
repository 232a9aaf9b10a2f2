// The practice's look on the portal: a logo and an accent colour (config `portal.logo` and
// `portal.accent`), each checked before init writes anything, and again by doctor.
import { open, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PraxmailError } from "./errors.js";

/** The largest logo init copies into the home and the portal serves. */
export const LOGO_MAX_BYTES = 200 * 1024;

/** The contrast WCAG 2.1 AA asks of normal text (1.4.3). */
export const MIN_CONTRAST = 4.5;

/**
 * The backgrounds the accent must stand out against: white text on a button, and a link on
 * the page (`--bg`) or in a card (`--panel`) of src/portal/static/style.css.
 */
const BACKGROUNDS = { "white button text": "#ffffff", "the page background": "#ffffff", "a card's background": "#f3f6fa" } as const;

/** The logo's file name in the home: only these two, so that config.json cannot point elsewhere. */
export const LOGO_FILES = { png: "logo.png", svg: "logo.svg" } as const;

/** A logo as the home keeps it. */
export type LogoFile = (typeof LOGO_FILES)[keyof typeof LOGO_FILES];

/**
 * @param name - A value of config `portal.logo`.
 * @returns Whether it is one of the {@link LOGO_FILES}.
 */
export function isLogoFile(name: unknown): name is LogoFile {
  return name === LOGO_FILES.png || name === LOGO_FILES.svg;
}

/**
 * @param value - A value of config `portal.accent` or `init --accent`.
 * @returns Whether it is `#rrggbb`, nothing more.
 */
export function isAccent(value: unknown): value is string {
  return typeof value === "string" && /^#[0-9a-fA-F]{6}$/.test(value);
}

function channels(hex: string): [number, number, number] {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)) as [number, number, number];
}

/** WCAG 2.1 relative luminance of an `#rrggbb` colour. */
function luminance(hex: string): number {
  const [r, g, b] = channels(hex).map((c) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  }) as [number, number, number];
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/**
 * @param a - An `#rrggbb` colour.
 * @param b - Another.
 * @returns The WCAG 2.1 contrast ratio, from 1 to 21.
 */
export function contrastRatio(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x) as [number, number];
  return (hi + 0.05) / (lo + 0.05);
}

/**
 * @param hex - An `#rrggbb` colour.
 * @param factor - How much of each channel stays (0–1).
 * @returns The colour, darker (lowercase `#rrggbb`).
 */
export function darker(hex: string, factor: number): string {
  return `#${channels(hex)
    .map((c) => Math.round(c * factor).toString(16).padStart(2, "0"))
    .join("")}`;
}

/** What {@link accentContrast} found. */
export interface AccentContrast {
  /** The lowest ratio against the {@link BACKGROUNDS}. */
  readonly ratio: number;
  /** Where that lowest ratio is. */
  readonly against: string;
  /** The lightest darker shade (in steps of 5 %) that reaches {@link MIN_CONTRAST}. */
  readonly suggestion: string;
}

/**
 * @param accent - An `#rrggbb` colour.
 * @returns Its lowest contrast against white button text and the page's backgrounds, and a
 *   darker shade that passes.
 */
export function accentContrast(accent: string): AccentContrast {
  const [against, ratio] = Object.entries(BACKGROUNDS)
    .map(([k, bg]) => [k, contrastRatio(accent, bg)] as const)
    .reduce((a, b) => (b[1] < a[1] ? b : a));
  let suggestion = accent.toLowerCase();
  for (let f = 0.95; f > 0 && Object.values(BACKGROUNDS).some((bg) => contrastRatio(suggestion, bg) < MIN_CONTRAST); f -= 0.05) suggestion = darker(accent, f);
  return { ratio, against, suggestion };
}

/**
 * @param ratio - A contrast ratio.
 * @returns It as WCAG writes it, rounded down to two decimals (so 4.499 never reads 4.50).
 */
export function showRatio(ratio: number): string {
  return `${(Math.floor(ratio * 100) / 100).toFixed(2)}:1`;
}

/**
 * Checks an accent colour for init: `#rrggbb` with at least {@link MIN_CONTRAST} against
 * white button text and the page's backgrounds.
 *
 * @param value - The colour as given.
 * @returns It, lowercase.
 * @throws {@link PraxmailError} `invalid-input`, with the ratio and a darker shade that passes.
 */
export function checkAccent(value: string): string {
  if (!/^#[0-9a-fA-F]{6}$/.test(value)) {
    throw new PraxmailError("invalid-input", `the accent colour must be #rrggbb, not ${JSON.stringify(value.slice(0, 40))}`, "give six hex digits, e.g. --accent '#0a6e5a'");
  }
  const c = accentContrast(value);
  if (c.ratio < MIN_CONTRAST) {
    throw new PraxmailError(
      "invalid-input",
      `the accent colour ${value} has a contrast of ${showRatio(c.ratio)} against ${c.against}; WCAG 2.1 AA needs ${MIN_CONTRAST}:1`,
      `use a darker shade, e.g. --accent '${c.suggestion}' (${showRatio(accentContrast(c.suggestion).ratio)})`,
    );
  }
  return value.toLowerCase();
}

/**
 * Reads and checks a logo: a PNG (by its signature) or an SVG (text with an `<svg` element),
 * at most {@link LOGO_MAX_BYTES}. An SVG is not sanitised: the portal shows it only as an
 * `<img>` (which runs no script) and serves it with a sandboxing CSP of its own.
 *
 * @param path - The file.
 * @returns Its bytes and the name the home keeps it under.
 * @throws {@link PraxmailError} `invalid-input`.
 */
export async function readLogo(path: string): Promise<{ bytes: Buffer; file: LogoFile }> {
  const refuse = (why: string): PraxmailError => new PraxmailError("invalid-input", `the logo ${path} ${why}`, `give a PNG or SVG file of at most ${LOGO_MAX_BYTES / 1024} KiB`);
  let bytes: Buffer;
  try {
    // Before open: opening a FIFO would wait for a writer.
    if (!(await stat(path)).isFile()) throw refuse("is not a file");
    const fh = await open(path, "r");
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw refuse("is not a file");
      if (st.size > LOGO_MAX_BYTES) throw refuse(`has ${st.size} bytes, more than ${LOGO_MAX_BYTES}`);
      bytes = await fh.readFile();
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (e instanceof PraxmailError) throw e;
    throw refuse(`cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (bytes.length > LOGO_MAX_BYTES) throw refuse(`has more than ${LOGO_MAX_BYTES} bytes`);
  if (bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return { bytes, file: LOGO_FILES.png };
  const text = bytes.toString("utf8");
  if (!text.includes("\u0000") && !text.includes("\ufffd") && /<svg[\s>]/.test(text)) return { bytes, file: LOGO_FILES.svg };
  throw refuse("is neither a PNG nor an SVG");
}

/**
 * Puts a checked logo into the home (mode 0600, written whole or not at all) and removes the
 * other kind, so that the home holds only the configured one.
 *
 * @param home - The home.
 * @param logo - From {@link readLogo}.
 */
export async function installLogo(home: string, logo: { bytes: Buffer; file: LogoFile }): Promise<void> {
  const tmp = join(home, `${logo.file}.tmp`);
  await writeFile(tmp, logo.bytes, { mode: 0o600 });
  await rename(tmp, join(home, logo.file));
  for (const other of Object.values(LOGO_FILES)) if (other !== logo.file) await rm(join(home, other), { force: true });
}

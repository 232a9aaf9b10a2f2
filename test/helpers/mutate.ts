// The seeded MIME mutator behind test/relay.fuzz.test.ts. Case `i` under seed `s` is a pure
// function of (s, i): it can be rebuilt alone, without generating the cases before it.
// Every fixture's base64 attachments are first replaced by fresh random bytes, so the test
// can look for them in what the relay forwards without false hits; then 1–3 named
// operators damage the message; last, a level tag is put on top, where no operator can
// touch it, so the test knows for certain which messages are tagged.

/** A small deterministic PRNG (sfc32, seeded through splitmix32). */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /**
   * @param seed - Any 32-bit number.
   * @param stream - Picks an independent sequence under the same seed (the case index).
   */
  constructor(seed: number, stream = 0) {
    let x = (seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
    const mix = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    for (let i = 0; i < 12; i++) this.next();
  }

  /** @returns The next 32-bit unsigned number. */
  next(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** @returns An integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.next() / 2 ** 32) * n);
  }

  /** @returns An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** @returns True with probability p. */
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }

  /** @returns One element of a non-empty list. */
  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)] as T;
  }

  /** @returns n random bytes. */
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.next();
      for (let k = 0; k < 4 && i + k < n; k++) out[i + k] = (v >>> (8 * k)) & 0xff;
    }
    return out;
  }

  /** @returns n characters drawn from an alphabet (at most 256 characters long). */
  chars(n: number, alphabet: string): string {
    const b = this.bytes(n);
    for (let i = 0; i < n; i++) b[i] = alphabet.charCodeAt(b[i]! % alphabet.length);
    return b.toString("latin1");
  }
}

/**
 * An attachment body put into a case: what must never reach the patient in clear. The
 * content is random letters and digits rather than random bytes, so that it survives any
 * charset decoding a leak might pass through and can still be found.
 */
export interface Secret {
  /** The decoded content. */
  readonly decoded: Buffer;
  /** Its base64 lines, as they stood in the message before any operator ran. */
  readonly encoded: Buffer;
}

/** One fuzz message. */
export interface FuzzCase {
  readonly seed: number;
  readonly index: number;
  readonly fixture: string;
  /** The operators applied, in order (empty for a control case). */
  readonly operators: readonly string[];
  /** The level put on top (3 or 4), or 0 for a message deliberately left untagged. */
  readonly level: 0 | 3 | 4;
  readonly raw: Buffer;
  readonly secrets: readonly Secret[];
}

/** A fixture as read from disk. */
export interface Fixture {
  readonly name: string;
  readonly raw: Buffer;
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64 = `${ALNUM}+/`;
const PRINTABLE = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

/** Splits a latin1 string into lines that keep their line ends. */
function lines(s: string): string[] {
  return s.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/**
 * Replaces every base64 body in a fixture by random bytes of a random size, re-encoded.
 * A body is base64 when the header block above it says so; it ends at the first line that
 * is not base64 (a blank line or a delimiter).
 */
function seedAttachments(raw: Buffer, prng: Prng): { text: string; secrets: Secret[] } {
  const out: string[] = [];
  const secrets: Secret[] = [];
  let header: string[] = [];
  let inHeader = true;
  let inB64 = false;
  for (const line of lines(raw.toString("latin1"))) {
    if (inB64) {
      if (/^[A-Za-z0-9+/=]+\r?\n?$/.test(line)) continue;
      inB64 = false;
    }
    if (/^--\S/.test(line)) {
      inHeader = true;
      header = [];
      out.push(line);
      continue;
    }
    if (inHeader && /^\r?\n$/.test(line)) {
      inHeader = false;
      out.push(line);
      if (header.some((h) => /^content-transfer-encoding:\s*base64/i.test(h))) {
        const size = prng.chance(0.03) ? prng.range(64 * 1024, 512 * 1024) : prng.range(200, 12 * 1024);
        const decoded = Buffer.from(prng.chars(size, ALNUM), "latin1");
        const encoded = decoded.toString("base64").replace(/.{76}/g, "$&\r\n").replace(/\r\n$/, "");
        out.push(`${encoded}\r\n`);
        secrets.push({ decoded, encoded: Buffer.from(encoded, "latin1") });
        inB64 = true;
      }
      continue;
    }
    if (inHeader) header.push(line);
    out.push(line);
  }
  return { text: out.join(""), secrets };
}

/** Removes every level tag, for the messages that are meant to go untagged. */
function untag(s: string): string {
  return s
    .replace(/^X-Praxmail-Level:[^\n]*\n/gim, "")
    .replace(/^(Subject:[^\n]*?)\s*\[\s*(?:s|sl|stufe)\s*\d+\s*\]/im, "$1")
    .replace(/^(Subject:[^\n]*?)\s*\[\s*sicher\s*\]/im, "$1");
}

// ---- what the operators look for ---------------------------------------------------------

function boundaries(s: string): string[] {
  return [...new Set([...s.matchAll(/boundary\s*=\s*"?([^";\r\n]{1,200})"?/gi)].map((m) => m[1]!.trim()).filter(Boolean))];
}

/** A delimiter line [start, end) of a boundary the message declares. */
interface Delimiter {
  readonly start: number;
  readonly end: number;
  readonly closing: boolean;
}

function delimiters(s: string): Delimiter[] {
  const found: Delimiter[] = [];
  for (const b of boundaries(s)) {
    const esc = b.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    for (const m of s.matchAll(new RegExp(`(^|\\n)--${esc}(--)?[ \\t]*(?:\\r?\\n|$)`, "g"))) {
      found.push({ start: m.index + m[1]!.length, end: m.index + m[0].length, closing: m[2] !== undefined });
    }
  }
  return found.sort((x, y) => x.start - y.start);
}

/** A header block: its lines [start, end), and where the body begins after the blank line. */
interface Block {
  readonly start: number;
  readonly end: number;
  readonly body: number;
}

function blockAt(s: string, from: number): Block {
  const first = /^\r?\n/.exec(s.slice(from, from + 2));
  if (first) return { start: from, end: from, body: from + first[0].length };
  const m = /\r?\n(\r?\n)/.exec(s.slice(from, from + 4 * 1024 * 1024));
  if (!m) return { start: from, end: s.length, body: s.length };
  const end = from + m.index + m[0].length - m[1]!.length;
  return { start: from, end, body: end + m[1]!.length };
}

/** The root's header block and every part's (after a delimiter that is not the closing one). */
function headerBlocks(s: string): Block[] {
  return [blockAt(s, 0), ...delimiters(s).filter((d) => !d.closing).map((d) => blockAt(s, d.end))];
}

/** A part's body: from its blank line to the next delimiter line. */
function bodyOf(s: string, block: Block): [number, number] {
  const next = delimiters(s).find((d) => d.start >= block.body);
  return [block.body, next ? next.start : s.length];
}

function insert(s: string, at: number, text: string): string {
  return s.slice(0, at) + text + s.slice(at);
}

function blockWhere(s: string, prng: Prng, test: (header: string) => boolean): Block | null {
  const found = headerBlocks(s).filter((b) => test(s.slice(b.start, b.end)));
  return found.length ? prng.pick(found) : null;
}

/** The first header line of a name in a block, with its folded continuation lines. */
function findHeader(s: string, block: Block, name: string): [number, number] | null {
  const m = new RegExp(`(^|\\n)${name}[ \\t]*:[^\\n]*(?:\\n[ \\t][^\\n]*)*\\n?`, "i").exec(s.slice(block.start, block.end));
  return m ? [block.start + m.index + m[1]!.length, block.start + m.index + m[0].length] : null;
}

/** Sets a header in a block: replaces the first line of that name (with its folds) or adds one. */
function setHeader(s: string, block: Block, name: string, value: string): string {
  const line = `${name}: ${value}\r\n`;
  const at = findHeader(s, block, name);
  return at ? s.slice(0, at[0]) + line + s.slice(at[1]) : insert(s, block.start, line);
}

// ---- the operators -------------------------------------------------------------------------

type Operator = (s: string, prng: Prng) => string | null;

const isText = (h: string): boolean => !/^content-type:/im.test(h) || /^content-type:\s*text\//im.test(h);

const OPERATORS: Record<string, Operator> = {
  truncate(s, prng) {
    return s.length < 2 ? null : s.slice(0, prng.int(s.length));
  },
  "boundary-delete"(s, prng) {
    const d = delimiters(s);
    if (!d.length) return null;
    const { start, end } = prng.pick(d);
    return s.slice(0, start) + s.slice(end);
  },
  "boundary-duplicate"(s, prng) {
    const d = delimiters(s);
    if (!d.length) return null;
    const { start, end } = prng.pick(d);
    return insert(s, end, s.slice(start, end));
  },
  "boundary-change"(s, prng) {
    const d = delimiters(s);
    if (!d.length) return null;
    const { start, end } = prng.pick(d);
    const line = s.slice(start, end);
    const at = prng.range(2, Math.max(2, line.trimEnd().length - 1));
    const changed = prng.pick([
      () => line.slice(0, at) + prng.chars(1, B64) + line.slice(at + 1),
      () => line.slice(0, at) + line.slice(at + 1),
      () => `${line.trimEnd()}${prng.chars(1, B64)}\r\n`,
      () => `-${line}`,
      () => ` ${line}`,
    ])();
    return s.slice(0, start) + changed + s.slice(end);
  },
  "boundary-param"(s, prng) {
    const ms = [...s.matchAll(/boundary\s*=\s*("?)([^";\r\n]+)\1/gi)];
    if (!ms.length) return null;
    const m = prng.pick(ms);
    const b = m[2]!;
    const value = prng.pick([`"${b}x"`, '""', "", `"${b.slice(1)}"`, `"${b}`, `"${b.toLowerCase()}${b}"`]);
    const rewritten = prng.chance(0.2) ? "" : `boundary=${value}`;
    return s.slice(0, m.index) + rewritten + s.slice(m.index + m[0].length);
  },
  "boundary-unclosed"(s, prng) {
    const d = delimiters(s).filter((x) => x.closing);
    if (!d.length) return null;
    const drop = prng.chance(0.5) ? d : [prng.pick(d)];
    let out = s;
    for (const { start, end } of drop.sort((x, y) => y.start - x.start)) out = out.slice(0, start) + out.slice(end);
    return out;
  },
  "header-many"(s, prng) {
    const blocks = headerBlocks(s);
    const block = prng.chance(0.7) ? blocks[0]! : prng.pick(blocks);
    const n = prng.pick([500, 2000, 3000, 4000, 5000, 8000]);
    let bomb = "";
    for (let i = 0; i < n; i++) bomb += `X-Fuzz-${i}: ${prng.chars(prng.range(1, 30), PRINTABLE.trim())}\r\n`;
    return insert(s, block.start, bomb);
  },
  "header-huge"(s, prng) {
    const block = prng.pick(headerBlocks(s));
    const size = prng.pick([16 * 1024, 200 * 1024, 300 * 1024, 1024 * 1024]);
    return insert(s, block.start, `X-Fuzz-Huge: ${prng.chars(size, PRINTABLE.trim())}\r\n`);
  },
  "header-folded"(s, prng) {
    const block = prng.pick(headerBlocks(s));
    const n = prng.pick([100, 1000, 5000, 20000]);
    let h = "X-Fuzz-Folded: start";
    for (let i = 0; i < n; i++) h += `\r\n${prng.chance(0.5) ? " " : "\t"}fold ${i}`;
    return insert(s, block.start, `${h}\r\n`);
  },
  "nest-deep"(s, prng) {
    // The root's body moves into the innermost of `depth` nested multiparts, with the
    // root's Content-Type and Content-Transfer-Encoding.
    const root = blockAt(s, 0);
    const moved = ["content-type", "content-transfer-encoding"].map((h) => findHeader(s, root, h)).filter((x) => x !== null);
    let top = s.slice(0, root.end);
    for (const [a, e] of [...moved].sort((x, y) => y[0] - x[0])) top = top.slice(0, a) + top.slice(e);
    const inner = `${moved.map(([a, e]) => s.slice(a, e).replace(/\r?\n?$/, "\r\n")).join("")}\r\n`;
    const depth = prng.pick([3, 10, 39, 40, 41, 100, 1000]);
    let open = `Content-Type: multipart/mixed; boundary="n0"\r\n\r\n`;
    let close = "\r\n--n0--\r\n";
    for (let i = 0; i < depth; i++) {
      open += `--n${i}\r\nContent-Type: multipart/mixed; boundary="n${i + 1}"\r\n\r\n`;
      close = `\r\n--n${i + 1}--${close}`;
    }
    return `${top}${open}--n${depth}\r\n${inner}${s.slice(root.body)}${close}`;
  },
  "huge-line"(s, prng) {
    const size = prng.pick([256 * 1024, 1024 * 1024, 3 * 1024 * 1024, 5 * 1024 * 1024]);
    const kind = prng.pick(["A", "base64", "printable", "html"]);
    let line: string;
    if (kind === "A") line = "A".repeat(size);
    else if (kind === "html") line = "<meta <p>".repeat(Math.ceil(size / 9)).slice(0, size);
    else line = prng.chars(64 * 1024, kind === "base64" ? B64 : PRINTABLE).repeat(Math.ceil(size / (64 * 1024))).slice(0, size);
    const at = prng.chance(0.15) ? prng.int(blockAt(s, 0).end + 1) : prng.int(s.length + 1);
    return insert(s, at, line);
  },
  "b64-garbage"(s, prng) {
    const block = blockWhere(s, prng, (h) => /^content-transfer-encoding:\s*base64/im.test(h));
    if (!block) return null;
    const [a, e] = bodyOf(s, block);
    if (e <= a) return null;
    let body = s.slice(a, e);
    for (let k = prng.range(1, 8); k > 0; k--) {
      const junk = prng.pick(["!", "*", "=", "==", "\x00", "\xff\xfe", "-_", " ", "====AAAA", "#".repeat(2000)]);
      body = insert(body, prng.int(body.length + 1), junk);
    }
    return s.slice(0, a) + body + s.slice(e);
  },
  "qp-broken"(s, prng) {
    const block = blockWhere(s, prng, isText);
    if (!block) return null;
    const [a, e] = bodyOf(s, block);
    let body = s.slice(a, e);
    for (let k = prng.range(1, 6); k > 0; k--) body = insert(body, prng.int(body.length + 1), prng.pick(["=", "=Z", "=4", "=\r\n", "=ZZ=", "=C3", "==", "=\x00"]));
    return setHeader(s.slice(0, a) + body + s.slice(e), block, "Content-Transfer-Encoding", "quoted-printable");
  },
  "cte-unknown"(s, prng) {
    const block = prng.pick(headerBlocks(s));
    return setHeader(s, block, "Content-Transfer-Encoding", prng.pick(["x-unknown", "base65", "x-uuencode", "", "BASE64", '"base64"', "base64 garbage", "quoted-printable; x=1", "binary"]));
  },
  "cte-8bit-in-7bit"(s, prng) {
    const block = blockWhere(s, prng, isText);
    if (!block) return null;
    const [a, e] = bodyOf(s, block);
    let body = s.slice(a, e);
    for (let k = prng.range(1, 10); k > 0; k--) body = insert(body, prng.int(body.length + 1), prng.bytes(prng.range(1, 40)).toString("latin1").replace(/[\r\n]/g, "\x80"));
    return setHeader(s.slice(0, a) + body + s.slice(e), block, "Content-Transfer-Encoding", "7bit");
  },
  nul(s, prng) {
    let out = s;
    for (let k = prng.range(1, 30); k > 0; k--) out = insert(out, prng.int(out.length + 1), "\x00".repeat(prng.range(1, 4)));
    return out;
  },
  "bare-cr"(s, prng) {
    const all = prng.chance(0.2);
    return s.replace(/\r\n/g, (m) => (all || prng.chance(0.1) ? "\r" : m));
  },
  "bare-lf"(s, prng) {
    const all = prng.chance(0.3);
    return s.replace(/\r\n/g, (m) => (all || prng.chance(0.1) ? "\n" : m));
  },
  "charset-wrong"(s, prng) {
    const block = blockWhere(s, prng, (h) => /^content-type[ \t]*:/im.test(h));
    if (!block) return null;
    const cs = prng.pick(["x-unknown", "utf-7", "utf-16", "utf-32", "iso-8859-99", '"utf-8', "", "utf-8\x00", "big5", "ebcdic-cp-us", "../../etc"]);
    const head = s.slice(block.start, block.end);
    const next = /charset\s*=/i.test(head) ? head.replace(/charset\s*=\s*("[^"\r\n]*"|[^;\s]*)/i, `charset=${cs}`) : head.replace(/^(content-type[ \t]*:[^\r\n]*)/im, `$1; charset=${cs}`);
    return s.slice(0, block.start) + next + s.slice(block.end);
  },
  "content-type-duplicate"(s, prng) {
    const block = prng.pick(headerBlocks(s));
    const value = prng.pick(["text/plain", "text/html; charset=utf-8", 'multipart/mixed; boundary="dup"', "application/octet-stream"]);
    const existing = findHeader(s, block, "content-type");
    return insert(s, existing && prng.chance(0.5) ? existing[1] : block.start, `Content-Type: ${value}\r\n`);
  },
  "filename-tricks"(s, prng) {
    const ms = [...s.matchAll(/(file)?name(\*)?\s*=\s*("[^"\r\n]*"|[^;\s]+)/gi)];
    if (!ms.length) return null;
    const m = prng.pick(ms);
    const key = m[1] ? "filename" : "name";
    const value = prng.pick([
      `${key}="../../../etc/passwd"`,
      `${key}="..\\\\..\\\\boot.ini"`,
      `${key}="${"A".repeat(prng.pick([300, 5000, 60000]))}.pdf"`,
      `${key}*0*=utf-8''%E0%A4; ${key}*2="x.pdf"`,
      `${key}*=utf-8''%ZZ%C3`,
      `${key}*=x-unknown''abc`,
      `${key}="=?utf-8?B?####?="`,
      `${key}="=?x-unknown?Q?a=FF?="`,
      `${key}="a\x00b.pdf"`,
      `${key}=""`,
      `${key}="\u202Efdp.exe"`,
      `${key}="CON"`,
      `${key}="/"`,
      `${key}="${"\xc3\xa4".repeat(200)}"`,
    ]);
    return s.slice(0, m.index) + value + s.slice(m.index + m[0].length);
  },
};

/** The operator names, in a fixed order. */
export const OPERATOR_NAMES: readonly string[] = Object.keys(OPERATORS);

// The operators that make messages of megabytes are drawn less often, so that a run spends
// its time on many messages rather than on moving bytes.
const RARE = new Set(["huge-line", "header-huge", "header-many", "header-folded", "nest-deep"]);
const DRAW = OPERATOR_NAMES.flatMap((n) => (RARE.has(n) ? [n] : [n, n, n]));

/**
 * Builds case `index` under `seed`.
 *
 * @param fixtures - The sample mails (the same list, in the same order, for every case).
 * @param seed - The run's seed.
 * @param index - The case number.
 * @returns The message and what it must not leak.
 */
export function makeCase(fixtures: readonly Fixture[], seed: number, index: number): FuzzCase {
  const prng = new Prng(seed, index);
  // Mail with attachments is what the property is about, so it is picked more often.
  const weighted = fixtures.flatMap((f) => (/content-transfer-encoding:\s*base64/i.test(f.raw.toString("latin1")) ? [f, f, f] : [f]));
  const fixture = prng.pick(weighted);
  const { text, secrets } = seedAttachments(fixture.raw, prng);
  const roll = prng.int(100);
  const level: 0 | 3 | 4 = roll < 10 ? 0 : roll < 70 ? 3 : 4;
  let s = level === 0 ? untag(text) : text;
  const operators: string[] = [];
  // One case in twenty is left whole: the control group every other case is compared with.
  const want = prng.chance(0.05) ? 0 : prng.range(1, 3);
  for (let tries = 0; operators.length < want && tries < 12; tries++) {
    const name = prng.pick(DRAW);
    const next = OPERATORS[name]!(s, prng);
    if (next === null) continue;
    s = next;
    operators.push(name);
  }
  if (level > 0) s = `X-Praxmail-Level: ${level}\r\n${s}`;
  return { seed, index, fixture: fixture.name, operators, level, raw: Buffer.from(s, "latin1"), secrets };
}

const WINDOW = 24;
const STRIDE = 16;

/**
 * Finds any run of at least WINDOW + STRIDE - 1 = 39 bytes of a secret (decoded, or within
 * one line of its base64) in a buffer, in one pass: Karp–Rabin over every position of the
 * buffer against windows taken every STRIDE bytes of the secrets.
 */
export class SecretIndex {
  private readonly windows = new Map<number, Buffer[]>();
  private readonly pow: number;

  /** @param secrets - What must not be found. */
  constructor(secrets: readonly Secret[]) {
    let pow = 1;
    for (let i = 1; i < WINDOW; i++) pow = Math.imul(pow, 31);
    this.pow = pow;
    const add = (piece: Buffer): void => {
      if (piece.length < WINDOW) return;
      const starts: number[] = [];
      for (let at = 0; at + WINDOW <= piece.length; at += STRIDE) starts.push(at);
      if (starts.at(-1) !== piece.length - WINDOW) starts.push(piece.length - WINDOW);
      for (const at of starts) {
        const w = piece.subarray(at, at + WINDOW);
        const h = SecretIndex.hash(w);
        const list = this.windows.get(h);
        if (list) list.push(w);
        else this.windows.set(h, [w]);
      }
    };
    for (const s of secrets) {
      add(s.decoded);
      for (const line of s.encoded.toString("latin1").split("\r\n")) add(Buffer.from(line, "latin1"));
    }
  }

  private static hash(b: Uint8Array, from = 0): number {
    let h = 0;
    for (let i = from; i < from + WINDOW; i++) h = (Math.imul(h, 31) + b[i]!) | 0;
    return h;
  }

  /** @returns Whether there is anything to look for. */
  get empty(): boolean {
    return this.windows.size === 0;
  }

  /**
   * @param hay - Bytes to search.
   * @returns The offset of the first window of a secret found in hay, or -1.
   */
  find(hay: Uint8Array): number {
    if (this.windows.size === 0 || hay.length < WINDOW) return -1;
    let h = SecretIndex.hash(hay);
    for (let i = 0; ; i++) {
      const list = this.windows.get(h);
      if (list?.some((w) => Buffer.compare(w, hay.subarray(i, i + WINDOW)) === 0)) return i;
      if (i + WINDOW >= hay.length) return -1;
      h = (Math.imul(h - Math.imul(hay[i]!, this.pow), 31) + hay[i + WINDOW]!) | 0;
    }
  }
}

// The portal's browser-side payload decryption (src/portal/client/stream.ts) in real
// Chromium, on files the Go age CLI wrote: the chunk boundaries, and refusing damage at
// the first bad chunk. Once with libsodium's WASM (the portal's CSP allows it), once with a
// CSP that forbids WebAssembly, where typage must do the same job.
import { execFileSync } from "node:child_process";
import { createCipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { Encrypter, generateIdentity, identityToRecipient } from "age-encryption";
import { build } from "esbuild";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launch, needChromium } from "./helpers/browser.js";
import { cleanup, tempDir } from "./helpers/cli.js";
import { needTool } from "./helpers/tools.js";

const KiB = 1024;
// The last spans 33 chunks, so reads of the fetch stream and chunks fall apart.
const SIZES = [0, 1, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 128 * KiB, 3 * 64 * KiB + 17, 2048 * KiB + 5];
const ROOT = resolve(import.meta.dirname, "..");
const WITH_WASM = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'";
const NO_WASM = "default-src 'self'; script-src 'self'; connect-src 'self'";

interface Outcome {
  engine: "sodium" | "typage";
  /** Plaintext bytes the stream released, before the end or the error. */
  released: number;
  sha256: string;
  error: string | null;
}
interface TestApi {
  open(url: string, identity: string): Promise<Outcome>;
}

// The page: the client module itself, bundled as the portal bundles it.
const ENTRY = `
import { decryptFile, loadAead } from "./src/portal/client/stream.ts";
const aead = loadAead();
globalThis.payloadTest = {
  async open(url, identity) {
    const engine = (await aead) ? "sodium" : "typage";
    const parts = [];
    let released = 0;
    let error = null;
    try {
      const res = await fetch(url);
      const reader = (await decryptFile(res.body, identity, aead)).getReader();
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
        parts.push(r.value);
        released += r.value.length;
      }
    } catch (e) {
      error = e instanceof Error ? e.message : String(e);
    }
    const all = new Uint8Array(released);
    let at = 0;
    for (const p of parts) { all.set(p, at); at += p.length; }
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
    return { engine, released, error, sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("") };
  },
};
`;

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

describe.runIf(needChromium() && needTool("age"))("payload decryption in the browser", () => {
  let dir: string;
  let server: Server;
  let browser: Browser;
  let origin: string;
  let identity: string;
  const files = new Map<string, Buffer>();
  const plain = new Map<number, Buffer>();

  /** An age file made by the Go CLI. */
  const ageFile = async (data: Buffer): Promise<Buffer> => {
    const p = join(dir, "plain");
    await writeFile(p, data);
    return execFileSync("age", ["-r", await identityToRecipient(identity), p], { maxBuffer: 1 << 24 });
  };

  beforeAll(async () => {
    dir = await tempDir();
    identity = await generateIdentity();
    for (const size of SIZES) {
      plain.set(size, randomBytes(size));
      files.set(`size-${size}`, await ageFile(plain.get(size)!));
    }
    const js = (
      await build({
        stdin: { contents: ENTRY, resolveDir: ROOT, loader: "ts", sourcefile: "payload-test-entry.ts" },
        bundle: true,
        format: "esm",
        splitting: true,
        outdir: join(dir, "out"),
        target: "es2022",
        platform: "browser",
        write: true,
        logLevel: "warning",
      })
    ).errors.length;
    expect(js).toBe(0);
    server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === "/") {
        res.setHeader("Content-Security-Policy", url.searchParams.has("nowasm") ? NO_WASM : WITH_WASM);
        res.writeHead(200, { "content-type": "text/html" }).end('<!doctype html><script type="module" src="/stdin.js"></script>');
        return;
      }
      const file = files.get(url.pathname.slice(1));
      if (file) {
        res.writeHead(200, { "content-type": "application/octet-stream" }).end(file);
        return;
      }
      readFile(join(dir, "out", url.pathname))
        .then((b) => res.writeHead(200, { "content-type": "text/javascript" }).end(b))
        .catch(() => res.writeHead(404).end());
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    origin = `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`;
    browser = await launch();
  });
  afterAll(async () => {
    await browser.close();
    await new Promise<void>((ok) => server.close(() => { ok(); }));
    await cleanup(dir);
  });

  const openPage = async (query = ""): Promise<Page> => {
    const page = await browser.newPage();
    await page.goto(`${origin}/${query}`);
    await page.waitForFunction(() => "payloadTest" in globalThis);
    return page;
  };
  const open = (page: Page, name: string, id = identity): Promise<Outcome> =>
    page.evaluate(([u, i]) => (globalThis as unknown as { payloadTest: TestApi }).payloadTest.open(u, i), [`${origin}/${name}`, id] as const);

  /** A file whose payload we seal ourselves, chunk by chunk, for cases age never writes. */
  const craft = async (chunks: { plain: Buffer; last: boolean }[]): Promise<Buffer> => {
    let fileKey: Uint8Array | null = null;
    const e = new Encrypter();
    e.addRecipient(await identityToRecipient(identity));
    e.addRecipient({
      wrapFileKey(k) {
        fileKey = k.slice();
        return [];
      },
    });
    const empty = await e.encrypt(new Uint8Array(0));
    const nonce = empty.subarray(empty.length - 32, empty.length - 16);
    const key = Buffer.from(hkdfSync("sha256", fileKey!, nonce, "payload", 32));
    const out = [Buffer.from(empty.subarray(0, empty.length - 16))];
    chunks.forEach((c, i) => {
      const n = Buffer.alloc(12);
      n.writeUInt32BE(i, 7);
      n[11] = c.last ? 1 : 0;
      const cipher = createCipheriv("chacha20-poly1305", key, n, { authTagLength: 16 });
      out.push(cipher.update(c.plain), cipher.final(), cipher.getAuthTag());
    });
    return Buffer.concat(out);
  };

  describe("with libsodium (the portal's CSP)", () => {
    let page: Page;
    beforeAll(async () => {
      page = await openPage();
    });

    it.each(SIZES)("opens %i bytes byte for byte", async (size) => {
      const r = await open(page, `size-${size}`);
      expect(r).toEqual({ engine: "sodium", released: size, sha256: sha(plain.get(size)!), error: null });
    });

    it("refuses a truncated, cut or tampered last chunk, after releasing the good one", async () => {
      const ct = files.get(`size-${64 * KiB + 1}`)!;
      files.set("truncated", ct.subarray(0, ct.length - 1));
      files.set("cut", ct.subarray(0, ct.length - 17));
      const tampered = Buffer.from(ct);
      tampered[tampered.length - 5]! ^= 1;
      files.set("tampered", tampered);
      const first = sha(plain.get(64 * KiB + 1)!.subarray(0, 64 * KiB));
      expect(await open(page, "truncated")).toEqual({ engine: "sodium", released: 64 * KiB, sha256: first, error: "payload chunk 1 failed to authenticate" });
      expect(await open(page, "cut")).toEqual({ engine: "sodium", released: 64 * KiB, sha256: first, error: "payload is truncated: no final chunk" });
      expect(await open(page, "tampered")).toEqual({ engine: "sodium", released: 64 * KiB, sha256: first, error: "payload chunk 1 failed to authenticate" });
    });

    it("releases nothing when the first chunk is bad", async () => {
      const bad = Buffer.from(files.get(`size-${128 * KiB}`)!);
      bad[bad.length - 64 * KiB - 20]! ^= 1;
      files.set("bad-first", bad);
      const r = await open(page, "bad-first");
      expect(r).toMatchObject({ released: 0, error: "payload chunk 0 failed to authenticate" });
    });

    it("refuses data after a full final chunk", async () => {
      files.set("trailing", Buffer.concat([files.get(`size-${64 * KiB}`)!, Buffer.from([0])]));
      const r = await open(page, "trailing");
      expect(r).toMatchObject({ released: 64 * KiB, error: "trailing data after the final chunk" });
    });

    it("refuses an empty final chunk after a full one, and accepts a full final chunk", async () => {
      const data = randomBytes(64 * KiB);
      files.set("empty-final", await craft([{ plain: data, last: false }, { plain: Buffer.alloc(0), last: true }]));
      files.set("full-final", await craft([{ plain: data, last: true }]));
      expect(await open(page, "empty-final")).toMatchObject({ error: "final chunk is empty" });
      expect(await open(page, "full-final")).toEqual({ engine: "sodium", released: 64 * KiB, sha256: sha(data), error: null });
    });

    it("fails in the header for a wrong identity, before any payload", async () => {
      const r = await open(page, `size-${64 * KiB}`, await generateIdentity());
      expect(r.released).toBe(0);
      expect(r.error).toMatch(/no identity matched/);
    });
  });

  describe("without WebAssembly (a CSP without 'wasm-unsafe-eval')", () => {
    it("falls back to typage and still opens every size, and refuses a tampered chunk", async () => {
      const page = await openPage("?nowasm");
      for (const size of SIZES) {
        expect(await open(page, `size-${size}`)).toEqual({ engine: "typage", released: size, sha256: sha(plain.get(size)!), error: null });
      }
      const tampered = Buffer.from(files.get(`size-${64 * KiB + 1}`)!);
      tampered[tampered.length - 5]! ^= 1;
      files.set("tampered-typage", tampered);
      const r = await open(page, "tampered-typage");
      expect(r.engine).toBe("typage");
      expect(r.error).not.toBeNull();
      expect(r.released).toBeLessThan(64 * KiB + 1);
    });
  });
});

// In Chromium: the Secu-Pass derivation at the portal's cost, and decryption of a 64 MiB age
// file in one page load: the portal's download path before and after libsodium, typage's
// streaming Decrypter, libsodium's WASM ChaCha20-Poly1305 under the portal's STREAM code,
// and both ciphers bare, in memory.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { generateIdentity, identityToRecipient } from "age-encryption";
import { build } from "esbuild";
import { SECUPASS_COST } from "../src/crypto/secupass.js";
import { launch } from "../test/helpers/browser.js";
import type { DecryptRun, Method, PageApi } from "./browser-page.js";
import { median, type Figure } from "./stats.js";

const PAGE = resolve(import.meta.dirname, "../../bench/browser-page.ts");
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const METHODS: readonly Method[] = ["fetch", "before", "portal", "typage", "sodium"];
// The portal's policy plus what WebAssembly needs; nothing else is loosened.
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; object-src 'none'; base-uri 'none'";
const HTML = `<!doctype html><meta charset="utf-8"><title>praxmail bench</title><script type="module" src="/page.js"></script>`;

async function bundle(): Promise<Uint8Array> {
  const out = await build({
    entryPoints: [PAGE],
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    minify: true,
    write: false,
    outfile: "page.js",
    logLevel: "warning",
  });
  const js = out.outputFiles.find((f) => f.path.endsWith("page.js"));
  if (!js) throw new Error("esbuild wrote no page.js");
  return js.contents;
}

function serve(js: Uint8Array, file: Uint8Array): Promise<Server> {
  const server = createServer((req, res) => {
    res.setHeader("Content-Security-Policy", CSP);
    res.setHeader("Cache-Control", "no-store");
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(HTML);
    } else if (req.url === "/page.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(js);
    } else if (req.url === "/file.age") {
      // From memory: the server should cost as little CPU as it can on a shared machine.
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": file.length }).end(file);
    } else if (req.url === "/favicon.ico") {
      res.writeHead(204).end();
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => { ok(server); }));
}

/** The browser figures. */
export async function browserBench(runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-browser-"));
  let server: Server | null = null;
  const browser = await launch();
  try {
    const js = await bundle();
    log(`  browser: ${browser.version()}, bench bundle ${(js.length / 1024).toFixed(0)} KiB`);
    const plain = randomBytes(SIZE);
    const digest = createHash("sha256").update(plain).digest("hex");
    const identity = await generateIdentity();
    await writeFile(join(dir, "plain"), plain);
    await promisify(execFile)("age", ["-r", await identityToRecipient(identity), "-o", join(dir, "file.age"), join(dir, "plain")]);
    await rm(join(dir, "plain"));
    const file = await readFile(join(dir, "file.age"));
    server = await serve(js, file);
    const origin = `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`;
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => "praxBench" in globalThis);
    const initMs = await page.evaluate(() => (globalThis as unknown as { praxBench: PageApi }).praxBench.sodiumReady());
    log(`  browser: libsodium WASM ready ${initMs.toFixed(0)} ms after the module started`);

    const decrypt = (method: Method, verify: boolean): Promise<DecryptRun> =>
      page.evaluate(
        ([m, url, id, size, v]) => (globalThis as unknown as { praxBench: PageApi }).praxBench.decrypt(m, url, id, size, v),
        [method, `${origin}/file.age`, identity, SIZE, verify] as const,
      );
    // One untimed pass each, hashing the whole plaintext: a wrong or short result fails here.
    for (const m of METHODS) {
      if (m === "fetch") continue;
      const r = await decrypt(m, true);
      if (r.bytes !== SIZE || r.sha256 !== digest) throw new Error(`${m}: plaintext does not match (${String(r.bytes)} bytes, ${String(r.sha256)})`);
    }
    log("  browser: every decryption gives the original 64 MiB (SHA-256 checked)");

    const scrypt: number[] = [];
    const speed: Record<Method, number[]> = { fetch: [], before: [], portal: [], typage: [], sodium: [] };
    const bare: Record<"noble" | "sodium", number[]> = { noble: [], sodium: [] };
    for (let r = 0; r < runs; r++) {
      scrypt.push(await page.evaluate(() => (globalThis as unknown as { praxBench: PageApi }).praxBench.scrypt()));
      // Rotate the order, so that no method always runs first (or right after a GC).
      const line: string[] = [];
      for (let i = 0; i < METHODS.length; i++) {
        const m = METHODS[(r + i) % METHODS.length]!;
        const res = await decrypt(m, false);
        const expect = m === "fetch" ? file.length : SIZE;
        if (res.bytes !== expect) throw new Error(`${m}: ${String(res.bytes)} bytes`);
        speed[m].push(res.bytes / MiB / res.seconds);
        line.push(`${m} ${(res.bytes / MiB / res.seconds).toFixed(0)}`);
      }
      for (const impl of ["noble", "sodium"] as const) {
        const seconds = await page.evaluate((i) => (globalThis as unknown as { praxBench: PageApi }).praxBench.aead(i), impl);
        bare[impl].push(64 / seconds);
        line.push(`bare ${impl} ${(64 / seconds).toFixed(0)}`);
      }
      log(`  browser run ${r + 1}: scrypt ${scrypt.at(-1)!.toFixed(2)} s; MiB/s ${line.join(", ")}`);
    }
    if (errors.length > 0) throw new Error(`page errors: ${errors.join("; ")}`);
    const ratio = (a: Method, b: Method): number[] => speed[a].map((v, i) => v / speed[b][i]!);
    const figures: Figure[] = [
      { name: `browser: Secu-Pass scrypt (N=2^${SECUPASS_COST.logN}, r=${SECUPASS_COST.r}, p=${SECUPASS_COST.p})`, unit: "s", runs: scrypt },
      { name: "browser: fetch the 64 MiB file only (the ceiling for the rows below)", unit: "MiB/s", runs: speed.fetch },
      { name: "browser: decrypt 64 MiB, portal download path before (typage, into a Blob)", unit: "MiB/s", runs: speed.before },
      { name: "browser: decrypt 64 MiB, portal download path now (decryptFile with libsodium, into a Blob)", unit: "MiB/s", runs: speed.portal },
      { name: "browser: decrypt 64 MiB, age-encryption Decrypter stream", unit: "MiB/s", runs: speed.typage },
      { name: "browser: decrypt 64 MiB, libsodium WASM STREAM", unit: "MiB/s", runs: speed.sodium },
      { name: "browser: libsodium STREAM / portal before", unit: "×", runs: ratio("sodium", "before") },
      { name: "browser: libsodium STREAM / age-encryption stream", unit: "×", runs: ratio("sodium", "typage") },
      { name: "browser: portal now / portal before", unit: "×", runs: ratio("portal", "before") },
      { name: "browser: bare ChaCha20-Poly1305 open, 64 KiB chunks in memory, @noble/ciphers (typage's)", unit: "MiB/s", runs: bare.noble },
      { name: "browser: bare ChaCha20-Poly1305 open, 64 KiB chunks in memory, libsodium WASM", unit: "MiB/s", runs: bare.sodium },
      { name: "browser: bare libsodium / @noble/ciphers", unit: "×", runs: bare.sodium.map((v, i) => v / bare.noble[i]!) },
    ];
    log(`  browser: median libsodium STREAM / portal before = ${median(ratio("sodium", "before")).toFixed(2)}×`);
    return figures;
  } finally {
    await browser.close();
    await new Promise<void>((ok) => {
      if (server) server.close(() => { ok(); });
      else ok();
    });
    await rm(dir, { recursive: true, force: true });
  }
}

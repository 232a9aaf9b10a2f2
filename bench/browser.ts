// In Chromium: unlocking (the Secu-Pass derivation at the portal's cost) in the portal's
// worker and on the page's thread, with the frames painted meanwhile; decrypt-and-save of a
// 25 MiB age file by the portal's code until Chromium has the download on disk, served from
// memory (the browser's share) and through the real `praxmail serve` (what a patient gets); stream decryption with typage and with libsodium's WASM ChaCha20-Poly1305
// under the portal's STREAM code; and both ciphers bare, in memory (the ceiling).
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { generateIdentity, identityToRecipient } from "age-encryption";
import { build } from "esbuild";
import { SECUPASS_COST } from "../src/crypto/secupass.js";
import type { Page } from "playwright-core";
import { launch } from "../test/helpers/browser.js";
import type { DecryptRun, Method, PageApi, UnlockRun } from "./browser-api.js";
import { praxmail, serve as servePortal, type Served } from "./portal.js";
import { median, type Figure } from "./stats.js";

const PAGE = resolve(import.meta.dirname, "../../bench/page/browser-page.ts");
const WORKER = resolve(import.meta.dirname, "../../src/portal/client/derive-worker.ts");
const MiB = 1024 * 1024;
const SIZE = 25 * MiB;
const METHODS: readonly Method[] = ["fetch", "typage", "sodium"];
// The portal's policy plus what WebAssembly needs; nothing else is loosened.
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; object-src 'none'; base-uri 'none'";
const HTML = `<!doctype html><meta charset="utf-8"><title>praxmail bench</title><script type="module" src="/page.js"></script>`;

/** The page and, next to it, the portal's Secu-Pass worker (as scripts/build-portal.mjs names it). */
async function bundle(): Promise<Map<string, Uint8Array>> {
  const out = await build({
    entryPoints: { page: PAGE, derive: WORKER },
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    minify: true,
    write: false,
    outdir: "/",
    logLevel: "warning",
  });
  const files = new Map(out.outputFiles.map((f) => [f.path, f.contents]));
  if (!files.has("/page.js") || !files.has("/derive.js")) throw new Error("esbuild wrote no page.js or derive.js");
  return files;
}

function serve(js: Map<string, Uint8Array>, file: Uint8Array): Promise<Server> {
  const server = createServer((req, res) => {
    res.setHeader("Content-Security-Policy", CSP);
    res.setHeader("Cache-Control", "no-store");
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(HTML);
    } else if (req.url && js.has(req.url)) {
      res.writeHead(200, { "content-type": "text/javascript" }).end(js.get(req.url));
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

/**
 * The same file through the real portal: `praxmail send --level 1` (the key rides in the
 * link's #fragment, so no Secu-Pass is needed) and `praxmail serve`.
 *
 * @returns The running server and the delivery page's URL on it.
 */
async function realPortal(dir: string, plainPath: string): Promise<{ served: Served; link: string }> {
  const home = join(dir, "home");
  // A free port, so that the portal's own URL (and with it http, not https) is right.
  const probe = createNetServer();
  await new Promise<void>((ok) => probe.listen(0, "127.0.0.1", ok));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((ok) => probe.close(() => { ok(); }));
  const base = `http://127.0.0.1:${String(port)}`;
  await praxmail(["init", "--yes", "--no-keyring", "--home", home, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example", "--portal-url", base]);
  const sent = JSON.parse(await praxmail(["send", "--home", home, "--to", "bench@patient.example", "--level", "1", plainPath, "--json"])) as { deliveries: { link: string }[] };
  const link = sent.deliveries[0]?.link;
  if (!link?.startsWith(`${base}/d/`)) throw new Error(`send gave no portal link: ${String(link)}`);
  return { served: await servePortal(home, port), link };
}

/**
 * Clicks "Speichern" on the delivery page until Chromium has the download on disk.
 *
 * @returns Seconds.
 */
async function clickSave(page: Page, verify: string | null): Promise<number> {
  const t0 = performance.now();
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Speichern" }).first().click()]);
  const saved = await download.path();
  const seconds = (performance.now() - t0) / 1000;
  if (verify !== null && createHash("sha256").update(await readFile(saved)).digest("hex") !== verify) throw new Error("the file saved from praxmail serve does not match");
  await download.delete();
  return seconds;
}

// In the delivery page: fetch its file's ciphertext and read it to the end, timed in the page.
const FETCH_FILE = `(async () => {
  const url = JSON.parse(document.getElementById("delivery-data").textContent).files[0].url;
  const t0 = performance.now();
  const reader = (await fetch(url, { credentials: "same-origin" })).body.getReader();
  let bytes = 0;
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    bytes += r.value.length;
  }
  return { seconds: (performance.now() - t0) / 1000, bytes };
})()`;

/** The browser figures. */
export async function browserBench(runs: number, log: (s: string) => void): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), "praxmail-bench-browser-"));
  let server: Server | null = null;
  let served: Served | null = null;
  const browser = await launch();
  try {
    const js = await bundle();
    log(`  browser: ${browser.version()}, bench bundle ${(js.get("/page.js")!.length / 1024).toFixed(0)} KiB`);
    const plain = randomBytes(SIZE);
    const digest = createHash("sha256").update(plain).digest("hex");
    const identity = await generateIdentity();
    await writeFile(join(dir, "plain"), plain);
    await promisify(execFile)("age", ["-r", await identityToRecipient(identity), "-o", join(dir, "file.age"), join(dir, "plain")]);
    const real = await realPortal(dir, join(dir, "plain"));
    served = real.served;
    await rm(join(dir, "plain"));
    const file = await readFile(join(dir, "file.age"));
    server = await serve(js, file);
    const origin = `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`;
    const page = await browser.newPage({ acceptDownloads: true });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => "praxBench" in globalThis);
    const initMs = await page.evaluate(() => (globalThis as unknown as { praxBench: PageApi }).praxBench.sodiumReady());
    log(`  browser: libsodium WASM ready ${initMs.toFixed(0)} ms after the module started`);

    const url = `${origin}/file.age`;
    const decrypt = (method: Method, verify: boolean): Promise<DecryptRun> =>
      page.evaluate(
        ([m, u, id, v]) => (globalThis as unknown as { praxBench: PageApi }).praxBench.decrypt(m, u, id, v),
        [method, url, identity, verify] as const,
      );
    // Timed here, from the call until Chromium has written the download: a DevTools round
    // trip (a few ms) is counted too, so the figure errs low.
    const save = async (verify: boolean): Promise<number> => {
      const t0 = performance.now();
      const [download] = await Promise.all([
        page.waitForEvent("download"),
        page.evaluate(([u, id]) => (globalThis as unknown as { praxBench: PageApi }).praxBench.save(u, id), [url, identity] as const),
      ]);
      const saved = await download.path();
      const seconds = (performance.now() - t0) / 1000;
      if (verify) {
        const got = createHash("sha256").update(await readFile(saved)).digest("hex");
        if (got !== digest) throw new Error("the saved file does not match");
      }
      await download.delete();
      return seconds;
    };
    const unlock = (where: "worker" | "main"): Promise<UnlockRun> =>
      page.evaluate((w) => (globalThis as unknown as { praxBench: PageApi }).praxBench.unlock(w), where);
    // One untimed pass each, hashing the whole plaintext: a wrong or short result fails here.
    for (const m of METHODS) {
      if (m === "fetch") continue;
      const r = await decrypt(m, true);
      if (r.bytes !== SIZE || r.sha256 !== digest) throw new Error(`${m}: plaintext does not match (${String(r.bytes)} bytes, ${String(r.sha256)})`);
    }
    await save(true);
    const portalPage = await browser.newPage({ acceptDownloads: true, locale: "de-DE" });
    portalPage.on("pageerror", (e) => errors.push(e.message));
    await portalPage.goto(real.link);
    await clickSave(portalPage, digest);
    log("  browser: every decryption and every saved file gives the original 25 MiB (SHA-256 checked)");

    const unlocks: Record<"worker" | "main", UnlockRun[]> = { worker: [], main: [] };
    const speed: Record<Method, number[]> = { fetch: [], typage: [], sodium: [] };
    const saves: number[] = [];
    const bare: Record<"noble" | "sodium", number[]> = { noble: [], sodium: [] };
    const viaServe: Record<"fetch" | "save", number[]> = { fetch: [], save: [] };
    for (let r = 0; r < runs; r++) {
      for (const w of ["worker", "main"] as const) unlocks[w].push(await unlock(w));
      // Rotate the order, so that no method always runs first (or right after a GC).
      const line: string[] = [];
      saves.push(SIZE / MiB / (await save(false)));
      line.push(`save ${saves.at(-1)!.toFixed(0)}`);
      for (let i = 0; i < METHODS.length; i++) {
        const m = METHODS[(r + i) % METHODS.length]!;
        const res = await decrypt(m, false);
        const expect = m === "fetch" ? file.length : SIZE;
        if (res.bytes !== expect) throw new Error(`${m}: ${String(res.bytes)} bytes`);
        speed[m].push(res.bytes / MiB / res.seconds);
        line.push(`${m} ${(res.bytes / MiB / res.seconds).toFixed(0)}`);
      }
      const fetched = await portalPage.evaluate<{ seconds: number; bytes: number }>(FETCH_FILE);
      // Its own ciphertext (praxmail send wrote it): a little over the 25 MiB, never under.
      if (fetched.bytes <= SIZE) throw new Error(`fetch from praxmail serve: ${String(fetched.bytes)} bytes`);
      viaServe.fetch.push(fetched.bytes / MiB / fetched.seconds);
      viaServe.save.push(SIZE / MiB / (await clickSave(portalPage, null)));
      line.push(`serve: fetch ${viaServe.fetch.at(-1)!.toFixed(0)}, save ${viaServe.save.at(-1)!.toFixed(0)}`);
      for (const impl of ["noble", "sodium"] as const) {
        const seconds = await page.evaluate((i) => (globalThis as unknown as { praxBench: PageApi }).praxBench.aead(i), impl);
        bare[impl].push(64 / seconds);
        line.push(`bare ${impl} ${(64 / seconds).toFixed(0)}`);
      }
      const u = (w: "worker" | "main"): string => `${unlocks[w].at(-1)!.seconds.toFixed(2)} s, ${String(unlocks[w].at(-1)!.frames)} frames`;
      log(`  browser run ${r + 1}: unlock in the worker ${u("worker")}, on the page's thread ${u("main")}; MiB/s ${line.join(", ")}`);
    }
    if (errors.length > 0) throw new Error(`page errors: ${errors.join("; ")}`);
    const cost = `N=2^${SECUPASS_COST.logN}, r=${SECUPASS_COST.r}, p=${SECUPASS_COST.p}`;
    const figures: Figure[] = [
      { name: `browser: unlock, the Secu-Pass derivation (${cost}) in the portal's worker`, unit: "s", runs: unlocks.worker.map((u) => u.seconds) },
      { name: "browser: frames painted during that unlock", unit: "frames", runs: unlocks.worker.map((u) => u.frames) },
      { name: `browser: the same derivation on the page's thread (the portal before)`, unit: "s", runs: unlocks.main.map((u) => u.seconds) },
      { name: "browser: frames painted during it on the page's thread", unit: "frames", runs: unlocks.main.map((u) => u.frames) },
      { name: "browser: fetch the 25 MiB file only, served from memory (the ceiling for the rows below)", unit: "MiB/s", runs: speed.fetch },
      { name: "browser: decrypt-and-save 25 MiB served from memory, the portal's save path until the download is on disk (target ≥ 100)", unit: "MiB/s", runs: saves },
      { name: "browser: fetch the same file only, from the real praxmail serve", unit: "MiB/s", runs: viaServe.fetch },
      { name: "browser: decrypt-and-save through the real praxmail serve (level-1 link, a click on Speichern until the download is on disk)", unit: "MiB/s", runs: viaServe.save },
      { name: "browser: decrypt 25 MiB, age-encryption Decrypter stream", unit: "MiB/s", runs: speed.typage },
      { name: "browser: decrypt 25 MiB, libsodium WASM under the portal's STREAM code", unit: "MiB/s", runs: speed.sodium },
      { name: "browser: bare ChaCha20-Poly1305 open, 64 KiB chunks in memory, @noble/ciphers (typage's)", unit: "MiB/s", runs: bare.noble },
      { name: "browser: bare ChaCha20-Poly1305 open, 64 KiB chunks in memory, libsodium WASM (the ceiling)", unit: "MiB/s", runs: bare.sodium },
      { name: "browser: decrypt-and-save / bare libsodium", unit: "×", runs: saves.map((v, i) => v / bare.sodium[i]!) },
    ];
    log(`  browser: median decrypt-and-save ${median(saves).toFixed(0)} MiB/s from memory, ${median(viaServe.save).toFixed(0)} MiB/s through praxmail serve`);
    return figures;
  } finally {
    await browser.close();
    await served?.stop();
    await new Promise<void>((ok) => {
      if (server) server.close(() => { ok(); });
      else ok();
    });
    await rm(dir, { recursive: true, force: true });
  }
}

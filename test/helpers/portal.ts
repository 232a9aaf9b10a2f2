// The portal app over a fresh home, set up once per test file, and a browser-like client for it
// (fastify inject): keeps cookies, reads the CSRF token from the last page, and has its own IP
// address.
import { join } from "node:path";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { pino, type Logger } from "pino";
import { afterAll, beforeAll, beforeEach } from "vitest";
import { openContext } from "../../src/commands/shared.js";
import type { Config, Context } from "../../src/core/index.js";
import { decryptBytes, parseKdfParams } from "../../src/crypto/index.js";
import { buildPortal, type Assets } from "../../src/portal/index.js";
import { cleanup, initHome, tempDir } from "./cli.js";
import { deriveCached, keyOf } from "./patient.js";

let nextIp = 1;

/** A browser-like client: keeps cookies (any name), reads the CSRF token from the last page, has its own IP. */
export class Client {
  cookies = new Map<string, string>();
  csrf = "";
  constructor(
    private readonly app: FastifyInstance,
    readonly ip = `10.0.${Math.floor(nextIp / 250)}.${(nextIp++ % 250) + 1}`,
  ) {}

  cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }

  /** The session cookie's value, whatever its name (`praxmail` or `__Host-praxmail`). */
  get sid(): string | undefined {
    return this.cookies.get("praxmail") ?? this.cookies.get("__Host-praxmail");
  }

  private keep(res: LightMyRequestResponse): LightMyRequestResponse {
    const set = res.headers["set-cookie"];
    for (const c of Array.isArray(set) ? set : set ? [set] : []) {
      const [pair = ""] = c.split(";");
      const [k = "", v = ""] = pair.split("=");
      if (/Max-Age=0|Expires=Thu, 01 Jan 1970/i.test(c)) this.cookies.delete(k);
      else this.cookies.set(k, v);
    }
    const m = /name="_csrf" value="([^"]+)"|data-csrf="([^"]+)"/.exec(res.body);
    if (m) this.csrf = (m[1] ?? m[2])!;
    return res;
  }

  async request(method: string, url: string, opts: { payload?: string | Buffer; headers?: Record<string, string> } = {}): Promise<LightMyRequestResponse> {
    const res = await this.app.inject({
      method: method as "GET",
      url,
      remoteAddress: this.ip,
      headers: { cookie: this.cookieHeader(), "accept-language": "de-DE,de;q=0.9", ...opts.headers },
      ...(opts.payload === undefined ? {} : { payload: opts.payload }),
    });
    return this.keep(res);
  }

  get(url: string): Promise<LightMyRequestResponse> {
    return this.request("GET", url);
  }

  post(url: string, form: Record<string, string>): Promise<LightMyRequestResponse> {
    return this.request("POST", url, { payload: new URLSearchParams(form).toString(), headers: { "content-type": "application/x-www-form-urlencoded" } });
  }

  json(url: string, body: unknown): Promise<LightMyRequestResponse> {
    return this.request("POST", url, { payload: JSON.stringify(body), headers: { "content-type": "application/json", "x-csrf-token": this.csrf } });
  }

  upload(url: string, data: Buffer, length = data.length): Promise<LightMyRequestResponse> {
    return this.request("POST", url, { payload: data, headers: { "content-type": "application/octet-stream", "content-length": String(length), "x-csrf-token": this.csrf } });
  }

  /**
   * Logs in as the login page does: asks for the parameters, derives in Node (cached), opens
   * the challenge if U can, posts the credential.
   *
   * @param email - The address as typed.
   * @param secret - The Secu-Pass-Key; by default the one the patient was registered with.
   * @param next - Where to go after.
   * @returns The answer to the login post (200 `{next}`, 401, 429), or to the parameters' ask if that failed.
   */
  async login(email: string, secret = keyOf(email), next = "/deliveries"): Promise<LightMyRequestResponse> {
    // The form for this address: it names the address, so another patient's session still gets it.
    await this.get(`/login?email=${encodeURIComponent(email)}`);
    const asked = await this.json("/login/params", { email });
    if (asked.statusCode !== 200) return asked;
    const { kdf, challenge } = JSON.parse(asked.body) as { kdf: unknown; challenge: string };
    const { identity, credential } = await deriveCached(secret, parseKdfParams(kdf), email);
    const nonce = await decryptBytes(Buffer.from(challenge, "base64"), [identity]).then(
      (b) => Buffer.from(b).toString(),
      () => null,
    );
    return this.json("/login", { email, credential, next, ...(nonce === null ? {} : { nonce }) });
  }
}


/** The portal a test file runs against; its fields are set once its `beforeAll` has run. */
export interface PortalFixture {
  /** The temporary folder, removed after the file's tests. */
  readonly dir: string;
  /** The home (`<dir>/home`), initialised with `--recipient-type x25519`. */
  readonly home: string;
  /** The portal's context; its `now` reads {@link PortalFixture.clock}. */
  readonly ctx: Context;
  /** The portal app (silent log). */
  readonly app: FastifyInstance;
  /** The port the app listens on at 127.0.0.1; only with `listen: true`. */
  readonly port: number;
  /** The portal's time: set to now before each test; a test may move it. */
  clock: Date;
}

/** What a test file adds to the shared portal setup. */
export interface PortalOptions {
  /** Runs after `praxmail init`, before the context opens: register patients, patch the config, approve, read the practice identity. */
  readonly beforeOpen?: (home: string) => Promise<void>;
  /** Changes the context's config in memory (the file on disk stays as it is). */
  readonly config?: (config: Config) => Config;
  /** Runs with the open context, before the app is built: core calls that need the context. */
  readonly afterOpen?: (ctx: Context) => Promise<void>;
  /** Also listen on 127.0.0.1 at a free port (for real HTTP); otherwise the app is only injected into. */
  readonly listen?: boolean;
  /** The app's views and static files (default: {@link buildPortal}'s). */
  readonly assets?: Assets;
  /** The portal's log (silent unless given). */
  readonly log?: Logger;
}

/**
 * Sets up the portal for the calling test file (or `describe` block): registers a `beforeAll`
 * that makes a temporary home and builds the app on a context with a settable clock, an
 * `afterAll` that closes the app and the store and removes the folder, and a `beforeEach` that
 * sets the clock to now.
 *
 * @param opts - The file's own setup.
 * @returns The fixture, filled in once `beforeAll` has run.
 */
export function usePortal(opts: PortalOptions = {}): PortalFixture {
  const f = { clock: new Date() } as { -readonly [K in keyof PortalFixture]: PortalFixture[K] };
  beforeAll(async () => {
    f.dir = await tempDir();
    f.home = join(f.dir, "home");
    await initHome(f.home, ["--recipient-type", "x25519"]);
    await opts.beforeOpen?.(f.home);
    const base = await openContext({ home: f.home }, "portal");
    f.clock = new Date();
    f.ctx = { ...base, now: () => f.clock, ...(opts.config ? { config: opts.config(base.config) } : {}) };
    await opts.afterOpen?.(f.ctx);
    f.app = await buildPortal(f.ctx, opts.log ?? pino({ level: "silent" }), opts.assets);
    if (opts.listen) {
      await f.app.listen({ host: "127.0.0.1", port: 0 });
      f.port = (f.app.server.address() as { port: number }).port;
    }
  });
  afterAll(async () => {
    await f.app.close();
    await f.ctx.store.close();
    await cleanup(f.dir);
  });
  beforeEach(() => {
    f.clock = new Date();
  });
  return f;
}

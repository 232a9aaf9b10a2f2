// A browser-like client for the portal app (fastify inject): keeps cookies, reads the CSRF
// token from the last page, and has its own IP address.
import type { FastifyInstance, LightMyRequestResponse } from "fastify";

/** The password the portal tests register their patients with. */
export const PASSWORD = "ein langes Passwort";

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

  async login(email: string, password = PASSWORD): Promise<LightMyRequestResponse> {
    await this.get("/login");
    return this.post("/login", { email, password, _csrf: this.csrf, next: "/deliveries" });
  }
}


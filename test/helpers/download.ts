// A patient at a running `praxmail serve`, over real HTTP: logs in with the Secu-Pass-Key as
// the login page does, fetches a level 3/4 delivery's file and wrap[U], and opens them with U
// as the browser does.
import { decryptBytes, decryptStream, parseKdfParams, unwrapIdentity } from "../../src/crypto/index.js";
import { deriveCached, keyOf } from "./patient.js";
import { readAll } from "./streams.js";

/** A logged-in patient's way to the portal. */
export interface PatientAtPortal {
  /** The login's answer: 200 with `{"next":"/deliveries"}` when it worked. */
  readonly login: Response;
  /** The browser's cookies by name (the session's among them). */
  readonly cookies: ReadonlyMap<string, string>;
  /** GET (or another method, with init) with the session's cookies. */
  get(path: string, init?: RequestInit): Promise<Response>;
  /**
   * Opens a delivery's first file the way the browser does: its ciphertext and wrap[U] from
   * the portal, U unwraps D, D decrypts.
   *
   * @returns The plaintext.
   */
  open(deliveryId: string, patientIdentity: string): Promise<Buffer>;
}

/**
 * Logs a patient in at a portal.
 *
 * @param base - `http://127.0.0.1:PORT`.
 * @param email - The patient's address.
 * @param secret - The Secu-Pass-Key; by default the one the patient was registered with.
 * @returns The session.
 */
export async function patientAtPortal(base: string, email: string, secret = keyOf(email)): Promise<PatientAtPortal> {
  const cookies = new Map<string, string>();
  const get = async (path: string, init: RequestInit = {}): Promise<Response> => {
    const res = await fetch(base + path, { ...init, redirect: "manual", headers: { ...(init.headers as Record<string, string>), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join("; ") } });
    for (const c of res.headers.getSetCookie()) {
      const [pair = ""] = c.split(";");
      const eq = pair.indexOf("=");
      cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    return res;
  };
  const loginPage = await (await get("/login")).text();
  const csrf = /data-csrf="([^"]+)"/.exec(loginPage)?.[1] ?? "";
  const post = (path: string, body: unknown): Promise<Response> =>
    get(path, { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": csrf }, body: JSON.stringify(body) });
  const { kdf, challenge } = (await (await post("/login/params", { email })).json()) as { kdf: unknown; challenge: string };
  const { identity, credential } = await deriveCached(secret, parseKdfParams(kdf), email);
  const nonce = await decryptBytes(Buffer.from(challenge, "base64"), [identity]).then(
    (b) => Buffer.from(b).toString(),
    () => null,
  );
  const login = await post("/login", { email, credential, next: "/deliveries", ...(nonce === null ? {} : { nonce }) });
  const open = async (id: string, patientIdentity: string): Promise<Buffer> => {
    const page = await get(`/deliveries/${id}`);
    if (page.status !== 200) throw new Error(`GET /deliveries/${id}: ${String(page.status)}`);
    const data = JSON.parse(/<script type="application\/json" id="delivery-data">([^<]*)<\/script>/.exec(await page.text())?.[1] ?? "null") as { files: { url: string }[] };
    const file = await get((data.files[0]?.url ?? "").replace(base, ""));
    if (file.status !== 200) throw new Error(`file of ${id}: ${String(file.status)}`);
    const ciphertext = Buffer.from(await file.arrayBuffer());
    const wrap = await get(`/deliveries/${id}/wrap`);
    if (wrap.status !== 200) throw new Error(`wrap of ${id}: ${String(wrap.status)}`);
    const d = await unwrapIdentity(new Uint8Array(await wrap.arrayBuffer()), patientIdentity);
    return readAll(await decryptStream(new Blob([ciphertext]).stream(), [d]));
  };
  return { login, cookies, get, open };
}

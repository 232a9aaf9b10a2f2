// docs/scale-out.md's load-balancer snippets, as printed: the HAProxy and nginx blocks are
// read from the document, their example addresses replaced by loopback ports and a test
// certificate, and the real haproxy and nginx run them unprivileged in front of two real
// `praxmail serve` nodes on one PostgreSQL + S3 backend (node B = a home with copies of node
// A's config.json, identity and portal-signing.key), started with the documented serve line's
// --trust-proxy. Visitors connect from their own loopback addresses (127.0.0.2, …), so that
// the per-address limits can tell them apart behind a balancer.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request } from "node:https";
import { connect } from "node:net";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { simpleParser } from "mailparser";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LIMITS } from "../src/portal/limits.js";
import { cleanup, praxmail, tempDir } from "./helpers/cli.js";
import { newKey } from "./helpers/patient.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { befundMail, patchConfig, submit } from "./helpers/relay.js";
import { startPostfix, type TestPostfix } from "./helpers/postfix.js";
import { startS3, type TestS3 } from "./helpers/s3.js";
import { freePorts, startServe, type Served } from "./helpers/serve.js";
import { startSink, type Sink } from "./helpers/sink.js";
import { needRoot, needTool } from "./helpers/tools.js";
import { sharedEnginesInstalled } from "./helpers/backends.js";

const run = promisify(execFile);
const DOC = resolve(import.meta.dirname, "../docs/scale-out.md");
/** One patient per balancer: each registers through its own. */
const PATIENTS = { haproxy: "anna@patient.example", nginx: "ben@patient.example" } as const;
const NODE_FILES = ["config.json", "practice-identity.txt", "portal-signing.key"];

/**
 * @param marker - The comment line that opens a fenced block in docs/scale-out.md.
 * @returns That block's text, from the marker to the closing fence.
 */
async function docBlock(marker: string): Promise<string> {
  const doc = await readFile(DOC, "utf8");
  const at = doc.indexOf(`\n${marker}\n`);
  if (at === -1) throw new Error(`docs/scale-out.md has no block "${marker}"`);
  return doc.slice(at + 1, doc.indexOf("\n```", at));
}

/**
 * Replaces each example value by the test's, and fails if the block no longer has it.
 *
 * @param block - A snippet.
 * @param pairs - [as printed, as run].
 * @returns The snippet to run.
 */
function fill(block: string, pairs: readonly (readonly [string, string])[]): string {
  let out = block;
  for (const [from, to] of pairs) {
    if (!out.includes(from)) throw new Error(`the snippet no longer contains "${from}"`);
    out = out.replaceAll(from, to);
  }
  return out;
}

/**
 * A visitor with a cookie jar: over https trusting the test certificate only, or over plain
 * http to a node directly when `ca` is null; from its own loopback address.
 */
class Visitor {
  private readonly cookies = new Map<string, string>();
  csrf = "";
  /** An X-Forwarded-For the visitor writes itself (a forgery), or none. */
  forged: string | undefined;
  constructor(
    private readonly port: number,
    private readonly ca: string | null,
    private readonly from = "127.0.0.1",
  ) {}

  get session(): string | undefined {
    return this.cookies.get("__Host-praxmail") ?? this.cookies.get("praxmail");
  }

  /** A request; with `json`, posted as the portal's scripts post, with the form's CSRF token in a header. */
  send(method: string, path: string, form?: Record<string, string>, json?: unknown): Promise<{ status: number; location: string; body: string }> {
    const body = json !== undefined ? JSON.stringify(json) : form ? new URLSearchParams(form).toString() : undefined;
    const type = json !== undefined ? { "content-type": "application/json", "x-csrf-token": this.csrf } : { "content-type": "application/x-www-form-urlencoded" };
    return new Promise((resolvePromise, reject) => {
      const req = (this.ca === null ? httpRequest : request)(
        {
          host: "127.0.0.1",
          port: this.port,
          localAddress: this.from,
          method,
          path,
          ...(this.ca === null ? {} : { ca: this.ca }),
          agent: false,
          headers: {
            cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; "),
            "accept-language": "de-DE",
            ...(this.forged === undefined ? {} : { "x-forwarded-for": this.forged }),
            ...(body === undefined ? {} : { ...type, "content-length": String(Buffer.byteLength(body)) }),
          },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (d: string) => (text += d));
          res.on("end", () => {
            for (const c of res.headers["set-cookie"] ?? []) {
              const [, name = "", value = ""] = /^([^=;\s]+)=([^;]*)/.exec(c) ?? [];
              if (value) this.cookies.set(name, value);
              else this.cookies.delete(name);
            }
            const m = /name="_csrf" value="([^"]+)"|data-csrf="([^"]+)"/.exec(text);
            this.csrf = m?.[1] ?? m?.[2] ?? this.csrf;
            resolvePromise({ status: res.statusCode ?? 0, location: res.headers.location ?? "", body: text });
          });
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }
}

/**
 * Asks for password resets until one more than the per-address limit allows, each with a
 * different forged X-Forwarded-For and address.
 *
 * @returns The answers' statuses.
 */
async function resetsOverTheLimit(visitor: Visitor): Promise<number[]> {
  expect((await visitor.send("GET", "/reset")).status).toBe(200);
  const statuses: number[] = [];
  for (let i = 0; i <= LIMITS.resetIp.max; i++) {
    visitor.forged = `198.51.100.${String(i + 1)}`;
    statuses.push((await visitor.send("POST", "/reset", { _csrf: visitor.csrf, email: `niemand-${String(i)}@patient.example` })).status);
  }
  return statuses;
}

/** What the limit allows from one address, then its refusal. */
const LIMITED = [...Array<number>(LIMITS.resetIp.max).fill(200), 429];

/**
 * Two patients behind a balancer, at different addresses: the first one uses up its
 * Secu-Pass reset limit while forging X-Forwarded-For, which moves it nowhere; the second is
 * still served.
 */
async function limitedPerClient(port: number, ca: string, first: string, second: string): Promise<void> {
  expect(await resetsOverTheLimit(new Visitor(port, ca, first))).toEqual(LIMITED);
  const other = new Visitor(port, ca, second);
  expect((await other.send("GET", "/reset")).status).toBe(200);
  const page = await other.send("POST", "/reset", { _csrf: other.csrf, email: "carla@patient.example" });
  expect(page.status, page.body.slice(0, 300)).toBe(200);
}

/** A balancer process we started, ended by its pid. */
interface Balancer {
  readonly port: number;
  readonly child: ChildProcess;
  output(): string;
}

function startProcess(cmd: string, args: readonly string[]): { child: ChildProcess; output: () => string } {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
  return { child, output: () => out };
}

async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

/** Polls until `check` holds, or fails after `ms` with `what`. */
async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** @returns How many portal requests a node has logged for a route. */
function requestsTo(node: Served, route: string): number {
  return node.stdout().split("\n").filter((l) => l.includes(`"route":"${route}"`)).length;
}

/**
 * Waits until the nodes have logged `total` requests for a route (a node logs a request
 * after answering it), then gives each node's count.
 */
async function logged(served: readonly Served[], route: string, total: number): Promise<number[]> {
  const counts = (): number[] => served.map((n) => requestsTo(n, route));
  await until(`${total} requests to ${route} logged`, 5000, () => Promise.resolve(counts().reduce((a, b) => a + b, 0) >= total));
  return counts();
}

describe.runIf(
  sharedEnginesInstalled() &&
    needTool("haproxy") &&
    needTool("nginx") &&
    needTool("openssl"),
)("docs/scale-out.md: two nodes on a shared backend behind the documented load balancers", () => {
  let dir: string;
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  let env: Record<string, string>;
  let ca: string;
  const homes = { a: "", b: "" };
  const ports = { httpA: 0, httpB: 0, smtpA: 0, smtpB: 0, haproxy: 0, haproxySmtp: 0, nginx: 0 };
  const nodes: { a?: Served; b?: Served } = {};
  const links = { haproxy: "", nginx: "" };

  /** Extra `serve` flags per node (the milter describe adds --milter). */
  const serveFlags = { a: [] as string[], b: [] as string[] };

  const startNode = async (name: "a" | "b"): Promise<Served> => {
    const [http, smtp] = name === "a" ? [ports.httpA, ports.smtpA] : [ports.httpB, ports.smtpB];
    const node = await startServe(homes[name], http, ["--smtp", `127.0.0.1:${smtp}`, ...serveFlags[name]], env);
    nodes[name] = node;
    return node;
  };
  const stopNode = async (name: "a" | "b"): Promise<void> => {
    await nodes[name]?.stop();
    nodes[name] = undefined;
  };

  beforeAll(async () => {
    dir = await tempDir("pxso-");
    [pg, s3] = await Promise.all([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
    await s3.bucket("praxis");
    const database = await pg.database("praxis");
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint };
    [ports.httpA, ports.httpB, ports.smtpA, ports.smtpB, ports.haproxy, ports.haproxySmtp, ports.nginx] = (await freePorts(7)) as [number, number, number, number, number, number, number];

    // A certificate for 127.0.0.1, and the PEM with both that HAProxy wants.
    await run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "portal.key"), "-out", join(dir, "portal.crt")]);
    ca = await readFile(join(dir, "portal.crt"), "utf8");
    await writeFile(join(dir, "portal.pem"), ca + (await readFile(join(dir, "portal.key"), "utf8")), { mode: 0o600 });

    // Each node trusts the balancer, as the documented serve line says (10.0.0.10 is 127.0.0.1 here).
    const serveLine = fill(await docBlock("# each node, behind the load balancer at 10.0.0.10"), [["10.0.0.10", "127.0.0.1"]]);
    const trust = /--trust-proxy (\S+)/.exec(serveLine)?.[1];
    expect(trust).toBe("127.0.0.1");
    serveFlags.a = ["--trust-proxy", trust!];
    serveFlags.b = ["--trust-proxy", trust!];

    homes.a = join(dir, "node-a");
    homes.b = join(dir, "node-b");
    const init = await praxmail(
      ["init", "--yes", "--no-keyring", "--recipient-type", "x25519", "--practice-name", "Praxis Dr. Weber", "--practice-email", "praxis@praxis-weber.example", "--portal-url", `https://127.0.0.1:${ports.haproxy}`, "--database", database, "--blobs", "s3://praxis/weber", "--home", homes.a],
      { env },
    );
    expect(init.code, init.stderr).toBe(0);
    // Node B, as "Adding a node" says: the same three files, mode 0600.
    await mkdir(homes.b, { mode: 0o700 });
    for (const f of NODE_FILES) await copyFile(join(homes.a, f), join(homes.b, f));

    await writeFile(join(dir, "befund.pdf"), `%PDF-1.7 ${randomBytes(8).toString("hex")}`);
    for (const lb of ["haproxy", "nginx"] as const) {
      const sent = await praxmail(["send", "--json", "--to", PATIENTS[lb], "--level", "3", join(dir, "befund.pdf"), "--home", homes.a], { env });
      expect(sent.code, sent.stderr).toBe(0);
      links[lb] = new URL((JSON.parse(sent.stdout) as { deliveries: { link: string }[] }).deliveries[0]!.link).pathname;
    }
    await startNode("a");
    await startNode("b");
  }, 240_000);

  afterAll(async () => {
    await Promise.all([stopNode("a"), stopNode("b")]);
    await Promise.all([pg?.stop(), s3?.stop()]);
    await cleanup(dir);
  });

  /**
   * The patient registers through the balancer; the session must then work on whichever
   * node answers: first with only node B up, then with only node A up.
   */
  async function sessionOnEitherNode(lb: Balancer, link: string, email: string, nodeDown: (name: "a" | "b") => Promise<void>, nodeUp: (name: "a" | "b") => Promise<void>): Promise<void> {
    const patient = new Visitor(lb.port, ca);
    expect((await patient.send("GET", link)).status).toBe(200);
    const { kdf, recipient, credential } = await newKey(email, "ein Secu-Pass-Key zum Anlegen");
    const registered = await patient.send("POST", "/register", undefined, { token: link.replace("/d/", ""), kdf, recipient, credential });
    expect(registered.status, registered.body).toBe(200);
    expect(patient.session).toBeDefined();
    for (const [off, on] of [["a", "b"], ["b", "a"]] as const) {
      await stopNode(off);
      await nodeDown(off);
      const before = requestsTo(nodes[on]!, "/deliveries");
      const list = await patient.send("GET", "/deliveries");
      expect(list.status, list.body.slice(0, 300)).toBe(200);
      // The list of a logged-in patient, not the login page.
      expect(list.body).toContain("<h1>Meine Nachrichten</h1>");
      expect(list.body).toContain('action="/logout"');
      expect(await logged([nodes[on]!], "/deliveries", before + 1)).toEqual([before + 1]);
      await startNode(off);
      await nodeUp(off);
    }
  }

  describe("HAProxy", () => {
    let lb: Balancer;
    let config = "";

    /** @returns HAProxy's view of a portal server: "UP", "DOWN", …. */
    const state = (server: string): Promise<string> =>
      new Promise((resolvePromise, reject) => {
        const s = connect(join(dir, "haproxy.sock"));
        let csv = "";
        s.setEncoding("utf8").on("data", (d: string) => (csv += d));
        s.on("error", reject);
        s.on("end", () => {
          const row = csv.split("\n").find((l) => l.startsWith(`praxmail-portal-nodes,${server},`));
          resolvePromise(row?.split(",")[17] ?? "missing");
        });
        s.end("show stat\n");
      });

    beforeAll(async () => {
      const block = await docBlock("# haproxy.cfg: praxmail portal and relay");
      config = fill(block, [
        ["bind :443 ssl crt /etc/haproxy/portal.pem", `bind 127.0.0.1:${ports.haproxy} ssl crt ${join(dir, "portal.pem")}`],
        ["bind 10.0.0.10:2525", `bind 127.0.0.1:${ports.haproxySmtp}`],
        ["10.0.0.11:8080", `127.0.0.1:${ports.httpA}`],
        ["10.0.0.12:8080", `127.0.0.1:${ports.httpB}`],
        ["10.0.0.11:2525", `127.0.0.1:${ports.smtpA}`],
        ["10.0.0.12:2525", `127.0.0.1:${ports.smtpB}`],
      ]);
      // What Debian's global section does, minus chroot, user and syslog: a stats socket in the temp dir.
      await writeFile(join(dir, "haproxy.cfg"), `global\n    stats socket ${join(dir, "haproxy.sock")} mode 600\n\n${config}\n`);
      const p = startProcess("haproxy", ["-db", "-f", join(dir, "haproxy.cfg")]);
      lb = { port: ports.haproxy, ...p };
      await until("HAProxy sees both nodes up", 30_000, async () => (await state("node-a").catch(() => "")) === "UP" && (await state("node-b")) === "UP");
    }, 60_000);
    afterAll(async () => {
      await stopProcess(lb.child);
    });

    it("the documented block is a valid HAProxy configuration without warnings", async () => {
      const { stdout, stderr } = await run("haproxy", ["-c", "-f", join(dir, "haproxy.cfg")]);
      expect(stdout + stderr).toContain("Configuration file is valid");
      expect(stdout + stderr).not.toMatch(/WARNING|ALERT/);
    });

    it("answers the portal over TLS through HAProxy, and spreads requests over both nodes", async () => {
      const visitor = new Visitor(lb.port, ca);
      const both = [nodes.a!, nodes.b!];
      const [a = 0, b = 0] = both.map((n) => requestsTo(n, "/login"));
      for (let i = 0; i < 10; i++) {
        const page = await visitor.send("GET", "/login");
        expect(page.status).toBe(200);
        expect(page.body).toContain('id="login-key"');
      }
      // Round robin: five each.
      expect(await logged(both, "/login", a + b + 10)).toEqual([a + 5, b + 5]);
    });

    it("limits two patients at different addresses separately, and a forged X-Forwarded-For changes neither", async () => {
      await limitedPerClient(lb.port, ca, "127.0.0.2", "127.0.0.3");
    }, 60_000);

    it("relays a level-3 mail through the TCP section", async () => {
      const r = await submit(ports.haproxySmtp, "praxis@praxis-weber.example", [PATIENTS.haproxy], befundMail({ from: "praxis@praxis-weber.example", to: PATIENTS.haproxy, messageId: "lb-1@praxis-weber.example", attachment: randomBytes(2048) }));
      expect(r.code, r.text).toBe(250);
      expect(r.text).toContain("1 encrypted");
    });

    it("takes a stopped node out by its /readyz check, and every request still succeeds, also before the check noticed", async () => {
      const visitor = new Visitor(lb.port, ca);
      const b = requestsTo(nodes.b!, "/login");
      await stopNode("a");
      // Up, or "UP 1/2" after one failed check: not yet taken out.
      expect(await state("node-a")).toMatch(/^UP/);
      // Before the check: a refused connection is retried on node B (retries, option redispatch).
      for (let i = 0; i < 10; i++) expect((await visitor.send("GET", "/login")).status).toBe(200);
      await until("HAProxy marks node A down", 15_000, async () => (await state("node-a")).startsWith("DOWN"));
      for (let i = 0; i < 10; i++) expect((await visitor.send("GET", "/login")).status).toBe(200);
      expect(await logged([nodes.b!], "/login", b + 20)).toEqual([b + 20]);
      await startNode("a");
      await until("HAProxy takes node A back", 15_000, async () => (await state("node-a")) === "UP");
    }, 60_000);

    it("a patient session made through HAProxy stays valid on whichever node answers", async () => {
      await sessionOnEitherNode(
        lb,
        links.haproxy,
        PATIENTS.haproxy,
        (name) => until(`HAProxy marks node ${name} down`, 15_000, async () => (await state(`node-${name}`)).startsWith("DOWN")),
        (name) => until(`HAProxy takes node ${name} back`, 15_000, async () => (await state(`node-${name}`)) === "UP"),
      );
    }, 120_000);
  });

  describe("nginx", () => {
    let lb: Balancer;

    beforeAll(async () => {
      const block = await docBlock("# nginx: praxmail portal");
      const site = fill(block, [
        ["listen 443 ssl;", `listen 127.0.0.1:${ports.nginx} ssl;`],
        ["/etc/nginx/portal.crt", join(dir, "portal.crt")],
        ["/etc/nginx/portal.key", join(dir, "portal.key")],
        ["10.0.0.11:8080", `127.0.0.1:${ports.httpA}`],
        ["10.0.0.12:8080", `127.0.0.1:${ports.httpB}`],
      ]);
      // What Debian's nginx.conf does around conf.d/, with pid, logs and temp files in the temp dir.
      const tmp = join(dir, "nginx");
      await mkdir(tmp);
      const temps = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `    ${t}_temp_path ${join(tmp, t)};`).join("\n");
      await writeFile(
        join(dir, "nginx.conf"),
        `daemon off;\npid ${join(tmp, "nginx.pid")};\nerror_log ${join(tmp, "error.log")};\nevents { worker_connections 64; }\nhttp {\n    access_log ${join(tmp, "access.log")};\n${temps}\n${site}\n}\n`,
      );
      const p = startProcess("nginx", ["-p", tmp, "-e", join(tmp, "error.log"), "-c", join(dir, "nginx.conf")]);
      lb = { port: ports.nginx, ...p };
      const visitor = new Visitor(ports.nginx, ca);
      await until("nginx answers", 15_000, async () => (await visitor.send("GET", "/healthz").catch(() => ({ status: 0 }))).status === 200);
    }, 60_000);
    afterAll(async () => {
      await stopProcess(lb.child);
    });

    it("the documented block is a valid nginx configuration", async () => {
      const { stderr } = await run("nginx", ["-t", "-p", join(dir, "nginx"), "-e", join(dir, "nginx", "error.log"), "-c", join(dir, "nginx.conf")]);
      expect(stderr).toContain("test is successful");
      expect(stderr).not.toMatch(/\[warn\]|\[emerg\]/);
    });

    it("answers the portal over TLS through nginx, and spreads requests over both nodes", async () => {
      const visitor = new Visitor(lb.port, ca);
      const both = [nodes.a!, nodes.b!];
      const [a = 0, b = 0] = both.map((n) => requestsTo(n, "/login"));
      for (let i = 0; i < 10; i++) {
        const page = await visitor.send("GET", "/login");
        expect(page.status).toBe(200);
        expect(page.body).toContain('id="login-key"');
      }
      const [a2 = 0, b2 = 0] = await logged(both, "/login", a + b + 10);
      expect(a2 - a).toBeGreaterThanOrEqual(4);
      expect(b2 - b).toBeGreaterThanOrEqual(4);
    });

    it("limits two patients at different addresses separately, and a forged X-Forwarded-For changes neither", async () => {
      await limitedPerClient(lb.port, ca, "127.0.0.4", "127.0.0.5");
    }, 60_000);

    it("takes a stopped node out, and every request still succeeds", async () => {
      const visitor = new Visitor(lb.port, ca);
      await stopNode("a");
      const b = requestsTo(nodes.b!, "/login");
      for (let i = 0; i < 10; i++) expect((await visitor.send("GET", "/login")).status).toBe(200);
      expect(await logged([nodes.b!], "/login", b + 10)).toEqual([b + 10]);
      // nginx logged the refused connection and took node A out.
      expect(await readFile(join(dir, "nginx", "error.log"), "utf8")).toMatch(new RegExp(`connect\\(\\) failed \\(111: Connection refused\\) while connecting to upstream.*127\\.0\\.0\\.1:${ports.httpA}`));
      await startNode("a");
    }, 60_000);

    it("a patient session made through nginx stays valid on whichever node answers", async () => {
      // nginx finds a stopped node by trying it, and tries a node that is back after fail_timeout.
      const visitor = new Visitor(lb.port, ca);
      const back = (name: "a" | "b"): Promise<void> =>
        until(`nginx sends to node ${name} again`, 30_000, async () => {
          const before = requestsTo(nodes[name]!, "/login");
          await visitor.send("GET", "/login");
          await new Promise((r) => setTimeout(r, 100));
          return requestsTo(nodes[name]!, "/login") > before;
        });
      await sessionOnEitherNode(lb, links.nginx, PATIENTS.nginx, () => Promise.resolve(), back);
    }, 120_000);
  });

  it("a node ignores X-Forwarded-For from a peer that is not the balancer: a client that comes around it is limited by its own address", async () => {
    expect(await resetsOverTheLimit(new Visitor(ports.httpA, null, "127.0.0.6"))).toEqual(LIMITED);
  }, 60_000);

  describe.runIf(needTool("postfix") && needRoot("a Postfix instance"))("Postfix with two relays", () => {
    let pf: TestPostfix | undefined;

    beforeAll(async () => {
      const block = await docBlock("# main.cf: two praxmail relays");
      const relays = fill(block, [
        ["[10.0.0.11]:2525", `[127.0.0.1]:${ports.smtpA}`],
        ["[10.0.0.12]:2525", `[127.0.0.1]:${ports.smtpB}`],
      ]);
      const [smtp = 0, reinject = 0, unused = 0] = await freePorts(3);
      // The test instance's milter lines are turned off, and its relayhost replaced by the block's.
      pf = await startPostfix(join(dir, "postfix"), { smtp, reinject, milter: unused, sink: unused }, `smtpd_milters =\nnon_smtpd_milters =\n${relays}`);
    }, 60_000);
    afterAll(async () => {
      await pf?.stop();
    });

    it("with node A stopped, Postfix hands the mail to node B, which encrypts it", async () => {
      await stopNode("a");
      try {
        const pdf = randomBytes(4096);
        const r = await submit(pf!.smtpPort, "praxis@praxis-weber.example", ["carla@patient.example"], befundMail({ from: "praxis@praxis-weber.example", to: "carla@patient.example", messageId: "fallback-1@praxis-weber.example", attachment: pdf }));
        expect(r.code, r.text).toBe(250);
        await until("Postfix delivers the mail", 60_000, async () => /status=sent/.test(await pf!.log()));
        const log = await pf!.log();
        expect(log).toMatch(new RegExp(`connect to 127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${ports.smtpA}: Connection refused`));
        expect(log).toMatch(new RegExp(`relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${ports.smtpB}.*status=sent \\(250 .*1 encrypted`));
        // Node B's outgoing mail (its outbox, no upstream here) carries a link, not the PDF.
        const outbox = join(homes.b, "outbox");
        const mails = await Promise.all((await readdir(outbox)).map(async (f) => simpleParser(await readFile(join(outbox, f)))));
        const carla = mails.filter((m) => m.messageId === "<fallback-1@praxis-weber.example>");
        expect(carla).toHaveLength(1);
        expect(carla[0]!.text).toMatch(/\/d\/[A-Za-z0-9_-]{43}/);
        expect(carla[0]!.attachments.map((a) => a.contentType)).not.toContain("application/pdf");
        expect(carla[0]!.attachments.some((a) => a.content.includes(pdf))).toBe(false);
      } finally {
        await startNode("a");
      }
    }, 120_000);
  });

  describe.runIf(needTool("postfix") && needRoot("a Postfix instance"))("Postfix with two milters", () => {
    let pf: TestPostfix | undefined;
    let sink: Sink | undefined;
    let next = 0;

    /** Sends a level-3 mail with a PDF through Postfix; returns its reply and what it carried. */
    async function send(): Promise<{ code: number; text: string; pdf: Buffer; messageId: string }> {
      const pdf = randomBytes(4096);
      const messageId = `milter-${next++}@praxis-weber.example`;
      const r = await submit(pf!.smtpPort, "praxis@praxis-weber.example", ["dora@patient.example"], befundMail({ from: "praxis@praxis-weber.example", to: "dora@patient.example", messageId, attachment: pdf }));
      return { ...r, pdf, messageId };
    }

    /** The delivered copy of a mail: a link instead of the PDF, and no byte of it. */
    async function delivered(sent: { pdf: Buffer; messageId: string }): Promise<void> {
      await until("the sink gets the mail", 60_000, () => Promise.resolve(sink!.messages.some((m) => m.mail.messageId === `<${sent.messageId}>`)));
      const copies = sink!.messages.filter((m) => m.mail.messageId === `<${sent.messageId}>`);
      expect(copies).toHaveLength(1);
      expect(copies[0]!.mail.text).toMatch(/\/d\/[A-Za-z0-9_-]{43}/);
      expect(copies[0]!.mail.attachments).toEqual([]);
      expect(copies[0]!.raw.includes(Buffer.from(sent.pdf.toString("base64").slice(0, 40)))).toBe(false);
    }

    /** @returns dora's deliveries, as the shared backend lists them. */
    async function deliveries(): Promise<number> {
      const r = await praxmail(["list", "deliveries", "--json", "--home", homes.b], { env });
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { recipient: string }[]).filter((d) => d.recipient === "dora@patient.example").length;
    }

    beforeAll(async () => {
      sink = await startSink();
      const [smtp = 0, reinject = 0, milterA = 0, milterB = 0, unused = 0] = await freePorts(5);
      const block = await docBlock("# main.cf: two praxmail milters");
      const milters = fill(block, [
        ["inet:10.0.0.11:8891", `inet:127.0.0.1:${milterA}`],
        ["inet:10.0.0.12:8891", `inet:127.0.0.1:${milterB}`],
      ]);
      // The test instance's single-milter lines come first; the block's settings replace them.
      pf = await startPostfix(join(dir, "postfix-milters"), { smtp, reinject, milter: unused, sink: sink.port }, milters);
      // Both nodes as milters, their upstream the Postfix host's reinjection smtpd.
      await Promise.all([stopNode("a"), stopNode("b")]);
      for (const name of ["a", "b"] as const) await patchConfig(homes[name], { upstream: `smtp://127.0.0.1:${reinject}` });
      serveFlags.a = [...serveFlags.a, "--milter", `127.0.0.1:${milterA}`];
      serveFlags.b = [...serveFlags.b, "--milter", `127.0.0.1:${milterB}`];
      await startNode("a");
      await startNode("b");
    }, 60_000);
    afterAll(async () => {
      await pf?.stop();
      await sink?.close();
    });

    it("with both nodes up, node A rewrites the mail and node B passes it on: one delivery, one mail", async () => {
      const sent = await send();
      expect(sent.code, sent.text).toBe(250);
      await delivered(sent);
      expect(await deliveries()).toBe(1);
    }, 120_000);

    it("with node A down, node B rewrites the mail", async () => {
      await stopNode("a");
      try {
        const sent = await send();
        expect(sent.code, sent.text).toBe(250);
        await delivered(sent);
        expect(await deliveries()).toBe(2);
      } finally {
        await startNode("a");
      }
    }, 120_000);

    it("with both nodes down, Postfix defers the mail with 451 and nothing leaves", async () => {
      await Promise.all([stopNode("a"), stopNode("b")]);
      try {
        const before = sink!.messages.length;
        const sent = await send();
        expect(sent.code, sent.text).toBe(451);
        await new Promise((r) => setTimeout(r, 2000));
        expect(sink!.messages.length).toBe(before);
      } finally {
        await startNode("a");
        await startNode("b");
      }
    }, 120_000);
  });
});

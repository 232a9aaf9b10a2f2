// Several `praxmail serve` nodes on one shared backend: one PostgreSQL and one Swift S3, as
// an admin runs them behind a load balancer. Node 1 is made by `praxmail init --database
// --blobs`; every further node gets a home with copies of node 1's config.json, practice
// identity file and portal-signing.key, which is how an admin adds a node.
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { openSharedStore, type Store } from "../../src/store/index.js";
import { praxmail, type Run } from "./cli.js";
import { startPostgres, type TestPostgres } from "./postgres.js";
import { patchConfig } from "./relay.js";
import { startS3, type TestS3 } from "./s3.js";
import { freePorts, startServe, type Served } from "./serve.js";

/** The files of node 1's home that make another home a node of the same practice. */
const NODE_FILES = ["config.json", "practice-identity.txt", "portal-signing.key"] as const;
/** The bucket and the prefix every node's blobs live under. */
const BUCKET = "praxis";
const PREFIX = "nodes";

/** One `praxmail serve` of the cluster, on ports it keeps across restarts. */
export interface ClusterNode {
  readonly home: string;
  readonly smtpPort: number;
  readonly httpPort: number;
  /** http://127.0.0.1:httpPort */
  readonly portalUrl: string;
  /** The running process, or null after kill(). */
  readonly served: Served | null;
  /**
   * Sends a signal and waits until the process is gone.
   *
   * @param signal - SIGKILL for a crash, SIGTERM for a clean stop.
   * @returns Its exit code (null when killed by the signal).
   */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** Starts serve again on the same ports (after kill()). */
  restart(): Promise<void>;
  /** What the running or last process wrote on stdout (JSON log lines) and stderr. */
  output(): string;
}

/** A running cluster. */
export interface Cluster {
  readonly nodes: ClusterNode[];
  readonly pg: TestPostgres;
  readonly s3: TestS3;
  /** The database URL in config.json. */
  readonly database: string;
  readonly bucket: string;
  /** Where in the bucket the blobs are: `${prefix}blobs/…`. */
  readonly prefix: string;
  /** The AWS_* settings every node and command needs for the bucket. */
  readonly env: Record<string, string>;
  /**
   * Runs the real binary as an admin on a node's machine.
   *
   * @param node - Whose home (index into nodes).
   * @param args - The command and its arguments; `--home` is added.
   * @returns Exit code and output.
   */
  praxmail(node: number, args: readonly string[]): Promise<Run>;
  /** @returns The shared store, opened in the test's process as a node opens it; close it after use. */
  store(): Promise<Store>;
  /** Stops every node, then the engines. */
  stop(): Promise<void>;
}

/** What {@link startCluster} sets up. */
export interface ClusterOptions {
  /** How many nodes (at least 1). */
  readonly nodes: number;
  /** The upstream SMTP URL every node sends to (config `upstream`); default: each node's outbox. */
  readonly upstream?: string;
}

/**
 * Starts PostgreSQL, Swift S3 and the nodes in dir.
 *
 * @param dir - An empty folder with a short path (PostgreSQL's socket lives under it).
 * @param opts - Number of nodes and the upstream.
 * @returns The running cluster; stop() it after the tests.
 * @throws If an engine or a node does not start (what is running is stopped first).
 */
export async function startCluster(dir: string, opts: ClusterOptions): Promise<Cluster> {
  const started = await Promise.allSettled([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
  const [pgStart, s3Start] = started;
  if (pgStart.status === "rejected" || s3Start.status === "rejected") {
    await Promise.all(started.flatMap((s) => (s.status === "fulfilled" ? [s.value.stop()] : [])));
    throw [pgStart, s3Start].flatMap((s) => (s.status === "rejected" ? [s.reason as Error] : []))[0] as Error;
  }
  const pg = pgStart.value;
  const s3 = s3Start.value;
  const nodes: ClusterNode[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.kill("SIGTERM")));
    await Promise.all([pg.stop().catch(() => undefined), s3.stop()]);
  };
  try {
    await s3.bucket(BUCKET);
    const database = await pg.database("praxis");
    const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint };
    const ports = await freePorts(2 * opts.nodes);
    const homes = Array.from({ length: opts.nodes }, (_, i) => join(dir, `node${String(i + 1)}`));
    const [first = ""] = homes;
    const init = await praxmail(
      ["init", "--home", first, "--yes", "--no-keyring", "--practice-name", "Praxis Dr. Weber", "--practice-email", "praxis@praxis-weber.example", "--recipient-type", "x25519",
        "--portal-url", `http://127.0.0.1:${String(ports[1])}`, "--database", database, "--blobs", `s3://${BUCKET}/${PREFIX}`],
      { env },
    );
    if (init.code !== 0) throw new Error(`init of node 1 failed: ${init.stderr}`);
    if (opts.upstream !== undefined) await patchConfig(first, { upstream: opts.upstream });
    for (const home of homes.slice(1)) {
      await mkdir(home, { mode: 0o700 });
      for (const f of NODE_FILES) await copyFile(join(first, f), join(home, f));
    }
    for (const [i, home] of homes.entries()) nodes.push(clusterNode(home, ports[2 * i] ?? 0, ports[2 * i + 1] ?? 0, env));
    await Promise.all(nodes.map((n) => n.restart()));
    return {
      nodes,
      pg,
      s3,
      database,
      bucket: BUCKET,
      prefix: `${PREFIX}/`,
      env,
      praxmail: (node, args) => praxmail([...args, "--home", homes[node] ?? ""], { env }),
      store: () => openSharedStore(database, `s3://${BUCKET}/${PREFIX}`, { endpoint: s3.endpoint, region: s3.region, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } }),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

function clusterNode(home: string, smtpPort: number, httpPort: number, env: Record<string, string>): ClusterNode {
  let served: Served | null = null;
  let last = "";
  return {
    home,
    smtpPort,
    httpPort,
    portalUrl: `http://127.0.0.1:${String(httpPort)}`,
    get served() {
      return served;
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      const s = served;
      if (!s) return null;
      served = null;
      const exited = new Promise<number | null>((resolve) => s.child.once("exit", resolve));
      s.child.kill(signal);
      const code = s.child.exitCode ?? (s.child.signalCode ? null : await exited);
      last = s.stdout() + s.stderr();
      return code;
    },
    async restart() {
      if (served) throw new Error(`node ${home} is running`);
      served = await startServe(home, httpPort, ["--smtp", `127.0.0.1:${String(smtpPort)}`], env);
    },
    output: () => (served ? served.stdout() + served.stderr() : last),
  };
}

/**
 * A patient's browser over real HTTP, in front of several nodes as behind a load balancer:
 * one cookie jar for all of them, the CSRF token of the last page, redirects not followed.
 */
export class WebClient {
  readonly cookies = new Map<string, string>();
  csrf = "";

  private async keep(res: Response): Promise<{ status: number; body: string; location: string | null; bytes: Buffer }> {
    for (const c of res.headers.getSetCookie()) {
      const [pair = ""] = c.split(";");
      const [k = "", v = ""] = pair.split("=");
      if (/Max-Age=0/i.test(c)) this.cookies.delete(k);
      else this.cookies.set(k, v);
    }
    const bytes = Buffer.from(await res.arrayBuffer());
    const body = bytes.toString("utf8");
    const m = /name="_csrf" value="([^"]+)"|data-csrf="([^"]+)"/.exec(body);
    if (m) this.csrf = m[1] ?? m[2] ?? "";
    return { status: res.status, body, location: res.headers.get("location"), bytes };
  }

  private headers(more: Record<string, string> = {}): Record<string, string> {
    return { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; "), "accept-language": "de-DE,de;q=0.9", ...more };
  }

  /**
   * @param url - An absolute URL on some node.
   * @returns Status, body, Location and the raw bytes.
   */
  async get(url: string): Promise<{ status: number; body: string; location: string | null; bytes: Buffer }> {
    return this.keep(await fetch(url, { headers: this.headers(), redirect: "manual" }));
  }

  /**
   * @param url - An absolute URL on some node.
   * @param form - The form's fields (add `_csrf` yourself).
   * @returns Status, body, Location and the raw bytes.
   */
  async post(url: string, form: Record<string, string>): Promise<{ status: number; body: string; location: string | null; bytes: Buffer }> {
    const headers = this.headers({ "content-type": "application/x-www-form-urlencoded" });
    return this.keep(await fetch(url, { method: "POST", headers, body: new URLSearchParams(form).toString(), redirect: "manual" }));
  }

  /**
   * Posts JSON as the portal's script does (CSRF token in a header).
   *
   * @param url - An absolute URL on some node.
   * @param body - The value to send.
   * @returns Status, body, Location and the raw bytes.
   */
  async json(url: string, body: unknown): Promise<{ status: number; body: string; location: string | null; bytes: Buffer }> {
    const headers = this.headers({ "content-type": "application/json", "x-csrf-token": this.csrf });
    return this.keep(await fetch(url, { method: "POST", headers, body: JSON.stringify(body), redirect: "manual" }));
  }
}

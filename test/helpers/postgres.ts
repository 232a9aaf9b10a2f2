// A throw-away PostgreSQL cluster for tests: Debian's postgresql package (15 or newer), its
// own data folder, socket folder and loopback port, password login over TCP (scram-sha-256),
// torn down by stop(). Nothing of the machine's own clusters is touched.
import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chmod, chown, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { freePort } from "./serve.js";

const run = promisify(execFile);
const ROOT = "/usr/lib/postgresql";

/** A running test cluster. */
export interface TestPostgres {
  /** postgres://praxmail:…@127.0.0.1:PORT/praxmail, the cluster's first database. */
  readonly url: string;
  readonly version: number;
  /**
   * @param name - A database name ([a-z0-9_]).
   * @returns The URL of a new, empty database owned by the test role.
   */
  database(name: string): Promise<string>;
  /** Stops the cluster (fast shutdown) and waits until it is gone. */
  stop(): Promise<void>;
  /** Starts a stopped cluster again, on the same port and data, and waits until it accepts connections. */
  start(): Promise<void>;
}

/** @returns The bin folder of the newest installed PostgreSQL, or null. */
export function postgresBin(): string | null {
  if (!existsSync(ROOT)) return null;
  const versions = readdirSync(ROOT)
    .map(Number)
    .filter((v) => v >= 15 && existsSync(join(ROOT, String(v), "bin", "initdb")))
    .sort((a, b) => b - a);
  return versions[0] === undefined ? null : join(ROOT, String(versions[0]), "bin");
}

/**
 * Starts a cluster in dir. PostgreSQL refuses to run as root, so as root its tools run as
 * the package's `postgres` user, and dir (and the folder it is in) is made searchable for it.
 *
 * @param dir - An empty folder with a short path (the socket path must stay under 107 bytes).
 * @returns The running cluster.
 * @throws If PostgreSQL 15+ is not installed or does not start (with its log's tail).
 */
export async function startPostgres(dir: string): Promise<TestPostgres> {
  const bin = postgresBin();
  if (!bin) throw new Error("PostgreSQL 15+ is not installed (apt-get install postgresql)");
  const asRoot = process.getuid?.() === 0;
  const as = async (cmd: string, args: readonly string[]): Promise<string> =>
    (await run(asRoot ? "runuser" : join(bin, cmd), asRoot ? ["-u", "postgres", "--", join(bin, cmd), ...args] : args, { maxBuffer: 1 << 20 })).stdout;
  const data = join(dir, "data");
  const sock = join(dir, "sock");
  const log = join(dir, "postgres.log");
  await mkdir(data, { recursive: true, mode: 0o700 });
  await mkdir(sock, { recursive: true });
  await writeFile(log, "");
  if (asRoot) {
    const uid = Number((await run("id", ["-u", "postgres"])).stdout);
    const gid = Number((await run("id", ["-g", "postgres"])).stdout);
    await chmod(join(dir, ".."), 0o755);
    await chmod(dir, 0o755);
    for (const p of [data, sock, log]) await chown(p, uid, gid);
  }
  await as("initdb", ["-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"]);
  // A port chosen free can be taken by another process before PostgreSQL binds it: try another.
  let port = 0;
  // Durability of the test cluster itself is not under test: no fsync, for speed.
  const options = (p: number): string => `-p ${p} -k ${sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
  const start = async (p: number): Promise<void> => {
    await as("pg_ctl", ["-D", data, "-l", log, "-w", "-t", "60", "-o", options(p), "start"]);
  };
  for (let attempt = 1; port === 0; attempt++) {
    const candidate = await freePort();
    try {
      await start(candidate);
      port = candidate;
    } catch (e) {
      const { stdout } = await run("tail", ["-n", "20", log]);
      if (attempt === 3 || !stdout.includes("Address already in use")) throw new Error(`PostgreSQL did not start:\n${stdout}`, { cause: e });
    }
  }
  const psql = (sql: string): Promise<string> => as("psql", ["-h", sock, "-p", String(port), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAtc", sql]);
  const password = randomBytes(18).toString("hex");
  await psql(`CREATE ROLE praxmail LOGIN PASSWORD '${password}'`);
  const version = Number(await psql("SHOW server_version_num")) / 10000;
  const database = async (name: string): Promise<string> => {
    if (!/^[a-z][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a database name: ${name}`);
    await psql(`CREATE DATABASE ${name} OWNER praxmail`);
    return `postgres://praxmail:${password}@127.0.0.1:${port}/${name}`;
  };
  return {
    url: await database("praxmail"),
    version: Math.floor(version),
    database,
    async stop() {
      await as("pg_ctl", ["-D", data, "-m", "fast", "-w", "-t", "60", "stop"]);
    },
    start: () => start(port),
  };
}

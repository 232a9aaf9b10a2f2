// A throw-away S3 endpoint for tests: Debian's OpenStack Swift (2.30) with its s3api
// middleware and tempauth credentials, one replica on a plain folder, every server on a
// loopback port of its own, in one Python process (test/helpers/swift-s3.py). stop() ends it.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { userInfo } from "node:os";
import { CreateBucketCommand, type S3Client } from "@aws-sdk/client-s3";
import { s3Client } from "../../src/store/s3/client.js";
import { freePorts } from "./serve.js";

/** Debian's python3: a python3 earlier on PATH (pyenv) cannot import Debian's swift. */
const PYTHON = "/usr/bin/python3";
/** From test/helpers/ or from its compiled copy under .bench-dist/ (the bench's shared section). */
const LAUNCHER = [join(import.meta.dirname, "swift-s3.py"), resolve(import.meta.dirname, "../../../test/helpers/swift-s3.py")].find((p) => existsSync(p)) ?? join(import.meta.dirname, "swift-s3.py");
const REGION = "us-east-1";

/** A running test S3 endpoint. */
export interface TestS3 {
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** A client for the endpoint (the shared backend's own, src/store/s3/client.ts). */
  client(credentials?: { accessKeyId: string; secretAccessKey: string }): S3Client;
  /**
   * @param name - A DNS-compliant bucket name.
   * @returns The name, once the bucket exists.
   */
  bucket(name: string): Promise<string>;
  /**
   * Sets or removes a byte quota on a bucket (Swift's container quota, as a full quota of a
   * hosted object store): past it, the bucket refuses every write with content (413,
   * EntityTooLarge) and still serves reads, listings and deletes.
   *
   * @param bucket - The bucket.
   * @param bytes - The quota; 0 refuses every write; null removes it.
   */
  quota(bucket: string, bytes: number | null): Promise<void>;
  /** @returns The pids of its processes (swift, memcached). */
  pids(): number[];
  stop(): Promise<void>;
}

/** @returns Whether Debian's swift packages are installed. */
export function hasSwift(): boolean {
  return existsSync("/usr/bin/swift-proxy-server") && existsSync("/usr/lib/python3/dist-packages/swift");
}

function backendConf(name: string, port: number, dir: string, user: string): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = ${user}
swift_dir = ${join(dir, "etc")}
devices = ${join(dir, "srv")}
mount_check = false
recon_cache_path = ${join(dir, "cache")}
log_name = ${name}-server

[pipeline:main]
pipeline = healthcheck ${name}-server

[app:${name}-server]
use = egg:swift#${name}

[filter:healthcheck]
use = egg:swift#healthcheck
`;
}

function proxyConf(port: number, dir: string, user: string, secret: string, memcached: number): string {
  const filters = ["catch_errors", "gatekeeper", "healthcheck", "proxy_logging", "listing_formats", "bulk", "copy", "container_quotas", "slo", "dlo"];
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = ${user}
swift_dir = ${join(dir, "etc")}
log_name = proxy-server

[pipeline:main]
# s3api before the auth filter (tempauth); slo after s3api, or multipart uploads are off.
# container_quotas: a bucket can be made to refuse writes (TestS3.quota).
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy container_quotas slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
# the first bucket PUT creates the Swift account
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = ${REGION}

[filter:tempauth]
use = egg:swift#tempauth
# S3 access key "test:tester" (account:user), secret = this password; .admin may create buckets
user_test_tester = ${secret} .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:${memcached}
${filters.map((f) => `\n[filter:${f.replace("_logging", "-logging")}]\nuse = egg:swift#${f}`).join("\n")}
`;
}

async function healthy(port: number): Promise<boolean> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/healthcheck`, { signal: AbortSignal.timeout(2000) });
    return (await r.text()) === "OK";
  } catch {
    return false;
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/**
 * Starts Swift with s3api in dir and creates no bucket yet (see {@link TestS3.bucket}).
 *
 * @param dir - An empty folder on a filesystem with user xattrs.
 * @returns The running endpoint.
 * @throws If swift is missing or does not come up within 150 s (with its log's tail).
 */
export async function startS3(dir: string): Promise<TestS3> {
  if (!hasSwift()) throw new Error("OpenStack Swift is not installed (apt-get install swift-proxy swift-object swift-container swift-account python3-swift memcached)");
  // A port chosen free can be taken by another process before swift binds it: start afresh.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startSwift(dir);
    } catch (e) {
      if (attempt === 3 || !(e as Error).message.includes("Address already in use")) throw e;
      await rm(dir, { recursive: true, force: true });
    }
  }
}

async function startSwift(dir: string): Promise<TestS3> {
  for (const d of ["etc", "srv/d1", "cache"]) await mkdir(join(dir, d), { recursive: true });
  const user = userInfo().username;
  const secret = randomBytes(18).toString("hex");
  const [proxy = 0, account = 0, container = 0, object = 0, memcached = 0] = await freePorts(5);
  const etc = join(dir, "etc");
  await writeFile(join(etc, "account-server.conf"), backendConf("account", account, dir, user));
  await writeFile(join(etc, "container-server.conf"), backendConf("container", container, dir, user));
  await writeFile(join(etc, "object-server.conf"), backendConf("object", object, dir, user));
  await writeFile(join(etc, "proxy-server.conf"), proxyConf(proxy, dir, user, secret, memcached));
  const logFile = join(dir, "swift.log");
  const children: ChildProcess[] = [];
  let log = "";
  const stop = async (): Promise<void> => {
    await Promise.all(children.map(stopChild));
    await writeFile(logFile, log);
  };
  // The cache filter is required by tempauth; without a memcached it only logs refusals.
  if (existsSync("/usr/bin/memcached")) {
    children.push(spawn("/usr/bin/memcached", ["-u", user, "-l", "127.0.0.1", "-p", String(memcached), "-U", "0", "-m", "32"], { stdio: "ignore" }));
  }
  const swift = spawn(PYTHON, [LAUNCHER, etc], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(swift);
  swift.stdout.setEncoding("utf8").on("data", (d: string) => (log += d));
  swift.stderr.setEncoding("utf8").on("data", (d: string) => (log += d));
  const deadline = Date.now() + 150_000;
  try {
    for (const port of [account, container, object, proxy]) {
      while (!(await healthy(port))) {
        if (swift.exitCode !== null) throw new Error(`swift exited with ${swift.exitCode}`);
        if (Date.now() > deadline) throw new Error(`swift (port ${port}) not healthy after 150 s`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (e) {
    await stop();
    throw new Error(`the test S3 endpoint did not start: ${(e as Error).message}\n${log.split("\n").slice(-15).join("\n")}`, { cause: e });
  }
  const endpoint = `http://127.0.0.1:${proxy}`;
  const own = { accessKeyId: "test:tester", secretAccessKey: secret };
  const s3 = s3Client({ endpoint, region: REGION, credentials: own });
  return {
    endpoint,
    region: REGION,
    ...own,
    client: (credentials = own) => s3Client({ endpoint, region: REGION, credentials }),
    async bucket(name) {
      await s3.send(new CreateBucketCommand({ Bucket: name }));
      return name;
    },
    async quota(bucket, bytes) {
      // Swift's own API, logged in through tempauth with the same credentials.
      const auth = await fetch(`${endpoint}/auth/v1.0`, { headers: { "x-auth-user": own.accessKeyId, "x-auth-key": own.secretAccessKey } });
      const [url, token] = [auth.headers.get("x-storage-url"), auth.headers.get("x-auth-token")];
      if (!auth.ok || !url || !token) throw new Error(`swift login failed: ${auth.status}`);
      const quota: Record<string, string> = bytes === null ? { "x-remove-container-meta-quota-bytes": "1" } : { "x-container-meta-quota-bytes": String(bytes) };
      const r = await fetch(`${url}/${bucket}`, { method: "POST", headers: { "x-auth-token": token, ...quota } });
      if (r.status !== 204) throw new Error(`setting the quota of ${bucket} failed: ${r.status} ${await r.text()}`);
    },
    pids: () => children.flatMap((c) => (c.pid === undefined ? [] : [c.pid])),
    async stop() {
      s3.destroy();
      await stop();
    },
  };
}

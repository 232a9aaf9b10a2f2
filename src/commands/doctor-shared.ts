// doctor's checks of the shared backend: the database (version, schema, round trip) and the
// bucket (write, read back, delete a probe object). The facts come from src/store; the
// verdicts, thresholds and hints are here. No line ever shows a password or an S3 secret.
import { PraxmailError, errorFields, sharedBackend, type Config } from "../core/index.js";
import { inspectDatabase, probeBlobs, type BucketProbe, type DatabaseFacts } from "../store/index.js";
import type { Check } from "./doctor.js";

/**
 * A round trip above this is a warning. Each write transaction of the shared backend makes
 * about ten round trips (BEGIN, the global write lock, reads, inserts, the audit row, COMMIT)
 * while it holds the one write lock that every node shares: at 20 ms that is about 200 ms
 * per transaction, so all nodes together write about five deliveries a second at most. On a
 * LAN or in one data centre the round trip is below 1 ms.
 */
export const LATENCY_WARN_MS = 20;

const ok = (name: string, reason: string): Check => ({ name, status: "ok", reason });
const fail = (name: string, reason: string, hint: string): Check => ({ name, status: "fail", reason, hint });
const skip = (name: string, reason: string): Check => ({ name, status: "skip", reason });

/** `host:port/database` of a database URL: never its user or password. */
function where(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || "5432"}${u.pathname}`;
}

/**
 * Why the database could not be asked: a network failure's errno (ECONNREFUSED), else the
 * server's first line ("password authentication failed for user …"), with the URL's password
 * blotted out should a driver ever echo it.
 */
function why(e: unknown, url: string): string {
  const f = errorFields(e);
  const password = decodeURIComponent(new URL(url).password);
  const text = typeof f.code === "string" && /^E[A-Z]+$/.test(f.code) ? f.code : f.message;
  return password === "" ? text : text.split(password).join("***");
}

async function databaseChecks(url: string, timeoutSeconds: number): Promise<Check[]> {
  const at = where(url);
  let found;
  try {
    found = await inspectDatabase(url, timeoutSeconds);
  } catch (e) {
    const needs = `needs the database at ${at}`;
    return [
      fail("database", `cannot reach the database at ${at}: ${why(e, url)}`, "check that PostgreSQL runs and answers there, and the user, password and database in PRAXMAIL_DATABASE or config.json"),
      skip("schema", needs),
      skip("latency", needs),
    ];
  }
  return judgeDatabase(at, found.facts, found.minMajor);
}

/**
 * The verdicts on what the database said about itself.
 *
 * @param at - `host:port/database`, for the lines.
 * @param facts - Version, schema versions and round trip.
 * @param minMajor - The oldest PostgreSQL supported.
 * @returns The database, schema and latency checks.
 */
export function judgeDatabase(at: string, facts: DatabaseFacts, minMajor: number): Check[] {
  const database =
    facts.major < minMajor
      ? fail("database", `${at} runs PostgreSQL ${facts.version}, older than ${minMajor}`, `praxmail needs PostgreSQL ${minMajor} or newer: upgrade the server (pg_upgrade), then run praxmail doctor again`)
      : ok("database", `${at} runs PostgreSQL ${facts.version}`);
  let schema: Check;
  if (facts.applied > facts.expected) {
    schema = fail("schema", `this node is older than the database: its schema is at migration ${facts.applied}, this praxmail knows ${facts.expected}`, "upgrade praxmail on this node to the release the other nodes run");
  } else if (facts.applied < facts.expected) {
    schema = fail("schema", `the database is behind: migration ${facts.applied} of ${facts.expected} applied`, "start praxmail serve (or run praxmail list) on this node: it migrates the database when it opens it, one node at a time");
  } else {
    schema = ok("schema", `migration ${facts.applied} of ${facts.expected} applied`);
  }
  const ms = facts.latencyMs.toFixed(1);
  const latency =
    facts.latencyMs > LATENCY_WARN_MS
      ? { name: "latency", status: "warn" as const, reason: `a query takes ${ms} ms there and back, more than ${LATENCY_WARN_MS} ms`, hint: "run the nodes near the database: every write holds the one lock all nodes share for about ten round trips" }
      : ok("latency", `a query takes ${ms} ms there and back`);
  return [database, schema, latency];
}

const STEP_WORDS = { write: "cannot write to", read: "cannot read back from", delete: "cannot delete from" } as const;

function bucketCheck(blobs: string, p: BucketProbe): Check {
  if (p.ok) return ok("bucket", `${blobs}: wrote, read back and deleted a ${p.bytes}-byte probe object (${Math.round(p.ms)} ms)`);
  const reason = p.code === "mismatch" ? `${blobs}: the probe object read back differs from what was written` : `${STEP_WORDS[p.step]} ${blobs}: ${p.code}`;
  const left = p.step === "write" ? "" : `; delete ${p.key} by hand if it is still there`;
  const hint =
    p.code === "NoSuchBucket"
      ? "create the bucket, or correct the bucket in PRAXMAIL_BLOBS or config.json"
      : /^E[A-Z]+$|Timeout|Abort/.test(p.code)
        ? "check AWS_ENDPOINT_URL_S3 and that the S3 server answers there"
        : `check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy: each node needs PutObject, GetObject and DeleteObject under the prefix${left}`;
  return fail("bucket", reason, hint);
}

/**
 * The shared backend's checks, or none on an embedded home.
 *
 * @param config - The home's configuration.
 * @param env - The environment (PRAXMAIL_DATABASE and PRAXMAIL_BLOBS override config.json).
 * @param timeoutSeconds - How long to wait for each answer.
 * @returns Which backend, and the checks: database, schema, latency and bucket.
 */
export async function sharedChecks(config: Config, env: NodeJS.ProcessEnv, timeoutSeconds: number): Promise<{ backend: "embedded" | "shared"; checks: Check[] }> {
  let shared;
  try {
    shared = sharedBackend(config, env);
  } catch (e) {
    if (!(e instanceof PraxmailError)) throw e;
    return { backend: "shared", checks: [fail("database", e.message, e.hint ?? "set PRAXMAIL_DATABASE and PRAXMAIL_BLOBS together"), skip("bucket", e.message)] };
  }
  if (shared === null) return { backend: "embedded", checks: [] };
  const [database, probe] = await Promise.all([databaseChecks(shared.database, timeoutSeconds), probeBlobs(shared.blobs, timeoutSeconds)]);
  return { backend: "shared", checks: [...database, bucketCheck(shared.blobs, probe)] };
}

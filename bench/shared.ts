// Shared-backend benchmark (issue 14, "Measure"): the real `praxmail serve` and `praxmail
// approve` on PostgreSQL + S3 (a throw-away cluster and Swift's s3api, started here by the
// tests' own helpers) against the same on the embedded backend, in the same run:
// - relay: level-3 throughput, one node shared against one node embedded, and two nodes
//   (two serve processes on one backend, the clients split between them) against one;
// - portal: p99 of a logged-in patient's delivery list and delivery page;
// - approve: 1,000 pending deliveries on PostgreSQL against SQLite.
// PostgreSQL's own counter of committed transactions (pg_stat_database) gives the round trips
// behind the figures: transactions per relayed mail and per approved delivery.
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { startPostgres, type TestPostgres } from "../test/helpers/postgres.js";
import { startS3, type TestS3 } from "../test/helpers/s3.js";
import { buildHome, checkApproved, resetPatient, runApprove, type Home } from "./approve.js";
import { benchMail, countingSink, initBenchHome } from "./parts.js";
import { pageLoad, praxmail, prepare, serve, type Served } from "./portal.js";
import { load } from "./relay.js";
import { median, percentile, round, type Figure } from "./stats.js";

const MiB = 1024 * 1024;
type Log = (s: string) => void;
type Env = Record<string, string>;

/** Relay load: 8 clients, 24 level-3 mails of 1 MiB per figure and run. */
const CLIENTS = 8;
const MAILS = 24;
/** Portal load: requests per page, backend and run, with autocannon's 10 connections. */
const REQUESTS = 300;
/** The files node B copies from node A (docs/scale-out.md, "Adding a node"). */
const NODE_FILES = ["config.json", "practice-identity.txt", "portal-signing.key"] as const;

/** The running engines and how a node reaches them. */
interface Backend {
  readonly pg: TestPostgres;
  readonly s3: TestS3;
  /** AWS_* for the bucket. */
  readonly env: Env;
  /**
   * @param name - Database and bucket name ([a-z0-9]).
   * @returns `init` flags for a fresh database and bucket.
   */
  fresh(name: string): Promise<{ database: string; args: string[] }>;
}

/**
 * Makes a second node: a home with copies of the first node's config, identity and
 * portal-signing key, mode 0600.
 *
 * @param from - Node A's home.
 * @param to - Node B's home (created).
 */
async function copyNode(from: string, to: string): Promise<void> {
  await mkdir(to, { mode: 0o700 });
  for (const f of NODE_FILES) await copyFile(join(from, f), join(to, f));
}

/**
 * Counts PostgreSQL's committed transactions in one database while `work` runs; `work` must
 * end the processes it started (a backend reports its counts when it exits, else up to 10 s
 * late), and nothing else may use the database meanwhile.
 *
 * @param database - The database URL.
 * @param work - The work.
 * @returns Commits during the work (this reading's own two excluded).
 */
async function commits(database: string, work: () => Promise<void>): Promise<number> {
  const read = async (): Promise<number> => {
    const sql = postgres(database, { max: 1, onnotice: () => undefined });
    try {
      const [row] = await sql<{ n: string }[]>`SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = current_database()`;
      return Number(row?.n);
    } finally {
      await sql.end();
    }
  };
  const before = await read();
  await work();
  // The reading's own backend reports its one transaction when it exits.
  await new Promise((r) => setTimeout(r, 200));
  return (await read()) - before - 1;
}

/** What praxmail's connections were doing, sampled from pg_stat_activity. */
interface Waits {
  /** Connection samples inside a transaction (active or idle in transaction). */
  readonly inTransaction: number;
  /** Of those, waiting for the write transactions' advisory lock. */
  readonly lockWait: number;
  /** Of those, idle in transaction: the node works (or waits for S3) with the transaction open. */
  readonly nodeSide: number;
}

/**
 * Samples every 20 ms what praxmail's connections to a database do while `work` runs.
 *
 * @param database - The database URL.
 * @param work - The work.
 * @returns The counts.
 */
async function sampleWaits(database: string, work: () => Promise<void>): Promise<Waits> {
  const sql = postgres(database, { max: 1, onnotice: () => undefined });
  const w = { inTransaction: 0, lockWait: 0, nodeSide: 0 };
  const stop = { now: false };
  const sampler = (async () => {
    while (!stop.now) {
      const rows = await sql<{ state: string; wait: string | null }[]>`
        SELECT state, wait_event_type || '/' || wait_event AS wait FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'praxmail' AND pid <> pg_backend_pid()`;
      for (const r of rows) {
        if (r.state === "idle in transaction") {
          w.inTransaction++;
          w.nodeSide++;
        } else if (r.state === "active") {
          w.inTransaction++;
          if (r.wait === "Lock/advisory") w.lockWait++;
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    await work();
  } finally {
    stop.now = true;
    await sampler;
    await sql.end();
  }
  return w;
}

/**
 * Times one PostgreSQL round trip (`SELECT 1` on a connection of its own) again and again
 * while `work` runs: what each of a page's queries costs at least under that load.
 *
 * @param database - The database URL.
 * @param work - The work.
 * @param into - Gets the round trips' times (ms).
 * @returns What `work` returned.
 */
async function roundTrips<T>(database: string, work: () => Promise<T>, into: number[]): Promise<T> {
  const sql = postgres(database, { max: 1, onnotice: () => undefined });
  await sql`SELECT 1`;
  const stop = { now: false };
  const pinger = (async () => {
    while (!stop.now) {
      const t0 = performance.now();
      await sql`SELECT 1`;
      into.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    return await work();
  } finally {
    stop.now = true;
    await pinger;
    await sql.end();
  }
}

/** Relay figures: level-3 throughput embedded, shared, and on two shared nodes. */
async function relayPart(backend: Backend, dir: string, runs: number, log: Log): Promise<Figure[]> {
  const sink = await countingSink();
  const nodes: Served[] = [];
  try {
    const embedded = join(dir, "relay-embedded");
    const a = join(dir, "relay-a");
    const b = join(dir, "relay-b");
    await initBenchHome(embedded, sink.url);
    const { database, args } = await backend.fresh("relay");
    await initBenchHome(a, sink.url, args);
    await copyNode(a, b);
    const pdf = randomBytes(MiB);
    let id = 0;
    const mail = (): Buffer => benchMail("[S3] Befund", pdf, `s${id++}`);

    // Transactions per mail: a serve that relays MAILS mails, less one that relays none.
    const perServe = async (mails: number): Promise<number> =>
      commits(database, async () => {
        const s = await serve(a, 0, backend.env);
        try {
          if (mails > 0) await load(s.smtpPort, mail, mails, CLIENTS);
        } finally {
          await s.stop();
        }
      });
    const idle = await perServe(0);
    const perMail = ((await perServe(MAILS)) - idle) / MAILS;
    log(`  shared relay: ${round(perMail)} PostgreSQL transactions per level-3 mail (a serve start and stop alone: ${idle})`);

    const [e, sa, sb] = [await serve(embedded, 0), await serve(a, 0, backend.env), await serve(b, 0, backend.env)];
    nodes.push(e, sa, sb);
    for (const s of nodes) await load(s.smtpPort, mail, CLIENTS, CLIENTS);
    const f = { embedded: [] as number[], shared: [] as number[], two: [] as number[], eLat: [] as number[], sLat: [] as number[] };
    let waits: Waits | undefined;
    for (let r = 0; r < runs; r++) {
      const one = await load(e.smtpPort, mail, MAILS, CLIENTS);
      const shared = await load(sa.smtpPort, mail, MAILS, CLIENTS);
      const started = performance.now();
      const both = async (): Promise<void> => {
        await Promise.all([load(sa.smtpPort, mail, MAILS / 2, CLIENTS / 2), load(sb.smtpPort, mail, MAILS / 2, CLIENTS / 2)]);
      };
      // The first run also samples what the nodes' connections wait for.
      if (r === 0) waits = await sampleWaits(database, both);
      else await both();
      const two = MAILS / ((performance.now() - started) / 1000);
      f.embedded.push(MAILS / one.seconds);
      f.shared.push(MAILS / shared.seconds);
      f.two.push(two);
      f.eLat.push(...one.latencies);
      f.sLat.push(...shared.latencies);
      log(`  shared relay run ${r + 1}/${runs}: embedded ${round(MAILS / one.seconds)}/s, shared ${round(MAILS / shared.seconds)}/s, two shared nodes ${round(two)}/s`);
    }
    const who = `${CLIENTS} clients`;
    const share = (n: number): number => (waits && waits.inTransaction > 0 ? (100 * n) / waits.inTransaction : 0);
    log(`  shared relay, two nodes: of ${waits?.inTransaction ?? 0} connection samples in a transaction, ${round(share(waits?.lockWait ?? 0))}% waited for the write lock, ${round(share(waits?.nodeSide ?? 0))}% were idle in the transaction`);
    return [
      { name: `shared: relay level 3, 1 MiB PDF, one node embedded, ${who} (baseline)`, unit: "msg/s", runs: f.embedded },
      { name: `shared: relay level 3, one node on PostgreSQL + S3, ${who}`, unit: "msg/s", runs: f.shared },
      { name: `shared: relay level 3, two nodes on PostgreSQL + S3, ${CLIENTS / 2} clients each`, unit: "msg/s", runs: f.two },
      { name: "shared: relay throughput, one shared node / one embedded node (target ≥ 0.5)", unit: "×", runs: f.shared.map((v, i) => v / (f.embedded[i] ?? v)) },
      { name: "shared: relay throughput, two shared nodes / one shared node", unit: "×", runs: f.two.map((v, i) => v / (f.shared[i] ?? v)) },
      { name: `shared: relay level-3 latency embedded, ${who}`, unit: "ms", runs: f.eLat, text: `p50 ${round(percentile(f.eLat, 50))} ms, p99 ${round(percentile(f.eLat, 99))} ms` },
      { name: `shared: relay level-3 latency shared, ${who}`, unit: "ms", runs: f.sLat, text: `p50 ${round(percentile(f.sLat, 50))} ms, p99 ${round(percentile(f.sLat, 99))} ms` },
      { name: "shared: PostgreSQL transactions per relayed level-3 mail", unit: "transactions", runs: [perMail] },
      { name: "shared: two nodes, samples of a transaction waiting for the write lock", unit: "%", runs: [share(waits?.lockWait ?? 0)] },
      { name: "shared: two nodes, samples of a transaction idle in it (the node at work)", unit: "%", runs: [share(waits?.nodeSide ?? 0)] },
    ];
  } finally {
    await Promise.all(nodes.map((s) => s.stop()));
    await sink.close();
  }
}

/** Portal figures: p99 of the delivery list and a delivery page, shared against embedded. */
async function portalPart(backend: Backend, dir: string, runs: number, log: Log): Promise<Figure[]> {
  const nodes: Served[] = [];
  try {
    // No upstream: the patient's mails land in home/outbox, where prepare() reads the link.
    const embedded = join(dir, "portal-embedded");
    const shared = join(dir, "portal-shared");
    const init = ["init", "--yes", "--no-keyring", "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example"];
    await praxmail([...init, "--home", embedded]);
    const { database: portalDb, args } = await backend.fresh("portal");
    await praxmail([...init, "--home", shared, ...args], backend.env);
    const homes = [
      { label: "embedded", home: embedded, env: {} },
      { label: "shared", home: shared, env: backend.env },
    ];
    const served: { label: string; base: string; page: string; cookie: string }[] = [];
    for (const h of homes) {
      const s = await serve(h.home, 0, h.env);
      nodes.push(s);
      const t = await prepare(h.home, s, log, 1, h.env);
      served.push({ label: h.label, base: `http://127.0.0.1:${s.httpPort}`, page: t.page, cookie: t.cookie });
    }
    const p99 = { embedded: { list: [] as number[], page: [] as number[] }, shared: { list: [] as number[], page: [] as number[] } };
    const p50 = { embedded: { list: [] as number[], page: [] as number[] }, shared: { list: [] as number[], page: [] as number[] } };
    const rtt: number[] = [];
    for (const s of served) {
      await pageLoad(s.base, "/deliveries", s.cookie, { amount: 100 }, s.page);
      await pageLoad(s.base, s.page, s.cookie, { amount: 100 });
    }
    for (let r = 0; r < runs; r++) {
      // Alternate which backend goes first, so that drift hits both.
      for (const s of r % 2 === 0 ? served : [...served].reverse()) {
        const shared = s.label === "shared";
        const listLoad = (): ReturnType<typeof pageLoad> => pageLoad(s.base, "/deliveries", s.cookie, { amount: REQUESTS }, s.page);
        const list = shared ? await roundTrips(portalDb, listLoad, rtt) : await listLoad();
        const page = await pageLoad(s.base, s.page, s.cookie, { amount: REQUESTS });
        for (const [into, p] of [[p99, 99], [p50, 50]] as const) {
          const at = shared ? into.shared : into.embedded;
          at.list.push(p === 99 ? list.latency.p99 : list.latency.p50);
          at.page.push(p === 99 ? page.latency.p99 : page.latency.p50);
        }
      }
      log(
        `  shared portal run ${r + 1}/${runs}: list p99 ${round(p99.embedded.list.at(-1)!)} → ${round(p99.shared.list.at(-1)!)} ms, ` +
          `page p99 ${round(p99.embedded.page.at(-1)!)} → ${round(p99.shared.page.at(-1)!)} ms (embedded → shared)`,
      );
    }
    // Transactions per delivery page view: a fresh serve that answers REQUESTS views, less one that answers none.
    const sharedNode = nodes.pop()!;
    await sharedNode.stop();
    const view = served.find((x) => x.label === "shared")!;
    const perServe = (views: number): Promise<number> =>
      commits(portalDb, async () => {
        const s = await serve(shared, 0, backend.env);
        try {
          if (views > 0) await pageLoad(`http://127.0.0.1:${s.httpPort}`, view.page, view.cookie, { amount: views });
        } finally {
          await s.stop();
        }
      });
    const idle = await perServe(0);
    const perView = ((await perServe(REQUESTS)) - idle) / REQUESTS;
    log(`  shared portal: ${round(perView)} PostgreSQL transactions per delivery page view`);
    const c = "10 connections";
    const ratio = (a: number[], b: number[]): number[] => a.map((v, i) => v / (b[i] ?? v));
    return [
      { name: `shared: portal delivery list p50, embedded / PostgreSQL + S3, ${c}`, unit: "ms", runs: p50.shared.list, text: `${round(median(p50.embedded.list))} ms / ${round(median(p50.shared.list))} ms` },
      { name: `shared: portal delivery page p50, embedded / PostgreSQL + S3, ${c}`, unit: "ms", runs: p50.shared.page, text: `${round(median(p50.embedded.page))} ms / ${round(median(p50.shared.page))} ms` },
      { name: "shared: one PostgreSQL round trip (SELECT 1) during the shared list load", unit: "ms", runs: rtt, text: `p50 ${round(percentile(rtt, 50))} ms, p99 ${round(percentile(rtt, 99))} ms` },
      { name: `shared: portal delivery list p99, embedded, ${c} (baseline)`, unit: "ms", runs: p99.embedded.list },
      { name: `shared: portal delivery list p99, PostgreSQL + S3, ${c}`, unit: "ms", runs: p99.shared.list },
      { name: "shared: portal delivery list p99, shared / embedded (target ≤ 2)", unit: "×", runs: ratio(p99.shared.list, p99.embedded.list) },
      { name: `shared: portal delivery page p99, embedded, ${c} (baseline)`, unit: "ms", runs: p99.embedded.page },
      { name: `shared: portal delivery page p99, PostgreSQL + S3, ${c}`, unit: "ms", runs: p99.shared.page },
      { name: "shared: portal delivery page p99, shared / embedded (target ≤ 2)", unit: "×", runs: ratio(p99.shared.page, p99.embedded.page) },
      { name: "shared: PostgreSQL transactions per delivery page view", unit: "transactions", runs: [perView] },
    ];
  } finally {
    await Promise.all(nodes.map((s) => s.stop()));
  }
}

/** Approve figures: 1,000 deliveries on PostgreSQL against SQLite. */
async function approvePart(backend: Backend, dir: string, runs: number, log: Log): Promise<Figure[]> {
  // approve reads no payload: 1 KiB files keep the setup short. X25519, so that the key wrap
  // (the same on both backends) does not hide the store's share.
  const x25519 = ["--recipient-type", "x25519"];
  const { database, args } = await backend.fresh("approve");
  const started = performance.now();
  // Both at once: SQLite waits for fsyncs, the shared home for S3 and PostgreSQL (more at once keep both busy).
  const [sqlite, pg] = await Promise.all([
    buildHome(join(dir, "approve-sqlite"), "SQLite", 1024, log, { init: x25519 }),
    buildHome(join(dir, "approve-pg"), "PostgreSQL", 1024, log, { init: [...x25519, ...args], concurrency: 16 }),
  ]);
  log(`  shared approve setup: 2 × 1,000 deliveries in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  const t = { sqlite: [] as number[], pg: [] as number[], sqliteCpu: [] as number[], pgCpu: [] as number[] };
  let perDelivery = 0;
  for (let r = 0; r < runs; r++) {
    if (r > 0) {
      await resetPatient(sqlite);
      await resetPatient(pg);
    }
    const order: Home[] = r % 2 === 0 ? [sqlite, pg] : [pg, sqlite];
    for (const h of order) {
      let m = { seconds: 0, cpu: 0 };
      // approve is one process: its commits are all reported when it exits.
      if (h === pg && r === 0) perDelivery = (await commits(database, async () => void (m = await runApprove(h)))) / 1000;
      else m = await runApprove(h);
      await checkApproved(h);
      (h === pg ? t.pg : t.sqlite).push(m.seconds);
      (h === pg ? t.pgCpu : t.sqliteCpu).push(m.cpu);
    }
    log(
      `  shared approve run ${r + 1}/${runs}: SQLite ${round(t.sqlite.at(-1)!)} s (${round(t.sqliteCpu.at(-1)!)} s CPU), ` +
        `PostgreSQL ${round(t.pg.at(-1)!)} s (${round(t.pgCpu.at(-1)!)} s CPU)`,
    );
  }
  log(`  shared approve: ${round(perDelivery)} PostgreSQL transactions per approved delivery`);
  return [
    { name: "shared: approve 1,000 deliveries, SQLite (baseline)", unit: "s", runs: t.sqlite },
    { name: "shared: approve 1,000 deliveries, PostgreSQL", unit: "s", runs: t.pg },
    { name: "shared: approve, PostgreSQL / SQLite (target ≤ 2)", unit: "×", runs: t.pg.map((v, i) => v / (t.sqlite[i] ?? v)) },
    { name: "shared: approve CPU time of the process, SQLite", unit: "s", runs: t.sqliteCpu },
    { name: "shared: approve CPU time of the process, PostgreSQL", unit: "s", runs: t.pgCpu },
    { name: "shared: PostgreSQL transactions per approved delivery", unit: "transactions", runs: [perDelivery] },
  ];
}

/**
 * The shared-backend figures. Starts its own PostgreSQL and S3 (Swift) and stops them.
 *
 * @param runs - Runs per figure.
 * @param log - Progress lines.
 * @returns The figures.
 * @throws If an engine does not start or any mail, page or approval fails.
 */
export async function sharedBench(runs: number, log: Log): Promise<Figure[]> {
  // Short: PostgreSQL's socket path must stay under 107 bytes.
  const dir = await mkdtemp(join(tmpdir(), "pxb-"));
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  const saved = { ...process.env };
  try {
    [pg, s3] = await Promise.all([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
    const env: Env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint };
    // The setup opens the shared store in this process and spawns init and approve with this environment.
    Object.assign(process.env, env);
    const engines = { pg, s3 };
    const backend: Backend = {
      ...engines,
      env,
      async fresh(name) {
        const database = await engines.pg.database(name);
        await engines.s3.bucket(name);
        return { database, args: ["--database", database, "--blobs", `s3://${name}/praxis`] };
      },
    };
    return [...(await relayPart(backend, dir, runs, log)), ...(await portalPart(backend, dir, runs, log)), ...(await approvePart(backend, dir, runs, log))];
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) Reflect.deleteProperty(process.env, k);
    Object.assign(process.env, saved);
    await Promise.all([pg?.stop(), s3?.stop()]);
    await rm(dir, { recursive: true, force: true });
  }
}

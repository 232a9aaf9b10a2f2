// /healthz and /readyz, for a load balancer in front of several nodes (src/portal/routes/probes.ts).
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, initHome, tempDir } from "./helpers/cli.js";
import { captureLog } from "./helpers/log.js";
import { usePortal } from "./helpers/portal.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { startS3, type TestS3 } from "./helpers/s3.js";
import { startServe, type Served } from "./helpers/serve.js";
import { sharedEnginesInstalled } from "./helpers/backends.js";

const captured = captureLog();
const portal = usePortal({ log: captured.log });
const get = (url: string) => portal.app.inject({ method: "GET", url });

describe("probes on the embedded backend", () => {
  it("/healthz and /readyz answer ok, with no session and no caching", async () => {
    const live = await get("/healthz");
    expect([live.statusCode, live.body]).toEqual([200, "ok\n"]);
    const ready = await get("/readyz");
    expect([ready.statusCode, ready.json()]).toEqual([200, { ready: true, database: "ok", blobs: "ok" }]);
    for (const r of [live, ready]) {
      expect(r.headers["set-cookie"]).toBeUndefined();
      expect(r.headers["cache-control"]).toBe("no-store");
    }
  });

  it("a failing database makes /readyz 503 without saying why, and the log says why once per change", async () => {
    const store = portal.ctx.store;
    const ping = store.ping.bind(store);
    const before = captured.lines().length;
    store.ping = () => Promise.reject(new Error("connect ECONNREFUSED 10.1.2.3:5432"));
    try {
      for (let i = 0; i < 3; i++) {
        const r = await get("/readyz");
        expect([r.statusCode, r.json()]).toEqual([503, { ready: false, database: "unavailable", blobs: "ok" }]);
        expect(r.body).not.toContain("10.1.2.3");
        expect((await get("/healthz")).statusCode).toBe(200);
      }
    } finally {
      store.ping = ping;
    }
    expect((await get("/readyz")).statusCode).toBe(200);
    const changes = captured.lines().slice(before).filter((l) => l.msg === "node not ready" || l.msg === "node ready");
    expect(changes).toMatchObject([
      { msg: "node not ready", ready: false, database: "connect ECONNREFUSED 10.1.2.3:5432", blobs: null },
      { msg: "node ready", ready: true },
    ]);
  });

  it("a database that does not answer is unavailable after the probe's timeout, not never", async () => {
    const store = portal.ctx.store;
    const ping = store.ping.bind(store);
    store.ping = () => new Promise<void>(() => undefined);
    try {
      const r = await get("/readyz");
      expect([r.statusCode, r.json()]).toEqual([503, { ready: false, database: "unavailable", blobs: "ok" }]);
    } finally {
      store.ping = ping;
    }
  });
});

const ENGINES =
  sharedEnginesInstalled();

describe.runIf(ENGINES)("probes of a node on the shared backend", () => {
  let dir: string;
  let pg: TestPostgres | undefined;
  let s3: TestS3 | undefined;
  let served: Served | undefined;
  let base: string;
  beforeAll(async () => {
    dir = await tempDir("praxmail-probes-");
    [pg, s3] = await Promise.all([startPostgres(join(dir, "pg")), startS3(join(dir, "s3"))]);
    await s3.bucket("praxis");
    const home = join(dir, "home");
    await initHome(home, ["--database", await pg.database("praxis"), "--blobs", "s3://praxis/node"]);
    served = await startServe(home, 0, [], { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint });
    base = `http://127.0.0.1:${served.httpPort}`;
  });
  afterAll(async () => {
    await served?.stop();
    await s3?.stop();
    await pg?.stop().catch(() => undefined);
    await cleanup(dir);
  });

  it("is ready while PostgreSQL and the bucket answer, and not ready once PostgreSQL is gone, while it stays alive", async () => {
    const ready = await fetch(`${base}/readyz`);
    expect([ready.status, await ready.json()]).toEqual([200, { ready: true, database: "ok", blobs: "ok" }]);
    await pg!.stop();
    const down = await fetch(`${base}/readyz`);
    expect([down.status, await down.json()]).toEqual([503, { ready: false, database: "unavailable", blobs: "ok" }]);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect(served!.stdout()).toMatch(/"msg":"node not ready"/);
  });
});

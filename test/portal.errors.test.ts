// Every failure and refusal of the portal is one log line with its reason, by the route's
// pattern, never the URL (which may hold a link or reset token).
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { captureLog } from "./helpers/log.js";
import { usePortal } from "./helpers/portal.js";

const captured = captureLog();
const portal = usePortal({ log: captured.log });
const token = randomBytes(32).toString("base64url");
const restore: (() => void)[] = [];
afterEach(() => {
  for (const r of restore.splice(0)) r();
});

/** The lines written while `run` ran. */
async function linesOf(run: () => Promise<unknown>): Promise<Record<string, unknown>[]> {
  const before = captured.lines().length;
  await run();
  return captured.lines().slice(before);
}

describe("portal failures in the log", () => {
  it("a route that throws unexpectedly (the store failing) gives the 500 page and one error line without the token", async () => {
    const records = portal.ctx.store.records;
    const real = records.token.bind(records);
    records.token = () => {
      throw Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" });
    };
    restore.push(() => (records.token = real));
    let status = 0;
    let body = "";
    const lines = await linesOf(async () => {
      const res = await portal.app.inject({ method: "GET", url: `/d/${token}` });
      status = res.statusCode;
      body = res.body;
    });
    expect(status).toBe(500);
    expect(body).toContain("<title>");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 50, msg: "request failed", method: "GET", route: "/d/:token", status: 500, err: { code: "SQLITE_BUSY", message: "database is locked", status: 500 } });
    expect(captured.text()).not.toContain(token);
  });

  it("a password reset link with the store failing is a logged 500, not a silent 410", async () => {
    const accounts = portal.ctx.store.accounts;
    const real = accounts.reset.bind(accounts);
    accounts.reset = () => {
      throw Object.assign(new Error("disk I/O error"), { code: "SQLITE_IOERR" });
    };
    restore.push(() => (accounts.reset = real));
    let status = 0;
    const lines = await linesOf(async () => {
      status = (await portal.app.inject({ method: "GET", url: `/reset/${token}` })).statusCode;
    });
    expect(status).toBe(500);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 50, msg: "request failed", route: "/reset/:token", err: { code: "SQLITE_IOERR" } });
    expect(captured.text()).not.toContain(token);
  });

  it("a refusal other than bad input (a static path with //) is a 404 page and one warning with the reason", async () => {
    let status = 0;
    const lines = await linesOf(async () => {
      status = (await portal.app.inject({ method: "GET", url: "/static//style.css" })).statusCode;
    });
    expect(status).toBe(404);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, msg: "request refused", route: "/static/*", status: 404, err: { message: "Forbidden", status: 403 } });
  });
});

// migratePractice (src/core/migrate.ts) is written against the store interface: here its
// refusals, with an embedded store as the target so that no engines are needed (the real
// move into PostgreSQL and S3 is test/cli.migrate.test.ts).
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createDelivery, initPractice, loadConfig, markSent, migratePractice, type Context, type PraxmailError } from "../src/core/index.js";
import { openStore, tablesWithRows, type Store } from "../src/store/index.js";
import { cleanup, tempDir } from "./helpers/cli.js";

const SHARED = { database: "postgres://praxmail:geheim@db.example:5432/praxis", blobs: "s3://praxis/site-a" };

let dir: string;
let home: string;
let ctx: Context;
let target: Store;
beforeEach(async () => {
  dir = await tempDir();
  home = join(dir, "home");
  await mkdir(home);
  await initPractice(home, { practiceName: "Praxis Dr. Weber", practiceEmail: "praxis@praxis-weber.example", recipientType: "x25519", keyring: false });
  ctx = { home, config: loadConfig(home), store: openStore(home), notifier: { send: () => Promise.resolve() }, actor: "test", now: () => new Date() };
  for (let i = 0; i < 3; i++) {
    const d = await createDelivery(ctx, { recipient: "anna@patient.example", level: 1, files: [{ name: "a.pdf", open: () => Readable.toWeb(Readable.from([Buffer.from(`Befund ${String(i)}`)])) as ReadableStream<Uint8Array> }] });
    await markSent(ctx, [d.id]);
  }
  await mkdir(join(dir, "target"));
  target = openStore(join(dir, "target"));
});
afterEach(async () => {
  await ctx.store.close();
  await target.close();
  await cleanup(dir);
});

describe("migratePractice", () => {
  it("does not switch a home over that was written to during the copy (praxmail serve still running)", async () => {
    const meanwhile = openStore(home);
    let written: Promise<unknown> | undefined;
    try {
      const failed = await migratePractice(ctx, target, {
        shared: SHARED,
        // After the first blob is copied, another process writes to the home.
        progress: () => {
          written ??= meanwhile.transaction((tx) => tx.audit({ actor: "serve", action: "delivery.create", subject: "d_neu" }, new Date()));
        },
      }).then(
        () => null,
        (e: unknown) => e as PraxmailError,
      );
      expect(failed?.message).toBe(`${home} changed while praxmail migrate ran (audit rows after row 3); config.json still names SQLite and files`);
      expect(failed).toMatchObject({ code: "wrong-state", hint: "stop praxmail serve on this home, give an empty database and bucket prefix, and run praxmail migrate again" });
      await written;
    } finally {
      await meanwhile.close();
    }
    expect(loadConfig(home).shared).toBeNull();
  });

  it("refuses a home whose audit chain is broken before it copies anything", async () => {
    const db = new Database(join(home, "praxmail.db"));
    db.exec("DROP TRIGGER audit_no_update");
    db.prepare("UPDATE audit SET subject = 'verändert' WHERE seq = 2").run();
    db.close();
    await expect(migratePractice(ctx, target, { shared: SHARED })).rejects.toMatchObject({ code: "wrong-state", message: expect.stringMatching(/^audit chain broken at row 2: /) as unknown });
    expect(await target.snapshot(tablesWithRows)).toEqual([]);
    expect(await target.blobs.scan()).toEqual([]);
    expect(loadConfig(home).shared).toBeNull();
  });

  it("refuses a home that uses the shared backend already", async () => {
    const shared: Context = { ...ctx, config: { ...ctx.config, shared: SHARED } };
    await expect(migratePractice(shared, target, { shared: SHARED })).rejects.toMatchObject({
      code: "wrong-state",
      message: `${home} uses the shared backend already (config.json names it)`,
    });
  });
});

// Backup and restore are core operations (src/core/backup.ts): the core decides where a
// backup may go and which identity opens it, and writes the audit rows; the CLI only prints.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { backupPractice, initPractice, loadConfig, restorePractice, type Context } from "../src/core/index.js";
import { generateIdentity, writeIdentityFile } from "../src/crypto/index.js";
import { openStore } from "../src/store/index.js";
import { cleanup, practiceIdentityOf, tempDir } from "./helpers/cli.js";
import { collect } from "./helpers/store.js";

let dir: string;
let home: string;
beforeEach(async () => {
  dir = await tempDir();
  home = join(dir, "home");
  await mkdir(home);
  await initPractice(home, { practiceName: "Praxis Dr. Weber", practiceEmail: "praxis@praxis-weber.example", recipientType: "x25519", keyring: false });
});
afterEach(async () => {
  await cleanup(dir);
});

/** Opens a home's context, as the CLI does, with a fixed actor and clock. */
function open(h: string): Promise<Context> {
  return Promise.resolve({ home: h, config: loadConfig(h), store: openStore(h), notifier: { send: () => Promise.resolve() }, actor: "test", now: () => new Date("2026-11-29T09:00:00Z") });
}

describe("backupPractice and restorePractice", () => {
  it("back up with an audit row, refuse another practice's identity, and restore with an audit row of their own", async () => {
    const backup = join(dir, "backup");
    const ctx = await open(home);
    let createdAt: string;
    try {
      await expect(backupPractice(ctx, join(home, "inside"), { version: "test" })).rejects.toMatchObject({ code: "usage", message: `the backup folder ${join(home, "inside")} is inside home ${home}` });
      const manifest = await backupPractice(ctx, backup, { version: "test" });
      createdAt = manifest.createdAt;
      expect(manifest.meta).toMatchObject({ praxmail: "test", home, practiceRecipient: ctx.config.practiceRecipient });
      expect((await collect(ctx.store.auditRows())).filter((r) => r.action === "backup")).toMatchObject([
        { actor: "test", subject: backup, details: JSON.stringify({ blobs: 0, encryptedTo: ctx.config.practiceRecipient }) },
      ]);
    } finally {
      await ctx.store.close();
    }

    const other = join(dir, "other.txt");
    await writeIdentityFile(other, generateIdentity("x25519"), undefined, new Date());
    const target = join(dir, "restored");
    const none = () => Promise.resolve(undefined);
    await expect(restorePractice(target, backup, { identityFile: other, passphrase: none, open })).rejects.toMatchObject({
      code: "identity",
      message: expect.stringContaining(`does not open the backup in ${backup}, which is encrypted to`) as unknown,
    });
    await expect(restorePractice(home, backup, { identityFile: other, passphrase: none, open })).rejects.toMatchObject({ code: "wrong-state" });

    const identity = join(dir, "practice.txt");
    await writeIdentityFile(identity, await practiceIdentityOf(home), undefined, new Date());
    const r = await restorePractice(target, backup, { identityFile: identity, passphrase: none, open });
    expect(r.manifest.createdAt).toBe(createdAt);
    const restored = await open(target);
    try {
      const rows = await collect(restored.store.auditRows());
      expect(r.auditRows).toBe(rows.length);
      expect(rows.at(-1)).toMatchObject({ action: "restore", actor: "test", subject: backup });
      expect(await restored.store.verifyAudit()).toMatchObject({ ok: true });
    } finally {
      await restored.store.close();
    }
  });
});

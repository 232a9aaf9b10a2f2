// A cleanup that fails after a failure never replaces it: the caller gets the first failure,
// and what the cleanup threw travels with it (cleanupFailures) for the adapter's one log line.
// The cleanups are made to fail for real: a file the cleanup removes is replaced by a folder
// (rm without recursive: EISDIR), or home by a file (ENOTDIR); on the shared backend, a
// multipart upload is aborted behind the writer's back (NoSuchUpload). Read-only folders
// would not do, since the tests may run as root. What concerns the store or a real store runs
// on both backends (helpers/backends.ts).
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  addReplyPart,
  cleanupFailures,
  createDelivery,
  exportDelivery,
  initPractice,
  loadConfig,
  markSent,
  receiveReply,
  type Context,
} from "../src/core/index.js";
import { encryptBytes, generateIdentity, recipientOf } from "../src/crypto/index.js";
import { openStore, restoreHome, type Store } from "../src/store/index.js";
import { describeBackends } from "./helpers/backends.js";
import { cleanup, practiceIdentityOf, tempDir } from "./helpers/cli.js";
import { streamOf } from "./helpers/streams.js";

let dir: string;
beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => {
  await cleanup(dir);
});

/** Replaces a file by a folder of the same name, so that `rm(path, { force: true })` throws. */
async function folderInstead(path: string): Promise<void> {
  await rm(path);
  await mkdir(path);
}

/** What a rejected promise rejected with. */
const failureOf = (p: Promise<unknown>): Promise<unknown> => p.then(() => expect.fail("resolved"), (e: unknown) => e);

const EISDIR = { cleanup: [{ name: "SystemError", code: "ERR_FS_EISDIR", message: expect.stringContaining("is a directory") as unknown }] };

describeBackends("failed cleanups in the store", (backend) => {
  it("blobs.write: the stream's failure reaches the caller when removing the temp file fails (aborting the upload, on S3)", async () => {
    const store = await backend.open(dir);
    let pulls = 0;
    let spoiled: Record<string, unknown> = {};
    const data = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        // More than a part of the shared backend's multipart upload (8 MiB), then a failure.
        if (pulls++ === 0) {
          ctl.enqueue(new Uint8Array(9 << 20));
          return;
        }
        spoiled = await backend.spoilWriteCleanup(dir);
        ctl.error(new Error("upload cut off"));
      },
    });
    try {
      const e = await failureOf(store.blobs.write(data));
      expect(e).toMatchObject({ message: "upload cut off" });
      expect(cleanupFailures(e)).toEqual({ cleanup: [spoiled] });
    } finally {
      await store.close();
    }
  });
});

// Backup and restore of the embedded backend: its database snapshot and staging folder.
describe("failed cleanups in the embedded store's backup and restore", () => {
  it("backup: the seal's failure reaches the caller when removing the database snapshot fails", async () => {
    const store = openStore(dir);
    const dest = join(dir, "backup");
    try {
      const e = await failureOf(
        store.backup(dest, {
          seal: async () => {
            const snapshot = (await readdir(dir)).find((n) => n.startsWith(".backup-"));
            await folderInstead(join(dir, snapshot!));
            throw new Error("no recipient to seal to");
          },
        }),
      );
      expect(e).toMatchObject({ message: "no recipient to seal to" });
      expect(cleanupFailures(e)).toEqual(EISDIR);
      expect(await readdir(dir)).not.toContain("backup");
    } finally {
      await store.close();
    }
  });

  it("restore: the check's failure reaches the caller when removing the staging folder fails", async () => {
    await mkdir(join(dir, "home"));
    const store = openStore(join(dir, "home"));
    const backup = join(dir, "backup");
    const plain = (s: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> => Promise.resolve(s);
    try {
      await store.backup(backup, { seal: plain });
    } finally {
      await store.close();
    }
    const home = join(dir, "restored");
    const e = await failureOf(
      restoreHome(backup, home, {
        open: plain,
        check: async () => {
          // Home is gone and a file stands in its place: its staging folder cannot be removed.
          await rename(home, join(dir, "moved"));
          await writeFile(home, "");
          throw new Error("config.json names another practice");
        },
      }),
    );
    expect(e).toMatchObject({ message: "config.json names another practice" });
    expect(cleanupFailures(e)).toEqual({ cleanup: [{ name: "Error", code: "ENOTDIR", message: expect.stringContaining("not a directory") as unknown }] });
  });
});

describe("failed cleanups in core", () => {
  const email = "p@example.org";
  /** A store for a unit test of replies.ts: an approved patient with an open reply. */
  const replyStore = (over: Partial<Record<"blobs" | "accounts", object>> & { transaction?: () => Promise<never> }): Store =>
    ({
      records: { patient: () => Promise.resolve({ email, status: "approved" }) },
      ...over,
    }) as unknown as Store;
  const replyCtx = (store: Store): Context => ({ home: dir, store, actor: "test", now: () => new Date("2026-11-29T09:00:00Z") }) as unknown as Context;

  it("addReplyPart: the database's failure reaches the caller when removing the stored part fails", async () => {
    const store = replyStore({
      accounts: { reply: () => Promise.resolve({ email, status: "uploading" }), replyParts: () => Promise.resolve([]) },
      blobs: {
        write: async (s: ReadableStream<Uint8Array>) => (await new Response(s).arrayBuffer(), "blobs/ab/ab.age"),
        remove: () => Promise.reject(Object.assign(new Error("permission denied"), { code: "EACCES" })),
      },
      transaction: () => Promise.reject(Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" })),
    });
    const age = await encryptBytes("Hallo", [await recipientOf(generateIdentity("x25519"))]);
    const e = await failureOf(addReplyPart(replyCtx(store), email, "r_1", "message", Readable.from([Buffer.from(age)])));
    expect(e).toMatchObject({ code: "SQLITE_BUSY", message: "database is locked" });
    expect(cleanupFailures(e)).toEqual({ cleanup: [{ name: "Error", code: "EACCES", message: "permission denied" }] });
  });

  it("receiveReply: a file that does not decrypt reaches the caller when removing the files written fails", async () => {
    const identity = generateIdentity("x25519");
    const message = await encryptBytes(JSON.stringify({ v: 1, text: "Guten Tag", files: ["befund.pdf"] }), [await recipientOf(identity)]);
    const out = join(dir, "out");
    const store = replyStore({
      accounts: {
        reply: () => Promise.resolve({ email, status: "new" }),
        replyParts: () => Promise.resolve([{ kind: "message", blob: "m" }, { kind: "file", blob: "f" }]),
      },
      blobs: {
        read: (key: string) =>
          key === "m"
            ? streamOf(message)
            : new ReadableStream<Uint8Array>({
                async start(ctl) {
                  await folderInstead(join(out, "message.txt"));
                  ctl.enqueue(new TextEncoder().encode("not an age file\n"));
                  ctl.close();
                },
              }),
      },
    });
    const e = await failureOf(receiveReply(replyCtx(store), "r_1", identity, out));
    expect(e).toMatchObject({ message: "malformed header: no MAC line" });
    expect(cleanupFailures(e)).toEqual(EISDIR);
    // The other file written is removed all the same.
    expect(await readdir(out)).toEqual(["message.txt"]);
  });
});

describeBackends("failed cleanups in core on a real store", (backend) => {
  const email = "p@example.org";

  it("exportDelivery: a damaged blob is what the caller hears when removing the files written fails", async () => {
    const home = join(dir, "home");
    await mkdir(home);
    await initPractice(home, { practiceName: "Praxis Dr. Weber", practiceEmail: "praxis@praxis-weber.example", recipientType: "x25519", keyring: false });
    const real = await backend.open(home);
    const base: Context = { home, config: loadConfig(home), store: real, notifier: { send: () => Promise.resolve() }, actor: "test", now: () => new Date() };
    try {
      const file = (name: string) => ({ name, open: () => streamOf(new TextEncoder().encode(name)) });
      const d = await createDelivery(base, { recipient: email, level: 3, files: [file("a.pdf"), file("b.pdf")] });
      await markSent(base, [d.id]);
      const last = (await real.records.files(d.id)).filter((f) => f.kind === "attachment").at(-1)!.blob!;
      const out = join(dir, "export");
      await mkdir(out);
      const blobs = {
        read: (key: string) =>
          key !== last
            ? real.blobs.read(key)
            : new ReadableStream<Uint8Array>({
                async start(ctl) {
                  await folderInstead(join(out, "a.pdf"));
                  ctl.enqueue(new TextEncoder().encode("not an age file\n"));
                  ctl.close();
                },
              }),
      };
      const store = new Proxy(real, { get: (t, p) => (p === "blobs" ? blobs : (Reflect.get(t, p, t) as unknown)) });
      const identity = await practiceIdentityOf(home);
      const e = await failureOf(exportDelivery({ ...base, store }, d.id, () => Promise.resolve(identity), out));
      expect(e).toMatchObject({ code: "file", message: expect.stringMatching(/^blobs\/.* \(b\.pdf\) does not decrypt: /) as unknown });
      expect(cleanupFailures(e)).toEqual(EISDIR);
      // The temp file of b.pdf is removed all the same.
      expect(await readdir(out)).toEqual(["a.pdf"]);
    } finally {
      await real.close();
    }
  });
});

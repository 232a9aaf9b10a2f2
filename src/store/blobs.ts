// Ciphertext files under <home>/blobs/. A blob is written to a temp name, fsynced, renamed
// into place, and the folder fsynced, so a crash leaves either a whole blob or a temp file.
import { access, constants, mkdir, open, readdir, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { cleanUpAfter } from "./cleanup.js";
import type { BlobStore, ScannedBlob } from "./types.js";

/** The form of a blob's key (its path under home). */
export const BLOB_KEY = /^blobs\/[0-9a-f]{2}\/[0-9a-f]{32}\.age$/;

/** The form of a marker's name (see {@link BlobStore.mark}): a folder beside blobs/, and a name. */
export const MARKER_NAME = /^(?!blobs\/)[a-z][a-z-]{0,31}\/[A-Za-z0-9_-]{1,64}$/;

/** @returns A fresh, random blob key (matches {@link BLOB_KEY}); every backend names blobs so. */
export function newBlobKey(): string {
  const name = randomBytes(16).toString("hex");
  return `blobs/${name.slice(0, 2)}/${name}.age`;
}

const TMP = "tmp";

/**
 * Flushes a file or folder to disk.
 *
 * @param path - What to fsync.
 */
export async function fsync(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const READ = 1 << 20;
const WRITE = 1 << 20;

/**
 * Reads a file as a web stream, 1 MiB per read with one read ahead: about a quarter of the
 * cost of Readable.toWeb over fs.createReadStream.
 *
 * @param source - An open handle (left open) or a path (opened, and closed at the end).
 * @param start - The offset to start at.
 * @returns The bytes.
 */
export function fileStream(source: FileHandle | string, start = 0): ReadableStream<Uint8Array> {
  let fh = typeof source === "string" ? undefined : source;
  let pos = start;
  // A stream may be cancelled before start() has opened the file (a HEAD request): cancel
  // waits for the open, so that it closes what the open gives.
  let opening: Promise<unknown> = Promise.resolve();
  const done = async (): Promise<void> => {
    await opening.catch(() => undefined);
    if (typeof source === "string" && fh) await fh.close();
    fh = undefined;
  };
  return new ReadableStream<Uint8Array>(
    {
      async start() {
        if (typeof source !== "string") return;
        const opened = open(source, "r");
        opening = opened;
        fh = await opened;
      },
      async pull(ctl) {
        if (!fh) throw new Error("file is closed");
        try {
          const buf = Buffer.allocUnsafe(READ);
          const { bytesRead } = await fh.read(buf, 0, READ, pos);
          pos += bytesRead;
          if (bytesRead > 0) {
            ctl.enqueue(buf.subarray(0, bytesRead));
            return;
          }
          await done();
          ctl.close();
        } catch (e) {
          await done();
          throw e;
        }
      },
      cancel: done,
    },
    { highWaterMark: 2 },
  );
}

/**
 * Writes a web stream to a file handle, gathering chunks into writes of about 1 MiB: far
 * fewer system calls than one per chunk, and no copy (writev). One write is in flight
 * while the next batch is pulled, so producing (encrypting, decrypting) and writing run
 * side by side instead of taking turns.
 *
 * @param data - The bytes.
 * @param fh - An open file handle.
 * @throws What reading or writing throws; the stream is then cancelled.
 */
export async function writeStream(data: ReadableStream<Uint8Array>, fh: FileHandle): Promise<void> {
  const reader = data.getReader();
  let inFlight: Promise<unknown> = Promise.resolve();
  let batch: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const r = await reader.read();
      if (!r.done) {
        batch.push(r.value);
        size += r.value.length;
        if (size < WRITE) continue;
      }
      await inFlight;
      if (batch.length) {
        inFlight = fh.writev(batch);
        // Handled here so that a failure during the next read is not an unhandled
        // rejection; the await above still throws it.
        inFlight.catch(() => undefined);
      }
      batch = [];
      size = 0;
      if (r.done) break;
    }
    await inFlight;
  } catch (e) {
    await inFlight.catch(() => undefined);
    await reader.cancel(e).catch(() => undefined);
    throw e;
  }
}

/**
 * A pass-through stream that counts and hashes what flows through it.
 *
 * @returns The stream, and a function that gives size and SHA-256 (hex) once it has ended.
 */
export function sha256Tap(): { tap: TransformStream<Uint8Array, Uint8Array>; result: () => { size: number; sha256: string } } {
  const hash = createHash("sha256");
  let size = 0;
  const tap = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctl) {
      hash.update(chunk);
      size += chunk.length;
      ctl.enqueue(chunk);
    },
  });
  return { tap, result: () => ({ size, sha256: hash.digest("hex") }) };
}

/**
 * Moves a finished temp file into place so that a crash leaves either the whole file or
 * none: fsync of the file, rename, fsync of the folder.
 *
 * @param tmp - The written temp file (same file system as final).
 * @param final - Its final path.
 */
export async function renameDurably(tmp: string, final: string): Promise<void> {
  await fsync(tmp);
  await rename(tmp, final);
  await fsync(dirname(final));
}

/** The blobs of the embedded backend: files under <home>/blobs/, keyed by their path relative to home. */
export class FileBlobs implements BlobStore {
  /**
   * @param home - The praxmail home folder.
   */
  constructor(private readonly home: string) {}

  /** The absolute path of the blobs folder. */
  private get root(): string {
    return join(this.home, "blobs");
  }

  /**
   * Streams data into a new blob.
   *
   * @param data - The bytes, usually age ciphertext.
   * @returns The blob's key: its path relative to home, e.g. `blobs/3f/3f9a….age`.
   * @throws If writing fails; no temp file is left.
   */
  async write(data: ReadableStream<Uint8Array>): Promise<string> {
    const key = newBlobKey();
    await this.put(key, data);
    return key;
  }

  /**
   * Streams data into a blob of a given key (temp file, fsync, rename, fsync of the folder).
   *
   * @param key - A blob key, e.g. from another store.
   * @param data - The bytes.
   * @throws If the key is not a blob key or writing fails; no temp file is left.
   */
  async put(key: string, data: ReadableStream<Uint8Array>): Promise<void> {
    const final = this.path(key);
    const tmpDir = join(this.root, TMP);
    // 0700 whatever the umask (the mode only loses bits to it); existing folders keep theirs.
    await mkdir(dirname(final), { recursive: true, mode: 0o700 });
    await mkdir(tmpDir, { recursive: true, mode: 0o700 });
    const tmp = join(tmpDir, `${randomBytes(16).toString("hex")}.partial`);
    try {
      const fh = await open(tmp, "wx", 0o600);
      try {
        await writeStream(data, fh);
      } finally {
        await fh.close();
      }
      await renameDurably(tmp, final);
    } catch (e) {
      throw await cleanUpAfter(e, [() => rm(tmp, { force: true })]);
    }
  }

  /**
   * The absolute path of a blob.
   *
   * @param key - A key returned by {@link write}.
   * @returns The absolute path.
   * @throws If the key is not one of a blob (and so might leave the blobs folder).
   */
  private path(key: string): string {
    if (!BLOB_KEY.test(key)) throw new Error("invalid blob key");
    return join(this.home, ...key.split("/"));
  }

  /**
   * Opens a blob for reading.
   *
   * @param key - A key returned by {@link write}.
   * @returns A web stream of its bytes.
   */
  read(key: string): ReadableStream<Uint8Array> {
    return fileStream(this.path(key));
  }

  /**
   * @param key - A key returned by {@link write}.
   * @returns The blob's size in bytes.
   */
  async size(key: string): Promise<number> {
    return (await stat(this.path(key))).size;
  }

  /**
   * Deletes blobs; missing ones are ignored.
   *
   * @param keys - Keys returned by {@link write}.
   */
  async remove(keys: readonly string[]): Promise<void> {
    for (const key of keys) await rm(this.path(key), { force: true });
  }

  /**
   * Lists every blob and temp file with its modification time.
   *
   * @returns Keys (paths relative to home) and mtimes; temp files are flagged.
   */
  async scan(): Promise<ScannedBlob[]> {
    const out: ScannedBlob[] = [];
    let subdirs: string[];
    try {
      subdirs = await readdir(this.root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return out;
      throw e;
    }
    for (const sub of subdirs) {
      const dir = join(this.root, sub);
      for (const name of await readdir(dir)) {
        const full = join(dir, name);
        const st = await stat(full);
        out.push({ key: relative(this.home, full).split(sep).join("/"), mtime: st.mtime, temp: sub === TMP });
      }
    }
    return out;
  }

  /**
   * Deletes any file under blobs/ by key (used by gc for orphans and temp files).
   *
   * @param key - A key from {@link scan}.
   */
  async removeScanned(key: string): Promise<void> {
    if (!key.startsWith("blobs/") || key.includes("..")) throw new Error("invalid blob key");
    await rm(join(this.home, ...key.split("/")), { force: true });
  }

  /**
   * Creates a marker file under home (`invite-approvals/i_…`: the path homes have always
   * used), mode 0600, and flushes it and its folder to disk.
   *
   * @param name - A marker name.
   * @returns True if this call created it, false if it was there.
   */
  async mark(name: string): Promise<boolean> {
    if (!MARKER_NAME.test(name)) throw new Error("invalid marker name");
    const file = join(this.home, ...name.split("/"));
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    let fh: FileHandle;
    try {
      fh = await open(file, "wx", 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw e;
    }
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsync(dirname(file));
    return true;
  }

  /** Checks that home, where blobs/ is made, can be written. */
  async ping(): Promise<void> {
    await access(this.home, constants.W_OK);
  }
}

// Whether serve could listen where it is told to: a free address is fine, and so is one
// that a running `praxmail serve` holds already. Who holds an address is read from /proc
// (Linux): the listening socket's inode, then the process that has it open.
import { connect, createServer } from "node:net";
import { access, constants, lstat, readFile, readdir, readlink } from "node:fs/promises";
import { basename, dirname } from "node:path";

/** How a listen address looks. */
export type PortState =
  | { readonly kind: "free" }
  | { readonly kind: "praxmail"; readonly pid: number }
  | { readonly kind: "other"; readonly pid: number; readonly command: string }
  | { readonly kind: "unknown"; readonly uid: number | null }
  | { readonly kind: "error"; readonly code: string };

interface Holder {
  readonly pid: number;
  readonly argv: readonly string[];
}

/**
 * @param argv - A process's arguments.
 * @returns Whether they run `praxmail … serve` (the bin script under node, or directly).
 */
export function isPraxmailServe(argv: readonly string[]): boolean {
  const i = argv.findIndex((a) => basename(a) === "praxmail");
  return i !== -1 && argv.slice(i + 1).includes("serve");
}

async function lines(file: string): Promise<string[]> {
  try {
    return (await readFile(file, "utf8")).split("\n").slice(1).filter((l) => l.trim() !== "");
  } catch {
    return [];
  }
}

/** Inodes (and owner uids) of TCP sockets listening on a port, from /proc/net/tcp{,6}. */
async function tcpListeners(port: number): Promise<{ inode: string; uid: number }[]> {
  const out: { inode: string; uid: number }[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of await lines(file)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const local = f[1]?.split(":").at(-1);
      if (f[3] !== "0A" || local === undefined || parseInt(local, 16) !== port) continue;
      out.push({ inode: f[9] ?? "", uid: Number(f[7]) });
    }
  }
  return out;
}

/** Inodes of unix sockets listening on a path, from /proc/net/unix. */
async function unixListeners(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const line of await lines("/proc/net/unix")) {
    // Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 is __SO_ACCEPTCON (listening).
    const f = line.trim().split(/\s+/);
    if (f[7] === path && (parseInt(f[3] ?? "0", 16) & 0x10000) !== 0) out.push(f[6] ?? "");
  }
  return out;
}

/** The processes (that this user may inspect) holding one of the socket inodes. */
async function holders(inodes: readonly string[]): Promise<Holder[]> {
  const want = new Set(inodes.map((i) => `socket:[${i}]`));
  const out: Holder[] = [];
  let pids: string[];
  try {
    pids = (await readdir("/proc")).filter((p) => /^\d+$/.test(p));
  } catch {
    return out;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch {
      continue; // another user's process, or gone
    }
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
      if (!want.has(target)) continue;
      const argv = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0").filter((a) => a !== "");
      out.push({ pid: Number(pid), argv });
      break;
    }
  }
  return out;
}

function judge(found: readonly Holder[], uid: number | null): PortState {
  const ours = found.find((h) => isPraxmailServe(h.argv));
  if (ours) return { kind: "praxmail", pid: ours.pid };
  const other = found[0];
  if (other) return { kind: "other", pid: other.pid, command: other.argv.join(" ").slice(0, 120) };
  return { kind: "unknown", uid };
}

/**
 * Checks a TCP listen address by binding it for a moment.
 *
 * @param host - The address.
 * @param port - The port.
 * @returns Free, held by praxmail serve, held by another program, or why it cannot be used.
 */
export async function tcpPortState(host: string, port: number): Promise<PortState> {
  const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
    const s = createServer();
    s.once("error", resolve);
    s.listen({ host, port, exclusive: true }, () => {
      s.close(() => {
        resolve(null);
      });
    });
  });
  if (!err) return { kind: "free" };
  if (err.code !== "EADDRINUSE") return { kind: "error", code: err.code ?? err.message };
  const listeners = await tcpListeners(port);
  return judge(await holders(listeners.map((l) => l.inode)), listeners[0]?.uid ?? null);
}

/**
 * Checks a unix socket path for the milter.
 *
 * @param path - The socket path.
 * @returns Free (missing, or a stale socket nobody answers on), held, or an error code.
 */
export async function unixSocketState(path: string): Promise<PortState> {
  const st = await lstat(path).catch((e: unknown) => e as NodeJS.ErrnoException);
  if (!("isSocket" in st)) {
    if (st.code !== "ENOENT") return { kind: "error", code: st.code ?? "unknown" };
    try {
      await access(dirname(path), constants.W_OK);
      return { kind: "free" };
    } catch (e) {
      return { kind: "error", code: (e as NodeJS.ErrnoException).code ?? "unknown" };
    }
  }
  // serve deletes whatever is at the path first: only a socket may be replaced.
  if (!st.isSocket()) return { kind: "error", code: "ENOTSOCK" };
  const answers = await new Promise<boolean>((resolve) => {
    const c = connect(path);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => {
      resolve(false);
    });
  });
  if (!answers) return { kind: "free" };
  return judge(await holders(await unixListeners(path)), st.uid);
}

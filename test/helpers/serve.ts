// The real `praxmail serve` as a child process.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { BIN } from "./cli.js";

/** A running `praxmail serve`. */
export interface Served {
  child: ChildProcess;
  smtpPort: number;
  httpPort: number;
  /** The milter's port, when started with `--milter`. */
  milterPort: number | null;
  /** Everything it printed on stdout (JSON log lines). */
  stdout(): string;
  /** Everything it printed on stderr (startup lines, warnings). */
  stderr(): string;
  stop(): Promise<number | null>;
}

/** @returns A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port ?? 0;
}

/**
 * @param n - How many.
 * @returns n distinct ports that were free a moment ago (all held at once while chosen).
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.listen(0, "127.0.0.1", r))));
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((r) => {
          s.close(() => {
            r();
          });
        }),
    ),
  );
  return ports;
}

/**
 * Starts `praxmail serve` and waits until relay and portal listen.
 *
 * @param home - The home.
 * @param httpPort - The portal port (0 for any).
 * @param extra - More flags.
 * @param env - More environment (e.g. the shared backend's AWS_* settings).
 * @returns The running process.
 */
export async function startServe(home: string, httpPort = 0, extra: readonly string[] = [], env: Record<string, string> = {}): Promise<Served> {
  const child = spawn(process.execPath, [BIN, "serve", "--home", home, "--smtp", "127.0.0.1:0", "--http", `127.0.0.1:${httpPort}`, ...extra], {
    env: { PATH: process.env.PATH, NO_COLOR: "1", ...env },
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<number | null>((r) => child.on("exit", r));
  const wantMilter = extra.includes("--milter");
  const ports = await new Promise<[number, number, number | null]>((resolve, reject) => {
    const t = setInterval(() => {
      const s = /relay listening on 127\.0\.0\.1:(\d+)/.exec(err);
      const h = /portal listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(err);
      const m = /milter listening on inet:127\.0\.0\.1:(\d+)/.exec(err);
      if (s && h && (m || !wantMilter)) {
        clearInterval(t);
        resolve([Number(s[1]), Number(h[1]), m ? Number(m[1]) : null]);
      }
    }, 50);
    void exited.then(() => {
      clearInterval(t);
      reject(new Error(`serve exited: ${err}`));
    });
  });
  return {
    child,
    smtpPort: ports[0],
    httpPort: ports[1],
    milterPort: ports[2],
    stdout: () => out,
    stderr: () => err,
    stop: () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
}

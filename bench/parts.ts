// What the benchmarks share: a mail with one attachment, a counting SMTP sink, and
// `praxmail init` for a fresh home.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SMTPServer } from "smtp-server";

/** How a child process went: exit code, wall time, and (when tracked) peak RSS. */
export interface Measured {
  readonly code: number | null;
  readonly seconds: number;
  /** Bytes; 0 unless tracked. */
  readonly peak: number;
  /** Seconds of CPU time (user + system) of the program and its children; 0 unless asked for. */
  readonly cpu: number;
  /** The end of what it wrote to stderr. */
  readonly stderr: string;
}

// bash's `times` prints the CPU time of the shell, then of its finished children.
const CPU_WRAPPER = '"$@"; status=$?; times >&2; exit $status';
const TIMES = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\n?$/;

/**
 * Runs a program to its end and times it, from spawn to exit.
 *
 * @param cmd - The program.
 * @param args - Its arguments.
 * @param trackPeak - Poll its VmHWM every 10 ms (the last reading before exit is the peak).
 * @param cpuTime - Also take its CPU time, through a bash that runs it and prints `times`
 *   (the wall time then includes starting that bash, about a millisecond).
 * @returns How it went.
 */
export function measure(cmd: string, args: readonly string[], trackPeak = false, cpuTime = false): Promise<Measured> {
  if (trackPeak && cpuTime) throw new Error("peak and CPU time are measured in separate runs");
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const child = cpuTime ? spawn("bash", ["-c", CPU_WRAPPER, "bash", cmd, ...args], { stdio: ["ignore", "ignore", "pipe"] }) : spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr = (stderr + d).slice(-4096);
    });
    let peak = 0;
    const timer = trackPeak
      ? setInterval(() => {
          readFile(`/proc/${String(child.pid)}/status`, "utf8")
            .then((s) => {
              peak = Math.max(peak, Number(/VmHWM:\s+(\d+) kB/.exec(s)?.[1] ?? 0) * 1024);
            })
            .catch(() => undefined);
        }, 10)
      : undefined;
    child.on("error", reject);
    let seconds = 0;
    const done = (code: number | null): void => {
      clearInterval(timer);
      let cpu = 0;
      if (cpuTime) {
        const t = TIMES.exec(stderr);
        if (!t) {
          reject(new Error(`no CPU times from ${cmd}: ${stderr}`));
          return;
        }
        cpu = Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4]);
        stderr = stderr.slice(0, t.index).replace(/.*\n$/, "");
      }
      resolvePromise({ code, peak, cpu, stderr, seconds });
    };
    child.on("exit", (code) => {
      seconds = (performance.now() - started) / 1000;
      if (!cpuTime) done(code);
    });
    // The CPU times are the last thing on stderr: wait until it is read to its end.
    if (cpuTime) child.on("close", done);
  });
}

/**
 * Writes a file of random bytes, cheaply: 64 KiB of fresh random bytes per MiB, repeated
 * through it, with the MiB's number at its start.
 *
 * @param path - The file to create.
 * @param size - Its size in bytes.
 */
export async function randomFile(path: string, size: number): Promise<void> {
  const MiB = 1024 * 1024;
  const fh = await open(path, "w");
  const block = Buffer.alloc(MiB);
  for (let at = 0; at < size; at += MiB) {
    crypto.getRandomValues(block.subarray(0, 65536));
    for (let i = 65536; i < MiB; i += 65536) block.copy(block, i, 0, 65536);
    block.writeUInt32BE(at / MiB, 0);
    await fh.write(block, 0, Math.min(MiB, size - at));
  }
  await fh.close();
}

/**
 * @param path - A file.
 * @returns Its SHA-256, hex.
 */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest("hex");
}

/** The binary under test. */
export const BIN = resolve(import.meta.dirname, "../../bin/praxmail");

/** The part of {@link benchMail} after the header, per attachment: encoded once, not per mail. */
const bodies = new WeakMap<Buffer, Buffer>();

/**
 * A practice mail with one PDF attachment.
 *
 * @param subject - e.g. "[S3] Befund" or "Befund".
 * @param attachment - The PDF bytes.
 * @param id - Unique per message (retries would be recognised otherwise).
 * @returns The raw message.
 */
export function benchMail(subject: string, attachment: Buffer, id: string): Buffer {
  let body = bodies.get(attachment);
  if (!body) {
    const b64 = attachment.toString("base64").replace(/.{76}/g, "$&\r\n");
    body = Buffer.from(
      [
        "--b",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Anbei der Befund.",
        "--b",
        "Content-Type: application/pdf",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="befund.pdf"',
        "",
        b64,
        "--b--",
        "",
      ].join("\r\n"),
    );
    bodies.set(attachment, body);
  }
  const head = [
    "From: Praxis <praxis@praxis.example>",
    "To: patient@patient.example",
    `Subject: ${subject}`,
    `Message-ID: <${id}@praxis.example>`,
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="b"',
    "",
    "",
  ].join("\r\n");
  return Buffer.concat([Buffer.from(head), body]);
}

/** An SMTP server that reads and counts what it gets. */
export interface CountingSink {
  readonly port: number;
  readonly url: string;
  readonly count: () => number;
  close(): Promise<void>;
}

/** @returns A running sink on a free loopback port. */
export async function countingSink(): Promise<CountingSink> {
  let n = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    size: 0,
    onData(stream, _s, cb) {
      stream.on("data", () => undefined);
      stream.on("end", () => {
        n++;
        cb();
      });
    },
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.server.address() as { port: number }).port;
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    count: () => n,
    close: () =>
      new Promise((r) => {
        server.close(() => {
          r();
        });
      }),
  };
}

/**
 * Runs `praxmail init` on a fresh home with the given upstream, allowing large mails.
 *
 * @param home - The folder.
 * @param upstream - smtp:// URL.
 * @param extra - More init flags, e.g. `--database … --blobs …` (AWS_* from this process's environment).
 */
export async function initBenchHome(home: string, upstream: string, extra: readonly string[] = []): Promise<void> {
  await new Promise<void>((res, rej) => {
    const c = spawn(process.execPath, [BIN, "init", "--yes", "--no-keyring", "--home", home, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example", "--upstream", upstream, ...extra], { stdio: "ignore" });
    c.on("exit", (code) => {
      if (code === 0) res();
      else rej(new Error(`init failed: ${String(code)}`));
    });
  });
  const path = join(home, "config.json");
  const config = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
  await writeFile(path, JSON.stringify({ ...config, relay: { maxSize: 200 * 1024 * 1024 } }));
}

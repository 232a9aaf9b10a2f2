// What the benchmarks share: a mail with one attachment, a counting SMTP sink, and
// `praxmail init` for a fresh home.
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SMTPServer } from "smtp-server";

/** How a child process went: exit code, wall time, and (when tracked) peak RSS. */
export interface Measured {
  readonly code: number | null;
  readonly seconds: number;
  /** Bytes; 0 unless tracked. */
  readonly peak: number;
  /** The end of what it wrote to stderr. */
  readonly stderr: string;
}

/**
 * Runs a program to its end and times it, from spawn to exit.
 *
 * @param cmd - The program.
 * @param args - Its arguments.
 * @param trackPeak - Poll its VmHWM every 10 ms (the last reading before exit is the peak).
 * @returns How it went.
 */
export function measure(cmd: string, args: readonly string[], trackPeak = false): Promise<Measured> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
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
    child.on("exit", (code) => {
      clearInterval(timer);
      resolvePromise({ code, peak, stderr, seconds: (performance.now() - started) / 1000 });
    });
  });
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
 */
export async function initBenchHome(home: string, upstream: string): Promise<void> {
  await new Promise<void>((res, rej) => {
    const c = spawn(process.execPath, [BIN, "init", "--yes", "--no-keyring", "--home", home, "--practice-name", "Praxis", "--practice-email", "praxis@praxis.example", "--upstream", upstream], { stdio: "ignore" });
    c.on("exit", (code) => {
      if (code === 0) res();
      else rej(new Error(`init failed: ${String(code)}`));
    });
  });
  const path = join(home, "config.json");
  const config = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
  await writeFile(path, JSON.stringify({ ...config, relay: { maxSize: 200 * 1024 * 1024 } }));
}

// A throw-away Postfix instance for tests (../shared/recipes/postfix-test-instance.md): its
// own config and queue directories, loopback ports, and our README's milter lines.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { cleanup, initHome, tempDir } from "./cli.js";
import { freePort, startServe, type Served } from "./serve.js";
import { startSink, type Received, type Sink } from "./sink.js";

/** A running test Postfix. */
export interface TestPostfix {
  /** Where clients submit (its smtpd with the milter). */
  readonly smtpPort: number;
  /** The reinjection smtpd without milters. */
  readonly reinjectPort: number;
  readonly log: () => Promise<string>;
  stop(): Promise<void>;
}

/**
 * The README's Postfix lines for milter mode: every line of the fenced block that follows
 * the given marker.
 *
 * @param marker - The comment line that opens the block, e.g. `# main.cf: praxmail milter`.
 * @returns The lines, as the README has them.
 */
export async function readmeLines(marker: string): Promise<string> {
  // From test/helpers/ or from its compiled copy under .bench-dist/.
  const candidates = [resolve(import.meta.dirname, "../../README.md"), resolve(import.meta.dirname, "../../../README.md")];
  const path = candidates.find((c) => existsSync(c) && existsSync(join(dirname(c), "package.json"))) ?? candidates[0]!;
  const readme = await readFile(path, "utf8");
  const at = readme.indexOf(marker);
  if (at === -1) throw new Error(`README has no block "${marker}"`);
  const end = readme.indexOf("```", at);
  return readme.slice(at, end);
}

/**
 * Starts Postfix with the README's milter lines, pointed at our milter and sink.
 *
 * @param dir - An empty folder for the instance.
 * @param ports - Its smtpd and reinjection ports, the milter's and the sink's.
 * @param extraMainCf - More main.cf lines (e.g. a higher message_size_limit).
 * @returns The instance.
 */
export async function startPostfix(dir: string, ports: { smtp: number; reinject: number; milter: number; sink: number }, extraMainCf = ""): Promise<TestPostfix> {
  const conf = join(dir, "conf");
  for (const d of ["conf", "queue", "data"]) await mkdir(join(dir, d), { recursive: true });
  // Postfix's daemons run as the postfix user and must reach data/ and queue/.
  await chmod(dirname(dir), 0o755);
  await chmod(dir, 0o755);
  await copyFile("/etc/postfix/master.cf", join(conf, "master.cf"));
  let master = await readFile(join(conf, "master.cf"), "utf8");
  master = master.replace(/^smtp {6}inet {2}n {7}- {7}y {7}- {7}- {7}smtpd$/m, `${ports.smtp}      inet  n       -       n       -       -       smtpd`);
  if (!master.includes(`${ports.smtp}      inet`)) throw new Error("master.cf has no smtpd line to move");
  const reinject = (await readmeLines("# master.cf: praxmail reinjection")).replace("127.0.0.1:10026", `127.0.0.1:${ports.reinject}`);
  await writeFile(join(conf, "master.cf"), `${master}\n${reinject}`);
  const milter = (await readmeLines("# main.cf: praxmail milter")).replace("inet:127.0.0.1:8891", `inet:127.0.0.1:${ports.milter}`);
  await writeFile(
    join(conf, "main.cf"),
    `compatibility_level = 3.6
queue_directory = ${dir}/queue
data_directory = ${dir}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:${ports.sink}
maillog_file = ${dir}/maillog
maillog_file_prefixes = /tmp
smtp_tls_security_level = none
alias_maps =
alias_database =
${milter}
${extraMainCf}`,
  );
  execFileSync("postfix", ["-c", conf, "set-permissions"], { stdio: "ignore" });
  execFileSync("chown", ["-R", "postfix", join(dir, "data")]);
  try {
    execFileSync("postfix", ["-c", conf, "start"], { stdio: "pipe" });
  } catch (e) {
    const log = await readFile(join(dir, "maillog"), "utf8").catch(() => "");
    throw new Error(`postfix did not start: ${(e as Error).message}\n${log}`, { cause: e });
  }
  return {
    smtpPort: ports.smtp,
    reinjectPort: ports.reinject,
    log: () => readFile(join(dir, "maillog"), "utf8").catch(() => ""),
    stop() {
      try {
        execFileSync("postfix", ["-c", conf, "stop"], { stdio: "ignore" });
      } catch {
        // already stopped
      }
      return Promise.resolve();
    },
  };
}

/**
 * Waits until the sink has received at least n messages.
 *
 * @param sink - The next hop of the test Postfix.
 * @param n - How many messages to wait for.
 * @param pf - The instance, whose log is shown when they do not come within 30 s.
 * @returns The sink's messages.
 */
export async function waitForSink(sink: Sink, n: number, pf: TestPostfix): Promise<Received[]> {
  const until = Date.now() + 30_000;
  while (sink.messages.length < n) {
    if (Date.now() > until) throw new Error(`sink has ${sink.messages.length} of ${n} messages; maillog:\n${(await pf.log()).slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return sink.messages;
}

/** A temp home whose `praxmail serve --milter` sits in a throw-away Postfix, with a sink as Postfix's next hop. */
export interface PostfixMilter {
  readonly dir: string;
  readonly home: string;
  readonly sink: Sink;
  readonly pf: TestPostfix;
  /** The running praxmail serve, or null while it is stopped. */
  readonly served: Served | null;
  /** Starts praxmail serve --milter (again) on the milter port Postfix calls. */
  startPraxmail(): Promise<void>;
  /** Stops praxmail serve, so that Postfix finds no milter. */
  stopPraxmail(): Promise<void>;
  /** Stops everything and removes the temp folder. */
  stop(): Promise<void>;
}

/**
 * Starts the whole milter chain for a test file: a sink, an x25519 home whose upstream is
 * Postfix's reinjection port, `praxmail serve --milter`, and Postfix with our README's lines.
 *
 * @returns The running chain.
 */
export async function startPostfixMilter(): Promise<PostfixMilter> {
  const dir = await tempDir();
  const home = join(dir, "home");
  const sink = await startSink();
  const ports = { smtp: await freePort(), reinject: await freePort(), milter: await freePort(), sink: sink.port };
  await initHome(home, ["--recipient-type", "x25519", "--upstream", `smtp://127.0.0.1:${String(ports.reinject)}`]);
  let served: Served | null = null;
  const chain = {
    dir,
    home,
    sink,
    pf: null as unknown as TestPostfix,
    get served(): Served | null {
      return served;
    },
    async startPraxmail(): Promise<void> {
      served = await startServe(home, 0, ["--milter", `127.0.0.1:${String(ports.milter)}`]);
    },
    async stopPraxmail(): Promise<void> {
      await served?.stop();
      served = null;
    },
    async stop(): Promise<void> {
      await (chain.pf as TestPostfix | null)?.stop();
      await chain.stopPraxmail();
      await sink.close();
      await cleanup(dir);
    },
  };
  try {
    await chain.startPraxmail();
    chain.pf = await startPostfix(join(dir, "postfix"), ports);
  } catch (e) {
    await chain.stop();
    throw e;
  }
  return chain;
}


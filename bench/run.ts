// npm run bench: runs every benchmark, prints a table, and writes BENCHMARKS.md.
// BENCH_RUNS sets the runs per figure (default 5); BENCH_ONLY=age,relay runs only those
// sections (and then prints without writing BENCHMARKS.md).
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { CHROMIUM } from "../test/helpers/browser.js";
import { AGE_FIGURES, ageBench } from "./age.js";
import { approveBench } from "./approve.js";
import { browserBench } from "./browser.js";
import { cliBench } from "./cli.js";
import { journeyBench } from "./journey.js";
import { milterBench } from "./milter.js";
import { portalBench } from "./portal.js";
import { relayBench } from "./relay.js";
import { sendBench } from "./send.js";
import { sharedBench } from "./shared.js";
import { machine, median, round, show, type Figure } from "./stats.js";

type Log = (s: string) => void;
const runs = Number(process.env.BENCH_RUNS ?? 5);
const only = process.env.BENCH_ONLY?.split(",").filter(Boolean);
const log: Log = (s) => {
  process.stderr.write(`${s}\n`);
};

const SECTIONS: { key: string; title: string; run: (runs: number, log: Log) => Promise<Figure[] | string> }[] = [
  { key: "age", title: "age: encrypt and decrypt 256 MiB", run: ageBench },
  { key: "send", title: "CLI send (streaming encryption)", run: sendBench },
  { key: "cli", title: "CLI start", run: cliBench },
  { key: "relay", title: "SMTP relay", run: relayBench },
  { key: "milter", title: "Postfix milter", run: milterBench },
  { key: "approve", title: "Approve (rewrap only)", run: approveBench },
  { key: "portal", title: "Portal under load", run: portalBench },
  { key: "shared", title: "Shared backend (PostgreSQL + S3)", run: sharedBench },
  {
    key: "journey",
    title: "Patient journeys (actions at 390×844)",
    run: (n, l) => (existsSync(CHROMIUM) ? journeyBench(n, l) : Promise.resolve(`skipped: no Chromium at ${CHROMIUM}`)),
  },
  {
    key: "browser",
    title: "In Chromium",
    run: (n, l) => (existsSync(CHROMIUM) ? browserBench(n, l) : Promise.resolve(`skipped: no Chromium at ${CHROMIUM}`)),
  },
];

log(`praxmail benchmarks, ${runs} runs each: ${machine()}`);
const done: { title: string; figures: Figure[] }[] = [];
const skipped: string[] = [];
for (const s of SECTIONS) {
  if (only && !only.includes(s.key)) continue;
  log(`${s.title}…`);
  const started = performance.now();
  const result = await s.run(runs, log);
  log(`  (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  if (typeof result === "string") skipped.push(`- ${s.title}: ${result}`);
  else done.push({ title: s.title, figures: result });
}

/**
 * Why the age target is missed: every number from this run's figures; the rest is what
 * `node --cpu-prof` and `perf` showed on this machine, stated without numbers because
 * those profiles are not part of the run.
 */
function ageMiss(figures: readonly Figure[]): string {
  const m = (name: string): number => median(figures.find((f) => f.name === name)?.runs ?? []);
  const s = (name: string): string => `${round(m(name))} s`;
  const F = AGE_FIGURES;
  const goEncrypt = m(F.wall("encrypt", "go"));
  const share = ((100 * m(F.oursStart)) / goEncrypt).toFixed(0);
  const budget = 1.3 * goEncrypt - m(F.oursStart);
  return `
## Why ours is slower than the Go CLI

The age target (within 1.3× of the Go CLI's wall time for 256 MiB) is missed. From this run:

- **Starting Node.** Ours takes ${s(F.oursStart)} to encrypt an empty file, and \`node -e 0\`
  takes ${s(F.nodeStart)}; the Go CLI takes ${s(F.goStart)}. That fixed cost is ${share}% of the Go CLI's
  whole encryption of 256 MiB (${s(F.wall("encrypt", "go"))}): within 1.3×, ours has ${round(budget)} s left for
  the 256 MiB themselves, ${round(budget / goEncrypt)}× the Go CLI's time for all of its run.
- **CPU time.** Ours uses ${round(m(F.cpuRatio("encrypt")))}× the Go CLI's CPU time (user + system) to
  encrypt and ${round(m(F.cpuRatio("decrypt")))}× to decrypt. Reads and writes run in libuv's thread pool
  beside the cipher (one read ahead, one write in flight), but with two vCPUs shared with
  other jobs that overlap helps only when a core is free; otherwise the wall time follows
  the CPU time.

What the profiles of \`agefile.js\` (\`node --cpu-prof\`, \`perf\`) showed, without figures
because they are not part of this run:

- ChaCha20-Poly1305 itself is OpenSSL's vectorised code and not what is slower. What
  costs is around it: node:crypto cannot re-key an AEAD or write into a caller's buffer,
  so every 64 KiB chunk gets a new cipher object and a new, zero-filled output buffer.
- Those buffers are garbage once written. V8 frees them only at a scavenge, which it
  starts when new backing stores reach twice its default semi-space size; memory touched
  fresh each time costs page faults, which show as system time, and the collections show
  as garbage-collection time.
- The copies into and out of the page cache are the kernel's, the same for both programs.
`;
}

/**
 * What the CPU and heap profiles showed on this machine for targets other than age, by the
 * start of the target's figure name; printed only when that target is missed in this run.
 * Stated without figures, because the profiles are not part of the run.
 */
const MISS_PROFILES: readonly { readonly prefix: string; readonly title: string; readonly text: string }[] = [
  {
    prefix: "send 256 MiB",
    title: "send of 256 MiB against age -r",
    text: `A CPU profile of \`praxmail send\` (\`node --cpu-prof\`) spends its time, largest first, in:
starting Node and compiling the CLI's shared chunk; garbage collection of the per-chunk
buffers (see the age analysis); ChaCha20-Poly1305; reading; waiting for writes and the
fsyncs of blob and folder; and the pure-JavaScript ML-KEM-768 key wrap of the default
\`mlkem768x25519\` recipients. The Go CLI has none of the start or collection costs and
wraps to X25519 only.`,
  },
  {
    prefix: "send: peak RSS for a 1 GiB file",
    title: "send's peak memory",
    text: `The figures above split it: \`send --help\` is the memory of loading the CLI, the 10 MiB
send adds what every send loads and does, and only the difference between 10 MiB and
1 GiB grows with the file. That part is V8's, not praxmail's buffers: each 64 KiB chunk
node:crypto encrypts is a new buffer, and V8 frees them only at its next scavenge.`,
  },
  {
    prefix: "CLI: send 1 KiB",
    title: "the start of send",
    text: `A CPU profile of a 1 KiB \`send\` shows, besides Node's start: the pure-JavaScript
ML-KEM-768 + X25519 key wrap of the default recipients (age-encryption), Node's \`fetch\`
stack that age-encryption loads to read its input, the date and number formats of the
notification, and compiling the chunks it loads (the core's chunk holds conf, which loads
ajv whether or not a schema is given). The relay's MIME pipeline is no longer among them:
the commands reach the notifier through \`mail/notify.ts\`.`,
  },
  {
    prefix: "relay: level-3 throughput / passthrough",
    title: "the relay at level 3",
    text: `CPU profiles of \`praxmail serve\` under 16 clients show its main thread busy at level 3.
Per message, beyond passthrough, it spends (largest first): the pure-JavaScript ML-KEM-768 +
X25519 key wrap for the default practice recipient; mailsplit scanning the base64 body;
two SQLite transactions per delivery (commit and marking it sent), synced to disk and
blocking the event loop; validating the base64; garbage collection; and the blob fsyncs.
The load generator shares the two vCPUs with the relay.`,
  },
  {
    prefix: "shared: relay throughput, one shared node / one embedded node",
    title: "the relay on the shared backend",
    text: `Per level-3 mail the shared node commits 4.4 PostgreSQL transactions (counted in
pg_stat_database, see the figure), each several round trips (BEGIN, the write lock, the
statements, COMMIT) where SQLite commits in-process, and every write transaction of every
node first takes one advisory lock; it writes the blob as an S3 PutObject through Swift's
proxy, a Python process on the same two vCPUs, instead of a local file and two fsyncs.
With two nodes, a large share of the sampled transactions wait for that lock (the row
"waiting for the write lock"), and about as many are idle in the transaction: the node
works between its statements while it holds the lock, which the other node then waits
for. The CPU work per mail (key wrap, base64, MIME) is the same on both backends.`,
  },
  {
    prefix: "shared: portal delivery",
    title: "portal pages on the shared backend",
    text: `A delivery page is four queries (the session first, then the delivery, the patient and
its files at once) and the delivery list four (the session; the patient and its
deliveries at once; then their files in one query), each its own
implicit transaction on PostgreSQL (the row "transactions per delivery page view"); on
SQLite each is a function call in the portal's process. CPU profiles of \`praxmail serve\`
(\`node --cpu-prof\`) under the list load, one per backend, show the shared node with about
twice the busy time per request: the extra is, largest first, the socket writes of its
queries (libuv's writeBuffer, one system call per query, as nothing is batched), postgres.js
parsing the answers, and garbage collection; routing, templates and the HTTP writes cost
the same on both. PostgreSQL's backend needs CPU for every query too, on the same two
vCPUs, so with 10 connections the shared portal answers fewer requests per second and each
waits longer (the p50 rows). The p99 adds the tail of the round trips (the row "one
PostgreSQL round trip": its p99 is many times its p50): each query wakes PostgreSQL's
process and then the node, and on a busy machine a wake-up can wait for a time slice; a
page that waits for two or three round trips in a row meets that tail more often. The session's
last-seen time is written at most once a minute, so the write lock plays no part. Reading
session and patient in one query would save a round trip on every page.`,
  },
  {
    prefix: "shared: approve, PostgreSQL / SQLite",
    title: "approve on PostgreSQL",
    text: `\`approvePatients\` (src/core/approve.ts) reads the practice wraps of all due deliveries
in one query (the figure "transactions per approved delivery"), unwraps and rewraps each,
then writes the wraps and statuses in one transaction with two statements per delivery,
each awaited in turn. On SQLite those are function calls; on PostgreSQL 2,000 round trips.
The process's CPU time differs far less than its wall time (see the CPU rows), so the rest
is waiting; multi-row statements would remove most of it.`,
  },
  {
    prefix: "browser: decrypt-and-save",
    title: "decrypt-and-save in Chromium",
    text: `Chromium's profiler shows libsodium's WASM AEAD as the largest part, then the Blob and its
object URL, then our code around the cipher; the rest is Chromium waiting for the fetch
stream and writing the download. Calling the WASM export on one reserved buffer, larger
Blob parts and reading the whole response first were each tried and were not faster.`,
  },
];

/** @returns The profile sections of the targets other than age that this run missed. */
function missProfiles(missed: readonly Figure[]): string {
  return MISS_PROFILES.filter((p) => missed.some((f) => f.name.startsWith(p.prefix)))
    .map((p) => `\n## Why ${p.title} misses its target\n\n${p.text}\n`)
    .join("");
}

/** A target written into a figure's name, e.g. "(target ≤ 1.3)". */
function target(f: Figure): { text: string; met: boolean; by: string } | null {
  const m = /\(target ([≤≥<>]) ([\d.]+)\)/.exec(f.name);
  if (!m) return null;
  const [, op = "", limitText = ""] = m;
  const limit = Number(limitText);
  const value = median(f.runs);
  const met = op === "≤" ? value <= limit : op === "≥" ? value >= limit : op === "<" ? value < limit : value > limit;
  const off = op === "≤" || op === "<" ? value / limit - 1 : 1 - value / limit;
  return { text: `${op} ${limitText}`, met, by: met ? "" : `missed by ${(off * 100).toFixed(0)}%` };
}

const lines: string[] = [];
const targets: string[] = ["| figure | target | median | |", "|---|---|---|---|"];
for (const s of done) {
  lines.push(`\n## ${s.title}\n`, "| figure | median (min–max) |", "|---|---|");
  for (const f of s.figures) {
    lines.push(`| ${f.name} | ${show(f)} |`);
    const t = target(f);
    if (t) targets.push(`| ${f.name.replace(/ \(target .*\)$/, "")} | ${t.text} | ${round(median(f.runs))} ${f.unit} | ${t.met ? "met" : `**${t.by}**`} |`);
  }
}
const missed = done.flatMap((s) => s.figures).filter((f) => target(f)?.met === false);
const ageMissed = missed.some((f) => f.name.includes("ours / Go"));
const table = [`\n## Targets\n`, ...targets, ...lines].join("\n");
process.stdout.write(`${table}\n${skipped.join("\n")}\n`);
if (only) process.exit(0);

const doc = `# Benchmarks

Written by \`npm run bench\` (${runs} runs per figure; ratios are taken within the same run,
because these machines are shared and noisy). Latency rows give p50 and p99 over every
request of every run.

Machine: ${machine()}
${table}
${skipped.length ? `\n## Skipped\n\n${skipped.join("\n")}\n` : ""}${missProfiles(missed)}${ageMissed ? ageMiss(done.flatMap((d) => d.figures)) : ""}
## Notes

- **age.** Each implementation is a process that reads a file and writes a file, as the Go
  CLI does: ours and age-encryption run through \`bench/agefile.ts\`, so their times include
  starting Node (the "start" rows give that fixed cost, measured on an empty file). Wall and
  CPU times are taken through a bash that runs the program and prints \`times\`, the same
  for every implementation. The key is X25519, because the Go CLI in Debian 12
  (1.1.1) has no post-quantum recipients. For X25519 ours needs no age-encryption at all:
  header (\`src/crypto/header.ts\`) and payload (\`src/crypto/payload.ts\`) are node:crypto.
  Before anything is timed, every implementation's file is opened by \`age -d\` and every
  implementation decrypts the Go file, compared by SHA-256.
- **send.** \`praxmail send\` of 256 MiB against \`age -r\` on the same file, each a process,
  start included. send makes its blob durable (fsync of the file and of its folder) and
  commits rows, which \`age -r\` does not; so the baseline with the target is \`age -r -o out\`
  followed by \`sync out\` (an fsync of that file), and the ratio to \`age -r\` alone is shown
  beside it. The home has the default ML-KEM-768 + X25519 recipients, so send's header comes
  from age-encryption; the Go CLI (1.1.1) gets an X25519 key. The peak RSS of
  \`send --help\`, which only loads the CLI, is the part of send's peak that is code.
- **CLI start.** Each command is the real \`bin/praxmail\`, timed from spawn to exit against
  \`node -e 0\` in the same run. \`list\` reads a home that eight concurrent \`send\` runs
  filled with 10,000 level-1 deliveries; \`send\` mails a 1 KiB file at the defaults (level
  3, \`mlkem768x25519\`) into the outbox. \`npm run build\` bundles the CLI
  (\`scripts/build-cli.mjs\`): \`dist/cli.js\` holds only the commands' definitions, and each
  command's code is a chunk loaded when it runs.
- **Relay.** The figures come from the real \`praxmail serve\` in its own process, a fresh one
  per number of clients; the SMTP clients (nodemailer, one connection each) and the upstream
  sink (smtp-server) share the benchmark process, so with two vCPUs the passthrough baseline
  is partly bounded by the load generator. Peak RSS at each number of clients is VmHWM,
  reset (\`/proc/PID/clear_refs\`) before that run's level-3 mails.
- **Peak RSS** is VmHWM from /proc. \`send\` reads a sparse file, so the 1 GiB figure measures
  encryption and disk writes, not reading from disk.
- **Milter.** Two Postfix test instances built from the README's lines, one with
  \`smtpd_milters\` empty; throughput counts until the sink has every message, so it includes
  Postfix's queue and delivery. The milter holds Postfix's smtpd for the whole message
  while it encrypts (Postfix waits for each body reply), which is why it costs more than
  the relay. Its peak RSS is taken from a fresh \`praxmail serve\` per size and run.
- **Approve** runs the real \`praxmail approve --yes\` on 1,000 deliveries, then resets the
  patient's Secu-Pass-Key (which returns the deliveries to pending) for the next run. Its
  time is per delivery: unwrap wrap[P], write wrap[U]; no payload is read. With the default
  \`mlkem768x25519\` keys most of it is the pure-JavaScript ML-KEM in age-encryption.
- **Portal.** The delivery page is loaded with autocannon. The 10 MiB download is loaded
  with node:http keep-alive clients instead, because autocannon turns every body chunk into
  a string, so that it measures itself rather than the portal; each response is checked for
  status 200 and the exact blob size. Any non-2xx answer fails the benchmark.
- **Shared backend.** A PostgreSQL cluster (Debian's, 15 or newer) and an OpenStack Swift
  with s3api, both started by the section itself (test/helpers/postgres.ts and s3.ts), on
  the same machine as the nodes and the load. That PostgreSQL runs with fsync off, so its
  commits cost no disk flush while the embedded backend's do: on real hardware the shared
  figures would be somewhat slower, on a real network more so. The relay rows send 1 MiB
  level-3 mails with 8 nodemailer clients to one embedded node, one shared node, and two
  shared nodes (two \`praxmail serve\` on one backend; node B is a home with copies of node
  A's config.json, identity and portal-signing.key) with 4 clients each. Level 3 is bound
  by CPU, and two vCPUs are shared by both nodes, PostgreSQL, Swift and the load
  generator, so on this machine a second node adds availability, not throughput; the
  share of sampled transactions waiting for the write lock (pg_stat_activity, every 20 ms)
  says how much of the rest is the lock. The portal rows are autocannon's p99 over 10
  connections for a logged-in patient's delivery list and a level-3 delivery page, both
  backends alternately in each run. Approve uses X25519 and 1 KiB files, so that neither
  the key wrap nor the setup hides the store's share. Transactions are PostgreSQL's own
  count of commits in the database (pg_stat_database) over a serve or approve process
  from start to exit, less those of a run that does nothing.
- **Patient journeys** come from \`test/portal.journey.actions.test.ts\`, which the section runs:
  real Chromium at 390×844 (a phone with a virtual platform authenticator with PRF), the
  real \`praxmail serve\`, \`approve\` and \`invite\`, and the mails in the outbox. Each typed
  field, each tap and each opened mail counts 1, as issue 16 counts them; tapping a mail's
  link opens a new page, so nothing an earlier page held in memory helps. The practice's
  approval is a wait, not an action. The test itself fails when a count is over its target.
- **Chromium.** Headless Chromium runs the portal's own code. Unlocking is timed in the
  portal's worker and, as the portal did before, on the page's thread, counting the frames
  painted meanwhile. Decrypt-and-save runs until the download is on disk, once from a file
  served from memory (with the target) and once through the real \`praxmail serve\`
  (a level-1 link and a click on "Speichern"); the bare AEADs and a fetch alone are the
  ceilings, and age-encryption's Decrypter is the pure-JavaScript comparison.
`;
await writeFile(resolve(import.meta.dirname, "../../BENCHMARKS.md"), doc);

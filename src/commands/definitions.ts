// The commands as commander sees them: names, arguments, options and descriptions, cheap to
// build for --help and parsing. Each action imports its command's module only when it runs,
// so `praxmail --version` or `list` never loads what `serve` or `send` need.
import { Argument, Command, InvalidArgumentError, Option } from "commander";
import type { AuditAnchor } from "../core/index.js";
import { DEFAULTS } from "../core/defaults.js";
import { RECIPIENT_TYPES } from "../crypto/identity.js";
import { parseMilterListen, type MilterListen } from "../milter/listen.js";
import { parseTrustedProxies } from "../portal/proxies.js";
import type { Listen } from "../relay/server.js";
import type { ApproveFlags } from "./approve.js";
import type { AuditFlags } from "./audit.js";
import type { DoctorFlags } from "./doctor.js";
import type { ExportFlags } from "./export.js";
import type { GcFlags } from "./gc.js";
import type { InitFlags } from "./init.js";
import type { InviteFlags } from "./invite.js";
import type { MigrateFlags } from "./migrate.js";
import type { What } from "./list.js";
import type { ReceiveFlags } from "./receive.js";
import type { RestoreFlags } from "./restore.js";
import type { RevokeFlags } from "./revoke.js";
import type { SendFlags } from "./send.js";
import type { ServeFlags } from "./serve.js";

/** Options every command has. */
export interface HomeOptions {
  home?: string;
}

/** Options of commands that print data. */
export interface JsonOptions {
  json?: boolean;
}

/** Where commands write; injected so that run* functions stay testable. */
export interface Io {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  /** True when both stdin and stderr are terminals: prompts and progress are allowed. */
  readonly interactive: boolean;
  readonly env: NodeJS.ProcessEnv;
}

/** The process's real streams. */
export const processIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  interactive: process.stdin.isTTY && process.stderr.isTTY,
  env: process.env,
};

/**
 * Adds `--home` (and `--json` when asked) to a command.
 *
 * @param cmd - The command.
 * @param json - Whether the command prints data.
 * @returns The same command.
 */
export function common(cmd: Command, json = true): Command {
  cmd.addOption(new Option("--home <dir>", "praxmail home (config and data)").env("PRAXMAIL_HOME"));
  if (json) cmd.option("--json", "print machine-readable JSON on stdout");
  return cmd;
}

/**
 * Parses `host:port`, `[v6]:port` or `:port`.
 *
 * @param v - The flag value.
 * @returns Host and port.
 * @throws InvalidArgumentError for anything else.
 */
export function parseListen(v: string): Listen {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new InvalidArgumentError("use HOST:PORT, e.g. 127.0.0.1:2525");
  return { host: m[1] ?? (m[2] || "127.0.0.1"), port };
}

function milterArg(v: string): MilterListen {
  try {
    return parseMilterListen(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function trustedProxies(v: string): string[] {
  try {
    return parseTrustedProxies(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function parseLevel(v: string): number {
  if (!/^[1-4]$/.test(v)) throw new InvalidArgumentError("use a level from 1 to 4");
  return Number(v);
}

function anchor(v: string): AuditAnchor {
  const m = /^([1-9]\d{0,15}):([0-9a-f]{64})$/.exec(v.trim().toLowerCase());
  if (!m) throw new InvalidArgumentError("give SEQ:HASH, a row number and its 64 hex digits, as --sign prints them");
  return { seq: Number(m[1]), hash: m[2] ?? "" };
}

function minutes(v: string): number {
  if (!/^\d{1,6}$/.test(v)) throw new InvalidArgumentError("give whole minutes");
  return Number(v);
}

function whole(lo: number, hi: number): (v: string) => number {
  return (v) => {
    if (!/^\d{1,9}$/.test(v) || Number(v) < lo || Number(v) > hi) throw new InvalidArgumentError(`give a whole number from ${lo} to ${hi}`);
    return Number(v);
  };
}

function initCommand(io: Io): Command {
  return common(new Command("init"))
    .description("set up a practice: configuration and practice identity (re-run to change settings)")
    .option("--practice-name <name>", "the practice's name, shown to patients")
    .option("--practice-email <address>", "the practice's address, sender of notifications")
    .option("--portal-url <url>", `public URL of the patient portal (default ${DEFAULTS.portalUrl})`)
    .option("--upstream <url>", "smtp:// or smtps:// URL for outgoing mail (default: the outbox folder)")
    .option("--database <url>", "postgres:// URL of the shared backend's database (with --blobs; default: SQLite under home)")
    .option("--blobs <url>", "s3://bucket/prefix of the shared backend's blobs (with --database; default: files under home)")
    .addOption(new Option("--recipient-type <type>", "key type for new keys").choices(RECIPIENT_TYPES))
    .option("--logo <file>", "the practice's logo in the portal's header: a PNG or SVG of at most 200 KiB, copied into home")
    .option("--accent <colour>", "the portal's accent colour #rrggbb (buttons, links, header); needs a WCAG contrast of at least 4.5:1 on white and on the portal's cards")
    .option("--no-keyring", "store the practice identity in a file even if an OS keyring answers")
    .option("--protect", "protect the identity file with a passphrase (PRAXMAIL_IDENTITY_PASSPHRASE in scripts)")
    .option("-y, --yes", "no wizard: take flags and defaults")
    .option("--join <home>", "make this home a further node of the practice whose node home this is (copies its config.json, identity file and portal-signing.key)")
    .addHelpText(
      "after",
      `
A shared backend (--database, --blobs) belongs to the practice whose init ran first on it;
init refuses to make a second practice there. To add a node of that practice, give the new
home a copy of an existing node's config.json, practice identity and portal-signing.key:

  praxmail init --home /var/lib/praxmail --join /mnt/node-a/praxmail

or copy the three files by hand (mode 0600). An identity kept in the OS keyring stays there.`,
    )
    .action(async (flags: InitFlags) => {
      const { initAction } = await import("./init.js");
      await initAction(io, flags);
    });
}

function serveCommand(io: Io): Command {
  return common(new Command("serve"), false)
    .description("run the SMTP relay, the patient portal and (with --milter) the Postfix milter; first run sets up home on defaults")
    .addOption(new Option("--smtp <host:port>", "SMTP relay listen address").env("PRAXMAIL_SMTP").argParser(parseListen).default(parseListen("127.0.0.1:2525"), "127.0.0.1:2525"))
    .addOption(new Option("--http <host:port>", "portal listen address").env("PRAXMAIL_HTTP").argParser(parseListen).default(parseListen("127.0.0.1:8080"), "127.0.0.1:8080"))
    .addOption(new Option("--milter <address>", "also run the Postfix milter on host:port or unix:/path (e.g. 127.0.0.1:8891)").env("PRAXMAIL_MILTER").argParser(milterArg))
    .addOption(new Option("--metrics <host:port>", "serve Prometheus metrics at /metrics on a plain-HTTP listener of their own (e.g. 127.0.0.1:9464; loopback only unless --metrics-remote); default off").env("PRAXMAIL_METRICS").argParser(parseListen))
    .option("--metrics-remote", "allow a --metrics address that other machines can reach (the metrics hold counts, no patient data)")
    .addOption(new Option("--trust-proxy <addresses>", "load balancers in front of the portal, comma-separated addresses or CIDR ranges (e.g. 10.0.0.10,10.1.0.0/24): the client's address for the per-address limits comes from their X-Forwarded-For; default nobody (the direct peer's address)").env("PRAXMAIL_TRUST_PROXY").argParser(trustedProxies))
    .action(async (flags: ServeFlags) => {
      const { serveAction } = await import("./serve.js");
      await serveAction(io, flags);
    });
}

function sendCommand(io: Io): Command {
  return common(new Command("send"))
    .description("encrypt files into a delivery for each recipient and mail them the link")
    .argument("[files...]", "files to send")
    .requiredOption("--to <email>", "recipient address (repeat for several; each gets their own delivery)", (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option("--level <1-4>", "security level (3: Secu-Pass-Key; 4: subject and message encrypted too)", parseLevel, 3)
    .option("--subject <text>", "subject (levels 1–3; at level 4 it is encrypted)")
    .option("--message <text>", "message text (in the mail at levels 1–3, encrypted at level 4)")
    .option("--message-file <file>", "read the message text from a UTF-8 file")
    .action(async (paths: string[], flags: SendFlags) => {
      const { sendAction } = await import("./send.js");
      await sendAction(io, paths, flags);
    });
}

function approveCommand(io: Io): Command {
  return common(new Command("approve"))
    .description("approve patients who set their Secu-Pass-Key, releasing their deliveries")
    .argument("[emails...]", "patients to approve (default: choose on a terminal)")
    .option("--identity <file>", "practice identity file (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .option("--code <code>", "the safety code compared with the patient (one patient only); approve only if it is still theirs")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (emails: string[], flags: ApproveFlags) => {
      const { approveAction } = await import("./approve.js");
      await approveAction(io, emails, flags);
    });
}

function inviteCommand(io: Io): Command {
  return common(new Command("invite"))
    .description("invite a patient at the counter: a link, a one-time code and a QR code, signed with the practice identity; approved once the Secu-Pass-Key is set in the session that used the code")
    .argument("[email]", "the patient's address (reception has checked who they are)")
    .option("--list", "list invites and their status")
    .option("--revoke <id>", "revoke an open invite")
    .option("--identity <file>", "practice identity file, to sign the invite (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .action(async (email: string | undefined, flags: InviteFlags) => {
      const { inviteAction } = await import("./invite.js");
      await inviteAction(io, email, flags);
    });
}

function listCommand(io: Io): Command {
  return common(new Command("list"))
    .description("list deliveries, patients, or patients waiting for approval (pending: also approved patients whose deliveries wait)")
    .addArgument(new Argument("[what]", "what to list").choices(["deliveries", "patients", "pending"]).default("deliveries"))
    .action(async (what: What, flags: HomeOptions & JsonOptions) => {
      const { listAction } = await import("./list.js");
      await listAction(io, what, flags);
    });
}

function revokeCommand(io: Io): Command {
  return common(new Command("revoke"))
    .description("revoke a delivery, or a patient and all their deliveries; their files are deleted")
    .argument("[delivery-id]", "the delivery to revoke")
    .option("--patient <email>", "revoke this patient and every active delivery to them")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (id: string | undefined, flags: RevokeFlags) => {
      const { revokeAction } = await import("./revoke.js");
      await revokeAction(io, id, flags);
    });
}

function inboxCommand(io: Io): Command {
  return common(new Command("inbox"))
    .description("list secure replies from patients")
    .action(async (flags: HomeOptions & JsonOptions) => {
      const { inboxAction } = await import("./inbox.js");
      await inboxAction(io, flags);
    });
}

function receiveCommand(io: Io): Command {
  return common(new Command("receive"))
    .description("decrypt a patient's reply with the practice identity into a folder")
    .argument("<reply-id>", "the reply (see praxmail inbox)")
    .requiredOption("--out <dir>", "folder to write message.txt and the files into (only there)")
    .option("--identity <file>", "practice identity file (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .action(async (id: string, flags: ReceiveFlags) => {
      const { receiveAction } = await import("./receive.js");
      await receiveAction(io, id, flags);
    });
}

function exportCommand(io: Io): Command {
  return common(new Command("export"))
    .description("decrypt one delivery with the practice identity into a new folder, under the files' real names")
    .argument("<delivery>", "the delivery id (see praxmail list deliveries)")
    .requiredOption("--out <dir>", "a new or empty folder to write into (made mode 0700, files 0600)")
    .option("--identity <file>", "practice identity file (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .action(async (id: string, flags: ExportFlags) => {
      const { exportAction } = await import("./export.js");
      await exportAction(io, id, flags);
    });
}

function auditCommand(io: Io): Command {
  return common(new Command("audit"))
    .description("print the audit log, or check its hash chain and signed checkpoints")
    .option("--verify", "check the hash chain and every signed checkpoint; exit 1 naming the first row that does not fit")
    .option("--sign", "after verifying, sign a checkpoint over the log with the practice identity (implies --verify)")
    .option("--identity <file>", "practice identity file for --sign (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .option("--anchor <seq:hash>", "also check that row SEQ still has HASH, as an earlier --sign printed it (implies --verify)", anchor)
    .action(async (flags: AuditFlags) => {
      const { auditAction } = await import("./audit.js");
      await auditAction(io, flags);
    });
}

function gcCommand(io: Io): Command {
  return common(new Command("gc"))
    .description("expire deliveries that are due, delete files no delivery references, and with the practice identity sign an audit checkpoint")
    .option("--grace <minutes>", "keep unreferenced files younger than this (a running relay may be writing them)", minutes, 60)
    .option("--identity <file>", "practice identity file: sign an audit checkpoint (default: PRAXMAIL_IDENTITY; without either, none is signed)")
    .action(async (flags: GcFlags) => {
      const { gcAction } = await import("./gc.js");
      await gcAction(io, flags);
    });
}

function doctorCommand(io: Io): Command {
  return common(new Command("doctor"))
    .description("check config, permissions under home, practice identity, upstream, listen addresses, disk space, the portal URL, and on the shared backend the database and the bucket")
    .addOption(new Option("--smtp <host:port>", "relay address serve uses").env("PRAXMAIL_SMTP").argParser(parseListen).default(parseListen("127.0.0.1:2525"), "127.0.0.1:2525"))
    .addOption(new Option("--http <host:port>", "portal address serve uses").env("PRAXMAIL_HTTP").argParser(parseListen).default(parseListen("127.0.0.1:8080"), "127.0.0.1:8080"))
    .addOption(new Option("--milter <address>", "milter address serve uses (checked only when given)").env("PRAXMAIL_MILTER").argParser(milterArg))
    .option("--identity <file>", "check this practice identity file (default: PRAXMAIL_IDENTITY, then where init stored it)")
    .option("--min-free <MiB>", "fail when less disk space is free under home", whole(1, 10_000_000), 1024)
    .option("--timeout <seconds>", "how long to wait for upstream, the portal URL, the database and each bucket request", whole(1, 120), 5)
    .action(async (flags: DoctorFlags) => {
      const { doctorAction } = await import("./doctor.js");
      await doctorAction(io, flags);
    });
}

function backupCommand(io: Io): Command {
  return common(new Command("backup"))
    .description("copy the database (online snapshot), its blobs and config.json into a new folder, encrypted to the practice recipient")
    .argument("<dir>", "a new or empty folder for the backup")
    .action(async (dirArg: string, flags: HomeOptions & JsonOptions) => {
      const { backupAction } = await import("./backup.js");
      await backupAction(io, dirArg, flags);
    });
}

function restoreCommand(io: Io): Command {
  return common(new Command("restore"))
    .description("restore a backup made by praxmail backup into a new or empty home with the practice identity, checking every file against its manifest")
    .argument("<dir>", "the backup folder")
    .option("--identity <file>", "the practice identity file that opens the backup (default: PRAXMAIL_IDENTITY, then where the backed-up home kept it)")
    .action(async (dirArg: string, flags: RestoreFlags & JsonOptions) => {
      const { restoreAction } = await import("./restore.js");
      await restoreAction(io, dirArg, flags);
    });
}

function migrateCommand(io: Io): Command {
  return common(new Command("migrate"))
    .description("copy this home's practice (SQLite and blob files) into an empty shared backend, check every blob, and switch config.json to it; resumes after an interruption")
    .addOption(new Option("--database <url>", "postgres:// URL of the shared backend's database").env("PRAXMAIL_DATABASE"))
    .addOption(new Option("--blobs <url>", "s3://bucket/prefix of the shared backend's blobs").env("PRAXMAIL_BLOBS"))
    .action(async (flags: MigrateFlags) => {
      const { migrateAction } = await import("./migrate.js");
      await migrateAction(io, flags);
    });
}

/** Every command in the order --help lists them. */
export const COMMANDS: readonly ((io: Io) => Command)[] = [
  initCommand,
  serveCommand,
  sendCommand,
  approveCommand,
  inviteCommand,
  listCommand,
  revokeCommand,
  inboxCommand,
  receiveCommand,
  exportCommand,
  auditCommand,
  gcCommand,
  doctorCommand,
  backupCommand,
  restoreCommand,
  migrateCommand,
];

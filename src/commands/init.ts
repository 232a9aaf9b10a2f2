import { resolve } from "node:path";
import { confirm, input, password, select } from "@inquirer/prompts";
import { RECIPIENT_TYPES, isRecipientType, keyFingerprint, type RecipientType } from "../crypto/index.js";
import {
  DEFAULTS,
  PraxmailError,
  ensureWritableHome,
  initPractice,
  isInitialised,
  joinPractice,
  loadConfig,
  resolveHome,
  type InitResult,
} from "../core/index.js";
import type { HomeOptions, Io, JsonOptions } from "./definitions.js";
import { note, openShared, printJson } from "./shared.js";

export interface InitFlags extends HomeOptions, JsonOptions {
  practiceName?: string;
  practiceEmail?: string;
  portalUrl?: string;
  upstream?: string;
  database?: string;
  blobs?: string;
  recipientType?: string;
  keyring: boolean;
  protect?: boolean;
  yes?: boolean;
  join?: string;
  logo?: string;
  accent?: string;
}

const ctxOut = { output: process.stderr };

async function askPassphrase(io: Io, flags: InitFlags): Promise<string | undefined> {
  if (!flags.protect) return undefined;
  const fromEnv = io.env.PRAXMAIL_IDENTITY_PASSPHRASE;
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  if (!io.interactive) {
    throw new PraxmailError("usage", "--protect needs a passphrase, but stdin is not a terminal", "set PRAXMAIL_IDENTITY_PASSPHRASE");
  }
  for (;;) {
    const a = await password({ message: "Passphrase for the practice identity file", mask: "*" }, ctxOut);
    const b = await password({ message: "The same passphrase again", mask: "*" }, ctxOut);
    if (a !== b) note(io, "the passphrases differ; try again");
    else if (a.length < 12) note(io, "use at least 12 characters");
    else return a;
  }
}

/**
 * Runs init: the wizard on a terminal unless --yes, flags otherwise.
 *
 * @param io - The streams.
 * @param flags - Parsed options.
 * @returns What init did.
 */
export async function runInit(io: Io, flags: InitFlags): Promise<InitResult & { home: string; joined: boolean }> {
  const home = resolveHome(flags.home);
  await ensureWritableHome(home);
  if (flags.join !== undefined) return runJoin(home, flags.join, flags);
  const old = isInitialised(home) ? loadConfig(home) : undefined;
  const wizard = io.interactive && !flags.yes;
  let name = flags.practiceName ?? old?.practiceName;
  let email = flags.practiceEmail ?? old?.practiceEmail;
  let portalUrl = flags.portalUrl ?? old?.portalUrl ?? DEFAULTS.portalUrl;
  let upstream = flags.upstream ?? old?.upstream ?? "";
  let type: string = flags.recipientType ?? old?.crypto.recipientType ?? DEFAULTS.recipientType;
  if (wizard) {
    name = await input({ message: "Practice name", default: name, required: true }, ctxOut);
    email = await input({ message: "Practice e-mail address (sender of notifications)", default: email, required: true }, ctxOut);
    portalUrl = await input({ message: "Public portal URL", default: portalUrl }, ctxOut);
    upstream = await input({ message: "Upstream SMTP URL (empty: write mail to the outbox)", default: upstream }, ctxOut);
    if (!old) {
      type = await select<RecipientType>(
        {
          message: "Recipient type",
          default: type,
          choices: RECIPIENT_TYPES.map((t) => ({ value: t, name: t === "mlkem768x25519" ? `${t} (post-quantum hybrid, recommended)` : t })),
        },
        ctxOut,
      );
      flags.protect ??= await confirm({ message: "Protect the identity file with a passphrase (if no keyring answers)?", default: false }, ctxOut);
    }
  }
  if (!isRecipientType(type)) {
    throw new PraxmailError("usage", `unknown recipient type ${JSON.stringify(type)}`, `use ${RECIPIENT_TYPES.join(" or ")}`);
  }
  if (name === undefined || email === undefined) {
    throw new PraxmailError("usage", "--practice-name and --practice-email are required", "run praxmail init on a terminal for the wizard, or pass both flags");
  }
  const shared = sharedFlags(flags);
  // The backend the home will use (flags, else config.json, under PRAXMAIL_DATABASE and
  // PRAXMAIL_BLOBS), open before anything is written: init refuses one of another practice.
  const backend = await openShared({ shared: shared.shared ?? old?.shared ?? null });
  try {
    const passphrase = old ? undefined : await askPassphrase(io, flags);
    const result = await initPractice(home, {
      practiceName: name,
      practiceEmail: email,
      portalUrl,
      upstream: upstream === "" ? null : upstream,
      recipientType: type,
      keyring: flags.keyring && !flags.protect,
      ...(flags.logo !== undefined ? { logo: resolve(flags.logo) } : {}),
      ...(flags.accent !== undefined ? { accent: flags.accent } : {}),
      ...(passphrase !== undefined ? { passphrase } : {}),
      ...shared,
      ...(backend === null ? {} : { backend }),
    });
    return { ...result, home, joined: false };
  } finally {
    await backend?.store.close();
  }
}

/** init --join: this home becomes a further node of the practice of another node's home. */
async function runJoin(home: string, from: string, flags: InitFlags): Promise<InitResult & { home: string; joined: boolean }> {
  const settings = [flags.practiceName, flags.practiceEmail, flags.portalUrl, flags.upstream, flags.database, flags.blobs, flags.recipientType, flags.protect, flags.logo, flags.accent];
  if (settings.some((v) => v !== undefined) || !flags.keyring) {
    throw new PraxmailError("usage", "--join takes every setting from the other node's home", "give --join with --home only; change settings afterwards with praxmail init on one node, and copy its config.json to the others");
  }
  const config = await joinPractice(home, resolve(from), openShared);
  return { config, created: false, identityStore: config.identity, home, joined: true };
}

/** --database and --blobs, which come as a pair. */
function sharedFlags(flags: InitFlags): { shared?: { database: string; blobs: string } } {
  if (flags.database === undefined && flags.blobs === undefined) return {};
  if (flags.database === undefined || flags.blobs === undefined) {
    throw new PraxmailError("usage", "--database and --blobs go together", "give both for the shared backend (PostgreSQL + S3), or neither for SQLite and files under home");
  }
  return { shared: { database: flags.database, blobs: flags.blobs } };
}

/**
 * Runs `praxmail init` once its options are parsed (src/commands/definitions.ts).
 *
 * @param io - Where output goes.
 * @param flags - The parsed options.
 */
export async function initAction(io: Io, flags: InitFlags): Promise<void> {
  const r = await runInit(io, flags);
  const where = r.identityStore.kind === "keyring" ? "the OS keyring" : `${r.home}/${r.identityStore.file}`;
  if (flags.json) {
    printJson(io, {
      home: r.home,
      created: r.created,
      joined: r.joined,
      practiceRecipient: r.config.practiceRecipient,
      recipientType: r.config.crypto.recipientType,
      approvalKey: r.config.approvalKey,
      approvalKeyFingerprint: r.config.approvalKey === null ? null : keyFingerprint(r.config.approvalKey),
      identity: r.identityStore.kind === "keyring" ? { store: "keyring" } : { store: "file", file: where, protected: r.identityStore.protected },
    });
    return;
  }
  if (r.joined) note(io, `praxmail: ${r.home} is a further node of ${r.config.practiceName} <${r.config.practiceEmail}>`);
  else note(io, r.created ? `praxmail: initialised ${r.home}` : `praxmail: updated the settings in ${r.home}; the practice identity is unchanged`);
  if (r.joined && r.identityStore.kind === "keyring") note(io, "praxmail: the practice identity is in the OS keyring of the other node, not here: approve there, or pass --identity FILE");
  if (r.keyringFailure !== undefined) note(io, `praxmail: ${r.keyringFailure}; using a file instead`);
  note(io, `praxmail: practice identity in ${where}${r.identityStore.kind === "file" && !r.identityStore.protected ? " (mode 0600; keep a backup offline)" : ""}`);
  if (r.config.approvalKey !== null) note(io, `praxmail: approval signing key ${keyFingerprint(r.config.approvalKey)} (pinned in config.json)`);
  note(io, "praxmail: practice recipient:");
  io.out(`${r.config.practiceRecipient}\n`);
}

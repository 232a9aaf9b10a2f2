// The practice identity P: created once by init, loaded only by approve (and later receive).
import { rm } from "node:fs/promises";
import { join } from "node:path";
import {
  PassphraseRequiredError,
  generateIdentity,
  practiceSigningKey,
  loadFromKeyring,
  readIdentityFile,
  recipientOf,
  saveToKeyring,
  writeIdentityFile,
  type RecipientType,
} from "../crypto/index.js";
import { checkShared, checkUrl, isInitialised, loadConfig, saveConfig, type Config, type IdentityStore } from "./config.js";
import { DEFAULTS } from "./defaults.js";
import { PraxmailError, cleanUpAfter } from "./errors.js";
import { checkAccent, installLogo, readLogo } from "./look.js";
import { pinNode, refuseTakenBackend, type Backend } from "./nodes.js";
import { PORTAL_KEY_FILE, ensurePortalKey } from "./trust.js";
import { normaliseEmail } from "./validate.js";

/** What init needs. */
export interface InitOptions {
  readonly practiceName: string;
  readonly practiceEmail: string;
  readonly portalUrl?: string;
  readonly upstream?: string | null;
  readonly recipientType?: RecipientType;
  /** Try the OS keyring first (default true). */
  readonly keyring?: boolean;
  /** Protect the identity file with this passphrase. */
  readonly passphrase?: string;
  /** The shared backend (PostgreSQL + S3); undefined keeps what a re-run finds, null is the embedded one. */
  readonly shared?: { readonly database: string; readonly blobs: string } | null;
  /** The shared backend the home will use, open: init refuses one of another practice and pins this one. */
  readonly backend?: Backend;
  /** A PNG or SVG file for the portal's header, copied into the home (see readLogo in look.ts). */
  readonly logo?: string;
  /** The portal's accent colour, `#rrggbb` with enough contrast (see checkAccent in look.ts). */
  readonly accent?: string;
  readonly now?: Date;
}

/** What init did. */
export interface InitResult {
  readonly config: Config;
  readonly created: boolean;
  readonly identityStore: IdentityStore;
  /** Why the OS keyring was tried and not used (its first line, no secret). */
  readonly keyringFailure?: string;
}

const IDENTITY_FILE = "practice-identity.txt";
const PROTECTED_FILE = "practice-identity.age";

/**
 * Initialises a home, or updates the settings of an initialised one. An existing practice
 * identity is never replaced: every stored wrap[P] depends on it.
 *
 * @param home - A writable home folder.
 * @param opts - Settings.
 * @returns The configuration and whether a new identity was created.
 * @throws {@link PraxmailError} `invalid-input` for bad settings.
 */
export async function initPractice(home: string, opts: InitOptions): Promise<InitResult> {
  const practiceName = opts.practiceName.trim();
  if (practiceName === "" || practiceName.length > 200 || /[\r\n<>"]/.test(practiceName)) {
    throw new PraxmailError("invalid-input", "practice name must be one line of 1–200 characters without < > \"");
  }
  const practiceEmail = normaliseEmail(opts.practiceEmail);
  const portalUrl = checkUrl(opts.portalUrl ?? DEFAULTS.portalUrl, ["http:", "https:"]);
  const upstream = opts.upstream ? checkUrl(opts.upstream, ["smtp:", "smtps:"]) : null;
  const shared = opts.shared ? checkShared(opts.shared.database, opts.shared.blobs) : opts.shared;
  const settings = { practiceName, practiceEmail, portalUrl, upstream, ...(shared === undefined ? {} : { shared }) };
  const accent = opts.accent === undefined ? undefined : checkAccent(opts.accent);
  const logo = opts.logo === undefined ? undefined : await readLogo(opts.logo);
  const look = (portal: Config["portal"]): Config["portal"] => ({ ...portal, ...(accent === undefined ? {} : { accent }), ...(logo === undefined ? {} : { logo: logo.file }) });

  if (isInitialised(home)) {
    const old = loadConfig(home);
    // A new recipient type is safe: stored deliveries keep their own key types.
    // A home made before invite approvals were signed gets its portal key now.
    const portalKey = await ensurePortalKey(home, old.portalKey);
    const config: Config = { ...old, ...settings, portalKey, crypto: { recipientType: opts.recipientType ?? old.crypto.recipientType }, portal: look(old.portal) };
    if (opts.backend) await pinNode(opts.backend, config, opts.now ?? new Date());
    if (logo) await installLogo(home, logo);
    await saveConfig(home, config);
    return { config, created: false, identityStore: config.identity };
  }

  // Before anything is written: a backend of another practice is not this home's to take.
  if (opts.backend) await refuseTakenBackend(opts.backend);
  const type = opts.recipientType ?? DEFAULTS.recipientType;
  const identity = generateIdentity(type);
  const practiceRecipient = await recipientOf(identity);
  let store: IdentityStore | undefined;
  let keyringFailure: string | undefined;
  if (opts.keyring !== false && opts.passphrase === undefined) {
    const account = `practice-identity ${practiceRecipient.slice(0, 40)}`;
    const failed = await saveToKeyring(account, identity);
    if (failed === null) store = { kind: "keyring", account };
    else keyringFailure = failed.message;
  }
  if (!store) {
    const file = opts.passphrase === undefined ? IDENTITY_FILE : PROTECTED_FILE;
    await writeIdentityFile(join(home, file), identity, opts.passphrase, opts.now ?? new Date());
    store = { kind: "file", file, protected: opts.passphrase !== undefined };
  }
  const config: Config = {
    ...settings,
    practiceRecipient,
    approvalKey: practiceSigningKey(identity).publicKey,
    portalKey: await ensurePortalKey(home, null),
    identity: store,
    crypto: { recipientType: type },
    deliveries: { expiryDays: DEFAULTS.expiryDays, remindBeforeDays: 0 },
    internalDomains: [practiceEmail.split("@")[1] ?? ""],
    relay: DEFAULTS.relay,
    policy: DEFAULTS.policy,
    notifyOnDownload: false,
    portal: look(DEFAULTS.portal),
    shared: shared ?? null,
  };
  if (opts.backend) await pinNewPractice(home, opts.backend, config, opts.now ?? new Date());
  if (logo) await installLogo(home, logo);
  await saveConfig(home, config);
  return { config, created: true, identityStore: store, ...(keyringFailure === undefined ? {} : { keyringFailure }) };
}

/**
 * Pins a new practice to its shared backend. Another practice's init may have pinned it
 * meanwhile: then the home stays uninitialised (config.json is written last) and the
 * secrets just made for it are deleted.
 *
 * @param home - The home being initialised.
 * @param backend - Its shared backend.
 * @param config - The configuration about to be saved.
 * @param now - The time to record.
 * @throws {@link PraxmailError} `backend` when the backend belongs to another practice.
 */
async function pinNewPractice(home: string, backend: Backend, config: Config, now: Date): Promise<void> {
  const file = config.identity.kind === "file" ? join(home, config.identity.file) : null;
  try {
    await pinNode(backend, config, now);
  } catch (e) {
    throw await cleanUpAfter(e, [() => rm(join(home, PORTAL_KEY_FILE), { force: true }), ...(file === null ? [] : [() => rm(file, { force: true })])]);
  }
}

/** What reading P's secret found (see {@link readPracticeIdentity}). */
export type PracticeIdentityRead =
  | { readonly kind: "loaded"; readonly identity: string }
  /** The identity file is passphrase-protected and no passphrase was given. */
  | { readonly kind: "passphrase-required" }
  /** The keyring or the file could not be read (the error as the keyring or file system gave it). */
  | { readonly kind: "unreadable"; readonly path: string | undefined; readonly error: Error };

/**
 * Reads P's secret: from the file given (flag or PRAXMAIL_IDENTITY), else from where init
 * stored it. Whether it is P is for checkPracticeIdentity (trust.ts) to say.
 *
 * @param home - The home.
 * @param config - Its configuration (only where init stored the identity is read).
 * @param file - An identity file that overrides the configured store.
 * @param getPassphrase - Asked if the file is passphrase-protected.
 * @returns The identity, or why it could not be read.
 */
export async function readPracticeIdentity(
  home: string,
  config: Pick<Config, "identity">,
  file: string | undefined,
  getPassphrase: () => Promise<string | undefined>,
): Promise<PracticeIdentityRead> {
  const path = file ?? (config.identity.kind === "file" ? join(home, config.identity.file) : undefined);
  try {
    if (path === undefined && config.identity.kind === "keyring") return { kind: "loaded", identity: await loadFromKeyring(config.identity.account) };
    return { kind: "loaded", identity: await readIdentityFile(path ?? "", getPassphrase) };
  } catch (e) {
    if (e instanceof PassphraseRequiredError) return { kind: "passphrase-required" };
    return { kind: "unreadable", path, error: e as Error };
  }
}

/**
 * Loads P's secret: from the file given (flag or PRAXMAIL_IDENTITY), else from where init
 * stored it.
 *
 * @param home - The home.
 * @param config - Its configuration (only where init stored the identity is read).
 * @param file - An identity file that overrides the configured store.
 * @param getPassphrase - Asked if the file is passphrase-protected.
 * @returns The identity; it is checked against `practiceRecipient` by its users.
 * @throws {@link PraxmailError} `identity`.
 */
export async function loadPracticeIdentity(
  home: string,
  config: Pick<Config, "identity">,
  file: string | undefined,
  getPassphrase: () => Promise<string | undefined>,
): Promise<string> {
  const read = await readPracticeIdentity(home, config, file, getPassphrase);
  if (read.kind === "loaded") return read.identity;
  if (read.kind === "passphrase-required") {
    throw new PraxmailError("identity", "the identity file is passphrase-protected", "run on a terminal, or set PRAXMAIL_IDENTITY_PASSPHRASE");
  }
  const code = (read.error as NodeJS.ErrnoException).code;
  const why = code ? `${code} reading ${read.path ?? ""}` : read.error.message;
  throw new PraxmailError("identity", `cannot load the practice identity: ${why}`, "pass --identity FILE or set PRAXMAIL_IDENTITY", { cause: read.error });
}

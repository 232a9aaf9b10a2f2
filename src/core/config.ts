// The practice configuration, <home>/config.json: read as JSON, written through conf.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isRecipientType, recipientType, type RecipientType } from "../crypto/index.js";
import { PraxmailError } from "./errors.js";
import { DEFAULTS } from "./defaults.js";
import { LEVELS } from "./levels.js";
import { isAccent, isLogoFile, type LogoFile } from "./look.js";

/** Where the practice identity's secret lives. */
export type IdentityStore =
  | { readonly kind: "keyring"; readonly account: string }
  | { readonly kind: "file"; readonly file: string; readonly protected: boolean };

/** A user who may send through the relay (AUTH PLAIN/LOGIN over TLS). */
export interface RelayUser {
  readonly user: string;
  /** scrypt hash, as `praxmail` writes it (see hashPassword). */
  readonly password: string;
}

/** The SMTP relay's settings. */
export interface RelayConfig {
  /** Client addresses or CIDR ranges allowed to connect; others get 554. */
  readonly allow: readonly string[];
  /** Largest message in bytes (advertised with SIZE, enforced while streaming). */
  readonly maxSize: number;
  readonly maxRecipients: number;
  /** Idle time before a client is dropped. */
  readonly timeoutSeconds: number;
  /** With users, every client must authenticate (only over TLS). */
  readonly users: readonly RelayUser[];
  /** PEM files for STARTTLS. */
  readonly tls: { readonly cert: string; readonly key: string } | null;
}

/** Minimum levels for mail to external recipients (DESIGN.md §2). */
export interface PolicyConfig {
  readonly minLevel: number;
  readonly minLevelWithAttachments: number;
}

/** The whole configuration. */
export interface Config {
  readonly practiceName: string;
  readonly practiceEmail: string;
  readonly portalUrl: string;
  /** smtp(s):// URL; null writes outgoing mail to <home>/outbox/. */
  readonly upstream: string | null;
  readonly practiceRecipient: string;
  /**
   * The public half of the practice signing key derived from P (`ed25519:<base64>`), pinned
   * here so that signatures in the database can be checked without trusting the database.
   * Null only in a home made before signed approvals, until the admin pins it.
   */
  readonly approvalKey: string | null;
  /**
   * The public half of the portal's own signing key (`<home>/portal-signing.key`), which
   * signs the approval of an invited patient. Null until `init` made one.
   */
  readonly portalKey: string | null;
  readonly identity: IdentityStore;
  readonly crypto: { readonly recipientType: RecipientType };
  /** remindBeforeDays: mail a patient who has not collected a delivery this many days before it expires (0: never). */
  readonly deliveries: { readonly expiryDays: number; readonly remindBeforeDays: number };
  readonly internalDomains: readonly string[];
  readonly relay: RelayConfig;
  readonly policy: PolicyConfig;
  /** Mail the practice when a patient first downloads a delivery. */
  readonly notifyOnDownload: boolean;
  readonly portal: PortalConfig;
  /** The shared backend (several nodes, PostgreSQL + S3); null: SQLite and files under home. */
  readonly shared: SharedBackend | null;
}

/** Where the shared backend keeps rows and blobs. */
export interface SharedBackend {
  /** `postgres://user:password@host:port/database`. */
  readonly database: string;
  /** `s3://bucket/prefix`. */
  readonly blobs: string;
}

/** The patient portal's settings. */
export interface PortalConfig {
  /** Sessions end after this much inactivity. */
  readonly idleMinutes: number;
  /** Sessions end this long after login, however active. */
  readonly sessionHours: number;
  /** The largest file a patient may upload with a reply. */
  readonly maxUploadBytes: number;
  /** The practice's logo in the header: `logo.png` or `logo.svg` in the home (init --logo copies it there), or null. */
  readonly logo: LogoFile | null;
  /** The accent colour of buttons, links and the header (`#rrggbb`), or null for the portal's own. */
  readonly accent: string | null;
}

/** The file name of the configuration under home. */
export const CONFIG_FILE = "config.json";

function whole(v: unknown, lo: number, hi: number): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= lo && v <= hi;
}

function relayConfig(raw: unknown): RelayConfig {
  const r = (raw ?? {}) as Record<string, unknown>;
  const d = DEFAULTS.relay;
  const allow = r.allow ?? d.allow;
  if (!Array.isArray(allow) || !allow.every((a) => typeof a === "string" && /^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(a))) {
    throw bad("relay.allow", "must be a list of IP addresses or CIDR ranges");
  }
  const maxSize = r.maxSize ?? d.maxSize;
  if (!whole(maxSize, 1024, 2 ** 40)) throw bad("relay.maxSize", "must be a number of bytes from 1024");
  const maxRecipients = r.maxRecipients ?? d.maxRecipients;
  if (!whole(maxRecipients, 1, 10_000)) throw bad("relay.maxRecipients", "must be from 1 to 10000");
  const timeoutSeconds = r.timeoutSeconds ?? d.timeoutSeconds;
  if (!whole(timeoutSeconds, 5, 3600)) throw bad("relay.timeoutSeconds", "must be from 5 to 3600");
  const users = r.users ?? [];
  if (!Array.isArray(users) || !users.every((u: unknown) => typeof (u as RelayUser).user === "string" && typeof (u as RelayUser).password === "string")) {
    throw bad("relay.users", "must be a list of {user, password} with scrypt password hashes");
  }
  const tls = r.tls ?? null;
  if (tls !== null && (typeof (tls as Record<string, unknown>).cert !== "string" || typeof (tls as Record<string, unknown>).key !== "string")) {
    throw bad("relay.tls", "must be {cert, key} with paths to PEM files, or null");
  }
  if (users.length > 0 && tls === null) throw bad("relay.users", "need relay.tls: passwords are only accepted over TLS");
  return { allow: allow as string[], maxSize, maxRecipients, timeoutSeconds, users: users as RelayUser[], tls: tls as RelayConfig["tls"] };
}

function portalConfig(raw: unknown): PortalConfig {
  const p = (raw ?? {}) as Record<string, unknown>;
  const idleMinutes = p.idleMinutes ?? DEFAULTS.portal.idleMinutes;
  if (!whole(idleMinutes, 1, 24 * 60)) throw bad("portal.idleMinutes", "must be from 1 to 1440");
  const sessionHours = p.sessionHours ?? DEFAULTS.portal.sessionHours;
  if (!whole(sessionHours, 1, 7 * 24)) throw bad("portal.sessionHours", "must be from 1 to 168");
  const maxUploadBytes = p.maxUploadBytes ?? DEFAULTS.portal.maxUploadBytes;
  if (!whole(maxUploadBytes, 1024, 2 ** 34)) throw bad("portal.maxUploadBytes", "must be a number of bytes from 1024");
  const logo = p.logo ?? null;
  if (logo !== null && !isLogoFile(logo)) throw bad("portal.logo", "must be logo.png or logo.svg (a file in the home, as init --logo puts it there), or null");
  const accent = p.accent ?? null;
  if (accent !== null && !isAccent(accent)) throw bad("portal.accent", "must be a colour #rrggbb, or null");
  return { idleMinutes, sessionHours, maxUploadBytes, logo, accent };
}

function policyConfig(raw: unknown): PolicyConfig {
  const p = (raw ?? {}) as Record<string, unknown>;
  const minLevel = p.minLevel ?? 0;
  const minLevelWithAttachments = p.minLevelWithAttachments ?? 0;
  if (!whole(minLevel, 0, LEVELS.length - 1)) throw bad("policy.minLevel", "must be a level from 0 to 4");
  if (!whole(minLevelWithAttachments, 0, LEVELS.length - 1)) throw bad("policy.minLevelWithAttachments", "must be a level from 0 to 4");
  return { minLevel, minLevelWithAttachments };
}

/**
 * @param home - The praxmail home.
 * @returns Whether `init` has written a configuration there.
 */
export function isInitialised(home: string): boolean {
  return existsSync(join(home, CONFIG_FILE));
}

function bad(field: string, why: string): PraxmailError {
  return new PraxmailError("invalid-config", `config.json: ${field} ${why}`, "fix the file, or run praxmail init again");
}

/**
 * Checks a URL for the portal or the upstream.
 *
 * @param value - The URL.
 * @param protocols - Allowed protocols, e.g. `["http:", "https:"]`.
 * @returns The URL without a trailing slash.
 * @throws {@link PraxmailError} `invalid-input`.
 */
export function checkUrl(value: string, protocols: readonly string[]): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new PraxmailError("invalid-input", `not a URL: ${JSON.stringify(value)}`, `use ${protocols.join(" or ")} URLs`);
  }
  if (!protocols.includes(u.protocol)) {
    throw new PraxmailError("invalid-input", `unsupported URL scheme ${u.protocol} in ${JSON.stringify(value)}`, `use ${protocols.join(" or ")}`);
  }
  return value.replace(/\/+$/, "");
}

function readRaw(home: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(join(home, CONFIG_FILE), "utf8"));
  } catch (e) {
    throw bad("", `cannot be read: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad("", "must hold a JSON object");
  return raw as Record<string, unknown>;
}

function cryptoConfig(raw: unknown): Config["crypto"] {
  const crypto = (raw ?? {}) as Record<string, unknown>;
  const type = crypto.recipientType ?? DEFAULTS.recipientType;
  if (!isRecipientType(type)) throw bad("crypto.recipientType", "must be x25519 or mlkem768x25519");
  return { recipientType: type };
}

function deliveriesConfig(raw: unknown): Config["deliveries"] {
  const deliveries = (raw ?? {}) as Record<string, unknown>;
  const expiryDays = deliveries.expiryDays ?? DEFAULTS.expiryDays;
  if (typeof expiryDays !== "number" || !Number.isInteger(expiryDays) || expiryDays < 1 || expiryDays > 3650) {
    throw bad("deliveries.expiryDays", "must be a whole number of days from 1 to 3650");
  }
  const remindBeforeDays = deliveries.remindBeforeDays ?? 0;
  if (!whole(remindBeforeDays, 0, expiryDays - 1 || 0)) throw bad("deliveries.remindBeforeDays", "must be from 0 to expiryDays - 1");
  return { expiryDays, remindBeforeDays };
}

function identityStore(raw: unknown): IdentityStore {
  const identity = raw as Record<string, unknown> | undefined;
  if (identity?.kind === "keyring" && typeof identity.account === "string") return { kind: "keyring", account: identity.account };
  if (identity?.kind === "file" && typeof identity.file === "string") return { kind: "file", file: identity.file, protected: identity.protected === true };
  throw bad("identity", "must name a keyring account or an identity file");
}

/**
 * Checks the shared backend's two URLs. Messages never repeat the database URL: it holds a
 * password.
 *
 * @param database - A postgres:// URL.
 * @param blobs - An s3://bucket/prefix URL.
 * @returns Both.
 * @throws {@link PraxmailError} `invalid-input`.
 */
export function checkShared(database: string, blobs: string): SharedBackend {
  let db: URL | null = null;
  try {
    db = new URL(database);
  } catch {
    // Refused below.
  }
  if (db === null || !["postgres:", "postgresql:"].includes(db.protocol) || db.hostname === "" || db.pathname.length < 2) {
    throw new PraxmailError("invalid-input", "the database must be a postgres://user:password@host:port/database URL", "give PRAXMAIL_DATABASE or --database in that form");
  }
  if (!/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/|$)/.test(blobs)) {
    throw new PraxmailError("invalid-input", `the blobs must be an s3://bucket/prefix URL, not ${JSON.stringify(blobs)}`, "give PRAXMAIL_BLOBS or --blobs in that form");
  }
  return { database, blobs };
}

/**
 * @param database - A postgres:// URL.
 * @returns Where it points, for messages and the audit log: host, port and database, never
 *   the user or password.
 */
export function databaseWhere(database: string): string {
  const u = new URL(database);
  return `${u.hostname}:${u.port || "5432"}${u.pathname}`;
}

function sharedConfig(raw: unknown): SharedBackend | null {
  if (raw === undefined || raw === null) return null;
  const r = raw as Record<string, unknown>;
  if (typeof r.database !== "string" || typeof r.blobs !== "string") throw bad("shared", "must name both database (postgres://…) and blobs (s3://bucket/prefix)");
  return checkShared(r.database, r.blobs);
}

/**
 * The shared backend a command uses: PRAXMAIL_DATABASE and PRAXMAIL_BLOBS, where set, over
 * config.json's `shared`.
 *
 * @param config - The configuration.
 * @param env - The environment.
 * @returns The backend, or null for the embedded one.
 * @throws {@link PraxmailError} `invalid-input` when only one of the two is given.
 */
export function sharedBackend(config: Pick<Config, "shared">, env: Readonly<Record<string, string | undefined>>): SharedBackend | null {
  const database = env.PRAXMAIL_DATABASE || config.shared?.database;
  const blobs = env.PRAXMAIL_BLOBS || config.shared?.blobs;
  if (database === undefined && blobs === undefined) return null;
  if (database === undefined || blobs === undefined) {
    throw new PraxmailError("invalid-input", "the shared backend needs both a database and a bucket", "set both PRAXMAIL_DATABASE and PRAXMAIL_BLOBS (or neither, for SQLite and files under home)");
  }
  return checkShared(database, blobs);
}

function publicKey(raw: Record<string, unknown>, k: "approvalKey" | "portalKey"): string | null {
  const v = raw[k] ?? null;
  if (v !== null && (typeof v !== "string" || !/^ed25519:[A-Za-z0-9+/]{43}=$/.test(v))) {
    throw bad(k, "must be an ed25519:<base64> public key, as praxmail init writes it");
  }
  return v;
}

/**
 * Loads and checks the configuration.
 *
 * @param home - The praxmail home.
 * @returns The configuration.
 * @throws {@link PraxmailError} `not-initialised` or `invalid-config`.
 */
export function loadConfig(home: string): Config {
  if (!isInitialised(home)) {
    throw new PraxmailError("not-initialised", `no praxmail configuration in ${home}`, "run praxmail init, or pass --home");
  }
  const raw = readRaw(home);
  const str = (k: string): string => {
    const v = raw[k];
    if (typeof v !== "string" || v === "") throw bad(k, "must be a non-empty string");
    return v;
  };
  const crypto = cryptoConfig(raw.crypto);
  const deliveries = deliveriesConfig(raw.deliveries);
  const identity = identityStore(raw.identity);
  const practiceRecipient = str("practiceRecipient");
  if (recipientType(practiceRecipient) === null) throw bad("practiceRecipient", "is not an age recipient");
  const approvalKey = publicKey(raw, "approvalKey");
  const portalKey = publicKey(raw, "portalKey");
  const internal = raw.internalDomains ?? [];
  if (!Array.isArray(internal) || !internal.every((d) => typeof d === "string")) {
    throw bad("internalDomains", "must be a list of domain names");
  }
  const upstream = raw.upstream ?? null;
  if (upstream !== null && typeof upstream !== "string") throw bad("upstream", "must be an smtp:// URL or null");
  try {
    return {
      practiceName: str("practiceName"),
      practiceEmail: str("practiceEmail"),
      portalUrl: checkUrl(typeof raw.portalUrl === "string" ? raw.portalUrl : DEFAULTS.portalUrl, ["http:", "https:"]),
      upstream: upstream === null || upstream === "" ? null : checkUrl(upstream, ["smtp:", "smtps:"]),
      practiceRecipient,
      approvalKey,
      portalKey,
      identity,
      crypto,
      deliveries,
      internalDomains: internal.map((d) => d.toLowerCase()),
      relay: relayConfig(raw.relay),
      policy: policyConfig(raw.policy),
      notifyOnDownload: raw.notifyOnDownload === true,
      portal: portalConfig(raw.portal),
      shared: sharedConfig(raw.shared),
    };
  } catch (e) {
    if (e instanceof PraxmailError && e.code === "invalid-input") throw bad("", e.message);
    throw e;
  }
}

/**
 * Writes the configuration atomically (mode 0600).
 *
 * @param home - The praxmail home.
 * @param config - The whole configuration.
 */
export async function saveConfig(home: string, config: Config): Promise<void> {
  // conf loads ajv whether or not it validates: only the commands that write load it.
  const { default: Conf } = await import("conf");
  const conf = new Conf<Record<string, unknown>>({ cwd: home, configName: "config", projectName: "praxmail", configFileMode: 0o600 });
  conf.store = JSON.parse(JSON.stringify(config)) as Record<string, unknown>;
}

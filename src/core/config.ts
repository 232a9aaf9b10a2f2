// The practice configuration, <home>/config.json, read and written through conf.
import { existsSync } from "node:fs";
import { join } from "node:path";
import Conf from "conf";
import { isRecipientType, recipientType, type RecipientType } from "../crypto/index.js";
import { PraxmailError } from "./errors.js";

/** Where the practice identity's secret lives. */
export type IdentityStore =
  | { readonly kind: "keyring"; readonly account: string }
  | { readonly kind: "file"; readonly file: string; readonly protected: boolean };

/** The whole configuration. */
export interface Config {
  readonly practiceName: string;
  readonly practiceEmail: string;
  readonly portalUrl: string;
  /** smtp(s):// URL; null writes outgoing mail to <home>/outbox/. */
  readonly upstream: string | null;
  readonly practiceRecipient: string;
  readonly identity: IdentityStore;
  readonly crypto: { readonly recipientType: RecipientType };
  readonly deliveries: { readonly expiryDays: number };
  readonly internalDomains: readonly string[];
}

/** The file name of the configuration under home. */
export const CONFIG_FILE = "config.json";

/** Defaults for what `init` does not ask. */
export const DEFAULTS = {
  portalUrl: "http://127.0.0.1:8080",
  recipientType: "mlkem768x25519" as RecipientType,
  expiryDays: 30,
};

function conf(home: string): Conf {
  return new Conf<Record<string, unknown>>({
    cwd: home,
    configName: "config",
    projectName: "praxmail",
    configFileMode: 0o600,
  });
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
  let raw: Record<string, unknown>;
  try {
    raw = conf(home).store;
  } catch (e) {
    throw bad("", `cannot be read: ${(e as Error).message}`);
  }
  const str = (k: string): string => {
    const v = raw[k];
    if (typeof v !== "string" || v === "") throw bad(k, "must be a non-empty string");
    return v;
  };
  const crypto = (raw.crypto ?? {}) as Record<string, unknown>;
  const deliveries = (raw.deliveries ?? {}) as Record<string, unknown>;
  const identity = raw.identity as Record<string, unknown> | undefined;
  const type = crypto.recipientType ?? DEFAULTS.recipientType;
  if (!isRecipientType(type)) throw bad("crypto.recipientType", "must be x25519 or mlkem768x25519");
  const expiryDays = deliveries.expiryDays ?? DEFAULTS.expiryDays;
  if (typeof expiryDays !== "number" || !Number.isInteger(expiryDays) || expiryDays < 1 || expiryDays > 3650) {
    throw bad("deliveries.expiryDays", "must be a whole number of days from 1 to 3650");
  }
  let store: IdentityStore;
  if (identity?.kind === "keyring" && typeof identity.account === "string") {
    store = { kind: "keyring", account: identity.account };
  } else if (identity?.kind === "file" && typeof identity.file === "string") {
    store = { kind: "file", file: identity.file, protected: identity.protected === true };
  } else {
    throw bad("identity", "must name a keyring account or an identity file");
  }
  const practiceRecipient = str("practiceRecipient");
  if (recipientType(practiceRecipient) === null) throw bad("practiceRecipient", "is not an age recipient");
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
      identity: store,
      crypto: { recipientType: type },
      deliveries: { expiryDays },
      internalDomains: (internal).map((d) => d.toLowerCase()),
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
export function saveConfig(home: string, config: Config): void {
  conf(home).store = JSON.parse(JSON.stringify(config)) as Record<string, unknown>;
}

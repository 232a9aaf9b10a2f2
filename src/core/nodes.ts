// Several nodes on one shared backend are one practice. Each node has a home of its own
// (config.json, the practice identity, portal-signing.key); rows and blobs are shared. The
// backend records which practice it belongs to (its address, recipient and public keys),
// so that a node whose config.json pins another practice refuses to run on it instead of
// writing approvals the other nodes cannot verify. Secrets never go into the database: a
// database writer must not be able to sign approvals.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeSecretFile } from "../crypto/index.js";
import type { PracticeRow, Store } from "../store/index.js";
import { isInitialised, loadConfig, saveConfig, type Config } from "./config.js";
import { PraxmailError } from "./errors.js";
import { PORTAL_KEY_FILE } from "./trust.js";

/** What a node checks against the backend, and what the backend records. */
const PINNED = ["practiceRecipient", "approvalKey", "portalKey", "practiceEmail"] as const;

/** A shared backend with the name that messages show for it. */
export interface Backend {
  readonly store: Store;
  /** `host:port/database`, never the password. */
  readonly name: string;
}

/** The hint of every refusal: how to add a node of the practice the backend belongs to. */
const JOIN_HINT =
  "to add this machine as a node of that practice, run praxmail init --join HOME with the home of one of its nodes (or copy config.json, the practice identity and portal-signing.key from there); another practice needs a database of its own";

/**
 * @param config - A node's configuration.
 * @param now - When it is pinned.
 * @returns The row that says the backend belongs to this practice.
 * @throws {@link PraxmailError} `backend` if config.json pins no approval or portal key.
 */
function practiceRow(config: Config, now: Date): PracticeRow {
  const { approvalKey, portalKey } = config;
  if (approvalKey === null || portalKey === null) {
    throw new PraxmailError("backend", "config.json pins no approval key or no portal key, which every node of a shared backend needs", "pin both before the home uses a shared backend: on its embedded backend, run praxmail approve once (approval key) and praxmail init once (portal key)");
  }
  return { practiceEmail: config.practiceEmail, practiceRecipient: config.practiceRecipient, approvalKey, portalKey, pinnedAt: now.toISOString() };
}

/**
 * @param pinned - The practice the backend belongs to.
 * @param mine - This node's.
 * @returns What differs, e.g. `portalKey (config.json ed25519:…, backend ed25519:…)`; public values only.
 */
function differences(pinned: PracticeRow, mine: PracticeRow): string[] {
  return PINNED.filter((k) => pinned[k] !== mine[k]).map((k) => `${k} (config.json ${mine[k]}, backend ${pinned[k]})`);
}

/**
 * Checks that a node's config.json is the practice its shared backend belongs to, and pins
 * it on a backend that records none yet (one made before backends recorded it).
 *
 * @param backend - The shared store and its name.
 * @param config - The node's configuration.
 * @param now - The time to record with a new pin.
 * @throws {@link PraxmailError} `backend` naming what differs.
 */
export async function checkNode(backend: Backend, config: Config, now = new Date()): Promise<void> {
  const mine = practiceRow(config, now);
  const pinned = (await backend.store.practice()) ?? (await backend.store.pinPractice(mine));
  const differ = differences(pinned, mine);
  if (differ.length > 0) {
    throw new PraxmailError("backend", `this node's config.json does not match the practice the shared backend at ${backend.name} belongs to: ${differ.join("; ")}`, JOIN_HINT);
  }
}

/**
 * Refuses to make a new practice on a backend that already belongs to one.
 *
 * @param backend - The shared store and its name.
 * @throws {@link PraxmailError} `backend` naming the practice it belongs to.
 */
export async function refuseTakenBackend(backend: Backend): Promise<void> {
  const pinned = await backend.store.practice();
  if (pinned) throw takenBy(backend, pinned);
}

/**
 * Pins a practice that init just made, or changed the address of, to its backend.
 *
 * @param backend - The shared store and its name.
 * @param config - The new configuration.
 * @param now - The time to record.
 * @throws {@link PraxmailError} `backend` when another practice's init pinned first.
 */
export async function pinNode(backend: Backend, config: Config, now: Date): Promise<void> {
  const mine = practiceRow(config, now);
  const pinned = await backend.store.pinPractice(mine);
  if (differences(pinned, mine).length > 0) throw takenBy(backend, pinned);
}

function takenBy(backend: Backend, pinned: PracticeRow): PraxmailError {
  return new PraxmailError("backend", `the shared backend at ${backend.name} already belongs to the practice ${pinned.practiceEmail} (recipient ${pinned.practiceRecipient})`, JOIN_HINT);
}

/**
 * Makes home a further node of the practice whose node home is `from`: copies config.json,
 * a practice identity file and portal-signing.key (mode 0600), config.json last, so that an
 * interrupted join leaves home uninitialised. Nothing secret goes through the database.
 *
 * @param home - The new node's home: writable, not initialised.
 * @param from - The home of a node of the practice (a copy or a mount of it).
 * @param open - Opens the backend a configuration names, to check `from` against it.
 * @returns The configuration of the new node (the same as from's).
 * @throws {@link PraxmailError} `wrong-state` if home is initialised, `not-initialised` or
 *   `backend` if from is not a node of a shared backend's practice.
 */
export async function joinPractice(home: string, from: string, open: (config: Config) => Promise<Backend | null>): Promise<Config> {
  if (isInitialised(home)) throw new PraxmailError("wrong-state", `${home} is initialised already`, "pass --home with a new, empty folder for the node");
  const config = loadConfig(from);
  const backend = await open(config);
  if (backend === null) {
    throw new PraxmailError("backend", `${from} uses no shared backend: a node of its own only`, "nodes share a PostgreSQL database and an S3 bucket; move the practice there first (praxmail migrate)");
  }
  try {
    await checkNode(backend, config);
  } finally {
    await backend.store.close();
  }
  if (config.identity.kind === "file") await copySecret(join(from, config.identity.file), join(home, config.identity.file));
  await copySecret(join(from, PORTAL_KEY_FILE), join(home, PORTAL_KEY_FILE));
  await saveConfig(home, config);
  return config;
}

/**
 * @param source - A secret file.
 * @param dest - Its copy, written 0600 (atomically).
 */
async function copySecret(source: string, dest: string): Promise<void> {
  let data: Buffer;
  try {
    data = await readFile(source);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    throw new PraxmailError("file", `cannot read ${source} (${code})`, "run the join as a user who may read the other node's home", { cause: e });
  }
  await writeSecretFile(dest, data);
}

// The store interface: what src/core and the adapters may ask of durable state. Every
// method returns a Promise (or an AsyncIterable), so that a backend over the network
// (PostgreSQL + S3) implements it as well as the embedded one (SQLite + files under home).
import type { AttemptClaim, HeldAttempt } from "./attempts.js";
import type { AuditEntry, AuditRow, AuditVerdict, CheckpointRow } from "./audit.js";
import type { ChallengeRow, InviteRow, ReplyPartRow, ReplyRow, ResetRow } from "./accounts.js";
import type { BackupManifest, BackupOptions } from "./backup.js";
import type { PasskeyChallengeRow, PasskeyRow } from "./passkeys.js";
import type { PracticeRow } from "./practice.js";
import type { DeliveryRow, DeliveryStatus, FileRow, PatientRow, PatientStatus, SessionRow, TokenRow, WrapHolder, WrapRow } from "./rows.js";

/** Patients, deliveries with their files, wraps and link tokens, and portal sessions. */
export interface RecordStore {
  /** @returns The patient with this lowercased address, or undefined. */
  patient(email: string): Promise<PatientRow | undefined>;
  /** @returns Patients (with this status, or all) ordered by registration. */
  patients(status?: PatientStatus): Promise<PatientRow[]>;
  insertPatient(p: PatientRow): Promise<void>;
  /** Writes every field of a patient back. */
  updatePatient(p: PatientRow): Promise<void>;
  /** @returns The delivery, or undefined. */
  delivery(id: string): Promise<DeliveryRow | undefined>;
  /** @returns The delivery created from the relayed message with this idempotency key, or undefined. */
  deliveryBySource(sourceKey: string): Promise<DeliveryRow | undefined>;
  /** @returns Sent (visible) deliveries, oldest first, of a recipient and statuses if given. */
  deliveries(filter?: { recipient?: string; statuses?: readonly DeliveryStatus[] }): Promise<DeliveryRow[]>;
  /** @returns Ids of deliveries whose send never completed, created before the ISO time. */
  unsentBefore(before: string): Promise<string[]>;
  /** Makes deliveries visible (their mail was accepted) at the ISO time. */
  markSent(ids: readonly string[], at: string): Promise<void>;
  /** @returns Active, sent deliveries whose expiry is at or before the ISO time. */
  dueForExpiry(before: string): Promise<DeliveryRow[]>;
  /** Inserts a delivery with its files, wraps and link token. */
  insertDelivery(d: DeliveryRow, files: readonly FileRow[], wraps: readonly WrapRow[], token: TokenRow): Promise<void>;
  /** Adds a link token to an existing delivery. */
  insertToken(token: TokenRow): Promise<void>;
  /** Sets a delivery's status (and, for revoked and expired, the time it ended). */
  setDeliveryStatus(id: string, status: DeliveryStatus, at: string): Promise<void>;
  /** @returns The delivery's files in order. */
  files(deliveryId: string): Promise<FileRow[]>;
  /**
   * The files of several deliveries at once (one query on the shared backend, not one per
   * delivery).
   *
   * @returns Each given id's files in order; an id without files (or no such delivery) maps to [].
   */
  filesOf(deliveryIds: readonly string[]): Promise<Map<string, FileRow[]>>;
  /** @returns Every blob key that a file or reply part references. */
  referencedBlobs(): Promise<Set<string>>;
  /**
   * Removes the patient's wraps of deliveries from `fromLevel` on and puts those back to
   * pending-approval (Secu-Pass reset).
   *
   * @returns How many deliveries.
   */
  unwrapPatient(email: string, fromLevel: number): Promise<number>;
  /** @returns Ready, sent deliveries from `fromLevel` on, never downloaded nor reminded of, expiring in (now, before]. */
  dueForReminder(before: string, now: string, fromLevel: number): Promise<DeliveryRow[]>;
  markReminded(id: string, at: string): Promise<void>;
  /** Ends every session of a patient. @returns How many were ended. */
  deleteSessionsOf(email: string): Promise<number>;
  /** @returns The wrap, or undefined. */
  wrap(deliveryId: string, holder: WrapHolder): Promise<WrapRow | undefined>;
  /**
   * The wraps of one holder for several deliveries at once (one query on the shared backend).
   *
   * @returns The wraps found, by delivery id; a delivery without one is not in the map.
   */
  wraps(deliveryIds: readonly string[], holder: WrapHolder): Promise<Map<string, WrapRow>>;
  /** Inserts or replaces a wrap. */
  putWrap(w: WrapRow): Promise<void>;
  /**
   * Deletes a delivery's key material and detaches its blobs (crypto-shred); the link
   * token's hash stays, so that the link can say the delivery is gone.
   *
   * @returns The blob keys to remove.
   */
  shred(deliveryId: string): Promise<string[]>;
  /** Removes every row of a delivery that never became visible (a failed send). */
  deleteDelivery(deliveryId: string): Promise<void>;
  /** @returns The link token with this SHA-256 (hex), or undefined. */
  token(hash: string): Promise<TokenRow | undefined>;
  /** @returns The session with this cookie SHA-256 (hex), or undefined. */
  session(idHash: string): Promise<SessionRow | undefined>;
  /** Writes a session, in one statement only while its patient exists and is not revoked. @returns Whether it was written. */
  insertSession(s: SessionRow & { email: string }): Promise<boolean>;
  touchSession(idHash: string, lastSeen: string): Promise<void>;
  deleteSession(idHash: string): Promise<void>;
  /** Deletes sessions last seen before `idleBefore` or created at or before `createdBefore`. @returns How many. */
  deleteEndedSessions(idleBefore: string, createdBefore: string): Promise<number>;
  /** Records the first download of a ready delivery. @returns True if this was the first. */
  markDownloaded(id: string, at: string): Promise<boolean>;
}

/** The account lifecycle: password reset links, invite codes and patient replies. */
export interface AccountStore {
  insertReset(r: ResetRow): Promise<void>;
  /** @returns The reset link with this token hash, or undefined. */
  reset(hash: string): Promise<ResetRow | undefined>;
  /** Uses a reset link, once. @returns True if it was unused until now. */
  useReset(hash: string, at: string): Promise<boolean>;
  /** Stores a login challenge and drops the expired ones. */
  insertChallenge(c: ChallengeRow, now: string): Promise<void>;
  /** Uses a login challenge of this address, once, before it expires. @returns True if it was open until now. */
  useChallenge(hash: string, email: string, at: string): Promise<boolean>;
  insertInvite(i: InviteRow): Promise<void>;
  /** @returns The invite, or undefined. */
  invite(id: string): Promise<InviteRow | undefined>;
  /** @returns Every invite, newest first. */
  invites(): Promise<InviteRow[]>;
  /** Marks an invite used, once. @returns True if it was open until now. */
  useInvite(id: string, at: string): Promise<boolean>;
  /** Revokes an invite that was not used. @returns True if it was open until now. */
  revokeInvite(id: string, at: string): Promise<boolean>;
  /** Uses up every open reset link of an address. @returns How many were open. */
  endResetsOf(email: string, at: string): Promise<number>;
  /** Revokes every open invite for an address. @returns How many were open. */
  revokeInvitesFor(email: string, at: string): Promise<number>;
  /** @returns The replies of an address whose upload has not finished. */
  uploadingRepliesOf(email: string): Promise<ReplyRow[]>;
  insertReply(r: ReplyRow): Promise<void>;
  /** @returns The reply, or undefined. */
  reply(id: string): Promise<ReplyRow | undefined>;
  /** @returns Finished replies (new and received), oldest first. */
  replies(): Promise<ReplyRow[]>;
  /** @returns Replies whose upload never finished, started before the ISO time. */
  unfinishedReplies(before: string): Promise<ReplyRow[]>;
  setReplyStatus(id: string, status: ReplyRow["status"], at: string | null): Promise<void>;
  insertReplyPart(p: ReplyPartRow): Promise<void>;
  /** @returns The parts of a reply in order. */
  replyParts(replyId: string): Promise<ReplyPartRow[]>;
  /** Removes a reply and its parts' rows. @returns The blob keys to remove. */
  deleteReply(id: string): Promise<string[]>;
}

/** Passkeys of known devices, and the WebAuthn challenges handed out for them. */
export interface PasskeyStore {
  insertPasskey(p: PasskeyRow): Promise<void>;
  /** @returns The passkey with this credential id (base64url), or undefined. */
  passkey(credentialId: string): Promise<PasskeyRow | undefined>;
  /** @returns The patient's passkeys, oldest first. */
  passkeysOf(email: string): Promise<PasskeyRow[]>;
  /** Records a use: the counter moves from `from` to `to` and last_used is set, once. @returns True if the counter was still `from`. */
  usePasskey(credentialId: string, from: number, to: number, at: string): Promise<boolean>;
  /** @returns True if the patient had this passkey. */
  deletePasskey(email: string, credentialId: string): Promise<boolean>;
  /** @returns How many passkeys the patient had. */
  deletePasskeysOf(email: string): Promise<number>;
  /** Stores a challenge handed out, and forgets those that ended at or before the ISO time `now`. */
  insertChallenge(c: PasskeyChallengeRow, now: string): Promise<void>;
  /**
   * Takes a challenge, once, across every handle on the store: it is gone afterwards.
   *
   * @returns The challenge if it was there and had not ended at the ISO time `now`, else undefined.
   */
  takeChallenge(challenge: string, now: string): Promise<PasskeyChallengeRow | undefined>;
}

/** Attempt counters of the portal's limits, shared by every process on the store. */
export interface AttemptStore {
  /**
   * Counts one attempt under every claim, or under none when any of them is used up,
   * atomically: two requests (or two processes) never both take the last attempt.
   *
   * @returns The held attempts, or null when a limit is reached (nothing was counted).
   */
  reserve(claims: readonly AttemptClaim[], now: number): Promise<HeldAttempt[] | null>;
  /** Gives held attempts back; an attempt of a window that has ended is not given back. */
  release(held: readonly HeldAttempt[]): Promise<void>;
  /** Forgets a counter. */
  clear(key: string): Promise<void>;
  /** Deletes counters whose window has ended. @returns How many. */
  purge(now: number): Promise<number>;
}

/**
 * A row of any table, by column, as it moves between backends (praxmail migrate, backup and
 * restore of the shared backend): text, numbers, bytes or null.
 */
export type TableRow = Readonly<Record<string, unknown>>;

/** A blob or an unfinished write found by {@link BlobStore.scan}. */
export interface ScannedBlob {
  readonly key: string;
  readonly mtime: Date;
  /** An unfinished (or abandoned) write, not a blob. */
  readonly temp: boolean;
}

/**
 * Ciphertext blobs, addressed by opaque keys. A key is what {@link write} returned; callers
 * store it in rows and never derive anything from it.
 */
export interface BlobStore {
  /**
   * Streams data into a new blob.
   *
   * @returns Its key, once the blob is durable.
   * @throws If writing or the stream fails; nothing of the write is left then.
   */
  write(data: ReadableStream<Uint8Array>): Promise<string>;
  /**
   * Streams data into a blob under a key another store gave it (moving a practice between
   * backends); an existing blob of that key is replaced whole.
   *
   * @throws If the key is not a blob key, or writing or the stream fails; nothing of the
   *   write is left then.
   */
  put(key: string, data: ReadableStream<Uint8Array>): Promise<void>;
  /** @returns The blob's bytes; a missing blob errors the stream. */
  read(key: string): ReadableStream<Uint8Array>;
  /** @returns The blob's size in bytes. @throws If it does not exist (with code `ENOENT`). */
  size(key: string): Promise<number>;
  /** Removes blobs; missing ones are ignored. */
  remove(keys: readonly string[]): Promise<void>;
  /** @returns Every blob and every unfinished write, with when it was last written. */
  scan(): Promise<ScannedBlob[]>;
  /** Removes a blob or unfinished write that {@link scan} found (gc of orphans). */
  removeScanned(key: string): Promise<void>;
  /** Checks that blobs can be written where they live (the folder; the bucket). @throws What failed. */
  ping(): Promise<void>;
  /**
   * Creates a marker once, beside the blobs and off the database, never overwritten nor
   * removed: every node sees it, and a database writer cannot undo it (used invites).
   *
   * @param name - `folder/name`: a lowercase folder other than blobs, and a name of letters,
   *   digits, `_` and `-`.
   * @returns True if this call created it, false if it was there already. Two calls racing
   *   on an S3 server without conditional PUTs (Swift) may both return true.
   * @throws If the name is not a marker name, or it cannot be written.
   */
  mark(name: string): Promise<boolean>;
}

/** What a transaction handle (and the store outside one) offers: rows and the audit chain. */
export interface StoreTx {
  readonly records: RecordStore;
  readonly accounts: AccountStore;
  readonly attempts: AttemptStore;
  readonly passkeys: PasskeyStore;
  /** Appends to the audit chain; inside the transaction of the change it records. @returns The new row. */
  audit(entry: AuditEntry, at: Date): Promise<AuditRow>;
  /** @returns Every audit row after seq `after` (0: all), in order. */
  auditRows(after?: number): AsyncIterable<AuditRow>;
  /** Stores a signed checkpoint; inside the transaction that appended the row it signs. */
  putCheckpoint(checkpoint: CheckpointRow): Promise<void>;
  /** @returns Every stored audit checkpoint, oldest first (signatures not checked here). */
  auditCheckpoints(): Promise<CheckpointRow[]>;
  /**
   * @param check - A further check of each intact row; returns why it does not fit, or null.
   * @param from - A row verified before (seq and hash): walk on from it.
   * @returns Whether the audit chain is intact, and where it breaks.
   */
  verifyAudit(check?: (row: AuditRow) => string | null, from?: { readonly seq: number; readonly hash: string }): Promise<AuditVerdict>;
  /** @returns Every table of the schema with its columns (not the schema's own bookkeeping). */
  tables(): Promise<Map<string, string[]>>;
  /** @returns Every row of a table as stored, page by page, in a stable order. */
  tableRows(table: string): AsyncIterable<TableRow>;
  /** Inserts rows as another store gave them, column by column (moving a practice). */
  insertRows(table: string, rows: readonly TableRow[]): Promise<void>;
}

/**
 * The durable state of one practice. Calls outside a transaction each stand alone. Inside
 * {@link transaction} and {@link snapshot}, everything goes through the handle passed to
 * the body; a call on the store itself from inside a body is a programming error and
 * throws.
 */
export interface Store extends StoreTx {
  readonly blobs: BlobStore;
  /**
   * Runs fn in one write transaction: all of its writes land, or none (when fn throws).
   * Transactions of other tasks and processes wait for it; they never interleave.
   *
   * @returns What fn returns.
   */
  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  /**
   * Runs fn in one read transaction: all of its reads see the same state, however others
   * write meanwhile.
   *
   * @returns What fn returns.
   */
  snapshot<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  /**
   * Backs the store up, consistently, into a new or empty folder (see backup.ts).
   *
   * @returns The manifest written.
   */
  backup(dest: string, opts: BackupOptions): Promise<BackupManifest>;
  /**
   * Runs fn while holding a named lock that one process of every node on this store can
   * hold at a time (gc's expiry, reminders and discards); does not wait for it. A process
   * that dies releases its locks.
   *
   * @param name - The lock's name: lowercase letters.
   * @returns What fn returns, or null (fn not run) while another holds the lock.
   */
  exclusive<T>(name: string, fn: () => Promise<T>): Promise<T | null>;
  /** @returns The practice the store belongs to, or undefined before the first init pinned one. */
  practice(): Promise<PracticeRow | undefined>;
  /**
   * Pins the practice the store belongs to, unless another one is pinned; the same practice
   * (same recipient and keys) may change its address.
   *
   * @returns The practice pinned afterwards: p, or the other one.
   */
  pinPractice(p: PracticeRow): Promise<PracticeRow>;
  /** Checks that the database answers a query. @throws What failed. */
  ping(): Promise<void>;
  /** Closes the store; waits for an open transaction first. */
  close(): Promise<void>;
}

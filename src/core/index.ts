// The public door of src/core: the domain operations the CLI, relay, milter and portal call.
export { PraxmailError, cleanUpAfter, cleanupFailures, errorFields, type ErrorCode, type ErrorFields } from "./errors.js";
export { checkShared, databaseWhere, isInitialised, loadConfig, saveConfig, sharedBackend, type Config, type IdentityStore, type SharedBackend } from "./config.js";
export { DEFAULTS } from "./defaults.js";
export { checkNode, joinPractice, type Backend } from "./nodes.js";
export { ensureWritableHome, resolveHome } from "./home.js";
// Durable writes of local files (fsync, rename, fsync of the folder) for adapters that keep
// files of their own, such as mail's outbox: they reach them here, never in src/store.
export { renameDurably } from "../store/index.js";
export type { Context, FileSummary, Notification, Notifier } from "./context.js";
export type { MailDoor, Meter } from "./meter.js";
export { normaliseEmail } from "./validate.js";
export {
  LEVELS,
  LOGIN_FROM,
  PATIENT_KEY_FROM,
  levelRules,
  needsDelivery,
  warnsWithoutDelivery,
  type Level,
  type LevelRules,
  type SubjectRule,
} from "./levels.js";
export {
  NEEDS_PATIENT_KEY,
  TRANSITIONS,
  deliveryState,
  discardedBy,
  nextState,
  reaches,
  retryAction,
  type AttemptOutcome,
  type DeliveryEvent,
  type DeliveryState,
  type RetryAction,
} from "./retry.js";
export {
  Intake,
  createDelivery,
  discardDelivery,
  markSent,
  deliveryNotification,
  type CommitOptions,
  type CreatedDelivery,
  type DeliveryInput,
  type FileInput,
  type SealedMessage,
} from "./deliveries.js";
export {
  getPatient,
  listPatients,
  patientLanguage,
  registerPatient,
  setPatientLanguage,
  setSecuPassRecipient,
  type PatientView,
} from "./patients.js";
export { approvePatients, listPending, pinApprovalKey, unsignedApprovals, type Approval, type ApprovalTarget, type PendingPatient, type PinResult } from "./approve.js";
export { checkPracticeIdentity, markUsedInvites, type PracticeIdentityFinding } from "./trust.js";
export { signCheckpoint, verifyAuditLog, type AuditAnchor, type AuditReport, type Checkpoint } from "./checkpoints.js";
export {
  GC_BUSY,
  collectGarbage,
  getDelivery,
  listDeliveries,
  oneNodeAtATime,
  purgeSessions,
  revokeDelivery,
  revokePatient,
  sendReminders,
  type DeliveryView,
  type GcReport,
} from "./lifecycle.js";
export { backupPractice, restorePractice, type BackupPracticeOptions, type RestorePracticeOptions, type RestoredPractice } from "./backup.js";
export { MESSAGE_FILE, exportDelivery, type ExportResult, type ExportedFile } from "./export.js";
export { LOGO_MAX_BYTES, MIN_CONTRAST, accentContrast, darker, isLogoFile, readLogo, showRatio } from "./look.js";
export { initPractice, loadPracticeIdentity, readPracticeIdentity, type InitOptions, type InitResult, type PracticeIdentityRead } from "./practice.js";
export { hashToken, sameSecret } from "./tokens.js";
export { WorkQueue, type WorkQueueOptions } from "./queue.js";
export {
  deliveriesForPatient,
  deliveryForPatient,
  fileForDownload,
  patientMessages,
  patientWrap,
  resolveLink,
  type EndedDelivery,
  type LinkAccess,
  type PatientDelivery,
} from "./access.js";
export { authenticatePatient, loginParams, type LoginParams } from "./login.js";
export { checkNewKey, credentialHash, type NewKey } from "./keys.js";
export {
  INVITE_MISMATCH,
  bindInviteSession,
  checkKeyReset,
  completeKeyReset,
  createInvite,
  inviteOpen,
  keyResetQueue,
  listInvites,
  redeemInvite,
  requestKeyReset,
  resetSecuPass,
  revokeInvite,
  type CreatedInvite,
  type InviteView,
} from "./accounts.js";
export {
  authenticatePasskey,
  listPasskeys,
  passkeyLoginOptions,
  passkeyRegistrationOptions,
  registerPasskey,
  removePasskey,
  type NewPasskey,
  type PasskeyLogin,
  type PasskeyView,
} from "./passkeys.js";
export {
  REPLY_LIMITS,
  ReplyRefusedError,
  addReplyPart,
  checkMayReply,
  finishReply,
  listReplies,
  receiveReply,
  startReply,
  type ReplyMessage,
  type ReplyRefusal,
  type ReplyView,
} from "./replies.js";
export { migratePractice, type MigrateOptions, type MigrateProgress, type MigrateReport } from "./migrate.js";

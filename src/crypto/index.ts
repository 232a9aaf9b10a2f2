// The public door of src/crypto. Other areas import from here only.
export {
  RECIPIENT_TYPES,
  generateIdentity,
  identityFromSeed,
  identityType,
  isRecipientType,
  recipientType,
  type RecipientType,
} from "./identity.js";
export {
  KdfParamsError,
  SECUPASS_COST,
  deriveSecuPass,
  newKdfParams,
  parseKdfParams,
  parseNewKeyKdfParams,
  safetyCode,
  secupassSalt,
  type KdfParams,
  type KdfRefusal,
  type SecuPassKeys,
} from "./secupass.js";
export { recipientOf } from "./header.js";
export {
  dearmor,
  decryptBytes,
  decryptStream,
  encryptBytes,
  encryptStream,
  unwrapIdentity,
  wrapIdentity,
} from "./stream.js";
export { hashPassword, verifyPassword } from "./password.js";
export {
  PassphraseRequiredError,
  loadFromKeyring,
  readIdentityFile,
  saveToKeyring,
  writeIdentityFile,
  writeSecretFile,
} from "./keystore.js";
export {
  keyFingerprint,
  practiceSigningKey,
  signStatement,
  signingKeyFromSeed,
  statement,
  verifyStatement,
  type SigningKey,
} from "./sign.js";

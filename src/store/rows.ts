// The row types of the records, as the store hands them out (camelCase columns).

export type PatientStatus = "pending-secupass" | "pending-approval" | "approved" | "revoked";
/** Delivery status (DESIGN.md §5). */
export type DeliveryStatus = "pending-approval" | "ready" | "downloaded" | "expired" | "revoked";
/** Who holds a wrap of a delivery identity. */
export type WrapHolder = "practice" | "patient";

/** A patient row. */
export interface PatientRow {
  email: string;
  status: PatientStatus;
  /** scrypt hash of the portal password of accounts from before the login with the Secu-Pass-Key; cleared when the account moves over. */
  passwordHash: string | null;
  /** Hash of the login credential derived from the Secu-Pass-Key (src/core/credential.ts); null until set. */
  credentialHash: string | null;
  /** JSON of the KDF parameters. */
  kdf: string | null;
  recipient: string | null;
  safetyCode: string | null;
  registeredAt: string;
  secupassAt: string | null;
  approvedAt: string | null;
  revokedAt: string | null;
  /** Registered with an invite code from reception. */
  invitedAt: string | null;
  /** JSON of the signed approval (see src/core/trust.ts); null until approved. */
  approval: string | null;
  /** The invite the account was registered with. */
  inviteId: string | null;
  /** SHA-256 of the session that redeemed the invite and the portal's signature binding it; only that session may set the key as invited. */
  inviteSession: string | null;
  /** When the practice was last mailed that this patient's approval does not verify. */
  alarmedAt: string | null;
  /** The language the patient chose or registered in (de, en, …); null while unknown. */
  lang: string | null;
}

/** A delivery row. */
export interface DeliveryRow {
  id: string;
  recipient: string;
  level: number;
  status: DeliveryStatus;
  subject: string | null;
  sender: string | null;
  createdAt: string;
  expiresAt: string;
  downloadedAt: string | null;
  endedAt: string | null;
  sourceKey: string | null;
  /** When its mail was accepted; null while a send is in progress (then it is invisible). */
  sentAt: string | null;
  /** When the patient was reminded that it expires soon. */
  remindedAt: string | null;
}

/** A file row; blob is null once the delivery was revoked or expired. */
export interface FileRow {
  id: string;
  deliveryId: string;
  position: number;
  kind: "attachment" | "message";
  name: string;
  size: number;
  blob: string | null;
}

/** A wrap row: age(D) to the holder's recipient. */
export interface WrapRow {
  deliveryId: string;
  holder: WrapHolder;
  recipient: string;
  ciphertext: Uint8Array;
  createdAt: string;
}

/** A portal session; only the SHA-256 of its cookie value is stored. */
export interface SessionRow {
  idHash: string;
  email: string | null;
  csrf: string;
  createdAt: string;
  lastSeen: string;
}

/** A link token row; only the SHA-256 of the token is stored. */
export interface TokenRow {
  hash: string;
  deliveryId: string;
  email: string;
  createdAt: string;
}

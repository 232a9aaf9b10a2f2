// The public door of src/mail.
export * from "./notify.js";

export { MailRejection, loggableReason } from "./errors.js";
export { applyPolicy, classify, isInternal, type Classification, type Policy } from "./classify.js";
export { deliverPrepared, prepareMessage, type Copy, type Prepared, type ProcessOptions } from "./process.js";

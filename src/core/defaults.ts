// The configuration's defaults, apart from config.ts so that the CLI's help can show them
// without loading the configuration code (src/commands/definitions.ts).
import type { RecipientType } from "../crypto/index.js";
import type { PolicyConfig, PortalConfig, RelayConfig } from "./config.js";

/** Defaults for what `init` does not ask. */
export const DEFAULTS = {
  portalUrl: "http://127.0.0.1:8080",
  recipientType: "mlkem768x25519" as RecipientType,
  expiryDays: 30,
  relay: {
    allow: ["127.0.0.0/8", "::1/128"],
    maxSize: 50 * 1024 * 1024,
    maxRecipients: 100,
    timeoutSeconds: 120,
    users: [],
    tls: null,
  } satisfies RelayConfig,
  policy: { minLevel: 0, minLevelWithAttachments: 0 } satisfies PolicyConfig,
  portal: { idleMinutes: 15, sessionHours: 12, maxUploadBytes: 100 * 1024 * 1024, logo: null, accent: null } satisfies PortalConfig,
};

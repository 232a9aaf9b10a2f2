// Reading deliveries back as the practice can: through the link token and wrap[P].
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { hashToken } from "../../src/core/index.js";
import { decryptStream, unwrapIdentity } from "../../src/crypto/index.js";
import type { Received } from "./sink.js";
import { readAll } from "./streams.js";
import { practiceIdentityOf } from "./cli.js";

/** Every link token in a received mail (text and HTML). */
export function tokens(m: Received): string[] {
  return [...new Set([...`${m.mail.text ?? ""}\n${m.mail.html || ""}`.matchAll(/\/d\/([A-Za-z0-9_-]{43})/g)].map((x) => x[1] ?? ""))];
}

/**
 * Follows a link token to its delivery and opens every file with the practice identity.
 *
 * @param home - The praxmail home (identity file, database, blobs).
 * @param token - A link token from a mail.
 * @returns The address the link belongs to and the decrypted files.
 */
export async function openByToken(home: string, token: string): Promise<{ email: string; files: { name: string; kind: string; data: Buffer }[] }> {
  const db = new Database(join(home, "praxmail.db"), { readonly: true });
  try {
    const row = db.prepare("SELECT delivery_id AS id, email FROM link_tokens WHERE hash = ?").get(hashToken(token)) as { id: string; email: string } | undefined;
    if (!row) throw new Error("unknown link token");
    const wrap = db.prepare("SELECT ciphertext FROM wraps WHERE delivery_id = ? AND holder = 'practice'").get(row.id) as { ciphertext: Buffer };
    const practice = await practiceIdentityOf(home);
    const d = await unwrapIdentity(wrap.ciphertext, practice);
    const files = [];
    for (const f of db.prepare("SELECT name, kind, blob FROM files WHERE delivery_id = ? ORDER BY position").all(row.id) as { name: string; kind: string; blob: string }[]) {
      const blob = await readFile(join(home, f.blob));
      files.push({ name: f.name, kind: f.kind, data: await readAll(await decryptStream(new Blob([blob]).stream(), [d])) });
    }
    return { email: row.email, files };
  } finally {
    db.close();
  }
}

#!/usr/bin/env node
// Decrypts one age file like `age -d -i IDENTITY -o OUTPUT INPUT`, also with the post-quantum
// identities (AGE-SECRET-KEY-PQ-1…) that age before 1.3 cannot open. Stand-alone: needs only
// Node.js 20 or newer and `npm install age-encryption@0.3.1` in its folder (see RECOVERY.md).
import { closeSync, createReadStream, createWriteStream, openSync, readFileSync, rmSync } from "node:fs";
import { Readable, Writable } from "node:stream";
import { parseArgs } from "node:util";
import { Decrypter } from "age-encryption";

const fail = (message, code = 1) => { console.error(`recover.mjs: ${message}`); process.exit(code); };
const args = parseArgs({ options: { identity: { type: "string", short: "i", multiple: true }, output: { type: "string", short: "o" } }, allowPositionals: true });
const { identity = [], output } = args.values;
if (identity.length === 0 || args.positionals.length > 1) fail("usage: node recover.mjs -i IDENTITY [-o OUTPUT] [INPUT]", 2);
const decrypter = new Decrypter();
for (const file of identity) {
  const keys = readFileSync(file, "utf8").split("\n").map((l) => l.trim()).filter((l) => l.startsWith("AGE-SECRET-KEY-"));
  if (keys.length === 0) fail(`no identity in ${file}`);
  for (const key of keys) decrypter.addIdentity(key);
}
const input = Readable.toWeb(args.positionals[0] ? createReadStream(args.positionals[0]) : process.stdin);
// Never overwrites a file; a failure removes what it wrote, so no half-decrypted file stays.
let fd;
try {
  if (output !== undefined) fd = openSync(output, "wx", 0o600);
} catch (e) {
  fail(e.code === "EEXIST" ? `${output} exists already` : e.message);
}
try {
  await (await decrypter.decrypt(input)).pipeTo(Writable.toWeb(fd === undefined ? process.stdout : createWriteStream("", { fd })));
} catch (e) {
  if (fd !== undefined) { try { closeSync(fd); } catch { /* closed by the stream */ } rmSync(output, { force: true }); }
  fail(e instanceof Error ? e.message : String(e));
}

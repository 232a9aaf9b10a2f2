// One file through an age implementation, as the Go CLI does it: read, encrypt or decrypt,
// write. The benchmark times ours and age-encryption (typage) against `age` this way, each
// in its own process. It imports the crypto and file modules directly rather than through
// the area doors, so that it loads what an age tool needs and no database or keyring.
//   node agefile.js encrypt ours|typage RECIPIENT IN OUT
//   node agefile.js decrypt ours|typage IDENTITY IN OUT
import { open } from "node:fs/promises";
import { decryptStream, encryptStream } from "../src/crypto/stream.js";
import { fileStream, writeStream } from "../src/store/blobs.js";

const [mode, impl, key, input, output] = process.argv.slice(2);
if (!mode || !impl || !key || !input || !output) throw new Error("usage: agefile encrypt|decrypt ours|typage KEY IN OUT");
const inFh = await open(input);
const source = fileStream(inFh);
let out: ReadableStream<Uint8Array>;
if (impl === "ours") {
  out = mode === "encrypt" ? await encryptStream(source, [key]) : await decryptStream(source, [key]);
} else {
  const { Decrypter, Encrypter } = await import("age-encryption");
  if (mode === "encrypt") {
    const e = new Encrypter();
    e.addRecipient(key);
    out = await e.encrypt(source);
  } else {
    const d = new Decrypter();
    d.addIdentity(key);
    out = await d.decrypt(source);
  }
}
const fh = await open(output, "w");
await writeStream(out, fh);
await fh.close();
await inFh.close();

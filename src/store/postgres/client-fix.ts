// A fix for the pinned PostgreSQL client (postgres 3.4.9), applied as it loads. When a
// connection dies under a transaction (PostgreSQL restarts, a backend is terminated), the
// client still sends that transaction's ROLLBACK: it queues the bytes and writes them on the
// next turn of the event loop, to a socket it has meanwhile set to null. The TypeError is
// thrown from a timer, where no caller can catch it, and ends the process: a node went down
// with its database (porsager/postgres#1154 and #1208; the guard of #1168 and #1209 is not
// released). And a connection that closes with bytes still queued keeps a stale timer, so
// when it reconnects it never sends its startup message and hangs until connect_timeout.
// Both are fixed as upstream proposes: a write without a socket fails its queries with
// CONNECTION_CLOSED, and a close drops the queued bytes with the timer. The hook changes only
// that file and refuses a version whose text it does not know, so an upgrade of the client
// fails loudly instead of running unfixed.
import { register } from "node:module";

/** The client's file the fix applies to. */
const FILE = "/node_modules/postgres/src/connection.js";

/** Exact text of postgres 3.4.9 and what it becomes. */
const PATCHES: readonly (readonly [string, string])[] = [
  [
    "  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)\n",
    "  function nextWrite(fn) {\n    if (!socket) {\n      chunk = nextWriteTimer = null\n      error(Errors.connection('CONNECTION_CLOSED', options))\n      return false\n    }\n    const x = socket.write(chunk, fn)\n",
  ],
  ["    incomings = null\n    clearImmediate(nextWriteTimer)\n    socket.removeListener('data', data)\n", "    incomings = null\n    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n    socket.removeListener('data', data)\n"],
];

/** A module loader hook (node:module register), as source: it patches FILE as it loads. */
const HOOKS = `
const FILE = ${JSON.stringify(FILE)};
const PATCHES = ${JSON.stringify(PATCHES)};
export async function load(url, context, nextLoad) {
  const loaded = await nextLoad(url, context);
  if (!url.endsWith(FILE)) return loaded;
  let source = String(loaded.source);
  for (const [from, to] of PATCHES) {
    if (!source.includes(from)) throw new Error("praxmail: " + url + " is not the PostgreSQL client version praxmail knows (postgres 3.4.9); its fix for a dying connection cannot be applied");
    source = source.replace(from, to);
  }
  return { ...loaded, source };
}
`;

let registered = false;

/**
 * Makes the PostgreSQL client that is loaded from now on the fixed one (see above). Call it
 * before the first import of `postgres`; calling it again does nothing.
 */
export function fixPostgresClient(): void {
  if (registered) return;
  registered = true;
  register(`data:text/javascript,${encodeURIComponent(HOOKS)}`);
}

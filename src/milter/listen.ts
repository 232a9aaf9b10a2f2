// The milter's listen address, parsed where the CLI reads its options: no I/O, no imports.

/** Where the milter listens. */
export type MilterListen = { readonly host: string; readonly port: number } | { readonly path: string };

/**
 * Parses `--milter`: `host:port`, `inet:host:port` or `unix:/path`.
 *
 * @param v - The flag value.
 * @returns Where to listen.
 * @throws Error for anything else.
 */
export function parseMilterListen(v: string): MilterListen {
  if (v.startsWith("unix:")) {
    const path = v.slice(5);
    if (!path.startsWith("/")) throw new Error("use unix:/absolute/path");
    return { path };
  }
  const m = /^(?:inet:)?(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error("use HOST:PORT or unix:/path");
  return { host: m[1] ?? m[2] ?? "127.0.0.1", port };
}

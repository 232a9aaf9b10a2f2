// The proxies whose X-Forwarded-For the portal believes, parsed where the CLI reads its
// options: no I/O, and only node:net (the CLI loads this before fastify).
import { isIP } from "node:net";

const EXAMPLE = "e.g. 127.0.0.1,10.0.0.0/8";

/**
 * Parses `--trust-proxy`: a comma-separated list of IP addresses and CIDR ranges (IPv4 or
 * IPv6) of the load balancers in front of the portal. Fastify's `trustProxy` takes the list
 * as it is; an empty value trusts nobody.
 *
 * @param v - The flag value.
 * @returns The addresses and ranges, in order.
 * @throws Error naming the first entry that is not an address or range, or a range that
 *   would trust every address (then any client could choose the address it is limited by).
 */
export function parseTrustedProxies(v: string): string[] {
  if (v.trim() === "") return [];
  return v.split(",").map((raw) => {
    const entry = raw.trim();
    const m = /^([0-9a-fA-F:.]+)(?:\/(\d{1,3}))?$/.exec(entry);
    const family = m ? isIP(m[1] ?? "") : 0;
    if (!m || family === 0) throw new Error(`"${entry}" is not an IP address or CIDR range (${EXAMPLE})`);
    if (m[2] === undefined) return entry;
    const bits = Number(m[2]);
    if (bits > (family === 4 ? 32 : 128)) throw new Error(`"${entry}" has a prefix longer than an IPv${family} address (${EXAMPLE})`);
    if (bits === 0) throw new Error(`"${entry}" trusts every address, so any client could choose its own: name the load balancers (${EXAMPLE})`);
    return entry;
  });
}

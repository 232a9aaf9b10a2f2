// `praxmail serve --trust-proxy` (PRAXMAIL_TRUST_PROXY): a value that is not a list of
// addresses and CIDR ranges, or that would trust every address, stops serve before it
// listens, naming the entry. The balancers' behaviour is in test/docs.scaleout.test.ts.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanup, praxmail, tempDir } from "./helpers/cli.js";

const EXAMPLE = "(e.g. 127.0.0.1,10.0.0.0/8)";

describe("praxmail serve --trust-proxy", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir();
  });
  afterAll(async () => {
    await cleanup(dir);
  });

  const serve = (args: readonly string[], env: Record<string, string> = {}) =>
    praxmail(["serve", "--home", join(dir, "home"), "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", ...args], { env });

  it.each([
    ["10.0.0.10,balancer.example", `"balancer.example" is not an IP address or CIDR range ${EXAMPLE}`],
    ["10.0.0.10;10.0.0.11", `"10.0.0.10;10.0.0.11" is not an IP address or CIDR range ${EXAMPLE}`],
    ["10.0.0.0/33", `"10.0.0.0/33" has a prefix longer than an IPv4 address ${EXAMPLE}`],
    ["fd00::/129", `"fd00::/129" has a prefix longer than an IPv6 address ${EXAMPLE}`],
    ["10.0.0.10,0.0.0.0/0", `"0.0.0.0/0" trusts every address, so any client could choose its own: name the load balancers ${EXAMPLE}`],
    ["::/0", `"::/0" trusts every address, so any client could choose its own: name the load balancers ${EXAMPLE}`],
  ])("refuses --trust-proxy %s, naming the entry, and sets up nothing", async (value, why) => {
    const r = await serve(["--trust-proxy", value]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`praxmail: error: option '--trust-proxy <addresses>' argument '${value}' is invalid. ${why}\npraxmail: hint: run praxmail serve --help\n`);
    expect(r.stdout).toBe("");
    // Refused before anything ran: serve sets up a missing home, here it did not.
    expect((await praxmail(["list", "deliveries", "--home", join(dir, "home")])).code).not.toBe(0);
  });

  it("refuses a malformed PRAXMAIL_TRUST_PROXY, naming the variable", async () => {
    const r = await serve([], { PRAXMAIL_TRUST_PROXY: "10.0.0.10, *" });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`praxmail: error: option '--trust-proxy <addresses>' value '10.0.0.10, *' from env 'PRAXMAIL_TRUST_PROXY' is invalid. "*" is not an IP address or CIDR range ${EXAMPLE}\npraxmail: hint: run praxmail serve --help\n`);
  });
});

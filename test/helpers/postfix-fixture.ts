// The milter chain as a vitest fixture (apart from postfix.ts, which the bench imports too).
import { afterAll, beforeAll, beforeEach } from "vitest";
import { startPostfixMilter, type PostfixMilter } from "./postfix.js";

/**
 * Starts the milter chain once for the describe block this is called in, stops it after
 * the block, and empties the sink before each test.
 *
 * @param started - Gets the running chain.
 */
export function usePostfixMilter(started: (chain: PostfixMilter) => void): void {
  let chain: PostfixMilter | undefined;
  beforeAll(async () => {
    chain = await startPostfixMilter();
    started(chain);
  });
  afterAll(async () => {
    await chain?.stop();
  });
  beforeEach(() => {
    if (chain) chain.sink.messages.length = 0;
  });
}

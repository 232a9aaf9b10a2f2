// A pino log that keeps its lines, for tests that check what was logged.
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";

/** A log and the JSON lines written to it so far. */
export interface CapturedLog {
  readonly log: Logger;
  /** Every line, parsed. */
  lines(): Record<string, unknown>[];
  /** Everything written, as text (to check that nothing secret is in it). */
  text(): string;
}

/**
 * Makes a log that keeps what is written to it.
 *
 * @returns The log and its lines.
 */
export function captureLog(): CapturedLog {
  let text = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  return {
    log: pino(stream),
    lines: () => text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>),
    text: () => text,
  };
}

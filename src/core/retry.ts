// The retry rules: what becomes of a delivery when the message that made it comes again.
// An attempt (one pass of a message through the relay or the milter) can die, or lose
// upstream's reply, after the mail with the delivery's link left; the sender's MTA then sends
// the message again, and src/mail/idempotency.ts's retry key finds the delivery of the earlier
// attempt. These rules say what the retry does with it, and what an attempt's outcome does to
// the deliveries it carried, as one transition table (`TRANSITIONS`) and pure functions over
// it. Mail processing, the milter and core/deliveries.ts ask them; test/core.retry.test.ts is
// their specification.
import type { DeliveryRow, DeliveryStatus } from "../store/index.js";
import { levelRules } from "./levels.js";

/**
 * Where a delivery is in its life as mail.
 *
 * - `created`: this attempt committed it and its copy has not been accepted yet.
 * - `announced`: its mail may have left but was never seen accepted: an earlier attempt died
 *   or lost upstream's reply, or a retry carried it again and was refused.
 * - `sent`: a copy with its link was accepted (upstream's 250, the outbox, or the edits handed
 *   to Postfix); the patient sees it.
 * - `discarded`: its rows and blobs are gone and its links dead. Nothing follows.
 *
 * The store holds no column for it (see {@link deliveryState}).
 */
export type DeliveryState = "created" | "announced" | "sent" | "discarded";

/**
 * What can happen to a delivery.
 *
 * - `accepted`: a copy with its link was accepted.
 * - `refused`: upstream (or the outbox) did not take this attempt's copies.
 * - `failed`: the attempt failed otherwise, before or after its copies left.
 * - `announce-again`: a retry carries the same delivery again, with one more link token.
 * - `replace`: a retry discards it and makes a new one.
 * - `abandoned`: no retry came within gc's grace time (`praxmail gc`).
 */
export type DeliveryEvent = "accepted" | "refused" | "failed" | "announce-again" | "replace" | "abandoned";

/** What an attempt's outcome can be, for the deliveries it carried. */
export type AttemptOutcome = "accepted" | "refused" | "failed";

/** What a retry does for one recipient, given the delivery an earlier attempt left. */
export type RetryAction = "create" | "skip" | "announce-again" | "replace";

/** Every legal transition; anything else is a bug and throws. */
export const TRANSITIONS: Readonly<Record<DeliveryState, Readonly<Partial<Record<DeliveryEvent, DeliveryState>>>>> = {
  // Only this attempt knows its link, so nothing is lost when it goes.
  created: { accepted: "sent", refused: "discarded", failed: "discarded" },
  // Its mail may be with the patient: an outcome never discards it, only a retry or gc does.
  announced: { accepted: "sent", refused: "announced", failed: "announced", "announce-again": "announced", replace: "discarded", abandoned: "discarded" },
  // Carried again or replaced only where sent is not final (the milter); it keeps its first
  // sent time when accepted again.
  sent: { accepted: "sent", refused: "sent", failed: "sent", "announce-again": "sent", replace: "discarded" },
  discarded: {},
};

/**
 * Events allowed only at levels with the patient's own key (3–4): a level 1–2 link carries the
 * delivery's key D, which only the attempt that created the delivery held.
 */
export const NEEDS_PATIENT_KEY: ReadonlySet<DeliveryEvent> = new Set(["announce-again"]);

/** Statuses of a delivery nobody has opened and that has not ended. */
const UNOPENED: ReadonlySet<DeliveryStatus> = new Set(["pending-approval", "ready"]);

/**
 * The state of a stored delivery, from its columns: `sent_at` set is sent; a row without it is
 * announced (the store cannot tell it from created, and announced is the safe reading: its mail
 * may be out); no row is discarded.
 *
 * @param row - The delivery's row, or undefined when there is none.
 * @returns Its state; never `created`, which only the attempt that created it knows.
 */
export function deliveryState(row: Pick<DeliveryRow, "sentAt"> | undefined): DeliveryState {
  if (!row) return "discarded";
  return row.sentAt == null ? "announced" : "sent";
}

/**
 * One step of the machine.
 *
 * @param from - The delivery's state.
 * @param event - What happens.
 * @param level - The delivery's level; needed for {@link NEEDS_PATIENT_KEY} events.
 * @returns The state after the event.
 * @throws Error for a transition that is not in {@link TRANSITIONS}, or not at this level.
 */
export function nextState(from: DeliveryState, event: DeliveryEvent, level: number | null = null): DeliveryState {
  const to = TRANSITIONS[from][event];
  if (to === undefined) throw new Error(`illegal retry transition: a ${from} delivery cannot take "${event}"`);
  if (NEEDS_PATIENT_KEY.has(event) && (level === null || !levelRules(level).patientKey)) {
    throw new Error(`illegal retry transition: a level ${String(level)} delivery cannot take "${event}"; its link holds its key`);
  }
  return to;
}

/**
 * Whether some event takes a delivery from one state to another.
 *
 * @param from - The state it is in.
 * @param to - The state asked about.
 * @returns True if {@link TRANSITIONS} has such a step.
 */
export function reaches(from: DeliveryState, to: DeliveryState): boolean {
  return Object.values(TRANSITIONS[from]).includes(to);
}

/**
 * What an attempt does for one recipient when it finds the delivery an earlier attempt of the
 * same message left (by the retry key): none, create one; one that left for sure, skip the
 * recipient; one whose mail may be out, at level 3–4, announce it again rather than break the
 * link in that mail; else (levels 1–2, or another level) replace it.
 *
 * @param existing - The earlier attempt's delivery for this recipient, if any.
 * @param level - This attempt's level.
 * @param sentIsFinal - Whether sent means the mail left: true for the relay (upstream's 250),
 *   false for the milter, which marks a delivery sent when it hands its edits to Postfix, and
 *   Postfix may still defer the message. Then only a delivery the patient opened, or that
 *   ended, did leave.
 * @returns The action; its transition is legal by {@link TRANSITIONS}.
 */
export function retryAction(existing: Pick<DeliveryRow, "sentAt" | "status" | "level"> | undefined, level: number, sentIsFinal: boolean): RetryAction {
  if (!existing) return "create";
  const state = deliveryState(existing);
  if (state === "sent" && (sentIsFinal || !UNOPENED.has(existing.status))) return "skip";
  const action = levelRules(level).patientKey && existing.level === level ? "announce-again" : "replace";
  nextState(state, action, existing.level);
  return action;
}

/**
 * Which of an attempt's deliveries its outcome discards: those it created whose copy was not
 * accepted. Deliveries it carried again stay: their mail may be out, and the retry carries
 * them once more.
 *
 * @param outcome - How the attempt ended.
 * @param attempt - The deliveries it created, those it carried again (announced, or for the
 *   milter also sent), and those whose copy was accepted.
 * @returns The ids to discard, in the order given.
 * @throws Error if a delivery is both created and carried again.
 */
export function discardedBy(
  outcome: AttemptOutcome,
  attempt: { readonly created: readonly string[]; readonly carried: readonly string[]; readonly accepted?: ReadonlySet<string> },
): string[] {
  const states = new Map<string, DeliveryState>(attempt.created.map((id) => [id, "created"]));
  for (const id of attempt.carried) {
    if (states.has(id)) throw new Error(`delivery ${id} was both created and carried again`);
    states.set(id, "announced");
  }
  for (const id of attempt.accepted ?? []) if (states.has(id)) states.set(id, "sent");
  return [...states].filter(([, state]) => nextState(state, outcome) === "discarded").map(([id]) => id);
}

// One coarse clock and timer sweep per worker thread, instead of a setTimeout per connection.
// Invariant: `now` is at most a tick stale (TICK_MS, more if the loop lags). No timeout ever fires
// early: a deadline is counted from the clock read afresh (deadline()), and fires at most a tick
// late; an idle timeout counts from `now` as the data path saw it (reading the clock per chunk
// would cost more than the timeout is worth), so the sweep allows a tick more; the sweep runs every
// tenth of the timeout (at most once a second), so an idle timeout fires at most a tenth of itself
// (a second for timeouts of ten seconds and more) and two ticks late.

import { clockCell } from '../core/peak-ewma.ts';

/** Connect timeouts are seconds long; a tenth of a second is precise enough for them. */
export const TICK_MS = 100;

/** Idle timeouts are usually minutes long: walking every established connection once a second is
 *  plenty for them. */
export const IDLE_SWEEP_TICKS = 10;

/**
 * Ticks between idle sweeps for a frontend with this idle timeout: a tenth of it, between one tick
 * and IDLE_SWEEP_TICKS. A 2 s timeout is then at most 0.4 s late, not 1.1 s; the sweep walks the
 * established connections ten times a second only where the timeout is a second or less.
 */
export function idleSweepTicks(idleTimeoutMs: number): number {
  return Math.max(1, Math.min(IDLE_SWEEP_TICKS, Math.floor(idleTimeoutMs / 10 / TICK_MS)));
}

/**
 * A connection quiet this long gives back a large read buffer it still holds. Long enough that a
 * streaming connection never pays for it, short enough that idle ones hold little.
 */
export const BUFFER_RELEASE_MS = 1000;

/** Milliseconds since the worker started, updated every tick. Read it instead of Date.now(). */
export let now = 0;

const origin = performance.now();

/** The time `ms` from this moment, on the worker's clock (read afresh: `now` may be a tick old,
 *  and a deadline counted from it would fire up to a tick early). */
export function deadline(ms: number): number {
  return updateNow() + ms;
}

export function updateNow(): number {
  now = Math.floor(performance.now() - origin);
  clockCell[0] = now;
  return now;
}

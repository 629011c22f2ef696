// One coarse clock and timer sweep per worker thread, instead of a setTimeout per connection.
// Invariant: `now` is at most TICK_MS stale; a connect deadline fires at most TICK_MS late and an
// idle timeout at most IDLE_SWEEP_TICKS * TICK_MS late.

import { clockCell } from '../core/peak-ewma.ts';

/** Connect timeouts are seconds long; a tenth of a second is precise enough for them. */
export const TICK_MS = 100;

/** Idle timeouts are minutes long: walking every established connection once a second is plenty. */
export const IDLE_SWEEP_TICKS = 10;

/**
 * A connection quiet this long gives back a large read buffer it still holds. Long enough that a
 * streaming connection never pays for it, short enough that idle ones hold little.
 */
export const BUFFER_RELEASE_MS = 1000;

/** Milliseconds since the worker started, updated every tick. Read it instead of Date.now(). */
export let now = 0;

const origin = performance.now();

export function updateNow(): number {
  now = Math.floor(performance.now() - origin);
  clockCell[0] = now;
  return now;
}
